"""The one backend rule of kernels._backend, on its own and through every public op, on the CPU.

CUDA is simulated by making tensors claim ``is_cuda`` (as bench.aot.cases does for meta
tensors) while each op's Triton entry point is replaced by one that raises: "auto" must take
Triton for float32 and the reference for float64, "triton" must raise naming float64.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

import numpy as np
import pytest
import torch

import kernels
from kernels._backend import (
    BACKENDS,
    TRITON_DTYPES,
    check_backend,
    check_float_tensor,
    is_int,
    use_triton,
)

# the modules (kernels.corner_pool etc. as attributes are the functions kernels exports)
corner_pool_mod = importlib.import_module("kernels.corner_pool")
heatmap_mod = importlib.import_module("kernels.heatmap")
decode_mod = importlib.import_module("kernels.decode")
soft_nms_mod = importlib.import_module("kernels.soft_nms")


@pytest.fixture
def claim_cuda(monkeypatch: pytest.MonkeyPatch) -> None:
    """Meta and CPU tensors say they are CUDA tensors; TRITON_INTERPRET is unset."""
    monkeypatch.setattr(torch.Tensor, "is_cuda", property(lambda t: True))
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)


def _meta(dtype: torch.dtype) -> torch.Tensor:
    return torch.empty(1, 1, 2, 2, dtype=dtype, device="meta")


# ---------------------------------------------------------------- use_triton itself
@pytest.mark.parametrize("dtype", TRITON_DTYPES, ids=str)
def test_cuda_triton_dtypes_take_triton(claim_cuda: None, dtype: torch.dtype) -> None:
    x = _meta(dtype)
    assert use_triton(x, "auto") and use_triton(x, "triton")
    assert use_triton((x, _meta(torch.float32)), "auto")
    assert not use_triton(x, "torch")


def test_cuda_float64_falls_back_on_auto_and_raises_on_triton(claim_cuda: None) -> None:
    x = _meta(torch.float64)
    assert not use_triton(x, "auto")
    assert not use_triton((_meta(torch.float32), x), "auto")  # any tensor decides
    assert not use_triton(x, "torch")
    with pytest.raises(ValueError, match="got torch.float64"):
        use_triton(x, "triton")
    with pytest.raises(ValueError, match="got torch.float64"):
        use_triton((_meta(torch.float32), x), "triton")


def test_limit_falls_back_on_auto_and_raises_on_triton(claim_cuda: None) -> None:
    x = _meta(torch.float32)
    assert not use_triton(x, "auto", "k: too large")
    with pytest.raises(ValueError, match="^k: too large$"):
        use_triton(x, "triton", "k: too large")
    with pytest.raises(ValueError, match="float64"):  # the dtype is named before the limit
        use_triton(_meta(torch.float64), "triton", "k: too large")


def test_cpu_tensors(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.zeros(2)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not use_triton(x, "auto")  # "auto" never interprets
    assert use_triton(x, "triton")
    with pytest.raises(ValueError, match="float64"):
        use_triton(x.double(), "triton")
    monkeypatch.delenv("TRITON_INTERPRET")
    with pytest.raises(ValueError, match="needs a CUDA tensor .* got cpu"):
        use_triton(x, "triton")
    assert not use_triton(x, "auto") and not use_triton(x, "torch")


def test_checks() -> None:
    for backend in BACKENDS:
        check_backend(backend)
    with pytest.raises(ValueError, match=r"backend: expected one of \('auto', 'triton', 'torch'\)"):
        check_backend("cuda")
    assert is_int(3) and is_int(np.int64(3))
    assert not any(is_int(v) for v in (True, 3.0, "3", None))
    check_float_tensor(torch.zeros(1, 2, 3, 4), "x", "N, C, H, W")
    for t, match in (
        ([1.0], r"x: expected a torch.Tensor, got list"),
        (torch.zeros(2, 3, 4), r"x: expected 4 dims \(N, C, H, W\), got shape \(2, 3, 4\)"),
        (torch.zeros(1, 1, 1, 1, dtype=torch.int32), "x: expected a floating-point dtype"),
    ):
        with pytest.raises(ValueError, match=match):
            check_float_tensor(t, "x", "N, C, H, W")


# ---------------------------------------------------------------- every public op
def _maps(dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(1, 2, 5, 6).to(dtype)


def _heads(dtype: torch.dtype) -> list[torch.Tensor]:
    shapes = [(1, 2, 5, 6)] * 2 + [(1, 1, 5, 6)] * 2 + [(1, 2, 5, 6)] * 2
    return [torch.rand(s).to(dtype) for s in shapes]


def _boxes(dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    xy = torch.rand(6, 2) * 10
    boxes = torch.cat([xy, xy + 1 + torch.rand(6, 2) * 5], dim=1)
    return boxes.to(dtype), torch.rand(6).to(dtype), torch.tensor([0, 1, 0, 1, 0, 0])


OPS: dict[str, Callable[[torch.dtype, str], object]] = {
    "corner_pool": lambda dt, b: kernels.corner_pool(_maps(dt), "left", b),
    "corner_pool_backward": lambda dt, b: kernels.corner_pool_backward(
        _maps(dt), _maps(dt), "top", b
    ),
    "fused_corner_pool": lambda dt, b: kernels.fused_corner_pool(_maps(dt), _maps(dt), "br", b),
    "heatmap_peaks": lambda dt, b: kernels.heatmap_peaks(_maps(dt), 4, backend=b),
    "cornernet_decode": lambda dt, b: kernels.cornernet_decode(
        *_heads(dt), K=3, num_dets=5, backend=b
    ),
    "soft_nms": lambda dt, b: kernels.soft_nms(*_boxes(dt)[:2], backend=b),
    "soft_nms_per_class": lambda dt, b: kernels.soft_nms_per_class(*_boxes(dt), backend=b),
    "batched_soft_nms": lambda dt, b: kernels.batched_soft_nms(*_boxes(dt), backend=b),
}


@pytest.fixture
def no_triton_launch(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every op's Triton entry point raises "Triton path taken"."""

    def taken(*args, **kwargs):
        raise RuntimeError("Triton path taken")

    for target, name in (
        (corner_pool_mod._CornerPoolTriton, "apply"),
        (corner_pool_mod._FusedCornerPoolTriton, "apply"),
        (corner_pool_mod, "_corner_pool_bwd"),
        (heatmap_mod, "_heatmap_peaks_fwd"),
        (decode_mod, "_cornernet_decode_fwd"),
        (soft_nms_mod, "_soft_nms_fwd"),
    ):
        monkeypatch.setattr(target, name, taken)


@pytest.mark.parametrize("op", list(OPS), ids=str)
def test_every_op_follows_the_rule(op: str, claim_cuda: None, no_triton_launch: None) -> None:
    call = OPS[op]
    with pytest.raises(RuntimeError, match="Triton path taken"):
        call(torch.float32, "auto")  # the fake CUDA device works: auto would run Triton
    call(torch.float64, "auto")  # the reference, silently
    call(torch.float64, "torch")
    with pytest.raises(ValueError, match="backend='triton' supports .* got torch.float64"):
        call(torch.float64, "triton")
