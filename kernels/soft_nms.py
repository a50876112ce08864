"""Soft-NMS (Bodla et al., ICCV 2017) with the exact pick order of the original Cython code.

Maths. Boxes b_n = (x1, y1, x2, y2), scores s_n, offset o (1.0: the "+1 pixel" convention):
    area_n = (x2 - x1 + o) * (y2 - y1 + o)
    iw = min(x2_p, x2_n) - max(x1_p, x1_n) + o,  ih likewise;  overlap iff iw > 0 and ih > 0
    iou = iw*ih / (area_p + area_n - iw*ih)
    weight: hard     0 if iou > Nt else 1
            linear   1 - iou if iou > Nt else 1
            gaussian exp(-iou^2 / sigma)  (CPU: exp in float64, rounded to float32, as the
                     original; Triton: exp in float32, see below)
Loop over positions i = 0, 1, ... while i < n (n: boxes still in the array):
    p = the first position >= i holding the largest score; swap positions i and p; emit it.
    every later box that overlaps it: s_n <- weight * s_n, and if s_n < score_threshold the
    box is dropped: the LAST box of the array moves into its slot (n <- n - 1) and is
    examined there in turn. Boxes that do not overlap are neither rescored nor dropped.
The swaps only matter for ties (equal scores pick the earlier position), but they are
reproduced exactly: a dropped slot receives the surviving boxes from the end of the array in
reverse order. All arithmetic is float32, like the original.

Public functions (results: kept box indices in the order they are emitted, int64, and their
rescored float32 scores):
    soft_nms(boxes, scores, *, method="gaussian", sigma=0.5, iou_threshold=0.5,
             score_threshold=0.001, offset=1.0, backend="auto")
    soft_nms_per_class(boxes, scores, labels, *, ...)  each label separately (as CornerNet
             does); classes in ascending label order, each in emission order
    batched_soft_nms(boxes, scores, labels, *, ...)    the same results, every class at once
    soft_nms_reference(boxes, scores, *, ...)           the torch specification / CPU path

Triton: one program per class holds its boxes in registers (up to MAX_TRITON_BOXES) and runs
the whole loop; positions are tracked per box, and the compaction after drops goes through a
small global scratch (a scatter by position, a prefix sum, a gather). It is compiled without
fma contraction, so each float32 operation rounds as in the original. The torch reference is
a Python loop over picks with vectorised updates (about 25 small ops per pick); on CPU it
runs on numpy views of the same memory, 5-10x less overhead per op.

Deviation on the Triton path: the Gaussian weight's exp is computed in float32 (fp64 runs at
1/64 of the fp32 rate on consumer GPUs), not as the original's np.exp of a double rounded to
float32: a weight can differ from the original's by about 1 ulp (2e-7 relative), so rescored
scores agree to ~1e-6 relative, and two boxes whose rescored scores fall within that of each
other may be emitted in the other order. Hard and linear soft-NMS agree to 1e-7 on both
paths (the same float32 roundings); the CPU paths stay bit-exact for all three
(tests/kernels/test_soft_nms.py).

Batched CPU path (batched_soft_nms): :mod:`kernels.soft_nms_cpu`.

Memory traffic: each box is read once (20 B) and each kept box written once (12 B); per pick
the Triton program touches only registers, plus 8 B per box of L1/L2 scratch when boxes are
dropped in front of the array's end. The torch path reads and writes the remaining boxes'
rows (28 B) for every pick: O(N^2) bytes. The batched path computes each pair of a class
once (about 60 B of temporaries) and writes its factor (4 B) twice; each step reads one
factor row per class: O(sum of class sizes^2) bytes, in groups of classes of at most
MAX_DENSE factors.
"""

from __future__ import annotations

import numbers

import numpy as np
import torch
import triton
import triton.language as tl

from kernels._backend import check_backend, check_boxes_scores, use_triton
from kernels.soft_nms_cpu import METHODS, _rows, _soft_nms_loop, batched_numpy

MAX_TRITON_BOXES = 8192  # boxes per class that one Triton program keeps in registers


