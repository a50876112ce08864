"""Bootstrap confidence intervals of COCO AP and AP50 over the evaluated images.

A resample draws the evaluated image ids with replacement; image ``i`` drawn ``w_i`` times
counts ``w_i`` times: each of its detections and each of its ground-truth objects weighs
``w_i`` (0 when not drawn). COCOeval.evaluate() runs once (its per-image matches do not depend
on the other images); the accumulation is redone here for many weight vectors at once:

- ``class_tables(coco_eval)``: from ``evalImgs`` (area "all", ``maxDets`` 100), per category
  its detections in COCOeval.accumulate's order (images in ``params.imgIds`` order, each cut
  to 100 detections, then a stable sort by descending score), their true/false-positive flags
  at each IoU threshold and each image's count of non-ignored objects;
- ``weighted_precision(tables, weights (B, I))``: COCO's interpolated precision at the 101
  recall points, ``(B, T, R, K)``, -1 for a category without (weighted) objects, as
  ``COCOeval.eval["precision"][:, :, :, 0, -1]``; with all weights 1 it equals it exactly;
- ``ap_from_precision``: AP (mean over T, R and the categories with objects) and AP50
  (IoU 0.5), as ``COCOeval.summarize``; -1 when no category has objects;
- ``bootstrap_ci(coco_eval)``: 95% percentile intervals of AP and AP50 over 1,000 resamples
  (seed 0): ``{"AP_ci95": [low, high], "AP50_ci95": [low, high]}``.

Weighted accumulation. Along a category's score-ordered detections, with ``w_d`` the weight of
detection ``d``'s image, COCOeval's cumulative true and false positives become weighted sums
``TP_j = sum_{d <= j} w_d tp_d``, ``FP_j = sum_{d <= j} w_d fp_d`` and its object count
``N = sum_i w_i n_i``. Precision at recall point ``r`` is ``max_{j >= j_r} TP_j / (TP_j + FP_j
+ eps)`` with ``j_r`` the first position where ``TP_j / N >= r``. That first position is a true
positive of positive weight (or position 0 when ``r = 0``), and the maximum over a tail that
starts at a true positive is reached at a true positive (a false or ignored detection never
raises precision), so only the true positives' positions are kept: ``(B, J)`` arrays, ``J``
the category's true positives, instead of ``(B, D)`` over every detection. ``j_r`` is found
in integers: the least ``c`` with ``c / N >= r`` in float64 (as COCOeval divides), then a
search for ``TP_j >= c`` in one flat sorted array (row ``b`` offset by ``b * big``).

Cost: ``O(B * D)`` per category for the weighted running count of detections plus
``O(B * T * J * log)`` for the searches; detections are processed in chunks of resamples.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from pycocotools.cocoeval import COCOeval

__all__ = [
    "paired_difference_ci",
    "resampled_ap",
    "ClassTable",
    "ap_from_precision",
    "bootstrap_ci",
    "class_tables",
    "resample_weights",
    "weighted_precision",
]

EPS = np.spacing(1)  # COCOeval's guard in tp / (tp + fp + eps)
RESAMPLES = 1000  # bootstrap resamples
SEED = 0  # numpy Generator seed of the resamples
LEVEL = 0.95  # central interval (percentile method)
CHUNK = 2_000_000  # resamples x detections per chunk (memory: a few (b, D) int64 arrays)


@dataclass(frozen=True)
class ClassTable:
    """One category's detections in COCOeval.accumulate's order and its objects per image.

    Attributes:
        image: (D,) index in ``params.imgIds`` of each detection's image.
        tp: (T, D) bool, matched to a non-ignored object at IoU threshold t.
        counted: (T, D) bool, not ignored at threshold t (true or false positive).
        objects: (I,) int, non-ignored objects of the category in each image.
    """

    image: np.ndarray
    tp: np.ndarray
    counted: np.ndarray
    objects: np.ndarray


def class_tables(coco_eval: COCOeval, *, max_det: int = 100, area: str = "all") -> list[ClassTable]:
    """Per-category tables (``params.catIds`` order) of a COCOeval after ``evaluate()``."""
    p = coco_eval.params
    if not coco_eval.evalImgs:
        raise ValueError("class_tables: run COCOeval.evaluate() first (evalImgs is empty)")
    if max_det not in p.maxDets or area not in p.areaRngLbl:
        raise ValueError(f"class_tables: maxDets {p.maxDets} / areas {p.areaRngLbl} lack "
                         f"{max_det} / {area!r}")  # fmt: skip
    num_t, num_i, num_a = len(p.iouThrs), len(p.imgIds), len(p.areaRng)
    a = p.areaRngLbl.index(area)
    tables = []
    for k in range(len(p.catIds)):
        start = (k * num_a + a) * num_i
        evals = [(i, e) for i, e in enumerate(coco_eval.evalImgs[start : start + num_i]) if e]
        objects = np.zeros(num_i, dtype=np.int64)
        if not evals:
            empty = np.zeros((num_t, 0), dtype=bool)
            tables.append(ClassTable(np.zeros(0, dtype=np.int64), empty, empty, objects))
            continue
        for i, e in evals:
            objects[i] = np.count_nonzero(np.asarray(e["gtIgnore"]) == 0)
        scores = np.concatenate([np.asarray(e["dtScores"][:max_det], float) for _, e in evals])
        image = np.concatenate([np.full(len(e["dtScores"][:max_det]), i) for i, e in evals])
        match = np.concatenate([e["dtMatches"][:, :max_det] for _, e in evals], axis=1)
        ignore = np.concatenate([e["dtIgnore"][:, :max_det] for _, e in evals], axis=1)
        order = np.argsort(-scores, kind="mergesort")  # as COCOeval.accumulate
        counted = np.logical_not(ignore[:, order])
        tp = np.logical_and(match[:, order], counted)
        tables.append(ClassTable(image[order].astype(np.int64), tp, counted, objects))
    return tables


def _least_counts(rec_thrs: np.ndarray, n: np.ndarray) -> np.ndarray:
    """(B, R): the least integer ``c`` with ``c / n >= r`` in float64, per count ``n`` (B,)."""
    n = n[:, None].astype(np.float64)
    c = np.maximum(np.floor(rec_thrs[None, :] * n) - 1, 0)
    for _ in range(3):  # floor(r n) - 1 <= c <= floor(r n) + 1 despite rounding
        c = np.where(c / n < rec_thrs[None, :], c + 1, c)
    return c.astype(np.int64)


def _class_precision(table: ClassTable, weights: np.ndarray, rec_thrs: np.ndarray) -> np.ndarray:
    """(B, T, R) interpolated precision of one category, -1 where it has no objects."""
    num_b, num_t, num_r = len(weights), table.tp.shape[0], len(rec_thrs)
    out = np.full((num_b, num_t, num_r), -1.0)
    n = weights @ table.objects  # (B,) weighted object count
    has = n > 0
    if not has.any():
        return out
    w, n = weights[has], n[has]
    nb = len(w)
    wd = w[:, table.image]  # (b, D) weight of each detection
    least = _least_counts(rec_thrs, n)  # (b, R)
    rows = np.arange(nb)[:, None]
    counted_cache: dict[bytes, np.ndarray] = {}
    for t in range(num_t):
        pos = np.flatnonzero(table.tp[t])  # (J,) true positives' positions
        if pos.size == 0:
            out[has, t] = 0.0  # no true positive: precision 0 at every recall point
            continue
        key = table.counted[t].tobytes()
        if key not in counted_cache:  # running count of counted detections, (b, D)
            counted_cache[key] = np.cumsum(wd * table.counted[t], axis=1)
        tp = np.cumsum(wd[:, pos], axis=1)  # (b, J)
        fp = counted_cache[key][:, pos] - tp
        pr = tp / (fp.astype(np.float64) + tp + EPS)
        pr = np.maximum.accumulate(pr[:, ::-1], axis=1)[:, ::-1]  # max over the tail
        num_j = pos.size
        big = int(max(tp[:, -1].max(), least.max())) + 2
        flat = (rows * big + tp).ravel()  # sorted: rows in order, each non-decreasing
        first = np.searchsorted(flat, (rows * big + least).ravel(), side="left")
        first = first.reshape(nb, num_r) - rows * num_j  # index within the row
        inside = first < num_j
        picked = pr[rows, np.minimum(first, num_j - 1)]
        out[has, t] = np.where(inside, picked, 0.0)
    return out


def weighted_precision(
    tables: list[ClassTable], weights: np.ndarray, rec_thrs: np.ndarray | None = None
) -> np.ndarray:
    """Interpolated precision (B, T, R, K) for image weights (B, I) (rows: resamples).

    ``rec_thrs`` (R,) defaults to COCO's 101 points ``0, 0.01, ..., 1``. Entry ``[b, t, r,
    k]`` is COCOeval's ``precision[t, r, k, area, maxDet]`` on the data where image ``i``
    counts ``weights[b, i]`` times; -1 where category ``k`` has no objects in resample ``b``.
    """
    if rec_thrs is None:
        rec_thrs = np.linspace(0.0, 1.00, 101)  # as pycocotools' Params
    weights = np.asarray(weights, dtype=np.int64)
    if weights.ndim != 2:
        raise ValueError(f"weights: expected shape (B, I), got {weights.shape}")
    for k, t in enumerate(tables):
        if len(t.objects) != weights.shape[1]:
            raise ValueError(f"tables[{k}] has {len(t.objects)} images, weights {weights.shape}")
    if not tables:
        return np.full((len(weights), 0, len(rec_thrs), 0), -1.0)
    return np.stack([_class_precision(t, weights, rec_thrs) for t in tables], axis=-1)


def ap_from_precision(
    precision: np.ndarray, iou_thrs: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(AP (B,), AP50 (B,)) from precision (B, T, R, K), as COCOeval.summarize: the mean over
    the entries > -1 (all thresholds, resp. IoU 0.5); -1 where no category has objects."""
    if iou_thrs is None:
        iou_thrs = np.linspace(0.5, 0.95, 10)
    t50 = int(np.flatnonzero(np.isclose(iou_thrs, 0.5))[0])

    def mean(p: np.ndarray) -> np.ndarray:
        valid = p > -1
        count = valid.reshape(len(p), -1).sum(1)
        total = np.where(valid, p, 0.0).reshape(len(p), -1).sum(1)
        return np.where(count > 0, total / np.maximum(count, 1), -1.0)

    return mean(precision), mean(precision[:, t50 : t50 + 1])


