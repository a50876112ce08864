"""Benchmark baselines for corner pooling (the maths and tie rule: :mod:`kernels.corner_pool`).

Two ways to compute ``corner_pool_reference(x, direction)`` that the benchmarks compare with:

- ``corner_pool_cummax(x, direction)``: flip + ``torch.cummax`` + flip, eager torch. Same
  forward; autograd's cummax backward gives a tie's gradient to the NEAREST equal maximum, not
  the farthest (first met in scan order) as the reference does. About 76 B of memory traffic
  per fp32 element for a fused pair (values and int64 indices, flips, the add).
- ``corner_pool_loop(x, direction)``: the original CornerNet's algorithm, written anew: one
  ``torch.max`` per row forward (reads x and the previous output row, writes a row), and a
  backward that tracks the argmax per line and does one ``scatter_add_`` per row. Same tie
  rule as the reference (strictly greater replaces the running maximum).

Both take x: (N, C, H, W), floating point, and return the same shape; a bad input raises the
ValueError of :mod:`kernels.corner_pool`. CPU timings are in that module's docstring.
"""

from __future__ import annotations

import torch

from kernels.corner_pool import DIRECTIONS, _check

__all__ = ["corner_pool_cummax", "corner_pool_loop"]


def corner_pool_cummax(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Baseline: flip + torch.cummax + flip (ties' gradient to the nearest maximum)."""
    _check(x, "x", direction=direction)
    dim, reverse = DIRECTIONS[direction]
    if reverse:
        return x.flip(dim).cummax(dim).values.flip(dim)
    return x.cummax(dim).values


class _CornerPoolLoop(torch.autograd.Function):
    """The original algorithm: one torch.max per row forward, one scatter_add per row back."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, direction: str) -> torch.Tensor:
        dim, reverse = DIRECTIONS[direction]
        size = x.shape[dim]
        order = list(range(size - 1, -1, -1)) if reverse else list(range(size))
        out = x.clone()
        for prev, i in zip(order, order[1:]):
            out.select(dim, i).copy_(torch.max(x.select(dim, i), out.select(dim, prev)))
        ctx.save_for_backward(x)
        ctx.dim, ctx.order = dim, order
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (x,) = ctx.saved_tensors
        dim, order = ctx.dim, ctx.order
        gx = torch.zeros_like(x)
        if not order or x.numel() == 0:
            return gx, None
        best = x.select(dim, order[0]).clone()
        where = torch.full_like(best, order[0], dtype=torch.int64).unsqueeze(dim)
        for i in order:
            row = x.select(dim, i)
            better = row > best  # strictly greater: a tie keeps the first maximum met
            best = torch.where(better, row, best)
            where = torch.where(better.unsqueeze(dim), i, where)
            gx.scatter_add_(dim, where, grad.select(dim, i).unsqueeze(dim))
        return gx, None


def corner_pool_loop(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Baseline: the original CornerNet's row-by-row loop, forward and backward."""
    _check(x, "x", direction=direction)
    return _CornerPoolLoop.apply(x, direction)
