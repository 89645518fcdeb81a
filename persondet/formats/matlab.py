"""MATLAB ``.mat`` files as ``scipy.io.loadmat`` gives them back, unwrapped into plain Python.

MATLAB structs come back as structured arrays (or ``np.void`` elements), cells as object arrays, strings as
1-element unicode arrays, and integer-valued doubles in the smallest integer type that holds them (uint8,
uint16, int16... chosen per variable): every reader casts before arithmetic.  ``load_mat`` names the
variables it found, and which dataset's file they look like, when the expected one is missing.

The ``plain_*`` helpers and ``struct_columns`` read a whole column of values at once (one call for 100,000
boxes instead of one each) and give None as soon as one value is not of the plain kind the real files hold;
the caller then reads entry by entry with the helpers above, which give the same values and name the entry
that is wrong.
"""

from __future__ import annotations

import re
from itertools import chain
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from persondet.errors import PersondetError

# Variables that identify a dataset's annotation file: "you gave the wrong file" messages name it.
KNOWN_VARIABLES = (
    (r"Img", "CUHK-SYSU annotation/Images.mat"),
    (r"Person", "CUHK-SYSU annotation/Person.mat"),
    (r"pool", "CUHK-SYSU annotation/pool.mat"),
    (r"Train", "CUHK-SYSU test/train_test/Train.mat"),
    (r"TestG\d+", "a CUHK-SYSU test protocol file (test/train_test/TestG*.mat)"),
    (r"anno_(train|val|test)_aligned", "CityPersons annotations/anno_\\1.mat"),
)


class MatFormatError(PersondetError):
    """A .mat file that is missing, unreadable, or lacks the expected keys or fields."""


