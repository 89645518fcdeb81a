"""Decode one large array member of a JSON object file in pieces, without holding the file in memory.

A COCO instances file is one JSON object whose ``annotations`` array is most of its bytes (441 MB for
train2017).  Decoding it whole needs the file's bytes and every decoded entry at once; here the file is
read in blocks, the array is cut at entry boundaries and each piece is decoded by ``msgspec`` on its own,
so memory holds one block and what the caller keeps of each piece.

Where to cut is guessed (a ``}`` then ``,`` then ``{``), and each guess is proved by the decoder: a piece
``[...]`` decodes only when it ends between two entries of the array (a cut inside a string leaves it
unterminated, a cut inside a nested value leaves it unbalanced), and where the array ends the decoder
reports trailing characters at the exact byte.  The rest of the document, with the array replaced by a
sentinel string, is handed back for the caller to decode: the sentinel found in the member's place proves
the array was the top-level member.  Whatever does not fit (another layout, a malformed file, an entry
that is not a JSON object) gives ``None``, and the caller decodes the whole file the usual way, which also
names any error precisely.
"""

from __future__ import annotations

import re
from typing import Any, Callable

import msgspec

SENTINEL = b'"persondet: the array decoded in pieces"'
BLOCK = 1 << 24
_CUT = re.compile(rb"\}\s*,\s*\{")
_TRAILING = re.compile(r"trailing characters \(byte (\d+)\)$")
_FIND_WINDOW = 1 << 16


class NoFit(Exception):
    """The file does not fit the piecewise decoding (``on_piece`` may raise it too); decode it whole."""


def decode_member_in_pieces(path, key: str, decoder: msgspec.json.Decoder,
                            on_piece: Callable[[list], None], block: int | None = None) -> bytes | None:
    """Decode the top-level array ``key`` of the JSON object in ``path`` piece by piece: ``on_piece(entries)``
    for each piece, in file order (``decoder`` decodes a JSON array of entries).  Returns the document with
    the array replaced by ``SENTINEL`` (to decode and check: the member must equal ``SENTINEL``), or None
    when the file does not fit (then nothing can be concluded about it: decode it whole).  ``block``: bytes
    read at a time (default ``BLOCK``); a piece is one to two blocks."""
    block = block or BLOCK
    try:
        with open(path, "rb", buffering=0) as f:
            head, start = _read_head(f, key, block)
            tail = _decode_array(f, start, decoder, on_piece, block)
    except (NoFit, OSError):
        return None
    return head + SENTINEL + tail


def find_array(data: bytes, key: str, decoder: msgspec.json.Decoder, last: bool = False):
    """The entries of the first (or ``last``) array written as ``"<key>": [...]`` in ``data`` (a part of a
    document), decoded; None when there is none or it does not decode.  A guess for a caller to confirm."""
    matches = list(_member(key).finditer(data))
    if not matches:
        return None
    start = matches[-1 if last else 0].end() - 1
    try:
        return decode_leading(data[start:], decoder.decode)
    except msgspec.MsgspecError:
        return None


def decode_leading(data, decode: Callable[[bytes], Any]) -> Any:
    """``decode`` the JSON value ``data`` starts with, ignoring what follows it (msgspec reports those
    trailing characters at the byte where the value ends); msgspec's error when there is no such value."""
    try:
        return decode(data)
    except msgspec.DecodeError as exc:
        end = trailing_at(exc)
        if end is None:
            raise
        return decode(data[:end])


def _read_head(f, key: str, block: int) -> tuple[bytes, bytearray]:
    """(the bytes before the array's ``[``, the bytes read after it)."""
    pattern = _member(key)
    head = bytearray()
    searched = 0
    while True:
        data = f.read(block)
        if not data:
            raise NoFit
        head += data
        match = pattern.search(head, max(0, searched - 64))
        if match:
            return bytes(head[:match.end() - 1]), head[match.end():]
        searched = len(head)


def _decode_array(f, start: bytearray, decoder: msgspec.json.Decoder, on_piece, block: int) -> bytes:
    """Decode the array whose content begins with ``start`` and continues in ``f``; returns what follows it.

    ``buf[0]`` is set to ``[`` and the byte after a piece's last ``}`` (a ``,`` or a space) to ``]``, so each
    piece is decoded from the buffer in place; the bytes of the next entry then move to the front.
    """
    capacity = len(start) + block + 1
    buf = bytearray(capacity)
    view = memoryview(buf)
    n = 1 + len(start)
    buf[1:n] = start
    eof = False
    while True:
        while not eof and n < capacity:
            got = f.readinto(view[n:])
            eof = not got
            n += got or 0
        cut = None if eof else _last_cut(buf, n)
        if cut is None and not eof:  # an entry longer than the buffer: a larger one
            capacity *= 2
            buf = bytearray(capacity)
            buf[:n] = view[:n]
            view = memoryview(buf)
            continue
        if cut is None:
            buf[0] = ord("[")
            end = _array_end(view[:n], decoder, on_piece)  # the array must end before the file does
            if end is None:
                raise NoFit
            return bytes(buf[end:n])
        close, next_start = cut
        buf[0], saved, buf[close] = ord("["), buf[close], ord("]")
        end = _array_end(view[:close + 1], decoder, on_piece)
        if end is not None:  # the array ended inside this piece: the rest of the file follows it
            buf[close] = saved
            return bytes(buf[end:n]) + f.read()
        moved = n - next_start
        buf[1:1 + moved] = buf[next_start:n]
        n = 1 + moved


def _array_end(piece: memoryview, decoder: msgspec.json.Decoder, on_piece) -> int | None:
    """Decode ``piece`` (``[`` + entries ...) and hand the entries on; None when the whole piece was the
    array's entries, else the offset just past the array's ``]`` (the array ended inside the piece)."""
    end = None
    try:
        entries = decoder.decode(piece)
    except msgspec.DecodeError as exc:
        end = trailing_at(exc)
        if end is None:
            raise NoFit from None
        try:
            entries = decoder.decode(piece[:end])
        except msgspec.MsgspecError:
            raise NoFit from None
    except msgspec.ValidationError:
        raise NoFit from None
    on_piece(entries)
    return end


def _last_cut(buf: bytearray, n: int) -> tuple[int, int] | None:
    """(offset just past the last ``}`` followed by ``,`` and ``{``, offset of that ``{``) in ``buf[1:n]``."""
    low, window = n, _FIND_WINDOW
    while low > 1:
        low, window = max(1, n - window), window * 16
        found = None
        for found in _CUT.finditer(buf, low, n):
            pass
        if found is not None:
            return found.start() + 1, found.end() - 1
    return None


def _member(key: str) -> re.Pattern:
    """``"<key>": [`` with any spacing."""
    return re.compile(rb'"' + re.escape(key.encode()) + rb'"\s*:\s*\[')


def trailing_at(exc: msgspec.DecodeError) -> int | None:
    """The offset of the first trailing character (msgspec counts the byte it stopped after)."""
    match = _TRAILING.search(str(exc))
    return int(match.group(1)) - 1 if match else None
