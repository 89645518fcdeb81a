"""The dataset vocabulary: sources, mixes, merged data, the person category and image paths.

**Sources.**  A source is a public dataset read from its own on-disk layout.  ``SOURCES`` is the registry:
each entry names the source (its token in ``mix``), the ``prepare`` setting that holds its root (empty:
the built-in demo data), the ``prepare`` settings its reader takes, the reader, and where the demo data
generator puts its demo copy.  A source's settings are named ``<source>_<option>`` (``citypersons_split``)
and its reader takes them as ``<option>``: it is called as ``reader(root, split=..., subset=...)`` and returns
``(SourceSet, counts)``: plain records (images with id, ``file_name`` relative to the root, width,
height; annotations with id, image_id, bbox [x, y, w, h] float, area, iscrowd, ignore, and source extras
such as person_id, ishard, vis_ratio) and a dict of what it dropped, clipped or left out.  Adding a dataset
is one reader module and one ``register(Source(...))`` below (plus its settings in ``PrepareConfig``).
The registry's order: coco, cuhk (the seed's two), citypersons, crowdhuman.

**Mixes.**  A mix names sources joined by ``+`` (``coco+cuhk``).  ``mix_sources`` validates one against
the registry and returns its sources in registry order, the canonical order (``cuhk+coco`` is
``coco+cuhk``).  **Merged data** is a mix of at least two sources.

**The person category rule.**  The person category of a COCO file is the one category the user names,
by name (compared case-insensitively) or by integer id; the default name is ``person``.  A training file
(``train``'s ``data`` and its validation set, which are person-only by construction) whose only category
has another name is taken to be person-only: that one category is the person category.  Nothing else is
guessed (no synonyms); no match, or two categories with the name, is an error naming the categories.

**The image path rule.**  In a prepared set (its ``persondet`` key records ``roots``) an image's
``file_name`` is ``<source>/<rest>`` and the file is ``roots[source] / rest``; in a plain COCO file the
file is ``<base> / file_name``, where the base is the image folder the user gave, else the json's folder.
A name that would leave its folder (``../``, an absolute path) is refused
(``formats.paths.safe_relative_path``), in every step that resolves one.
"""

from __future__ import annotations

import importlib
import re
from collections import abc
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from persondet.errors import PersondetError
from persondet.formats.paths import safe_relative_path

CUHK_SPLITS = ("all", "train", "test")  # CUHK-SYSU: all images; test = the gallery pool (pool.mat); train = the rest
CITYPERSONS_SPLITS = ("train", "val")
CITYPERSONS_SUBSETS = ("all", "reasonable")  # reasonable: pedestrians >= 50 px tall, >= 65 % visible
CROWDHUMAN_SPLITS = ("train", "val")
CROWDHUMAN_BOXES = ("fbox", "vbox")  # the person box taken: full body or visible part
BASELINE_MIX = "coco"  # the single source merged data is compared against (report's side-by-side)


@dataclass(frozen=True)
class Source:
    """One registered source (see the module docstring)."""

    name: str  # its token in `mix`
    root_param: str  # the prepare setting holding its root; empty: the demo data
    options: tuple[str, ...]  # the prepare settings its reader takes, by name
    reader: Callable[..., tuple[Any, dict]]  # reader(root, **options) -> (SourceSet, counts)
    demo_root: Callable[[int], Path]  # demo_root(seed): the root of its demo copy (generated once)
    check: Callable[..., None] | None = None  # check(root, **options): a cheap look at the layout, or None

    def read(self, root: Path, settings: Any) -> tuple[Any, dict]:
        """Read this source from ``root``, its options taken from ``settings`` (a PrepareConfig): the
        setting ``<source>_<option>`` is the reader's keyword ``<option>``."""
        return self.reader(root, **{self.keyword(name): getattr(settings, name) for name in self.options})

    def keyword(self, setting: str) -> str:
        """The reader's keyword for one of this source's settings (``cuhk_split`` -> ``split``)."""
        prefix = f"{self.name}_"
        if not setting.startswith(prefix):
            raise ValueError(f"source {self.name!r}: setting {setting!r} must start with {prefix!r}")
        return setting[len(prefix):]

    def check_root(self, root: Path, settings: Any) -> None:
        """Before a study starts (``main``): ``root`` is a folder and, in seconds, holds this source's layout
        (annotation files present, their headers readable); the full read is ``prepare``'s."""
        if not root.is_dir():
            raise PersondetError(f"{self.root_param}={str(root)!r}: folder not found")
        if self.check is not None:
            self.check(root, **{self.keyword(name): getattr(settings, name) for name in self.options})