def load_mat(path: str | Path, key: str) -> np.ndarray:
    """The variable ``key`` of a MATLAB file, with a one-line error for every way this can fail."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise MatFormatError(f"{path}: annotation file not found")
    try:
        content = scipy.io.loadmat(str(path))
    except Exception as exc:  # scipy raises ValueError, MatReadError, OSError, zlib/struct errors...
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise MatFormatError(f"{path}: not a readable MATLAB .mat file ({detail})") from None
    if key not in content:
        found = sorted(k for k in content if not k.startswith("__"))
        raise MatFormatError(f"{path}: no variable {key!r} (found: {', '.join(found) or 'none'}"
                             f"{looks_like(found)})")
    return content[key]


def check_mat_variable(path: str | Path, key: str) -> None:
    """``path`` is a MATLAB file holding the variable ``key``, from its header only (``scipy.io.whosmat``:
    no data is read); the same one-line errors as ``load_mat``."""
    import scipy.io

    path = Path(path)
    if not path.is_file():
        raise MatFormatError(f"{path}: annotation file not found")
    try:
        found = sorted(name for name, _, _ in scipy.io.whosmat(str(path)))
    except Exception as exc:  # noqa: BLE001 - every way scipy fails is "not a .mat file"
        detail = " ".join(str(exc).split())[:120] or type(exc).__name__
        raise MatFormatError(f"{path}: not a readable MATLAB .mat file ({detail})") from None
    if key not in found:
        raise MatFormatError(f"{path}: no variable {key!r} (found: {', '.join(found) or 'none'}"
                             f"{looks_like(found)})")


def looks_like(variables: list[str]) -> str:
    """'; this looks like <dataset file>' for the first variable a known dataset uses, else ''."""
    for name in variables:
        for pattern, what in KNOWN_VARIABLES:
            match = re.fullmatch(pattern, name)
            if match:
                return f"; this looks like {match.expand(what)}"
    return ""


def mat_str(value: Any, where: str) -> str:
    """A MATLAB string as scipy returns it (array(['s1.jpg']) or a cell around one) as str."""
    if type(value) is np.ndarray and value.dtype.kind == "U" and value.size == 1:  # the common case, fast
        return value.item()
    while isinstance(value, np.ndarray):
        if value.size != 1:
            raise MatFormatError(f"{where}: expected one string, found an array of shape {value.shape}")
        value = value.reshape(-1)[0]
    if isinstance(value, (str, np.str_)):
        return str(value)
    raise MatFormatError(f"{where}: expected a string, found {type(value).__name__}")


def mat_int(value: Any, where: str, default: int = 0) -> int:
    if type(value) is np.ndarray and value.size == 1 and value.dtype.kind in "uif":
        return int(value.reshape(-1)[0])
    array = np.asarray(value)
    if array.size == 0:
        return default
    if array.size != 1:
        raise MatFormatError(f"{where}: expected one number, found shape {array.shape}")
    return int(array.astype(np.int64).reshape(-1)[0])


def struct_field(struct: Any, name: str, where: str) -> Any:
    """Field ``name`` of a MATLAB struct (np.void or a 1-element struct array)."""
    if type(struct) is np.void and name in struct.dtype.names:  # the common case, fast
        return struct[name]
    if isinstance(struct, np.ndarray) and struct.dtype.names is None and struct.size == 1:
        struct = struct.reshape(-1)[0]  # a cell around a struct
    names = getattr(getattr(struct, "dtype", None), "names", None)
    if not names:
        raise MatFormatError(f"{where}: expected a MATLAB struct, found {type(struct).__name__}")
    if name not in names:
        raise MatFormatError(f"{where}: struct has no field {name!r} (fields: {', '.join(names)})")
    value = struct[name]
    if isinstance(value, np.ndarray) and value.dtype == object and value.size == 1 and value.ndim > 0 \
            and getattr(struct, "ndim", 0) > 0:
        value = value.reshape(-1)[0]  # field of a 1x1 struct array
    return value


def struct_items(array: Any, where: str) -> Iterator[Any]:
    """The elements of a struct array (or of a cell array of structs), in order."""
    if not isinstance(array, np.ndarray):
        raise MatFormatError(f"{where}: expected an array of structs, found {type(array).__name__}")
    for item in array.reshape(-1):
        if isinstance(item, np.ndarray) and item.dtype.names is None and item.size == 1:
            item = item.reshape(-1)[0]  # cell element
        if isinstance(item, np.ndarray) and item.dtype.names is not None and item.size == 1:
            item = item.reshape(-1)[0]
        yield item


# ---------------------------------------------------------------------------------------- whole columns
def _items(values: Sequence) -> list | None:
    """The one element of each 1-element array in ``values``; None when one is not such an array."""
    try:
        return list(map(np.ndarray.item, values))
    except (TypeError, ValueError):
        return None


def plain_strings(values: Sequence) -> list[str] | None:
    """1-element unicode arrays (MATLAB strings as scipy gives them) as str, as ``mat_str`` gives them."""
    items = _items(values)
    return items if items is not None and set(map(type, items)) <= {str} else None


def plain_ints(values: Sequence) -> np.ndarray | None:
    """1-element number arrays as int64, each as ``int()`` of its element gives it."""
    items = _items(values)
    if items is None:
        return None
    try:
        array = np.array(items)
    except (OverflowError, TypeError, ValueError):
        return None
    if array.ndim != 1 or array.dtype.kind not in "bif":
        return None  # uint64 beyond int64, strings, objects...
    if array.dtype.kind == "f" and not (np.abs(array) < 2.0 ** 62).all():
        return None  # NaN too: int() of it fails, the per-entry way says how
    return array.astype(np.int64)


def plain_rows(values: Sequence, width: int) -> np.ndarray | None:
    """(1, width) number arrays of any numeric types as one (n, width) float64 array, each value cast exactly
    as on its own (numpy promotes integer types to ones that hold them, and float64 past 32 bits)."""
    try:
        array = np.array(values)  # (n, 1, width) when every value is a (1, width) array, else other or an error
    except (TypeError, ValueError):
        return None
    if array.shape != (len(values), 1, width) or array.dtype.kind not in "buif":
        return None
    return array.reshape(-1, width).astype(np.float64)


def struct_columns(structs: Sequence, fields: tuple[str, ...]) -> tuple[list[int], list[tuple]] | None:
    """Struct arrays with the same field names (empty arrays of any kind: no entries) -> (entries per array,
    for each of ``fields`` the value of every entry, in order); None when one is not such an array."""
    if not all(type(s) is np.ndarray for s in structs):
        return None
    counts = [s.size for s in structs]
    kept = [s for s, n in zip(structs, counts) if n]
    names = kept[0].dtype.names if kept else fields
    if names is None or not set(fields) <= set(names) or any(s.dtype.names != names for s in kept):
        return None
    rows = list(chain.from_iterable(s.reshape(-1).tolist() for s in kept))  # a tuple of field values per entry
    columns = list(zip(*rows)) if rows else [()] * len(names)
    return counts, [columns[names.index(name)] for name in fields]