# ---------------------------------------------------------------- torch reference
def soft_nms_reference(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    offset: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Torch specification of :func:`soft_nms`: the original's loop, array swaps included."""
    _check(boxes, scores, None, method, sigma, iou_threshold, "torch")
    return _reference(boxes, scores, (method, sigma, iou_threshold, score_threshold, offset))


def _reference(boxes, scores, params: tuple) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nms_reference` on checked inputs (each public function checks once)."""
    rows, idx = _rows(boxes, scores, params[4])
    args = (METHODS[params[0]], *params[1:])
    if rows.device.type == "cpu":  # numpy views of the same memory: less overhead per op
        n = _soft_nms_loop(rows.numpy(), idx.numpy(), *args, xp=np)
    else:
        n = _soft_nms_loop(rows, idx, *args, xp=torch)
    return idx[:n], rows[:n, 5].clone()


# ---------------------------------------------------------------- Triton
# Combine functions of tl.max / tl.min / tl.sum given to tl.reduce directly: the interpreter
# runs them vectorised, while each nested @triton.jit call (tl.max is one) costs milliseconds.
_MAX = tl.standard._elementwise_max
_MIN = tl.standard._elementwise_min
_SUM = tl.standard._sum_combine


@triton.jit
def _soft_nms_fwd_kernel(
    boxes_ptr, scores_ptr, order_ptr, seg_ptr, keep_ptr, kept_ptr, count_ptr, scratch_ptr,
    stride_bn, stride_bc, stride_s, sigma, iou_threshold, score_threshold, offset,
    METHOD: tl.constexpr, BLOCK: tl.constexpr,
):  # fmt: skip
    # One program per class: its boxes are order[seg[s]:seg[s+1]], local slot t holds one box
    # for the whole run; pos[t] is that box's position in the original's array.
    sid = tl.program_id(0)
    start = tl.load(seg_ptr + sid)
    size = (tl.load(seg_ptr + sid + 1) - start).to(tl.int32)
    t = tl.arange(0, BLOCK)
    box = tl.load(order_ptr + start + t, mask=t < size, other=0)
    bp = boxes_ptr + box * stride_bn
    x1 = tl.load(bp, mask=t < size, other=0.0).to(tl.float32)
    y1 = tl.load(bp + stride_bc, mask=t < size, other=0.0).to(tl.float32)
    x2 = tl.load(bp + 2 * stride_bc, mask=t < size, other=0.0).to(tl.float32)
    y2 = tl.load(bp + 3 * stride_bc, mask=t < size, other=0.0).to(tl.float32)
    area = (x2 - x1 + offset) * (y2 - y1 + offset)
    score = tl.load(scores_ptr + box * stride_s, mask=t < size, other=0.0).to(tl.float32)
    alive = t < size  # still in the array and not yet emitted
    pos = t
    code_buf = scratch_ptr + sid.to(tl.int64) * (2 * BLOCK)  # indexed by position
    hole_buf = code_buf + BLOCK  # position of the r-th dropped slot
    i = 0
    n = size
    while i < n:
        vals = tl.where(alive, score, float("-inf"))
        best = tl.reduce(vals, 0, _MAX)
        # the first position holding the maximum, as the original's strict `<` scan finds it
        p = tl.reduce(tl.where(alive & (vals == best), pos, BLOCK), 0, _MIN)
        picked = alive & (pos == p)
        pos = tl.where(alive & (pos == i), p, pos)  # swap: the box at position i goes to p
        alive = alive & ~picked
        g = tl.load(order_ptr + start + tl.reduce(tl.where(picked, t, 0), 0, _SUM))
        tl.store(keep_ptr + start + i, g)
        tl.store(kept_ptr + start + i, best)
        tx1 = tl.load(boxes_ptr + g * stride_bn).to(tl.float32)
        ty1 = tl.load(boxes_ptr + g * stride_bn + stride_bc).to(tl.float32)
        tx2 = tl.load(boxes_ptr + g * stride_bn + 2 * stride_bc).to(tl.float32)
        ty2 = tl.load(boxes_ptr + g * stride_bn + 3 * stride_bc).to(tl.float32)
        iw = tl.minimum(x2, tx2) - tl.maximum(x1, tx1) + offset
        ih = tl.minimum(y2, ty2) - tl.maximum(y1, ty1) + offset
        inter = iw * ih
        # div_rn: IEEE division (a plain `/` compiles to the approximate div.full.f32)
        iou = tl.div_rn(inter, (tx2 - tx1 + offset) * (ty2 - ty1 + offset) + area - inter)
        if METHOD == 0:
            weight = tl.where(iou > iou_threshold, 0.0, 1.0)
        elif METHOD == 1:
            weight = tl.where(iou > iou_threshold, 1.0 - iou, 1.0)
        else:  # float32 exp (deviation: the original takes np.exp of a double; see _check)
            weight = tl.exp(tl.div_rn(-(iou * iou), sigma))
        overlap = alive & (iw > 0) & (ih > 0)
        score = tl.where(overlap, weight * score, score)
        drop = overlap & (score < score_threshold)
        n_drop = tl.reduce(drop.to(tl.int32), 0, _SUM)
        if n_drop > 0:
            before = alive
            alive = alive & ~drop
            # survivors past the new end fill the dropped slots before it, last one first
            hole = drop & (pos < n - n_drop)
            mover = alive & (pos >= n - n_drop)
            n_move = tl.reduce(mover.to(tl.int32), 0, _SUM)
            if n_move > 0:
                tl.debug_barrier()  # the previous pick's readers of code_buf are done
                code = hole.to(tl.int32) + 2 * mover.to(tl.int32)
                tl.store(code_buf + pos, code, mask=before)  # scatter to position order
                tl.debug_barrier()
                c = tl.load(code_buf + t, mask=(t > i) & (t < n), other=0)
                rank = tl.associative_scan((c == 1).to(tl.int32), 0, _SUM) - 1
                tl.store(hole_buf + rank, t, mask=c == 1)
                tl.debug_barrier()
                rank = n_move - tl.associative_scan((c == 2).to(tl.int32), 0, _SUM)
                target = tl.load(hole_buf + rank, mask=c == 2, other=0)
                tl.store(code_buf + t, target, mask=c == 2)
                tl.debug_barrier()
                pos = tl.where(mover, tl.load(code_buf + pos, mask=mover, other=0), pos)
            n = n - n_drop
        i += 1
    tl.store(count_ptr + sid, n)


def _soft_nms_fwd(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    order: torch.Tensor,
    sizes: torch.Tensor,
    max_size: int,
    params: tuple,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One program per class segment order[seg[s]:seg[s+1]]; returns (keep, kept scores).

    Heuristic: BLOCK = next_pow2(largest class), at least 16; num_warps = BLOCK / 256 in
    [1, 16] (8 to 16 slots per thread for the 9 per-box registers).
    """
    method, sigma, iou_threshold, score_threshold, offset = params
    n_seg, dev = sizes.shape[0], boxes.device
    seg = torch.zeros(n_seg + 1, dtype=torch.int64, device=dev)
    torch.cumsum(sizes, 0, out=seg[1:])
    block = max(16, triton.next_power_of_2(max_size))
    keep = torch.empty(boxes.shape[0], dtype=torch.int64, device=dev)
    kept = torch.empty(boxes.shape[0], dtype=torch.float32, device=dev)
    count = torch.empty(n_seg, dtype=torch.int32, device=dev)
    scratch = torch.empty(n_seg, 2, block, dtype=torch.int32, device=dev)
    _soft_nms_fwd_kernel[(n_seg,)](
        boxes, scores, order, seg, keep, kept, count, scratch,
        boxes.stride(0), boxes.stride(1), scores.stride(0),
        float(sigma), float(iou_threshold), float(score_threshold), float(offset),
        METHOD=METHODS[method], BLOCK=block, num_warps=min(16, max(1, block // 256)),
        enable_fp_fusion=False,  # no a*b+c -> fma: float32 rounding exactly as the original
    )  # fmt: skip
    # slot j of segment s is kept iff j < count[s]
    local = torch.arange(boxes.shape[0], device=dev) - seg[:-1].repeat_interleave(sizes)
    mask = local < count.repeat_interleave(sizes)
    return keep[mask], kept[mask]


# ---------------------------------------------------------------- public
def _check(boxes, scores, labels, method, sigma, iou_threshold, backend) -> None:
    """Every public function's checks, once per call: types, shapes, dtypes, devices and
    parameters, then the values (kernels._backend.check_boxes_scores: one host sync)."""
    named = {"boxes": boxes, "scores": scores, "labels": labels}
    for name, t in named.items():
        if not isinstance(t, torch.Tensor) and not (name == "labels" and t is None):
            raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    if boxes.dim() != 2 or boxes.shape[1] != 4:
        raise ValueError(f"boxes: expected shape (N, 4), got {tuple(boxes.shape)}")
    for name, t in named.items():
        if t is None:
            continue
        if name != "boxes" and t.shape != boxes.shape[:1]:
            raise ValueError(f"{name}: expected shape ({boxes.shape[0]},), got {tuple(t.shape)}")
        is_int = not (t.is_floating_point() or t.is_complex() or t.dtype == torch.bool)
        if is_int != (name == "labels") or (name != "labels" and not t.is_floating_point()):
            kind = "an integer" if name == "labels" else "a floating-point"
            raise ValueError(f"{name}: expected {kind} dtype, got {t.dtype}")
        if t.device != boxes.device:
            raise ValueError(f"{name}: expected device {boxes.device} (as boxes), got {t.device}")
    if method not in METHODS:
        raise ValueError(f"method: expected one of {sorted(METHODS)}, got {method!r}")
    if not isinstance(sigma, numbers.Real) or not sigma > 0:  # also refuses NaN
        raise ValueError(f"sigma: expected a positive float, got {sigma!r}")
    if not isinstance(iou_threshold, numbers.Real) or not 0 <= iou_threshold <= 1:
        raise ValueError(f"iou_threshold: expected a float in [0, 1], got {iou_threshold!r}")
    check_backend(backend)
    check_boxes_scores(boxes, scores)


def _use_triton(boxes: torch.Tensor, scores: torch.Tensor, backend: str, max_size: int) -> bool:
    """kernels._backend.use_triton with the limit of MAX_TRITON_BOXES boxes per class."""
    limit = None
    if max_size > MAX_TRITON_BOXES:
        limit = (
            f"boxes: backend='triton' takes at most {MAX_TRITON_BOXES} boxes per class, "
            f"got {max_size}"
        )
    return use_triton((boxes, scores), backend, limit)


def _check_labelled(boxes, scores, labels, method, sigma, iou_threshold, backend) -> None:
    if not isinstance(labels, torch.Tensor):
        raise ValueError(f"labels: expected a torch.Tensor, got {type(labels).__name__}")
    _check(boxes, scores, labels, method, sigma, iou_threshold, backend)


def _segments(labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Box indices grouped by class (ascending labels, input order within a class), the
    class sizes, and the largest (one host sync)."""
    _, order = torch.sort(labels, stable=True)  # stable: each class keeps the input order
    sizes = torch.unique_consecutive(labels[order], return_counts=True)[1]
    return order, sizes, int(sizes.max())


def soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    offset: float = 1.0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS of (N, 4) xyxy boxes with (N,) scores, exactly as the original Cython code.

    method: "gaussian" (weight exp(-iou^2 / sigma)), "linear" (1 - iou above iou_threshold)
    or "hard" (0 above iou_threshold); boxes whose score falls below score_threshold are
    dropped; offset 1.0 is the original's "+1 pixel" width/height convention.
    backend: "auto" (Triton for CUDA fp16/bf16/fp32 tensors, the reference otherwise), "triton"
    or "torch" (see kernels._backend).
    Returns kept indices (M,) int64 in emission order and their rescored scores (M,) float32.
    Inputs are not modified. ValueError naming the argument for a wrong type, shape, dtype or
    device, a score or box coordinate not finite, a box with x2 < x1 or y2 < y1, a sigma not
    > 0 (NaN included), an iou_threshold outside [0, 1] (every public function here).
    """
    _check(boxes, scores, None, method, sigma, iou_threshold, backend)
    params = (method, sigma, iou_threshold, score_threshold, offset)
    n = boxes.shape[0]
    if n == 0 or not _use_triton(boxes, scores, backend, n):
        return _reference(boxes, scores, params)
    order = torch.arange(n, device=boxes.device)
    sizes = torch.tensor([n], device=boxes.device)
    return _soft_nms_fwd(boxes, scores, order, sizes, n, params)


def soft_nms_per_class(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    offset: float = 1.0,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """:func:`soft_nms` applied to each label's boxes separately (CornerNet's per-class loop).

    labels: (N,) integers. Each class sees its boxes in their input order (which decides ties,
    as the original's boolean selection does). Returns kept indices into the inputs (M,) int64
    and rescored scores (M,) float32: classes in ascending label order, each in emission order.
    On the Triton backend one launch handles all classes (one program per class); on the torch
    backend a Python loop over classes runs :func:`soft_nms_reference`: the specification of
    :func:`batched_soft_nms`, which gives the same results much faster on the CPU.
    ValueErrors: :func:`soft_nms`'s, and for labels not an (N,) integer tensor on boxes' device.
    """
    _check_labelled(boxes, scores, labels, method, sigma, iou_threshold, backend)
    params = (method, sigma, iou_threshold, score_threshold, offset)
    if boxes.shape[0] == 0:
        return _reference(boxes, scores, params)
    order, sizes, max_size = _segments(labels)
    if _use_triton(boxes, scores, backend, max_size):
        return _soft_nms_fwd(boxes, scores, order, sizes, max_size, params)
    keeps, kept = [], []
    for members in torch.split(order, sizes.tolist()):
        k, s = _reference(boxes[members], scores[members], params)
        keeps.append(members[k])
        kept.append(s)
    return torch.cat(keeps), torch.cat(kept)


def batched_soft_nms(
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    offset: float = 1.0,
    backend: str = "auto",
    top_k: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Soft-NMS of every class in one call: exactly :func:`soft_nms_per_class`'s results.

    boxes (N, 4) xyxy, scores (N,) floats, labels (N,) integers (any values, in any order).
    Returns kept indices (M,) int64 and rescored scores (M,) float32, classes in ascending
    label order, each class in emission order; the parameters and ValueErrors are
    :func:`soft_nms`'s (and for labels not an (N,) integer tensor on boxes' device).
    Triton (CUDA fp16/bf16/fp32 tensors under "auto"): one program per class, as
    :func:`soft_nms_per_class`.
    torch: numpy on the CPU (CUDA inputs are copied there and the results back), every class
    at once, one pick per class per step (see the module docstring), falling back to the
    per-class loop for a class whose picks tie (the original's array positions decide those)
    and for inputs outside the fast path's conditions (a score < 0, a score_threshold or
    offset not finite, a linear weight outside [0, 1], a class of more than about 1447 boxes).

    ``top_k`` (None: everything), for callers that keep only the top_k highest rescored
    scores: the CPU path may then stop early and return, per class, a prefix of its emission
    that still holds every box of the top_k (exactly: the top_k of the result equal the
    top_k of the full result, ties in the same order). The Triton path ignores it.
    """
    _check_labelled(boxes, scores, labels, method, sigma, iou_threshold, backend)
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    params = (method, sigma, iou_threshold, score_threshold, offset)
    if boxes.shape[0] == 0:
        return _reference(boxes, scores, params)
    if backend != "torch" and (boxes.is_cuda or backend == "triton"):
        order, sizes, max_size = _segments(labels)
        if _use_triton(boxes, scores, backend, max_size):
            return _soft_nms_fwd(boxes, scores, order, sizes, max_size, params)
    b = boxes.detach().to("cpu", torch.float32).numpy()
    s = scores.detach().to("cpu", torch.float32).numpy()
    keep, kept = batched_numpy(b, s, labels.detach().cpu().numpy(), params, top_k)
    dev = boxes.device
    return torch.from_numpy(keep).to(dev), torch.from_numpy(kept).to(dev)