def resample_weights(num_images: int, resamples: int = RESAMPLES, seed: int = SEED) -> np.ndarray:
    """(resamples, num_images) int: how often each image is drawn, ``num_images`` draws each."""
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, num_images, size=(resamples, num_images))
    offsets = np.arange(resamples)[:, None] * num_images
    counts = np.bincount((draws + offsets).ravel(), minlength=resamples * num_images)
    return counts.reshape(resamples, num_images)


def resampled_ap(
    coco_eval: COCOeval, *, resamples: int = RESAMPLES, seed: int = SEED, max_det: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """(AP (B,), AP50 (B,)) over ``resamples`` bootstrap resamples of the evaluated images
    (-1 where a resample has no objects). The same ``seed`` and image list give the same
    resamples: two evaluations on one image list are paired draw by draw."""
    p = coco_eval.params
    tables = class_tables(coco_eval, max_det=max_det)
    weights = resample_weights(len(p.imgIds), resamples, seed)
    rec_thrs, iou_thrs = np.asarray(p.recThrs), np.asarray(p.iouThrs)
    detections = max(sum(len(t.image) for t in tables), 1)
    step = max(1, CHUNK // detections)
    ap, ap50 = [], []
    for s in range(0, resamples, step):
        a, a50 = ap_from_precision(weighted_precision(tables, weights[s : s + step], rec_thrs),
                                   iou_thrs)  # fmt: skip
        ap.append(a)
        ap50.append(a50)
    return np.concatenate(ap), np.concatenate(ap50)


def paired_difference_ci(
    eval_a: COCOeval, eval_b: COCOeval, *, resamples: int = RESAMPLES, seed: int = SEED,
    level: float = LEVEL,
) -> dict[str, float | list[float] | None]:  # fmt: skip
    """AP(a) - AP(b) and AP50(a) - AP50(b) with 95% paired-bootstrap intervals.

    Both evaluations must cover the same images in the same order (``params.imgIds``); each
    resample draws the same images for both, so what the two share (hard images, easy ones)
    cancels. Returns ``{"dAP", "dAP_ci95", "dAP50", "dAP50_ci95", "significant"}``, where
    significant means the AP50 interval excludes 0.
    """
    ids_a, ids_b = list(eval_a.params.imgIds), list(eval_b.params.imgIds)
    if ids_a != ids_b:
        raise ValueError(f"paired bootstrap: the evaluations cover other images ({len(ids_a)} "
                         f"and {len(ids_b)} ids, or another order)")  # fmt: skip
    a, a50 = resampled_ap(eval_a, resamples=resamples, seed=seed)
    b, b50 = resampled_ap(eval_b, resamples=resamples, seed=seed)
    full_a = ap_from_precision(weighted_precision(class_tables(eval_a), np.ones((1, len(ids_a)))))
    full_b = ap_from_precision(weighted_precision(class_tables(eval_b), np.ones((1, len(ids_b)))))
    tail = 100 * (1 - level) / 2
    out: dict[str, float | list[float] | None] = {}
    for key, x, y, fa, fb in (("dAP", a, b, full_a[0], full_b[0]),
                              ("dAP50", a50, b50, full_a[1], full_b[1])):  # fmt: skip
        ok = (x > -1) & (y > -1)
        out[key] = float(fa[0] - fb[0])
        diff = x[ok] - y[ok]
        out[f"{key}_ci95"] = (
            [float(v) for v in np.percentile(diff, [tail, 100 - tail])] if diff.size else None
        )
    ci = out["dAP50_ci95"]
    out["significant"] = bool(ci is not None and (ci[0] > 0 or ci[1] < 0))
    return out


def bootstrap_ci(
    coco_eval: COCOeval,
    *,
    resamples: int = RESAMPLES,
    seed: int = SEED,
    level: float = LEVEL,
    max_det: int = 100,
) -> dict[str, list[float] | None]:
    """Percentile intervals ``{"AP_ci95": [low, high], "AP50_ci95": [low, high]}`` of a
    COCOeval after ``evaluate()`` (None when no resample has objects); the key names the
    default level 0.95 whatever ``level`` is."""
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    ap, ap50 = resampled_ap(coco_eval, resamples=resamples, seed=seed, max_det=max_det)
    tail = 100 * (1 - level) / 2
    out: dict[str, list[float] | None] = {}
    for name, values in (("AP_ci95", ap), ("AP50_ci95", ap50)):
        defined = values[values > -1]
        out[name] = (
            [float(v) for v in np.percentile(defined, [tail, 100 - tail])] if defined.size else None
        )
    return out
