"""The one inference path (persondet.inference): results that do not depend on the batch size, planned by
the detector's own transform, the same on a DDP shard as in one process (CPU, a real small detector)."""

from __future__ import annotations

import json

import pytest
import torch

import evalkit
from persondet.inference import ImageFiles, padded_shape, plan_batches, predict
from persondet.metrics import coco_metrics


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Twelve images of different sizes (they resize to several shapes) and an untrained small detector
    that emits boxes everywhere (score threshold 0)."""
    root = tmp_path_factory.mktemp("mixed")
    annotations = evalkit.write_test_set(root, n_images=12, seed=3)
    dataset = json.loads(annotations.read_text())
    images = ImageFiles([(im["id"], root / "images" / im["file_name"]) for im in dataset["images"]])
    torch.manual_seed(0)
    detector = evalkit.untrained_detector(seed=1).detector.eval()
    return {"dataset": dataset, "images": images, "detector": detector}


def _by_image(detections):
    out = {}
    for d in detections:
        out.setdefault(d["image_id"], []).append(d["bbox"] + [d["score"]])
    return out


def test_ap50_is_the_same_at_batch_1_and_8_on_mixed_image_sizes(mixed):
    torch.set_num_threads(1)
    detector, images, dataset = mixed["detector"], mixed["images"], mixed["dataset"]
    shapes = {padded_shape(detector, im["height"], im["width"]) for im in dataset["images"]}
    assert len(shapes) >= 3  # the set really mixes shapes

    one = predict(detector, images, torch.device("cpu"), batch_size=1, category_id=3)
    eight = predict(detector, images, torch.device("cpu"), batch_size=8, category_id=3)
    assert coco_metrics(dataset, one, 3)["AP50"] == coco_metrics(dataset, eight, 3)["AP50"]
    a, b = _by_image(one), _by_image(eight)
    assert a.keys() == b.keys() and all(len(a[k]) == len(b[k]) for k in a)
    for k in a:
        assert torch.allclose(torch.tensor(a[k]), torch.tensor(b[k]), atol=0.02)

    # what the rule prevents: torchvision pads a mixed batch to its largest image, and the detections change
    with torch.inference_mode():
        tensors = [images[i][1].float() / 255.0 for i in range(8)]
        padded = detector(tensors)
        alone = [detector([t])[0] for t in tensors]
    assert any(p["boxes"].shape != s["boxes"].shape or not torch.allclose(p["boxes"], s["boxes"], atol=0.02)
               for p, s in zip(padded, alone))


def test_batches_hold_only_images_padded_to_one_shape(mixed):
    detector, images, dataset = mixed["detector"], mixed["images"], mixed["dataset"]
    size = {im["id"]: (im["height"], im["width"]) for im in dataset["images"]}
    batches = plan_batches(detector, images, range(len(images)), batch_size=4)
    assert sorted(p for batch in batches for p in batch) == list(range(len(images)))
    assert all(1 <= len(batch) <= 4 for batch in batches)
    for batch in batches:
        assert len({padded_shape(detector, *size[images.items[p][0]]) for p in batch}) == 1
    # the planned shape is the one the transform really produces from the pixels
    with torch.inference_mode():
        image = images[0][1].float() / 255.0
        real = detector.transform([image])[0].tensors.shape[-2:]
    assert tuple(real) == padded_shape(detector, *image.shape[-2:])
