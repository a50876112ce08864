"""The kernels as PyTorch custom ops (``torch.ops.cornerbench.*``): exportable, compilable.

Each op is opaque to ``torch.export`` and ``torch.compile``: the graph holds one call, its fake
(meta) implementation gives the output shapes from the input shapes and the integer arguments
alone, so everything downstream has static shapes. The real implementation is the public
function of the kernel file with ``backend`` passed through: under ``"auto"`` the torch
reference on CPU tensors and the Triton launcher on CUDA tensors.

    fused_corner_pool(a, b, corner, backend) -> (N, C, H, W)           kernels.corner_pool
        differentiable: the backward op recomputes pool_a(a) and pool_b(b) (public
        corner_pool) and runs corner_pool_backward on each (the same backward as the
        autograd paths: the reference on the CPU, the Triton kernel on CUDA).
    heatmap_peaks(heat, k, kernel, backend) -> scores (B, k) float32, classes, ys, xs int64
    cornernet_decode(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel,
                     ae_threshold, num_dets, backend) -> (B, num_dets, 8) float32
    select_detections(rows, method, sigma, iou_threshold, score_threshold, offset,
                      max_per_image, backend) -> boxes (B, M, 4), scores (B, M),
                      labels (B, M) int64, count (B,) int64, M = max_per_image
        CornerNet's last step made static-shape: per image, drop rejected pairs (score -1),
        per-class soft-NMS (kernels.soft_nms.batched_soft_nms; method "none" skips it), the M
        highest scores (stable sort); slots >= count hold box 0, score 0, label -1.

Host synchronisation stays INSIDE some implementations, where export and compile do not see
it: the CPU top-k tie check of heatmap_peaks (one ``bool``), and all of select_detections
(soft-NMS's kept count is data-dependent: the batched CPU path runs on numpy, the Triton path
reads the largest class size). So a CUDA graph can capture forward + decode of CenterNet and
forward + pair decode of CornerNet, not CornerNet's soft-NMS.

Python wrappers with keyword defaults: :func:`fused_corner_pool_op`, :func:`heatmap_peaks_op`,
:func:`cornernet_decode_op`, :func:`select_detections_op`. Importing this module registers the
ops (nothing else runs at import).
"""

from __future__ import annotations

import torch

from kernels.corner_pool import CORNERS, corner_pool, corner_pool_backward, fused_corner_pool
from kernels.decode import cornernet_decode
from kernels.heatmap import heatmap_peaks
from kernels.soft_nms import batched_soft_nms

__all__ = [
    "cornernet_decode_op",
    "fused_corner_pool_op",
    "heatmap_peaks_op",
    "select_detections_op",
]

NAMESPACE = "cornerbench"


# ---------------------------------------------------------------- corner pooling
@torch.library.custom_op(f"{NAMESPACE}::fused_corner_pool", mutates_args=())
def _fused_corner_pool(a: torch.Tensor, b: torch.Tensor, corner: str, backend: str) -> torch.Tensor:
    with torch.no_grad():  # autograd is the op's own (register_autograd below)
        return fused_corner_pool(a, b, corner, backend=backend)


@_fused_corner_pool.register_fake
def _(a: torch.Tensor, b: torch.Tensor, corner: str, backend: str) -> torch.Tensor:
    return torch.empty_like(a)


@torch.library.custom_op(f"{NAMESPACE}::fused_corner_pool_backward", mutates_args=())
def _fused_corner_pool_backward(
    a: torch.Tensor, b: torch.Tensor, grad: torch.Tensor, corner: str, backend: str
) -> tuple[torch.Tensor, torch.Tensor]:
    dir_a, dir_b = CORNERS[corner]
    grad = grad.to(a.dtype)
    with torch.no_grad():
        ga = corner_pool_backward(corner_pool(a, dir_a, backend), grad, dir_a, backend)
        gb = corner_pool_backward(corner_pool(b, dir_b, backend), grad, dir_b, backend)
    return ga, gb


@_fused_corner_pool_backward.register_fake
def _(a, b, grad, corner, backend):
    return torch.empty_like(a), torch.empty_like(b)


def _corner_pool_setup(ctx, inputs, output) -> None:
    a, b, ctx.corner, ctx.backend = inputs
    ctx.save_for_backward(a, b)


def _corner_pool_grad(ctx, grad: torch.Tensor):
    a, b = ctx.saved_tensors
    ga, gb = _fused_corner_pool_backward(a, b, grad, ctx.corner, ctx.backend)
    return ga, gb, None, None


_fused_corner_pool.register_autograd(_corner_pool_grad, setup_context=_corner_pool_setup)


def fused_corner_pool_op(
    a: torch.Tensor, b: torch.Tensor, corner: str, backend: str = "auto"
) -> torch.Tensor:
    """``torch.ops.cornerbench.fused_corner_pool``: :func:`kernels.fused_corner_pool` as an op."""
    return _fused_corner_pool(a, b, corner, backend)


