"""Behaviour every registered detector shares, parametrised over ``detectors.DETECTORS``.

Every registered detector is built: a renamed or broken module fails here.
"""

from __future__ import annotations

import math
import time

import pytest
import torch

from bench.results.coco_eval import detections_to_coco, evaluate_coco
from detectors import (
    DETECTORS,
    Detections,
    build_detector,
)
from detectors.backbones import build_hourglass, count_parameters

NAMES = list(DETECTORS)
NUM_CLASSES = 3
SIZE = 64
ANCHOR_FREE = {"cornernet", "centernet", "fcos"}
# (input H, W, anchors per image) at preset="paper", from the papers
PAPER_COUNTS = {
    "retinanet": (512, 512, 49_104),  # 9 x (64^2 + 32^2 + 16^2 + 8^2 + 4^2)
    "ssd": (300, 300, 8_732),  # SSD300
    "yolov3": (416, 416, 10_647),  # 3 x (13^2 + 26^2 + 52^2)
    "cornernet": (511, 511, 0),
    "centernet": (512, 512, 0),
}
# one colour per class, on a grey background
COLOURS = torch.tensor([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.1, 0.1, 1.0]])


def make_batch(
    num_images: int = 2, size: int = SIZE, max_boxes: int = 2, seed: int = 0
) -> tuple[torch.Tensor, list[dict[str, torch.Tensor]]]:
    """Normalised images (N, 3, size, size) with 1..max_boxes disjoint coloured rectangles
    (14..35 px a side; label = colour) and their targets."""
    g = torch.Generator().manual_seed(seed)
    images = 0.5 + 0.05 * torch.randn(num_images, 3, size, size, generator=g)
    targets = []
    for i in range(num_images):
        want = int(torch.randint(1, max_boxes + 1, (1,), generator=g))
        boxes: list[list[int]] = []
        labels: list[int] = []
        for _ in range(100):
            if len(boxes) == want:
                break
            w, h = (int(v) for v in torch.randint(14, 36, (2,), generator=g))
            x = int(torch.randint(0, size - w + 1, (1,), generator=g))
            y = int(torch.randint(0, size - h + 1, (1,), generator=g))
            box = [x, y, x + w, y + h]
            if any(x < o[2] and o[0] < x + w and y < o[3] and o[1] < y + h for o in boxes):
                continue
            label = int(torch.randint(0, NUM_CLASSES, (1,), generator=g))
            images[i, :, y : y + h, x : x + w] = COLOURS[label][:, None, None]
            boxes.append(box)
            labels.append(label)
        targets.append(
            {"boxes": torch.tensor(boxes, dtype=torch.float32), "labels": torch.tensor(labels)}
        )
    return (images - 0.5) / 0.25, targets


def ap50(dets: list[Detections], targets: list[dict[str, torch.Tensor]], size: int) -> float:
    """COCO AP at IoU 0.5 of ``dets`` against ``targets`` (pycocotools, bench.results.coco_eval)."""
    gt: dict = {
        "images": [{"id": i + 1, "width": size, "height": size} for i in range(len(targets))],
        "categories": [{"id": c + 1, "name": f"class{c}"} for c in range(NUM_CLASSES)],
        "annotations": [],
    }
    for i, t in enumerate(targets):
        for (x1, y1, x2, y2), label in zip(t["boxes"].tolist(), t["labels"].tolist()):
            gt["annotations"].append(
                {
                    "id": len(gt["annotations"]) + 1,
                    "image_id": i + 1,
                    "category_id": label + 1,
                    "bbox": [x1, y1, x2 - x1, y2 - y1],
                }
            )
    results = detections_to_coco(
        list(range(1, len(dets) + 1)),
        [d.boxes for d in dets],
        [d.scores for d in dets],
        [d.labels for d in dets],
        list(range(1, NUM_CLASSES + 1)),
    )
    return float(evaluate_coco(gt, results)["AP50"])


def build(name: str, **kwargs: object):
    """build_detector(name, NUM_CLASSES, ...)."""
    return build_detector(name, NUM_CLASSES, **kwargs)


def check_detections(dets: object, sizes: list[tuple[int, int]], max_dets: int) -> None:
    assert isinstance(dets, list) and len(dets) == len(sizes)
    for d, (h, w) in zip(dets, sizes):
        assert isinstance(d, Detections)
        m = len(d)
        assert m <= max_dets <= 100
        assert d.boxes.shape == (m, 4) and d.scores.shape == (m,) and d.labels.shape == (m,)
        assert d.labels.dtype == torch.int64 and d.boxes.is_floating_point()
        assert torch.isfinite(d.boxes).all() and torch.isfinite(d.scores).all()
        if m:
            assert (d.boxes[:, 2] >= d.boxes[:, 0]).all() and (d.boxes[:, 3] >= d.boxes[:, 1]).all()
            assert d.boxes.min() >= 0 and (d.boxes[:, 0::2] <= w).all()
            assert (d.boxes[:, 1::2] <= h).all()
            assert d.labels.min() >= 0 and d.labels.max() < NUM_CLASSES


# ---- the registry itself -------------------------------------------------------------------


