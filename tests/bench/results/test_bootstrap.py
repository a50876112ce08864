"""bench.results.bootstrap: the weighted accumulation against pycocotools, and the intervals."""

from __future__ import annotations

import numpy as np
import pytest

from bench.results import bootstrap as bs
from bench.results.coco_eval import evaluate_coco

# (seed, crowd, class without objects, tied scores)
CASES = [(s, s % 2 == 0, s % 3 != 1, s % 4 < 2) for s in range(8)]


def coco_eval_of(gt, dets):
    result = evaluate_coco(gt, dets, keep_eval=True)
    return result, result["coco_eval"]


def reference_precision(coco_eval) -> np.ndarray:
    """COCOeval's precision (T, R, K) at area "all", 100 detections."""
    return coco_eval.eval["precision"][:, :, :, 0, -1]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_unit_weights_reproduce_pycocotools_exactly(coco_case, case):
    seed, crowd, empty, ties = case
    gt, dets = coco_case(seed, crowd=crowd, class_without_objects=empty, ties=ties)
    assert not any(d["image_id"] == gt["images"][-1]["id"] for d in dets)  # an image without
    result, ev = coco_eval_of(gt, dets)
    ones = np.ones((1, len(ev.params.imgIds)), dtype=np.int64)
    precision = bs.weighted_precision(bs.class_tables(ev), ones)
    assert precision.shape == (1, 10, 101, len(gt["categories"]))
    np.testing.assert_array_equal(precision[0], reference_precision(ev))
    if empty:
        assert (precision[0, :, :, -1] == -1).all()  # the class without objects is left out
    ap, ap50 = bs.ap_from_precision(precision)
    assert abs(ap[0] - result["AP"]) <= 1e-9 and abs(ap50[0] - result["AP50"]) <= 1e-9


def test_no_detections_and_no_objects(coco_case):
    gt, _ = coco_case(1, crowd=False)
    result, ev = coco_eval_of(gt, [])
    precision = bs.weighted_precision(bs.class_tables(ev), np.ones((1, len(gt["images"]))))
    np.testing.assert_array_equal(precision[0], reference_precision(ev))
    assert bs.ap_from_precision(precision)[0][0] == result["AP"] == 0.0
    no_objects = {**gt, "annotations": []}
    result, ev = coco_eval_of(no_objects, coco_case(1)[1])
    precision = bs.weighted_precision(bs.class_tables(ev), np.ones((1, len(gt["images"]))))
    assert (precision == -1).all() and result["AP"] == -1.0
    assert [a[0] for a in bs.ap_from_precision(precision)] == [-1.0, -1.0]
    assert bs.bootstrap_ci(ev, resamples=20) == {"AP_ci95": None, "AP50_ci95": None}


@pytest.mark.parametrize("seed", [0, 3, 5])
def test_integer_weights_equal_duplicated_images(coco_case, seed):
    """Weight w of an image == the image copied w times (distinct scores: no tie order)."""
    gt, dets = coco_case(seed, ties=False)
    _, ev = coco_eval_of(gt, dets)
    tables = bs.class_tables(ev)
    rng = np.random.default_rng(seed)
    for _ in range(4):
        w = rng.integers(0, 4, len(gt["images"]))
        copy = {"images": [], "categories": gt["categories"], "annotations": []}
        copied_dets = []
        for img, n in zip(gt["images"], w):
            for _ in range(n):
                new_id = 1000 + len(copy["images"])
                copy["images"].append({**img, "id": new_id})
                mine = [a for a in gt["annotations"] if a["image_id"] == img["id"]]
                start = len(copy["annotations"]) + 1
                copy["annotations"] += [
                    {**a, "id": start + k, "image_id": new_id} for k, a in enumerate(mine)
                ]
                copied_dets += [
                    {**d, "image_id": new_id} for d in dets if d["image_id"] == img["id"]
                ]
        result, ev_copy = coco_eval_of(copy, copied_dets)
        precision = bs.weighted_precision(tables, w[None])
        np.testing.assert_allclose(precision[0], reference_precision(ev_copy), rtol=0, atol=1e-12)
        ap, ap50 = bs.ap_from_precision(precision)
        assert ap[0] == pytest.approx(result["AP"], abs=1e-12)
        assert ap50[0] == pytest.approx(result["AP50"], abs=1e-12)


