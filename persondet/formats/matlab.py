"""MATLAB ``.mat`` files as ``scipy.io.loadmat`` gives them back, unwrapped into plain Python.

MATLAB structs come back as structured arrays (or ``np.void`` elements), cells as object arrays, strings as
1-element unicode arrays, and integer-valued doubles in the smallest integer type that holds them (uint8,
uint16, int16... chosen per variable): every reader casts before arithmetic.  ``load_mat`` names the
variables it found, and which dataset's file they look like, when the expected one is missing.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

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
