"""Shared fixtures of the bench tests: random COCO ground truth and detections."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

Case = tuple[dict[str, Any], list[dict[str, Any]]]


def random_coco(
    seed: int,
    *,
    images: int = 12,
    classes: int = 4,
    crowd: bool = True,
    class_without_objects: bool = True,
    ties: bool = True,
) -> Case:
    """(ground truth, detections) drawn from ``seed``: 0-5 objects per image (10% crowd when
    ``crowd``; the last class has none when ``class_without_objects``), 0-2 jittered
    detections per object (20% of a random class), 0-4 random boxes per image, no detection
    on the last image; ``ties`` rounds scores to 0.1."""
    rng = np.random.default_rng(seed)
    cats = [{"id": 10 + k, "name": f"c{k}"} for k in range(classes)]
    imgs = [
        {"id": 100 + i, "file_name": f"{i}.png", "width": 200, "height": 200} for i in range(images)
    ]
    with_objects = cats[:-1] if class_without_objects else cats
    anns: list[dict[str, Any]] = []
    dets: list[dict[str, Any]] = []
    for img in imgs:
        for _ in range(rng.integers(0, 6)):
            cat = with_objects[rng.integers(len(with_objects))]["id"]
            (x, y), (w, h) = rng.uniform(0, 150, 2), rng.uniform(5, 60, 2)
            anns.append(
                {"id": len(anns) + 1, "image_id": img["id"], "category_id": cat,
                 "bbox": [x, y, w, h], "area": w * h,
                 "iscrowd": int(crowd and rng.random() < 0.1)}
            )  # fmt: skip
    for img in imgs[:-1]:
        for a in (a for a in anns if a["image_id"] == img["id"]):
            for _ in range(rng.integers(0, 3)):
                x, y, w, h = a["bbox"]
                j = rng.normal(0, 0.15, 4) * [w, h, w, h]
                good = rng.random() < 0.8
                cat = a["category_id"] if good else cats[rng.integers(classes)]["id"]
                box = [x + j[0], y + j[1], max(w + j[2], 1), max(h + j[3], 1)]
                dets.append({"image_id": img["id"], "category_id": cat, "bbox": box,
                             "score": float(rng.random())})  # fmt: skip
        for _ in range(rng.integers(0, 5)):
            (x, y), (w, h) = rng.uniform(0, 150, 2), rng.uniform(5, 60, 2)
            dets.append({"image_id": img["id"], "category_id": cats[rng.integers(classes)]["id"],
                         "bbox": [x, y, w, h], "score": float(rng.random())})  # fmt: skip
    if ties:
        for d in dets:
            d["score"] = round(d["score"], 1)
    gt = {"images": imgs, "categories": cats, "annotations": anns}
    return gt, dets


@pytest.fixture
def coco_case() -> Callable[..., Case]:
    """The factory :func:`random_coco`."""
    return random_coco