def test_registry_lists_every_baseline() -> None:
    assert isinstance(DETECTORS, dict)
    expected = {"cornernet", "centernet", "retinanet", "faster_rcnn", "ssd", "dssd", "yolov3"}
    assert expected | {"fcos"} == set(DETECTORS)
    for name in DETECTORS:
        build_fn = DETECTORS[name]
        assert build_fn.__module__.startswith("detectors.") and build_fn.__name__ == f"build_{name}"


def test_unknown_name_raises_naming_the_choices() -> None:
    with pytest.raises(ValueError, match="unknown detector 'yolo9000'.*retinanet.*faster_rcnn"):
        build_detector("yolo9000", NUM_CLASSES)


@pytest.mark.parametrize("num_classes", [0, -1, 2.5, True], ids=str)
def test_bad_num_classes_raises(num_classes: object) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        build_detector("retinanet", num_classes)  # type: ignore[arg-type]


def test_unknown_preset_raises() -> None:
    with pytest.raises(ValueError, match="preset 'coco'.*synthetic.*paper"):
        build_detector("retinanet", NUM_CLASSES, preset="coco")


# ---- every detector --------------------------------------------------------------------------


@pytest.mark.parametrize("name", NAMES)
def test_builder_rejects_bad_num_classes(name: str) -> None:
    with pytest.raises(ValueError, match="num_classes"):
        DETECTORS[name](0)


@pytest.mark.parametrize("name", NAMES)
def test_bad_images_raise_naming_the_shape(name: str) -> None:
    model = build(name)
    with pytest.raises(ValueError, match=r"\(2, 1, 64, 64\)"):
        model(torch.zeros(2, 1, SIZE, SIZE))
    with pytest.raises(ValueError, match=r"\(3, 64, 64\)"):
        model(torch.zeros(3, SIZE, SIZE))


@pytest.mark.parametrize("name", NAMES)
def test_training_lowers_the_loss_and_decode_is_well_formed(name: str) -> None:
    model = build(name)
    images, targets = make_batch()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    model.train()
    for _ in range(8):
        outputs = model(images)
        assert type(outputs) is dict
        losses = model.loss(outputs, targets)
        assert "loss" in losses and len(losses) > 1
        assert all(k == "loss" or k.startswith("loss_") for k in losses)
        assert all(v.dim() == 0 and math.isfinite(float(v.detach())) for v in losses.values())
        opt.zero_grad()
        losses["loss"].backward()
        opt.step()
        history.append(float(losses["loss"].detach()))
    assert sum(history[-2:]) < sum(history[:2]), history

    model.eval()
    with torch.no_grad():
        train_keys = set(outputs)
        outputs = model(images)
        assert type(outputs) is dict and set(outputs) == train_keys
        sizes = [(SIZE, SIZE), (48, 56)]  # the second is clipped to a smaller image
        check_detections(model.decode(outputs, sizes), sizes, model.max_detections)
        with pytest.raises(ValueError):
            model.loss(outputs, targets[:1])  # one target for two images


@pytest.mark.parametrize("name", NAMES)
def test_anchor_counts_come_from_the_generator(name: str) -> None:
    model = build(name)
    small, large = model.anchors_per_image(SIZE, SIZE), model.anchors_per_image(256, 256)
    assert isinstance(small, int) and isinstance(large, int)
    if name in ANCHOR_FREE:
        assert small == large == 0
        return
    assert 0 < small < large
    images, targets = make_batch()
    with torch.no_grad():
        stats = model.assignment_stats(model(images), targets)
    total = stats["positives"] + stats["negatives"] + stats["ignored"]
    assert total == pytest.approx(small)
    assert 0 < stats["positives"] < stats["negatives"]


@pytest.mark.parametrize("name", sorted(PAPER_COUNTS))
def test_paper_anchor_counts_match_the_literature(name: str) -> None:
    height, width, expected = PAPER_COUNTS[name]
    with torch.device("meta"):
        model = build(name, preset="paper")
        assert model.anchors_per_image(height, width) == expected


@pytest.mark.parametrize("name", NAMES)
def test_every_detector_uses_the_shared_backbone(name: str) -> None:
    with torch.device("meta"):
        shared = count_parameters(build_hourglass("hg104"))
        model = build(name, backbone="hg104", preset="paper")
    assert model.backbone_parameters() == shared
    assert model.head_parameters() > 0


# ---- overfitting a handful of images (slow: the lead decides what runs in CI) ---------------

# (Adam steps, learning rate) per detector to overfit 4 images of 64 px; default (150, 1e-3)
OVERFIT = {"retinanet": (100, 2e-3), "faster_rcnn": (60, 1e-3)}


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_overfits_a_handful_of_images(name: str) -> None:
    model = build(name)
    images, targets = make_batch(num_images=4, seed=1)
    steps, lr = OVERFIT.get(name, (150, 1e-3))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    start = time.perf_counter()
    model.train()
    for _ in range(steps):
        loss = model.loss(model(images), targets)["loss"]
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        dets = model.decode(model(images), [(SIZE, SIZE)] * len(targets))
    score = ap50(dets, targets, SIZE)
    print(f"{name}: AP50 {score:.3f} after {time.perf_counter() - start:.1f} s")
    assert score >= 0.8
