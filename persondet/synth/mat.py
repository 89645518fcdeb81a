"""MATLAB files for the demo data, with a fixed header so equal seeds give equal bytes: through scipy (CUHK-SYSU,
as scipy reads the real files back) or as MATLAB's own ``save`` writes them (CityPersons)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Sequence

import numpy as np
import scipy.io

_MAT_HEADER = "MATLAB 5.0 MAT-file, Platform: persondet.synth, Created on: Sun Nov  1 12:06:30 2015"


def small_uint(value: int) -> np.ndarray:
    return np.array([[value]], dtype=np.uint8 if value <= 255 else np.uint16)


def mat_struct(shape, names: Sequence[str]) -> np.ndarray:
    return np.empty(shape, dtype=[(n, object) for n in names])


def savemat(path: Path, key: str, value) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    scipy.io.savemat(buf, {key: value}, do_compression=True)
    data = bytearray(buf.getvalue())
    # the 116-byte text header carries the wall-clock time: fix it so equal seeds give equal bytes
    data[:116] = _MAT_HEADER.ljust(116).encode("ascii")
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(bytes(data))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- MAT v5 as MATLAB's save writes it
# scipy.io.savemat stores an integer array as an integer MATLAB class.  MATLAB's own save keeps the class
# double and stores the values in the smallest integer type that holds them, which is why scipy gives back
# uint8/uint16/int16 per array for the real CityPersons file (and float64 with mat_dtype=True).  This
# writer produces that encoding for cells, structs, char and double arrays (format: MathWorks, "MAT-File
# Format", version 5 / 7: one zlib-compressed miMATRIX element per variable).
_MI_INT8, _MI_INT32, _MI_UINT32, _MI_MATRIX, _MI_COMPRESSED, _MI_UTF8 = 1, 5, 6, 14, 15, 16
_MI_STORAGE = ((np.uint8, 2), (np.int8, 1), (np.uint16, 4), (np.int16, 3), (np.uint32, 6), (np.int32, 5))
_MI_DOUBLE = 9
_MX_CELL, _MX_STRUCT, _MX_CHAR, _MX_DOUBLE = 1, 2, 4, 6


def save_matlab(path: Path, key: str, value, header: str) -> None:
    """Write ``{key: value}`` as MATLAB's ``save`` would (cells = object arrays, structs = structured arrays,
    str = char, numbers = class double in the smallest integer storage), atomically, with a fixed header."""
    path.parent.mkdir(parents=True, exist_ok=True)
    body = zlib.compress(_matrix(value, key))
    data = header.ljust(116).encode("ascii") + b"\0" * 8 + b"\x00\x01IM"
    data += struct.pack("<II", _MI_COMPRESSED, len(body)) + body
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _element(mi_type: int, payload: bytes) -> bytes:
    if 0 < len(payload) <= 4:  # small data element: type, length and data in 8 bytes
        return struct.pack("<HH", mi_type, len(payload)) + payload.ljust(4, b"\0")
    return struct.pack("<II", mi_type, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _matrix(value, name: str = "") -> bytes:
    if isinstance(value, str):
        mx_class, shape = _MX_CHAR, (1, len(value))
        content = _element(_MI_UTF8, value.encode("utf-8"))
    elif isinstance(value, np.ndarray) and value.dtype.names:
        mx_class, shape = _MX_STRUCT, value.shape
        width = max(len(n) for n in value.dtype.names) + 1
        content = _element(_MI_INT32, struct.pack("<i", width))
        content += _element(_MI_INT8, b"".join(n.encode("ascii").ljust(width, b"\0") for n in value.dtype.names))
        content += b"".join(_matrix(item[n]) for item in value.ravel(order="F") for n in value.dtype.names)
    elif isinstance(value, np.ndarray) and value.dtype == object:
        mx_class, shape = _MX_CELL, value.shape
        content = b"".join(_matrix(item) for item in value.ravel(order="F"))
    else:
        array = np.atleast_2d(np.asarray(value, dtype=np.float64))  # MATLAB arrays have 2 dims or more
        mx_class, shape = _MX_DOUBLE, array.shape
        mi_type, stored = _storage(array.ravel(order="F"))
        content = _element(mi_type, stored.tobytes()) if stored.size else struct.pack("<II", mi_type, 0)
    head = _element(_MI_UINT32, struct.pack("<II", mx_class, 0))
    head += _element(_MI_INT32, struct.pack(f"<{len(shape)}i", *shape))
    head += _element(_MI_INT8, name.encode("ascii")) if name else struct.pack("<II", _MI_INT8, 0)
    return _element(_MI_MATRIX, head + content)


def _storage(values: np.ndarray) -> tuple[int, np.ndarray]:
    if not values.size:
        return 2, values.astype(np.uint8)  # MATLAB writes an empty double as an empty miUINT8
    if np.array_equal(values, np.round(values)):
        for dtype, mi_type in _MI_STORAGE:
            info = np.iinfo(dtype)
            if values.min() >= info.min and values.max() <= info.max:
                return mi_type, values.astype(f"<{np.dtype(dtype).char}")
    return _MI_DOUBLE, values.astype("<f8")
