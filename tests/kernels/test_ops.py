"""The custom ops of kernels.ops: torch.library.opcheck (schema, fake, autograd registration,
AOT dispatch) on the CPU, and each op's results equal to its public function's."""

from __future__ import annotations

import pytest
import torch

from kernels import cornernet_decode, fused_corner_pool, heatmap_peaks
from kernels.ops import (
    cornernet_decode_op,
    fused_corner_pool_op,
    heatmap_peaks_op,
    select_detections_op,
)
from kernels.soft_nms import batched_soft_nms

OPCHECK_OK = {
    "test_schema": "SUCCESS",
    "test_autograd_registration": "SUCCESS",
    "test_faketensor": "SUCCESS",
    "test_aot_dispatch_dynamic": "SUCCESS",
}


def _heads(b: int, c: int, h: int, w: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    heat = [torch.randn(b, c, h, w, generator=gen) for _ in range(2)]
    tags = [torch.randn(b, 1, h, w, generator=gen) * 0.3 for _ in range(2)]
    regr = [torch.rand(b, 2, h, w, generator=gen) for _ in range(2)]
    return (*heat, *tags, *regr)


def _rows(b: int, n: int, classes: int, seed: int = 0) -> torch.Tensor:
    """(b, n, 8) decoded rows in pixels, about 20% rejected (score -1)."""
    gen = torch.Generator().manual_seed(seed)
    xy = torch.rand(b, n, 2, generator=gen) * 60
    xy2 = xy + torch.rand(b, n, 2, generator=gen) * 30 + 2
    s = torch.rand(b, n, 1, generator=gen)
    s[torch.rand(b, n, 1, generator=gen) < 0.2] = -1.0
    labels = torch.randint(0, classes, (b, n, 1), generator=gen).float()
    return torch.cat([xy, xy2, s, s, s, labels], 2)


@pytest.mark.parametrize("corner", ["tl", "br"])
def test_fused_corner_pool_opcheck(corner: str) -> None:
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(1, 2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    op = torch.ops.cornerbench.fused_corner_pool.default
    assert torch.library.opcheck(op, (a, b, corner, "auto")) == OPCHECK_OK


@pytest.mark.parametrize("corner", ["tl", "br"])
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 5), (1, 2, 1, 9)], ids=str)
def test_fused_corner_pool_op_forward_and_grad_equal_the_function(corner, shape) -> None:
    """Integer-valued inputs (many ties) and gradients: the sums are exact, so the op's
    torch-ops backward must route every tie as kernels.corner_pool does."""
    gen = torch.Generator().manual_seed(2)
    a0, b0, g = (torch.randint(0, 3, shape, generator=gen).float() for _ in range(3))
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    out = fused_corner_pool_op(a, b, corner)
    got = torch.autograd.grad(out, (a, b), g)
    a, b = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    ref = fused_corner_pool(a, b, corner)
    want = torch.autograd.grad(ref, (a, b), g)
    assert torch.equal(out, ref)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_fused_corner_pool_op_gradcheck() -> None:
    gen = torch.Generator().manual_seed(3)
    a = torch.randn(1, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(1, 2, 4, 5, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, y: fused_corner_pool_op(x, y, "br"), (a, b))


def test_heatmap_peaks_opcheck_and_equal() -> None:
    heat = torch.randn(2, 3, 8, 7, generator=torch.Generator().manual_seed(4))
    op = torch.ops.cornerbench.heatmap_peaks.default
    assert torch.library.opcheck(op, (heat, 10, 3, "auto")) == OPCHECK_OK
    for got, want in zip(heatmap_peaks_op(heat, 10), heatmap_peaks(heat, 10)):
        assert torch.equal(got, want)


def test_cornernet_decode_opcheck_and_equal() -> None:
    heads = _heads(2, 3, 8, 8)
    op = torch.ops.cornerbench.cornernet_decode.default
    assert torch.library.opcheck(op, (*heads, 12, 3, 0.5, 50, "auto")) == OPCHECK_OK
    got = cornernet_decode_op(*heads, K=12, num_dets=50)
    assert torch.equal(got, cornernet_decode(*heads, K=12, num_dets=50))


@pytest.mark.parametrize("method", ["gaussian", "hard", "none"])
def test_select_detections_opcheck_and_padding(method: str) -> None:
    rows = _rows(2, 60, 4)
    op = torch.ops.cornerbench.select_detections.default
    args = (rows, method, 0.5, 0.5, 0.001, 1.0, 30, "auto")
    assert torch.library.opcheck(op, args) == OPCHECK_OK
    boxes, scores, labels, count = select_detections_op(rows, method=method, max_per_image=30)
    assert boxes.shape == (2, 30, 4) and scores.shape == labels.shape == (2, 30)
    for i in range(2):
        valid = rows[i][rows[i, :, 4] > -1]
        b, s, c = valid[:, :4], valid[:, 4], valid[:, 7].long()
        if method != "none":
            keep, s = batched_soft_nms(b, s, c, method=method)
            b, c = b[keep], c[keep]
        top = torch.sort(s, descending=True, stable=True).indices[:30]
        n = int(count[i])
        assert n == top.shape[0]
        assert torch.equal(boxes[i, :n], b[top]) and torch.equal(scores[i, :n], s[top])
        assert torch.equal(labels[i, :n], c[top])
        assert bool((labels[i, n:] == -1).all()) and bool((scores[i, n:] == 0).all())


def test_select_detections_op_pads_an_image_without_detections() -> None:
    rows = _rows(2, 10, 2)
    rows[1, :, 4] = -1.0  # every pair of image 1 rejected
    boxes, scores, labels, count = select_detections_op(rows, max_per_image=5)
    assert count[1] == 0 and bool((labels[1] == -1).all()) and bool((boxes[1] == 0).all())
