"""TIDE error breakdown of box detections (Bolya et al., "TIDE: A General Toolbox for
Identifying Object Detection Errors", ECCV 2020), at AP50 as TIDE's default.

``tide_errors(gt, detections)`` -> ``{"ap50": base AP50, "dap": {type: dAP50}, "counts":
{type: n}}`` for the six main error types, keys ``cls, loc, both, dupe, bkg, miss``. A dAP is
in AP units (0..1; TIDE prints it x100): the AP50 gained when that type alone is fixed by its
oracle, every other error left as it is, clipped at 0 as TIDE does.

Per image, detections sorted by descending score (top ``max_dets``) are matched greedily to
the unmatched ground truth of their class of highest IoU when it is >= ``t_f`` (0.5). Crowd
objects are ignore regions: an unmatched detection overlapping one of its class by more than
``t_f`` (COCO's crowd IoU: intersection over the detection's area) is left out. Every other
unmatched detection is one error, tested in TIDE's order, with IoU_c / IoU_o its largest IoU
with an object of its own / another class:

1. ``bkg`` when the image has no objects;
2. ``loc`` when ``t_b <= IoU_c <= t_f`` (``t_b`` = 0.1), target: that object;
3. ``cls`` when ``IoU_o >= t_f``, target: that object;
4. ``dupe`` when ``IoU_c >= t_f`` with an object already matched (by a higher score);
5. ``bkg`` when the largest IoU with any object is ``<= t_b``;
6. ``both`` otherwise (``t_b < IoU_o < t_f``, wrong class and poorly localised).

An object never matched is ``miss`` unless a ``cls`` or ``loc`` error targets it.

Oracles (TIDE's section 2.3 and code): ``cls`` / ``loc``: of the errors targeting one unmatched
object, the highest-scoring one (first on ties) becomes a true positive of that object's class
(a class / box correction); the others, and those targeting a matched object, are removed;
``dupe``, ``bkg``, ``both``: the detection is removed; ``miss``: the object is taken out of
its class's object count. AP50 is TIDE's: per class 101-point interpolated precision as COCO
(0 when the class has no objects), averaged over the classes with objects or detections.
Ties in score keep the detections' order (image order, then score order) in every AP, so an
unchanged class gives the same AP before and after a fix.

Differences from COCOeval's AP50: classes with detections but no objects count (as 0), the
``max_dets`` cut is per image rather than per image and class (the same for detections capped
with bench.results.coco_eval), equal IoUs pick the first object, a detection matching a crowd
region at
IoU exactly ``t_f`` is not ignored, and the recall points are ``r / 100`` where COCO's
``linspace`` is a bit off (0.07 vs 0.07000000000000001: a recall of exactly 7/100 reaches it
here, not in COCO). Difference from the tidecv package: an ignored
detection (inside a crowd region) is no error; tidecv classifies it, though it is not in AP.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from pycocotools import mask as mask_utils

from bench.results.coco_eval import load_coco_gt

__all__ = ["ERROR_TYPES", "LABELS", "average_precision", "tide_errors"]

ERROR_TYPES: tuple[str, ...] = ("cls", "loc", "both", "dupe", "bkg", "miss")
LABELS: dict[str, str] = {t: t.capitalize() for t in ERROR_TYPES}  # as TIDE prints them
POS_THRESH = 0.5  # t_f: TIDE's foreground IoU (its default, AP50)
BG_THRESH = 0.1  # t_b: TIDE's background IoU
_TP, _IGNORED = "tp", "ignored"  # detection kinds besides the error types
_RECALLS = np.arange(101) / 100  # TIDE's r / 100 (COCO's linspace differs in the last bit)


def average_precision(scores: np.ndarray, is_tp: np.ndarray, num_gt: int) -> float:
    """101-point interpolated AP (0..1) of one class: ``scores`` (N,), ``is_tp`` (N,) in rank
    order for equal scores (a stable sort keeps it); 0 when ``num_gt`` is 0."""
    if num_gt <= 0 or len(scores) == 0:
        return 0.0
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    tp = np.cumsum(np.asarray(is_tp, dtype=bool)[order])
    precision = tp / np.arange(1, len(tp) + 1)
    precision = np.maximum.accumulate(precision[::-1])[::-1]  # max over higher recalls
    first = np.searchsorted(tp / num_gt, _RECALLS, side="left")
    values = np.where(first < len(tp), precision[np.minimum(first, len(tp) - 1)], 0.0)
    return float(values.mean())


def _mean_ap(cls: np.ndarray, scores: np.ndarray, is_tp: np.ndarray, num_gt: Mapping) -> float:
    """Mean AP over the classes with objects or detections (TIDE's get_mAP); 0 when none."""
    classes = sorted({int(c) for c in cls} | {c for c, n in num_gt.items() if n > 0})
    aps = [average_precision(scores[cls == c], is_tp[cls == c], num_gt.get(c, 0)) for c in classes]
    return float(np.mean(aps)) if aps else 0.0


def _xywh(items: Sequence[Mapping[str, Any]]) -> np.ndarray:
    return np.asarray([it["bbox"] for it in items], dtype=np.float64).reshape(-1, 4)


def _classify_image(dets: list, gts: list, crowd: list, pos: float, bg: float) -> tuple:
    """One image: (kind per detection, target object index or -1, matched flag per object)."""
    n, g = len(dets), len(gts)
    kinds, target, used = [_TP] * n, np.full(n, -1), np.zeros(g, dtype=bool)
    dcls = np.asarray([d["category_id"] for d in dets])
    gcls = np.asarray([a["category_id"] for a in gts])
    iou = np.asarray(mask_utils.iou(_xywh(dets), _xywh(gts), [0] * g)).reshape(n, g)
    same = dcls[:, None] == gcls[None, :]
    cls_iou = np.where(same, iou, 0.0)
    matched = np.zeros(n, dtype=bool)
    free = cls_iou.copy()  # columns of matched objects are zeroed
    for i in range(n):  # greedy, in score order
        if g and free[i].max() >= pos:
            j = int(free[i].argmax())
            matched[i], used[j] = True, True
            free[:, j] = 0.0
    ignored = np.zeros(n, dtype=bool)
    if crowd:
        ccls = np.asarray([a["category_id"] for a in crowd])
        ciou = np.asarray(mask_utils.iou(_xywh(dets), _xywh(crowd), [1] * len(crowd)))
        ciou = ciou.reshape(n, len(crowd))
        ignored = ~matched & (np.where(dcls[:, None] == ccls[None, :], ciou, 0.0) > pos).any(1)
    other_iou = np.where(same, 0.0, iou)
    used_iou = np.where(used[None, :], cls_iou, 0.0)
    for i in range(n):
        if matched[i]:
            continue
        if ignored[i]:
            kinds[i] = _IGNORED
        elif g == 0:
            kinds[i] = "bkg"
        elif bg <= cls_iou[i].max() <= pos:
            kinds[i], target[i] = "loc", int(cls_iou[i].argmax())
        elif other_iou[i].max() >= pos:
            kinds[i], target[i] = "cls", int(other_iou[i].argmax())
        elif used_iou[i].max() >= pos:
            kinds[i] = "dupe"
        elif iou[i].max() <= bg:
            kinds[i] = "bkg"
        else:
            kinds[i] = "both"
    return kinds, target, used


def tide_errors(
    gt: str | os.PathLike | Any,
    detections: Sequence[Mapping[str, Any]],
    *,
    img_ids: Sequence[int] | None = None,
    pos_thresh: float = POS_THRESH,
    bg_thresh: float = BG_THRESH,
    max_dets: int = 100,
) -> dict[str, Any]:
    """TIDE's six main errors of COCO-format ``detections`` against ``gt`` (module doc).

    Args:
        gt: annotations path, dict or pycocotools COCO (bench.results.coco_eval.load_coco_gt).
        detections: ``[{"image_id", "category_id", "bbox": [x, y, w, h], "score"}]``.
        img_ids: the evaluated images (default: every image of ``gt``); detections on other
            images are left out.

    Returns:
        ``{"ap50": float, "dap": {type: float}, "counts": {type: int}}``, types ERROR_TYPES.
    """

    if not 0 <= bg_thresh <= pos_thresh <= 1:
        raise ValueError(f"need 0 <= bg_thresh <= pos_thresh <= 1, got {bg_thresh}, {pos_thresh}")
    coco = load_coco_gt(gt)
    images = sorted(coco.getImgIds() if img_ids is None else {int(i) for i in img_ids})
    by_image: dict[int, list] = {i: [] for i in images}
    for d in detections:
        if int(d["image_id"]) in by_image:
            by_image[int(d["image_id"])].append(d)
    cls, scores, kinds, targets = [], [], [], []  # per detection, in image then score order
    gt_cls, gt_used = [], []  # per non-crowd object, in image order
    for image in images:
        anns = coco.loadAnns(coco.getAnnIds(imgIds=[image]))
        gts = [a for a in anns if not a.get("iscrowd", 0)]
        crowd = [a for a in anns if a.get("iscrowd", 0)]
        dets = sorted(by_image[image], key=lambda d: -float(d["score"]))[:max_dets]
        if dets:
            k, t, used = _classify_image(dets, gts, crowd, pos_thresh, bg_thresh)
        else:
            k, t, used = [], np.zeros(0, dtype=int), np.zeros(len(gts), dtype=bool)
        offset = len(gt_cls)
        cls += [int(d["category_id"]) for d in dets]
        scores += [float(d["score"]) for d in dets]
        kinds += k
        targets += [offset + int(j) if j >= 0 else -1 for j in t]
        gt_cls += [int(a["category_id"]) for a in gts]
        gt_used += [bool(u) for u in used]
    return _fix_all(
        np.asarray(cls, dtype=np.int64), np.asarray(scores, dtype=np.float64),
        np.asarray(kinds, dtype=object), np.asarray(targets, dtype=np.int64),
        np.asarray(gt_cls, dtype=np.int64), np.asarray(gt_used, dtype=bool),
    )  # fmt: skip


def _fix_all(cls, scores, kinds, targets, gt_cls, gt_used) -> dict[str, Any]:
    """Base AP50, each error type's oracle dAP50 and the error counts (module doc)."""
    counted = kinds != _IGNORED
    is_tp = kinds == _TP
    num_gt: dict[int, int] = {}
    for c in gt_cls:
        num_gt[int(c)] = num_gt.get(int(c), 0) + 1
    # Cls/Loc errors on an unmatched object: the best score of each target is fixable.
    candidate = np.isin(kinds, ("cls", "loc")) & (targets >= 0)
    candidate[candidate] = ~gt_used[targets[candidate]]
    fixable = np.zeros(len(kinds), dtype=bool)
    best: dict[int, int] = {}
    for i in np.flatnonzero(candidate):  # detection order: the first of equal scores wins
        j = int(targets[i])
        if j not in best or scores[i] > scores[best[j]]:
            best[j] = i
    fixable[list(best.values())] = True
    targeted = np.zeros(len(gt_cls), dtype=bool)
    targeted[targets[candidate]] = True
    missed = ~gt_used & ~targeted
    base = _mean_ap(cls[counted], scores[counted], is_tp[counted], num_gt)
    dap, counts = {}, {}
    for name in ERROR_TYPES:
        fixed_cls, keep, tp = cls.copy(), counted.copy(), is_tp.copy()
        gts = dict(num_gt)
        if name == "miss":
            for c in gt_cls[missed]:
                gts[int(c)] -= 1
            counts[name] = int(missed.sum())
        else:
            mine = kinds == name
            counts[name] = int(mine.sum())
            keep &= ~mine | fixable  # removed, unless the oracle corrects it
            tp |= mine & fixable
            fixed_cls[mine & fixable] = gt_cls[targets[mine & fixable]]
        new = _mean_ap(fixed_cls[keep], scores[keep], tp[keep], gts)
        dap[name] = max(new - base, 0.0)
    return {"ap50": base, "dap": dap, "counts": counts}