def test_a_class_without_objects_in_a_resample_leaves_the_mean():
    """Image 1: a found square; image 2: a missed disc. Dropping image 2 drops the disc."""
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": 1, "name": "square"}, {"id": 2, "name": "disc"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20]},
            {"id": 2, "image_id": 2, "category_id": 2, "bbox": [10, 10, 20, 20]},
        ],
    }
    dets = [{"image_id": 1, "category_id": 1, "bbox": [10, 10, 20, 20], "score": 0.9}]
    _, ev = coco_eval_of(gt, dets)
    weights = np.array([[1, 1], [1, 0], [0, 1], [3, 1], [0, 0]])
    ap, ap50 = bs.ap_from_precision(bs.weighted_precision(bs.class_tables(ev), weights))
    np.testing.assert_allclose(ap, [0.5, 1.0, 0.0, 0.5, -1.0])
    np.testing.assert_allclose(ap50, ap)


def test_resample_weights():
    w = bs.resample_weights(7, resamples=50, seed=0)
    assert w.shape == (50, 7) and (w.sum(1) == 7).all() and (w >= 0).all()
    np.testing.assert_array_equal(w, bs.resample_weights(7, resamples=50, seed=0))
    assert not np.array_equal(w, bs.resample_weights(7, resamples=50, seed=1))


def test_bootstrap_intervals(coco_case):
    gt, dets = coco_case(2, images=40, crowd=False)
    result, ev = coco_eval_of(gt, dets)
    ci = bs.bootstrap_ci(ev)
    assert set(ci) == {"AP_ci95", "AP50_ci95"}
    for name in ("AP", "AP50"):
        low, high = ci[f"{name}_ci95"]
        assert 0 <= low < result[name] < high <= 1, (name, low, result[name], high)
    assert ci == bs.bootstrap_ci(ev)  # fixed seed
    # Chunking does not change the result.
    small = bs.CHUNK
    try:
        bs.CHUNK = 50
        assert bs.bootstrap_ci(ev) == ci
    finally:
        bs.CHUNK = small
    # Same detections on 10x the images (every image copied): a narrower interval.
    n = len(gt["images"])
    big = {"images": [], "categories": gt["categories"], "annotations": []}
    big_dets = []
    for c in range(10):
        big["images"] += [{**im, "id": im["id"] + 1000 * c} for im in gt["images"]]
        big["annotations"] += [{**a, "id": a["id"] + 1000 * c, "image_id": a["image_id"] + 1000 * c}
                               for a in gt["annotations"]]  # fmt: skip
        big_dets += [{**d, "image_id": d["image_id"] + 1000 * c} for d in dets]
    _, ev_big = coco_eval_of(big, big_dets)
    assert len(ev_big.params.imgIds) == 10 * n
    wide, narrow = ci["AP50_ci95"], bs.bootstrap_ci(ev_big)["AP50_ci95"]
    assert narrow[1] - narrow[0] < 0.6 * (wide[1] - wide[0])


def _perfect(gt):
    """One detection per object, on it, with distinct scores."""
    return [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "score": 0.5 + 0.001 * a["id"]}
        for a in gt["annotations"]
    ]  # fmt: skip


def test_perfect_detections_have_a_zero_width_interval(coco_case):
    gt, _ = coco_case(4, crowd=False)
    dets = _perfect(gt)
    _, ev = coco_eval_of(gt, dets)
    assert bs.bootstrap_ci(ev, resamples=100) == {"AP_ci95": [1.0, 1.0], "AP50_ci95": [1.0, 1.0]}


def test_errors():
    with pytest.raises(ValueError, match="level"):
        bs.bootstrap_ci(None, level=1.5)
    with pytest.raises(ValueError, match="shape"):
        bs.weighted_precision([], np.ones(3))


def test_paired_difference(coco_case):
    gt, dets = coco_case(2, images=40, crowd=False)
    result, ev = coco_eval_of(gt, dets)
    same = bs.paired_difference_ci(ev, ev, resamples=200)
    assert same["dAP50"] == 0.0 and same["dAP50_ci95"] == [0.0, 0.0]
    assert not same["significant"]
    perfect = _perfect(gt)
    best, ev_best = coco_eval_of(gt, perfect)
    diff = bs.paired_difference_ci(ev_best, ev, resamples=200)
    assert diff["dAP50"] == pytest.approx(best["AP50"] - result["AP50"], abs=1e-12)
    low, high = diff["dAP50_ci95"]
    assert 0 < low <= diff["dAP50"] <= high and diff["significant"]
    _, ev_other = coco_eval_of(gt, dets[: len(dets) // 2])
    ev_other.params.imgIds = list(reversed(ev_other.params.imgIds))
    with pytest.raises(ValueError, match="other images"):
        bs.paired_difference_ci(ev, ev_other)
