"""A JSON object's large array decoded in pieces (formats.json_chunks), and the COCO reader built on it:
whenever the pieces are used they give exactly what decoding the whole file gives, and a file they do not
fit falls back to the whole decoding (never a wrong result)."""

from __future__ import annotations

import json
import random

import msgspec
import pytest

import prepare_fixtures as fx
from persondet.formats import coco as coco_fmt
from persondet.formats import json_chunks

ANY = msgspec.json.Decoder(list)


def _pieces(tmp_path, text: str, block: int):
    path = tmp_path / "doc.json"
    path.write_text(text)
    pieces = []
    rest = json_chunks.decode_member_in_pieces(path, "annotations", ANY, pieces.append, block=block)
    return pieces, rest


def _accepted(rest: bytes | None) -> dict | None:
    """The rest of the document when a caller would accept the pieces (it decodes, the sentinel in the
    member's place), else None."""
    if rest is None:
        return None
    try:
        others = msgspec.json.decode(rest)
    except msgspec.DecodeError:
        return None
    return others if others.get("annotations") == json.loads(json_chunks.SENTINEL) else None


def _entry(rng: random.Random, k: int, tricky: bool) -> dict:
    entry = {"id": k, "image_id": rng.randrange(50), "category_id": rng.choice([1, 1, 3]),
             "bbox": [rng.uniform(0, 99) for _ in range(4)],
             "segmentation": rng.choice([[[rng.uniform(0, 9) for _ in range(rng.randrange(2, 40))]],
                                         {"counts": [rng.randrange(9) for _ in range(5)], "size": [4, 4]}])}
    if tricky and rng.random() < 0.3:  # text holding the cut pattern and the member's key
        entry["caption"] = rng.choice(['a},{"b', '"annotations": [', 'x\\"},{', '}\n,\n{', "\\\\"])
    if tricky and rng.random() < 0.2:  # a nested list of objects: "},{" inside an entry
        entry["attributes"] = [{"name": "a"}, {"name": "b"}]
    keys = list(entry)
    rng.shuffle(keys)
    return {key: entry[key] for key in keys}


def _document(rng: random.Random, tricky: bool) -> tuple[str, bool]:
    """(the text, whether it is plain: the pieces must then be used)."""
    members = {"info": {"description": "annotations: [x]"}, "images": [{"id": i} for i in range(rng.randrange(4))],
               "annotations": [_entry(rng, k, tricky) for k in range(rng.randrange(0, 60))],
               "categories": [{"id": 1, "name": "person"}, {"id": 3, "name": "car"}]}
    if tricky and rng.random() < 0.3:
        members["info"]["annotations"] = [{"id": -1}, {"id": -2}]  # the key again, nested, before the member
    order = list(members)
    rng.shuffle(order)
    doc = {key: members[key] for key in order}
    indent = rng.choice([None, 1, 4])
    separators = rng.choice([(",", ":"), (", ", ": ")]) if indent is None else None
    return json.dumps(doc, indent=indent, separators=separators), not tricky


@pytest.mark.parametrize("seed", range(40))
def test_pieces_equal_the_whole_decoding_or_give_way(tmp_path, seed):
    rng = random.Random(seed)
    text, plain = _document(rng, tricky=seed % 2 == 1)
    for block in (64, 333, 4096):
        pieces, rest = _pieces(tmp_path, text, block)
        others = _accepted(rest)
        if others is None:
            assert not plain, f"a plain document must be decoded in pieces (block {block})"
            continue
        whole = json.loads(text)
        assert [entry for piece in pieces for entry in piece] == whole.pop("annotations")
        others.pop("annotations")
        assert others == whole


@pytest.mark.parametrize("seed", range(30))
def test_a_broken_document_never_decodes(tmp_path, seed):
    rng = random.Random(seed)
    text, _ = _document(rng, tricky=False)
    at = rng.randrange(len(text))
    broken = rng.choice([text[:at], text[:at] + "}" + text[at + 1:], text[:at] + text[at + 1:]])
    try:
        json.loads(broken)
        return  # still valid JSON (e.g. a space removed)
    except json.JSONDecodeError:
        pass
    _, rest = _pieces(tmp_path, broken, 97)
    assert _accepted(rest) is None


def test_find_array_takes_the_first_or_last_and_stops_at_its_end():
    data = b'x", "categories": [{"id": 1}], "categories": [{"id": 2}, {"id": 3}]} tail'
    assert json_chunks.find_array(data, "categories", ANY) == [{"id": 1}]
    assert json_chunks.find_array(data, "categories", ANY, last=True) == [{"id": 2}, {"id": 3}]
    assert json_chunks.find_array(b'"categories": [{"id": 1}', "categories", ANY) is None
    assert json_chunks.find_array(b'{"images": []}', "categories", ANY) is None


# ------------------------------------------------------------------------------------------------- COCO
def _coco_files(tmp_path):
    files = [fx.SHARED_DATA / "coco-tiny" / "annotations" / f"instances_{s}2017.json" for s in ("train", "val")]
    files = [f for f in files if f.exists()]
    data = fx.coco_json()
    for order in (["images", "annotations", "categories"], ["categories", "annotations", "images"]):
        path = tmp_path / f"{order[0]}-first.json"
        path.write_text(json.dumps({key: data[key] for key in order}))
        files.append(path)
    return files


@pytest.mark.parametrize("block", [300, 1 << 16])
def test_coco_persons_in_pieces_are_those_of_the_whole_file(tmp_path, monkeypatch, block):
    monkeypatch.setattr(json_chunks, "BLOCK", block)
    for path in _coco_files(tmp_path):
        in_pieces = coco_fmt._person_rows_in_pieces(path, "person")
        if path.name.startswith(("images", "categories")):  # the fixture names its person category "person"
            assert in_pieces is not None, path
        whole = coco_fmt._person_rows(path, "person")
        if in_pieces is None:
            continue
        assert in_pieces.category_id == whole.category_id and in_pieces.n_annotations == whole.n_annotations
        assert in_pieces.images == whole.images
        for column in ("ids", "image_ids", "crowd", "area", "boxes", "sizes"):
            assert getattr(in_pieces, column).tolist() == getattr(whole, column).tolist(), (path, column)
        monkeypatch.setattr(coco_fmt, "PIECES_FROM_BYTES", 0)
        read = coco_fmt.read_coco_persons(path)
        monkeypatch.setattr(coco_fmt, "PIECES_FROM_BYTES", 1 << 40)
        assert read == coco_fmt.read_coco_persons(path)


def test_coco_tiny_is_read_in_pieces(monkeypatch):
    path = fx.SHARED_DATA / "coco-tiny" / "annotations" / "instances_train2017.json"
    if not path.exists():
        pytest.skip(f"{path} not present")
    monkeypatch.setattr(json_chunks, "BLOCK", 1000)  # pretty-printed real file: many pieces, some entries longer
    rows = coco_fmt._person_rows_in_pieces(path, "person")
    assert rows is not None and rows.n_annotations == 705 and len(rows.ids) == 143
