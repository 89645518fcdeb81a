"""Built-in demo data in the real on-disk formats, generated from a seed (docs/DATA.md, "Demo data").

One module per source: ``coco`` (COCO 2017 JSON with the 80 categories, polygons, RLE crowd regions),
``cuhk`` (CUHK-SYSU ``.mat`` files as scipy reads the real ones: 1-element strings, ``idlocate`` uint8 or
uint16 per entry, empty gallery ``idlocate``, zero-size boxes and boxes past the border), ``inhouse`` (a COCO
test set whose person category has another id and name), ``citypersons`` (``anno_*.mat`` as MATLAB writes
it) and ``crowdhuman`` (``.odgt``).  ``draw`` holds the shared figure drawing; people are high-contrast
stylised figures with a tight box, so a small detector learns them on CPU in minutes.  ``tree`` writes
the cached demo tree and holds the ``persondet-demo-data`` CLI.

``cheap_images=True`` writes the same annotations with one solid-colour image per size, hard-linked to
every file name: full-scale trees for benchmarks in minutes.  Pure numpy / PIL / scipy: no torch, no mlflow.
"""

from persondet.synth.citypersons import write_citypersons
from persondet.synth.coco import COCO_CATEGORIES, write_coco
from persondet.synth.crowdhuman import write_crowdhuman
from persondet.synth.cuhk import write_cuhk
from persondet.synth.inhouse import INHOUSE_CATEGORIES, INHOUSE_PERSON_ID, write_inhouse
from persondet.synth.tree import (EXTRA_SOURCES, FORMAT_VERSION, MARKER, DemoData, DemoProfile, build_demo_tree, cli,
                                  ensure_demo_data)

__all__ = ["COCO_CATEGORIES", "EXTRA_SOURCES", "FORMAT_VERSION", "INHOUSE_CATEGORIES", "INHOUSE_PERSON_ID", "MARKER",
           "DemoData", "DemoProfile", "build_demo_tree", "cli", "ensure_demo_data", "write_citypersons",
           "write_coco", "write_crowdhuman", "write_cuhk", "write_inhouse"]