SOURCES: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Add a source to the registry (its position is its place in the canonical mix order)."""
    if not re.fullmatch(r"[a-z][a-z0-9_]*", source.name) or source.name in SOURCES:
        raise ValueError(f"source name {source.name!r} must be new, lower case, without '+' or '/'")
    SOURCES[source.name] = source
    return source


def _imported(module: str, name: str) -> Callable:
    """``module.name``, imported when first called (readers import the registry for its vocabulary)."""
    def call(*args, **kwargs):
        return getattr(importlib.import_module(module), name)(*args, **kwargs)

    call.__qualname__ = f"{module}.{name}"
    return call


def _demo(attribute: str, extra: bool = False) -> Callable[[int], Path]:
    """The demo copy's root; ``extra``: a source the demo tree adds only when asked for (synth.EXTRA_SOURCES)."""
    def root(seed: int) -> Path:
        from persondet.synth import ensure_demo_data

        name = attribute.removesuffix("_root")
        return Path(getattr(ensure_demo_data(seed, extra_sources=(name,) if extra else ()), attribute))

    return root


register(Source("coco", "coco_root", ("coco_split",), _imported("persondet.prepare", "read_coco_source"),
                _demo("coco_root"), _imported("persondet.prepare", "check_coco_root")))
register(Source("cuhk", "cuhk_root", ("cuhk_split",), _imported("persondet.prepare", "read_cuhk_source"),
                _demo("cuhk_root"), _imported("persondet.prepare", "check_cuhk_root")))
register(Source("citypersons", "citypersons_root", ("citypersons_split", "citypersons_subset"),
                _imported("persondet.formats.citypersons", "read_citypersons"), _demo("citypersons_root", True),
                _imported("persondet.formats.citypersons", "check_root")))
register(Source("crowdhuman", "crowdhuman_root", ("crowdhuman_split", "crowdhuman_box"),
                _imported("persondet.formats.crowdhuman", "read_crowdhuman"), _demo("crowdhuman_root", True),
                _imported("persondet.formats.crowdhuman", "check_root")))


# ------------------------------------------------------------------------------------------------- mixes
def mix_problem(mix: str) -> str:
    """Why ``mix`` is not a mix of registered sources ('' when it is one)."""
    tokens = [t.strip() for t in str(mix).split("+")]
    unknown = [t for t in tokens if t not in SOURCES]
    if unknown:
        return f"{unknown[0]!r} is not a source (sources: {', '.join(SOURCES)}; a mix joins them with '+')"
    if len(set(tokens)) != len(tokens):
        return "a source is named twice"
    return ""


def mix_sources(mix: str) -> tuple[str, ...]:
    """The sources ``mix`` names, in registry (canonical) order; a PersondetError when it is no mix."""
    problem = mix_problem(mix)
    if problem:
        raise PersondetError(f"mix={mix!r}: {problem}")
    named = {t.strip() for t in mix.split("+")}
    return tuple(name for name in SOURCES if name in named)


def mix_name(mix: str) -> str:
    """The canonical spelling of ``mix`` (``cuhk+coco`` -> ``coco+cuhk``)."""
    return "+".join(mix_sources(mix))


def is_merged(mix: str) -> bool:
    """Merged data: a mix of at least two registered sources (``dataset_mix`` as logged, any order)."""
    return len({t.strip() for t in str(mix).split("+")} & set(SOURCES)) >= 2


