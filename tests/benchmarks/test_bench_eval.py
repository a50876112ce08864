"""Benchmark: COCO bbox evaluation (bench.results.coco_eval.evaluate_coco) of a few hundred
detections.

Synthetic ground truth: 40 images of 256 x 256, 3 categories, 5 objects per image (200 boxes
from 8 to 120 px, so every COCO area range is populated). Detections: each object found
with its box jittered by up to 15% of its size (score in [0.3, 1)), plus 2 false positives
per image (score in [0, 0.5)): 280 detections. The timed call is the whole evaluation from
the annotation dict (index build, matching, accumulate, summarise), as `bench eval` runs it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from pytest_benchmark.fixture import BenchmarkFixture

from bench.results.coco_eval import evaluate_coco

IMAGES, SIZE, OBJECTS_PER_IMAGE, FALSE_POSITIVES = 40, 256, 5, 2
CATEGORIES = [{"id": 1, "name": "a"}, {"id": 4, "name": "b"}, {"id": 9, "name": "c"}]
ROUNDS = 10


def _synthetic(seed: int = 0) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """(COCO annotations dict, list of COCO detections), deterministic for ``seed``."""
    rng = np.random.default_rng(seed)
    cat_ids = [c["id"] for c in CATEGORIES]
    images, anns, dets = [], [], []
    for img in range(1, IMAGES + 1):
        images.append({"id": img, "width": SIZE, "height": SIZE, "file_name": f"{img}.png"})
        for _ in range(OBJECTS_PER_IMAGE):
            w, h = rng.uniform(8, 120, size=2)
            x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            cat = int(rng.choice(cat_ids))
            box = [float(x), float(y), float(w), float(h)]
            anns.append(
                {"id": len(anns) + 1, "image_id": img, "category_id": cat, "bbox": box,
                 "area": box[2] * box[3], "iscrowd": 0}
            )  # fmt: skip
            jitter = rng.uniform(-0.15, 0.15, size=4) * np.array([w, h, w, h])
            found = [float(v) for v in np.array(box) + jitter]
            found[2:] = [max(v, 1.0) for v in found[2:]]
            dets.append({"image_id": img, "category_id": cat, "bbox": found,
                         "score": float(rng.uniform(0.3, 1.0))})  # fmt: skip
        for _ in range(FALSE_POSITIVES):
            w, h = rng.uniform(8, 80, size=2)
            x, y = rng.uniform(0, SIZE - w), rng.uniform(0, SIZE - h)
            dets.append({"image_id": img, "category_id": int(rng.choice(cat_ids)),
                         "bbox": [float(x), float(y), float(w), float(h)],
                         "score": float(rng.uniform(0.0, 0.5))})  # fmt: skip
    gt = {"images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, dets


def test_bench_evaluate_coco(benchmark: BenchmarkFixture) -> None:
    gt, dets = _synthetic()
    benchmark.group = f"evaluate_coco {IMAGES} images, {len(dets)} detections"
    benchmark.extra_info.update(device="cpu", images=IMAGES, detections=len(dets))
    result = benchmark.pedantic(
        evaluate_coco, args=(gt, dets), rounds=ROUNDS, iterations=1, warmup_rounds=1
    )
    assert result["num_images"] == IMAGES and result["num_detections"] == len(dets)
    # every object is found with a jittered box: a clearly positive AP, far from perfect
    assert 0.2 < result["AP"] < 0.9 and result["AP50"] > result["AP75"]
