"""MATLAB files for the demo data, written through scipy (CUHK-SYSU) with a fixed header so equal seeds give
equal bytes."""

from __future__ import annotations

import io
import os
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
