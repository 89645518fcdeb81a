"""The one check that an annotation's file name stays inside the folder it is resolved against."""

from __future__ import annotations

from pathlib import PurePosixPath, PureWindowsPath
from typing import Callable

from persondet.errors import PersondetError


class UnsafePathError(PersondetError):
    """A file name from an annotation file that would resolve outside its dataset root."""


def safe_relative_path(name: object, where: str | Callable[[], str]) -> str:
    """``name`` unchanged when it is a relative path that stays under its root; else UnsafePathError.

    Refused: non-strings, empty names, NUL bytes, absolute paths (``/etc/x``, ``C:\\x``, ``\\\\host\\x``)
    and any ``..`` component (``../x``, ``a/../../x``; also ``..\\x``, which Windows would follow).
    ``where`` starts the message (e.g. ``"instances.json: image 7"``), or a function giving it, called only
    for a refused name (a reader checking 118k names builds no text for the good ones).  The check is on
    the text only: a symbolic link inside the root that points elsewhere is followed, as the user made it.
    """
    if type(name) is str and ".." not in name and name[:1] not in ("/", "\\", "") and name[1:2] != ":" \
            and "\x00" not in name and not name.isspace():
        return name  # the common case, decided without building paths (COCO has 118k names)
    where = where() if callable(where) else where
    if not isinstance(name, str) or not name.strip():
        raise UnsafePathError(f"{where}: file_name {name!r} is not a file name")
    if "\x00" in name:
        raise UnsafePathError(f"{where}: file_name {name!r} contains a NUL byte")
    posix, windows = PurePosixPath(name), PureWindowsPath(name)
    if posix.is_absolute() or windows.is_absolute() or windows.drive or windows.root:
        raise UnsafePathError(f"{where}: file_name {name!r} is an absolute path; it must be relative to "
                              "the dataset root")
    if ".." in posix.parts or ".." in windows.parts:
        raise UnsafePathError(f"{where}: file_name {name!r} leaves the dataset root ('..')")
    return name
