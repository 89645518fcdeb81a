"""One-line messages for a COCO file that msgspec refuses: which entry (by its ``id``) and where.

msgspec says what is wrong and where as a path (``$.annotations[3].bbox``) or a byte offset; a COCO user
thinks in annotation and image ids, so these helpers find the entry's id, on the error path only.
"""

from __future__ import annotations

import re
from typing import Any

import msgspec

from persondet.formats.json_chunks import decode_leading


class _Entry(msgspec.Struct, gc=False):
    id: Any = None


class _EntryIds(msgspec.Struct, gc=False):
    images: list[msgspec.Raw] = []
    annotations: list[msgspec.Raw] = []
    categories: list[msgspec.Raw] = []


_KIND = {"images": "image", "annotations": "annotation", "categories": "category"}
_PATH = re.compile(r"\$\.(images|annotations|categories)\[(\d+)\]")
_NON_FINITE = (b"NaN", b"Infinity")
_NON_FINITE_TOKEN = re.compile(rb"-?(?:NaN|Infinity)")


def validation_message(message: str, data: bytes) -> str:
    """msgspec's "<what> - at `$.annotations[3].bbox`" as "annotation <id> (<path>): <what>"."""
    what, _, at = message.partition(" - at ")
    at = at.strip("`")
    if not at or at == "$":
        if what.startswith("Expected `object`"):
            return f"not a COCO file (top level: {what[0].lower()}{what[1:]})"
        missing = re.search(r"missing required field `(\w+)`", what)
        if missing:
            return f"not a COCO instances file: no list '{missing.group(1)}'"
        return f"not a COCO instances file: {what}"
    match = _PATH.match(at)
    if not match:
        return f"not a COCO instances file: {what} at {at}"
    section, index = match.group(1), int(match.group(2))
    entry = _entry_id(data, section, index)
    name = f"{_KIND[section]} {entry}" if entry is not None else f"{_KIND[section]} entry {index}"
    return f"{name} ({at}): {what}"


def _entry_id(data: bytes, section: str, index: int) -> Any:
    """The ``id`` of entry ``index`` of a section, from a second, lenient pass (error path only)."""
    try:
        raw = getattr(msgspec.json.decode(data, type=_EntryIds), section)[index]
        entry = msgspec.json.decode(raw, type=_Entry)
        return entry.id if isinstance(entry.id, (int, str)) else None
    except (msgspec.MsgspecError, IndexError, TypeError, RecursionError):
        return None


def decode_message(message: str, data: bytes) -> str:
    """msgspec's "JSON is malformed: <what> (byte N)" as "malformed JSON at byte N: <what>[, in <entry>]"."""
    if message == "Input data was truncated":
        return f"malformed JSON at byte {len(data)}: the text ends early (truncated file?)"
    found = re.search(r"\(byte (\d+)\)$", message)
    what = re.sub(r"^JSON is malformed: ", "", message[:found.start()] if found else message).strip()
    if not found:
        return f"malformed JSON: {what}"
    pos = int(found.group(1))
    token = next((t for t in _NON_FINITE if data.startswith(t, pos)), None)
    if token is None:
        return f"malformed JSON at byte {pos}: {what}"
    entry = _entry_around(data, pos)
    return (f"malformed JSON at byte {pos}: {'-' if data[pos - 1:pos] == b'-' else ''}{token.decode()} is not a "
            f"JSON number (non-finite values are refused){f', in {entry}' if entry else ''}")


def _entry_around(data: bytes, pos: int, limit: int = 1 << 24) -> str | None:
    """'annotation <id>' or 'image <id>' for the object holding byte ``pos`` (error path only)."""
    end = pos
    for _ in range(3):  # the value may sit in a nested object (an RLE segmentation)
        start = _enclosing_open(data, end, limit)
        if start is None:
            return None
        # non-finite tokens become numbers of the same length, so msgspec's byte offsets stay true
        window = _NON_FINITE_TOKEN.sub(lambda m: b"0." + b"0" * (len(m.group()) - 2), data[start:start + limit])
        try:
            obj = decode_leading(window, msgspec.json.decode)
        except msgspec.DecodeError:
            obj = None
        if isinstance(obj, dict) and "id" in obj:
            kind = "annotation" if "image_id" in obj else "image" if "file_name" in obj else "entry"
            return f"{kind} {obj['id']}"
        end = start
    return None


def _enclosing_open(data: bytes, pos: int, limit: int) -> int | None:
    """Offset of the ``{`` that opens the object around ``pos`` (braces counted; COCO strings hold none)."""
    depth, i = 0, pos
    while i > max(0, pos - limit):
        opening, closing = data.rfind(b"{", 0, i), data.rfind(b"}", 0, i)
        if opening < 0:
            return None
        if closing > opening:
            depth, i = depth + 1, closing
        elif depth == 0:
            return opening
        else:
            depth, i = depth - 1, opening
    return None
