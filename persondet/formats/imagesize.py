"""Image width and height from the file header (JPEG SOF marker, PNG IHDR chunk), pixels never decoded.

``prepare`` reads the header of every image it keeps (82,299 files for COCO train2017 + CUHK-SYSU), so an
empty or broken file is found there and not in the middle of training.  One ``os.read`` of the first
4 KiB usually holds the whole header.  ``PIL.Image.open(path).size`` also reads only the header but builds
an Image object and probes plugins: inside bench/prepare_scale.py at full scale it took 11.1 s for those
82,299 files against 1.3 s here (8.7x; 2-core machine under load, docs/BENCHMARKS.md), which is why this
parser stays.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

from persondet.errors import PersondetError

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# Start-of-frame markers carry the size; C4 (DHT), C8 (JPG) and CC (DAC) share the range but do not.
_SOF_MARKERS = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
# Markers without a length field.
_STANDALONE = frozenset(range(0xD0, 0xDA)) | {0x01}
_NOT_A_SEGMENT = _STANDALONE | {0xFF, 0xDA}  # fill byte, start of scan: left to the general walk
_FIRST_READ = 4096


class ImageHeaderError(PersondetError):
    """An image file whose header cannot be read; ``reason`` says why, without the path; ``missing``: there is
    no such file."""

    def __init__(self, path, reason: str, missing: bool = False):
        super().__init__(f"{path}: unreadable image: {reason}")
        self.path, self.reason, self.missing = path, reason, missing


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of a JPEG or PNG file, read from its header."""
    try:
        fd = os.open(path, os.O_RDONLY)
        try:
            head = os.read(fd, _FIRST_READ)
            if head.startswith(_PNG_SIGNATURE):
                return _png_size(head, path)
            if head.startswith(b"\xff\xd8"):
                return _jpeg_size(head, fd, path)
        finally:
            os.close(fd)
    except OSError as exc:
        raise ImageHeaderError(path, f"cannot read ({exc.strerror or exc})",
                               missing=exc.errno in (errno.ENOENT, errno.ENOTDIR)) from None
    if not head:
        raise ImageHeaderError(path, "empty file (0 bytes)")
    raise ImageHeaderError(path, f"not a JPEG or PNG file (header {head[:8]!r})")


def _png_size(head: bytes, path) -> tuple[int, int]:
    if len(head) < 24 or head[12:16] != b"IHDR":
        raise ImageHeaderError(path, "truncated PNG header")
    return _checked(int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big"), path)


def _jpeg_size(head: bytes, fd: int, path) -> tuple[int, int]:
    """The common case first: segment after segment in the first read up to the frame header (as the general
    walk, ``_jpeg_walk``, would go; 82,299 files at full scale); anything else goes to the general walk."""
    i, last = 2, len(head) - 9
    while i <= last and head[i] == 0xFF:
        code = head[i + 1]
        if code in _SOF_MARKERS:
            return _checked((head[i + 7] << 8) | head[i + 8], (head[i + 5] << 8) | head[i + 6], path)
        length = (head[i + 2] << 8) | head[i + 3]
        if code in _NOT_A_SEGMENT or length < 2:
            break
        i += 2 + length
    return _jpeg_walk(head, fd, path)


def _jpeg_walk(head: bytes, fd: int, path) -> tuple[int, int]:
    """Walk the marker segments from byte 2 to the first start-of-frame, reading on only where needed."""
    window, base, pos = head, 0, 2  # window holds the file's bytes from offset base; pos is a file offset
    while True:
        if pos + 9 > base + len(window):  # a marker, a length and a frame header may not all be in the window
            window, base = os.pread(fd, _FIRST_READ, pos), pos
        i = pos - base
        if i + 2 > len(window):
            break
        if window[i] != 0xFF:
            raise ImageHeaderError(path, f"corrupt JPEG marker at byte {pos}")
        code = window[i + 1]
        if code == 0xFF:  # a fill byte
            pos += 1
            continue
        pos, i = pos + 2, i + 2
        if code in _STANDALONE:
            continue
        if i + 7 > len(window):
            break
        if code in _SOF_MARKERS:
            return _checked(int.from_bytes(window[i + 5:i + 7], "big"), int.from_bytes(window[i + 3:i + 5], "big"),
                            path)
        length = int.from_bytes(window[i:i + 2], "big")
        if code == 0xDA or length < 2:  # scan data before any frame header: nothing to find
            break
        pos += length
    raise ImageHeaderError(path, "no JPEG frame header (truncated file?)")


def _checked(width: int, height: int, path) -> tuple[int, int]:
    if width <= 0 or height <= 0:
        raise ImageHeaderError(path, f"header gives size {width}x{height}")
    return width, height