def mix_sort_key(mix: str) -> tuple:
    """Single sources first, in registry order, then mixes by size; unknown names last."""
    tokens = [t.strip() for t in str(mix).split("+")]
    if any(t not in SOURCES for t in tokens):
        return (1, 0, (), mix)
    order = list(SOURCES)
    return (0, len(tokens), tuple(sorted(order.index(t) for t in tokens)), mix)


# ------------------------------------------------------------------------------------- the person category
class PersonCategoryError(PersondetError):
    """No category, or more than one, is the person category by the rule."""

    def __init__(self, where: str, problem: str, wanted: str, categories: Sequence[Mapping], hint: str = ""):
        self.problem, self.wanted = problem, wanted  # e.g. "no category", "named 'person'"
        listing = ", ".join(f"{c.get('id')}:{c.get('name')}" for c in categories) or "none"
        super().__init__(f"{where}: {problem} {wanted} (categories: {listing}){hint}")


def person_category_id(categories: Sequence[Any], wanted: str | int = "person", where: str = "data",
                       only_category: bool = False, setting: str = "") -> int:
    """The id of the person category by the one rule (module docstring); ``only_category`` for training
    files.  ``setting`` names the option that chooses the category, for the error message."""
    cats = [c for c in categories if isinstance(c, Mapping)]
    text = str(wanted).strip()
    if re.fullmatch(r"-?\d+", text):
        what, matches = f"with id {text}", [c for c in cats if c.get("id") == int(text)]
    else:
        what = f"named {text!r}"
        matches = [c for c in cats if str(c.get("name", "")).strip().lower() == text.lower()]
    if len(matches) == 1:
        return int(matches[0]["id"])
    if not matches and only_category and len(cats) == 1:
        return int(cats[0]["id"])
    hint = f"; set {setting} to the person category's name or id" if setting else ""
    raise PersonCategoryError(where, "no category" if not matches else "more than one category", what, cats, hint)


# ------------------------------------------------------------------------------------------- person boxes
def is_ignore_region(annotation: Mapping[str, Any]) -> bool:
    """A region that must not be scored or learnt: ``ignore: 1`` (CityPersons' convention), or
    ``extra.ignore: 1`` as CrowdHuman-style files nest it."""
    return bool(annotation.get("ignore", 0) or (annotation.get("extra") and _nested_ignore(annotation["extra"])))


def is_person_box(annotation: Mapping[str, Any]) -> bool:
    """A box around one person (a training box, an ``object`` in the statistics and in evaluation): neither
    a crowd region (``iscrowd: 1``) nor an ignore region (``is_ignore_region``).  Written out rather than
    calling it: at full scale prepare asks this of 0.7 M boxes, and a plain box is decided without a call."""
    return not (annotation.get("iscrowd", 0) or annotation.get("ignore", 0)
                or (annotation.get("extra") and _nested_ignore(annotation["extra"])))


def _nested_ignore(extra: Any) -> bool:
    return isinstance(extra, abc.Mapping) and bool(extra.get("ignore", 0))


# ---------------------------------------------------------------------------------------------- image paths
def recorded_roots(dataset: Mapping[str, Any]) -> dict[str, str] | None:
    """The source roots a prepared set records (None for a plain COCO file)."""
    return (dataset.get("persondet") or {}).get("roots") or None


def image_path(image: Mapping[str, Any], roots: Mapping[str, str] | None, base: str | Path = ".",
               where: str = "data") -> Path:
    """Where an image of a COCO file lives, by the one rule (module docstring): ``roots[source] / rest``
    with a prepared set's ``roots``, else ``base / file_name``.  A file name leaving its folder is an
    UnsafePathError naming ``where`` (the annotation file) and the image id."""
    file_name = image.get("file_name", "")
    if not roots:
        return Path(base) / safe_relative_path(file_name, f"{where}: image {image.get('id')}")
    source, _, rest = str(file_name).partition("/")
    if source not in roots or not rest:
        raise PersondetError(f"{where}: image {image.get('id')} file_name {file_name!r}: "
                             f"no root recorded for source {source!r} (roots: {', '.join(roots)})")
    return Path(roots[source]) / safe_relative_path(rest, f"{where}: image {image.get('id')}")
