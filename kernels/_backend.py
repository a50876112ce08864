"""Backend choice and the input checks every kernels op shares (private).

Every public op (corner_pool, corner_pool_backward, fused_corner_pool, heatmap_peaks,
cornernet_decode, soft_nms, soft_nms_per_class, batched_soft_nms) takes backend = one of
BACKENDS and asks :func:`use_triton` with the tensors its Triton path reads. The rule:

    "torch"   the torch reference, always.
    "auto"    Triton iff every tensor is a CUDA tensor of a Triton dtype (float16, bfloat16,
              float32) and the op's own limit holds (heatmap_peaks and cornernet_decode:
              k <= 1024; soft-NMS: 8192 boxes per class); otherwise the reference, silently.
    "triton"  Triton, or ValueError saying why not, checked in this order: the device (a CPU
              tensor needs TRITON_INTERPRET=1, the interpreter), the dtype (named), the limit.

float64 is not a Triton dtype: the Triton paths are compiled, register-budgeted
(tests/kernels/test_aot.py) and tested for the three dtypes only; heatmap peaks, decode and
soft-NMS compute in float32 anyway, and corner pooling in float64 (the dtype of its
gradcheck) would run at 1/64 of the float32 rate on consumer GPUs. The torch references take
every floating dtype. Ops with empty inputs return the reference's empty result without
asking. A tensor counts as CUDA by ``is_cuda``, which bench.aot.cases patches to make meta
tensors compile as CUDA ones.

Also here: :func:`check_backend` (the backend name), :func:`check_float_tensor` (a floating
tensor with named axes), :func:`check_boxes_scores` (finite scores, finite xyxy boxes with
x1 <= x2 and y1 <= y2) and :func:`is_int` (a Python or numpy integer, not a bool).
"""

from __future__ import annotations

import numbers
import os
from collections.abc import Sequence

import torch

BACKENDS = ("auto", "triton", "torch")
TRITON_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def is_int(v: object) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def check_backend(backend: str) -> None:
    """ValueError unless ``backend`` is one of BACKENDS."""
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def check_float_tensor(t: object, name: str, axes: str) -> None:
    """ValueError unless ``t`` is a floating-point tensor with one dim per name in ``axes``
    (e.g. "N, C, H, W"); the message names ``name`` and the shape or dtype it got."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(t).__name__}")
    dims = len(axes.split(","))
    if t.dim() != dims:
        raise ValueError(f"{name}: expected {dims} dims ({axes}), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point dtype, got {t.dtype}")


def check_boxes_scores(boxes: torch.Tensor, scores: torch.Tensor) -> None:
    """ValueError unless every score is finite and every (N, 4) box is finite with x1 <= x2
    and y1 <= y2 (xyxy), naming the argument, the first bad index and its value. One host
    sync; none for meta or empty tensors. Types and shapes are the caller's to check."""
    if boxes.is_meta or boxes.shape[0] == 0:
        return
    finite = torch.isfinite(scores)
    ordered = torch.isfinite(boxes).all(1) & (boxes[:, 2:] >= boxes[:, :2]).all(1)
    if bool(finite.all() & ordered.all()):
        return
    if not bool(finite.all()):
        i = int((~finite).nonzero()[0])
        raise ValueError(f"scores: expected finite values, got {float(scores[i])} at index {i}")
    i = int((~ordered).nonzero()[0])
    got = f"got {boxes[i].tolist()} at index {i}"
    raise ValueError(f"boxes: expected finite x1 <= x2 and y1 <= y2 (xyxy), {got}")


def use_triton(
    x: torch.Tensor | Sequence[torch.Tensor], backend: str, limit: str | None = None
) -> bool:
    """Whether an op runs its Triton path for ``backend`` (see the module docstring).

    x: the tensor, or tensors, the Triton path reads (already validated by the op).
    limit: None when the op's own limit holds, else the ValueError message for "triton".
    """
    tensors = (x,) if isinstance(x, torch.Tensor) else tuple(x)
    on_cuda = all(t.is_cuda for t in tensors)
    bad_dtype = next((t.dtype for t in tensors if t.dtype not in TRITON_DTYPES), None)
    if backend != "triton":
        return backend == "auto" and on_cuda and bad_dtype is None and limit is None
    if not on_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        device = next(t.device for t in tensors if not t.is_cuda)
        raise ValueError(
            f"backend='triton' needs a CUDA tensor (or TRITON_INTERPRET=1), got {device}"
        )
    if bad_dtype is not None:
        raise ValueError(f"backend='triton' supports float16, bfloat16, float32, got {bad_dtype}")
    if limit is not None:
        raise ValueError(limit)
    return True