# ---------------------------------------------------------------- heatmap peaks
@torch.library.custom_op(f"{NAMESPACE}::heatmap_peaks", mutates_args=())
def _heatmap_peaks(
    heat: torch.Tensor, k: int, kernel: int, backend: str
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return heatmap_peaks(heat, k, kernel=kernel, backend=backend)


@_heatmap_peaks.register_fake
def _(heat, k, kernel, backend):
    scores = heat.new_empty(heat.shape[0], k, dtype=torch.float32)
    return (scores, *(heat.new_empty(heat.shape[0], k, dtype=torch.int64) for _ in range(3)))


def heatmap_peaks_op(
    heat: torch.Tensor, k: int, kernel: int = 3, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.ops.cornerbench.heatmap_peaks``: :func:`kernels.heatmap_peaks` as an op."""
    return _heatmap_peaks(heat, int(k), int(kernel), backend)


# ---------------------------------------------------------------- CornerNet decode
@torch.library.custom_op(f"{NAMESPACE}::cornernet_decode", mutates_args=())
def _cornernet_decode(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_tag: torch.Tensor,
    br_tag: torch.Tensor,
    tl_regr: torch.Tensor,
    br_regr: torch.Tensor,
    K: int,
    kernel: int,
    ae_threshold: float,
    num_dets: int,
    backend: str,
) -> torch.Tensor:
    heads = (tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr)
    return cornernet_decode(
        *heads, K=K, kernel=kernel, ae_threshold=ae_threshold, num_dets=num_dets, backend=backend
    )


@_cornernet_decode.register_fake
def _(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, ae_threshold, num_dets, be):
    return tl_heat.new_empty(tl_heat.shape[0], num_dets, 8, dtype=torch.float32)


def cornernet_decode_op(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_tag: torch.Tensor,
    br_tag: torch.Tensor,
    tl_regr: torch.Tensor,
    br_regr: torch.Tensor,
    K: int = 100,
    kernel: int = 3,
    ae_threshold: float = 0.5,
    num_dets: int = 1000,
    backend: str = "auto",
) -> torch.Tensor:
    """``torch.ops.cornerbench.cornernet_decode``: :func:`kernels.cornernet_decode` as an op."""
    heads = (tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr)
    if not _traced():  # eager: the function the op wraps, without the dispatcher
        return cornernet_decode(*heads, K=int(K), kernel=int(kernel),
                                ae_threshold=float(ae_threshold), num_dets=int(num_dets),
                                backend=backend)  # fmt: skip
    return _cornernet_decode(*heads, int(K), int(kernel), float(ae_threshold), int(num_dets),
                             backend)  # fmt: skip


# ---------------------------------------------------------------- soft-NMS, padded
def _select_padded(
    rows: torch.Tensor,
    method: str,
    sigma: float,
    iou_threshold: float,
    score_threshold: float,
    offset: float,
    max_per_image: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    n, m = rows.shape[0], max_per_image
    boxes = rows.new_zeros(n, m, 4, dtype=torch.float32)
    scores = rows.new_zeros(n, m, dtype=torch.float32)
    labels = torch.full((n, m), -1, dtype=torch.int64, device=rows.device)
    counts = []
    for i in range(n):
        r = rows[i][rows[i, :, 4] > -1].float()
        b, s, c = r[:, :4], r[:, 4], r[:, 7].long()
        if method != "none" and r.shape[0]:
            keep, s = batched_soft_nms(
                b, s, c, method=method, sigma=sigma, iou_threshold=iou_threshold,
                score_threshold=score_threshold, offset=offset, backend=backend, top_k=max(m, 1),
            )  # fmt: skip
            b, c = b[keep], c[keep]
        order = torch.sort(s, descending=True, stable=True).indices[:m]
        j = order.shape[0]
        boxes[i, :j], scores[i, :j], labels[i, :j] = b[order], s[order], c[order]
        counts.append(j)
    return boxes, scores, labels, torch.tensor(counts, dtype=torch.int64, device=rows.device)


@torch.library.custom_op(f"{NAMESPACE}::select_detections", mutates_args=())
def _select_detections(
    rows: torch.Tensor,
    method: str,
    sigma: float,
    iou_threshold: float,
    score_threshold: float,
    offset: float,
    max_per_image: int,
    backend: str,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    return _select_padded(
        rows, method, sigma, iou_threshold, score_threshold, offset, max_per_image, backend
    )


@_select_detections.register_fake
def _(rows, method, sigma, iou_threshold, score_threshold, offset, max_per_image, backend):
    n, m = rows.shape[0], max_per_image
    boxes = rows.new_empty(n, m, 4, dtype=torch.float32)
    scores = rows.new_empty(n, m, dtype=torch.float32)
    labels = rows.new_empty(n, m, dtype=torch.int64)
    return boxes, scores, labels, rows.new_empty(n, dtype=torch.int64)


def select_detections_op(
    rows: torch.Tensor,
    *,
    method: str = "gaussian",
    sigma: float = 0.5,
    iou_threshold: float = 0.5,
    score_threshold: float = 0.001,
    offset: float = 1.0,
    max_per_image: int = 100,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """``torch.ops.cornerbench.select_detections`` on (B, R, 8) decoded rows (see above).

    Returns boxes (B, M, 4) float32, scores (B, M) float32 (highest first), labels (B, M)
    int64 and count (B,) int64 of real detections per image; M = max_per_image. Soft-NMS
    runs with ``top_k=M`` (the CPU path stops once the M best are settled: the same output).
    """
    params = (float(sigma), float(iou_threshold), float(score_threshold), float(offset))
    op = _select_detections if _traced() else _select_padded  # eager: no dispatcher
    return op(rows, method, *params, int(max_per_image), backend)


def _traced() -> bool:
    """Whether torch.compile or torch.export is tracing: then the decode ops go through the
    dispatcher (opaque, with their fake implementations); in eager mode their Python bodies
    are called directly, which skips about 50 us of dispatch per call on the CPU (CornerNet
    decodes with two of them per batch)."""
    return torch.compiler.is_compiling() or torch.compiler.is_exporting()
