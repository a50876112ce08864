"""Corner pooling (CornerNet, Law & Deng, ECCV 2018): directional running maxima.

For x of shape (N, C, H, W) and every n, c, i, j:
    top:    y[n,c,i,j] = max_{k >= i} x[n,c,k,j]     (scan along H from row H-1 up)
    bottom: y[n,c,i,j] = max_{k <= i} x[n,c,k,j]     (scan along H from row 0 down)
    left:   y[n,c,i,j] = max_{k >= j} x[n,c,i,k]     (scan along W from column W-1 leftward)
    right:  y[n,c,i,j] = max_{k <= j} x[n,c,i,k]     (scan along W from column 0 rightward)
    fused corner "tl": out = top(a) + left(b);  corner "br": out = bottom(a) + right(b)

Gradient and tie rule. Number the positions of a line in scan order s = 0, 1, ... (s = H-1-i
for top). y[s] comes from owner(s) = max{t <= s : t = 0 or y[t] > y[t-1]}, the FIRST position
met in scan order that holds the maximum (the running max is replaced only by a strictly
greater value), and dL/dx[t] = sum_{s : owner(s) = t} dL/dy[s]. So a tie's gradient goes to the
equal maximum FARTHEST from the output, as in the original CornerNet and mmcv; torch.cummax
gives it to the nearest one (`corner_pool_cummax` agrees in the forward pass only). NaN
propagates forward as in torch.maximum; gradients of inputs holding NaN are unspecified.

Public: corner_pool(x, direction, backend="auto"), corner_pool_backward(y, grad, direction,
backend), fused_corner_pool(a, b, corner, backend), corner_pool_reference and
fused_corner_pool_reference (the specification and CPU path). The benchmark baselines
corner_pool_cummax and corner_pool_loop are in kernels.corner_pool_baselines.
backend="auto" runs Triton on CUDA float16/bfloat16/float32 tensors, the torch reference
otherwise (the rule for every op: kernels._backend).

Triton: a program owns whole lines across the scan axis and walks the scan axis in tiles, each
loaded before anything is stored (the compiler keeps a load after a store through another
pointer, which may alias it: loads interleaved with stores leave one load in flight). Vectors
run along the contiguous axis, so that accesses are coalesced and 16 bytes wide: a scan along a
strided axis (top/bottom of NCHW) takes UNROLL rows of a strip of lines, the running max a
register per line; a scan along the contiguous axis (left/right) gives each lane 4 consecutive
positions, scanned in registers from what enters the lane's block, a forward
tl.associative_scan over one value per lane moved one lane up by tl.gather. No reverse=True
scans (they compile to flips, ~8x the shuffles, and non-commutative ones have given wrong
results, triton #4362): a pass that runs downwards in memory visits blocks downwards. The
backward reads the saved output y instead of argmax indices (a reset, a new maximum, is
y[s] > y[s-1]). The fused forward gives each (n, c) plane to one program, which walks its rows
once in pool_a's scan order: pool_a(a) a running max per column, pool_b(b) a lanes scan of
each row; it writes out once, and both pooled maps from the same registers when a gradient is
wanted. Its backward is two one-direction launches. Exactness: forward results are identical
to the reference's; backward sums of dy are too along a strided axis (same order), while the
lanes backward adds a run's dy in tree order across lanes (equal for integer-valued dy, close
otherwise). The kernels are in kernels._corner_pool_kernels, the launchers here.

Memory traffic per element (fp32, 4 B), each element moved once: corner_pool forward reads x,
writes y: 8 B; backward reads y and dy, writes dx: 12 B (plus one 4-byte load of y per 8 rows
or per 4 positions, a neighbour, mostly from L1). Fused forward reads a and b, writes out: 12 B
at every batch size; with a gradient wanted it writes both pooled maps too: 20 B. Rows wider
than FUSED_MAX_W fall back to two one-direction passes and an add: 28 B. Eager flip + cummax +
flip + add moves about 76 B (values and int64 indices).

CPU reference: one in-place torch.maximum per row (W-scans transpose to rows first), and for
the backward one pass per row of the run sums. Top pool at (1, 256, 128, 128) fp32, 1 thread,
median of 5 on a shared machine: forward 19 ms (loop 36, cummax 321), backward 62 ms (loop
177, cummax 69). Left: forward 58 ms (loop 356, cummax 99), backward 147 ms (loop 590,
cummax 85: the transposes cost it there).
"""

from __future__ import annotations

import contextlib

import torch
import triton

from kernels._backend import check_backend, check_float_tensor, use_triton
from kernels._corner_pool_kernels import (
    _corner_pool_bwd_kernel,
    _corner_pool_fwd_kernel,
    _fused_corner_pool_fwd_kernel,
)

# direction -> (dim of the scan axis, reverse: True when the scan starts at the far end)
DIRECTIONS: dict[str, tuple[int, bool]] = {
    "top": (2, True),
    "bottom": (2, False),
    "left": (3, True),
    "right": (3, False),
}
# corner -> (direction applied to a, direction applied to b)
CORNERS: dict[str, tuple[str, str]] = {"tl": ("top", "left"), "br": ("bottom", "right")}


# ---------------------------------------------------------------- torch reference
def _scan_layout(t: torch.Tensor, dim: int) -> torch.Tensor:
    """A copy of t with the scan axis at dim 2 and contiguous rows: (N, C, S, T)."""
    if dim == 2:
        return t.clone()
    return t.transpose(2, 3).clone(memory_format=torch.contiguous_format)


def _from_scan_layout(t: torch.Tensor, dim: int) -> torch.Tensor:
    return t if dim == 2 else t.transpose(2, 3).contiguous()


def _cummax_rows_(out: torch.Tensor, reverse: bool) -> torch.Tensor:
    """In place: out[:, :, s] = max(out[:, :, s], out[:, :, s-1]) in scan order along dim 2.

    One torch.maximum per row on contiguous rows: no allocation, each element read twice and
    written once. Measured faster on CPU than flip + cummax and than a log-step (doubling)
    scan of torch.maximum, whose ceil(log2 S) whole-tensor passes lose on memory traffic.
    """
    size = out.shape[2]
    step = 1 if reverse else -1  # memory offset of the previous scan position
    for k in range(size - 2, -1, -1) if reverse else range(1, size):
        row = out[:, :, k]
        torch.maximum(row, out[:, :, k + step], out=row)
    return out


def _backward_rows(ys: torch.Tensor, grad: torch.Tensor, reverse: bool) -> torch.Tensor:
    """dL/dx in scan layout from ys = pooled output and grad = dL/dy, both (N, C, S, T).

    reset[s]: s = 0 or ys[s] > ys[s-1] (a new strict maximum, the tie rule). Visiting scan
    positions from last to first, acc sums dy over the current run and a reset takes it.
    Accumulates in at least fp32, in the same order as the Triton kernel.
    """
    acc_dtype = torch.promote_types(grad.dtype, torch.float32)
    reset = torch.ones(ys.shape, dtype=torch.bool, device=ys.device)
    if reverse:
        torch.gt(ys[:, :, :-1], ys[:, :, 1:], out=reset[:, :, :-1])
    else:
        torch.gt(ys[:, :, 1:], ys[:, :, :-1], out=reset[:, :, 1:])
    gx = torch.empty(ys.shape, dtype=acc_dtype, device=ys.device)
    acc = torch.zeros(ys.shape[:2] + ys.shape[3:], dtype=acc_dtype, device=ys.device)
    zero = acc.new_zeros(())
    size = ys.shape[2]
    for k in range(size) if reverse else range(size - 1, -1, -1):
        acc.add_(grad[:, :, k])
        torch.where(reset[:, :, k], acc, zero, out=gx[:, :, k])
        acc.masked_fill_(reset[:, :, k], 0.0)  # the next position visited opens a new run
    return gx.to(ys.dtype)


class _CornerPoolReference(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, direction: str) -> torch.Tensor:
        ctx.dim, ctx.reverse = DIRECTIONS[direction]
        ys = _cummax_rows_(_scan_layout(x, ctx.dim), ctx.reverse)
        ctx.save_for_backward(ys)
        return _from_scan_layout(ys, ctx.dim)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (ys,) = ctx.saved_tensors
        gs = grad if ctx.dim == 2 else grad.transpose(2, 3).contiguous()
        return _from_scan_layout(_backward_rows(ys, gs, ctx.reverse), ctx.dim), None


def corner_pool_reference(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Torch corner pooling, the specification and CPU path. x: (N, C, H, W) -> same shape."""
    _check(x, "x", direction=direction)
    return _CornerPoolReference.apply(x, direction)


def fused_corner_pool_reference(a: torch.Tensor, b: torch.Tensor, corner: str) -> torch.Tensor:
    """Torch ``pool_a(a) + pool_b(b)`` for corner "tl" or "br". a, b: (N, C, H, W)."""
    dir_a, dir_b = _check_pair(a, b, corner)
    return _CornerPoolReference.apply(a, dir_a) + _CornerPoolReference.apply(b, dir_b)


# ---------------------------------------------------------------- validation
_UNCHECKED = object()  # _check's default: no direction to check (None is a bad direction)


def _check(
    x: torch.Tensor, name: str, direction: object = _UNCHECKED, backend: str = "torch"
) -> None:
    check_float_tensor(x, name, "N, C, H, W")
    if direction is not _UNCHECKED and (
        not isinstance(direction, str) or direction not in DIRECTIONS
    ):
        raise ValueError(f"direction: expected one of {sorted(DIRECTIONS)}, got {direction!r}")
    check_backend(backend)


def _check_pair(a: torch.Tensor, b: torch.Tensor, corner: str) -> tuple[str, str]:
    _check(a, "a")
    _check(b, "b")
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        raise ValueError(
            f"a and b must match: got shape {tuple(a.shape)} vs {tuple(b.shape)}, "
            f"dtype {a.dtype} vs {b.dtype}, device {a.device} vs {b.device}"
        )
    if not isinstance(corner, str) or corner not in CORNERS:
        raise ValueError(f"corner: expected one of {sorted(CORNERS)}, got {corner!r}")
    return CORNERS[corner]


# ---------------------------------------------------------------- Triton launchers
# The kernels and their tile layouts: kernels._corner_pool_kernels.


def _next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


# Widest row one fused program holds: 16 warps of 4 elements per lane. Wider maps compose
# the two one-direction kernels (a module attribute, so that a test can lower it).
FUSED_MAX_W = 2048


def _lanes_layout(t: torch.Tensor, dim: int) -> bool:
    """Whether the scan axis ``dim`` of t is its contiguous axis (then lanes run along it)."""
    return t.shape[dim] > 1 and t.stride(dim) == 1


def _launch_lines(
    kernel: triton.JITFunction, tensors: list[torch.Tensor], dim: int, reverse: bool,
    block_t: int | None, unroll: int | None, num_warps: int | None, lanes: bool | None,
) -> None:  # fmt: skip
    """Launch a one-direction kernel on (N, C, H, W) tensors scanning along ``dim``.

    Tiles are UNROLL scan positions x BLOCK_T lines, grid (N*C, ceil(T / BLOCK_T)), one warp.
    rows (the scan axis is not contiguous): BLOCK_T = 64 lines in the lanes (8-byte accesses
    in fp32), UNROLL = 8 rows: 64 bytes of loads in flight per thread, and a batch-1 map of
    (256, 128, 128) still gives 512 programs. lanes (the scan axis is contiguous): chunks of
    UNROLL = 128 positions (16 bytes per lane), BLOCK_T = 4 lines: 4 x 16 bytes in flight
    forward, 4 x 36 backward. CPU tensors run in the interpreter, whose cost is per program
    and op, and per element in tl.associative_scan (a Python loop): rows get up to 1024 lines
    per program, lanes chunks of up to 64 and 8 lines. ``lanes`` forces a layout (tests).
    BLOCK_T for both and UNROLL for lanes (at least 4) must be powers of two.
    """
    t0, tdim = tensors[0], 5 - dim  # tdim: the other spatial axis
    size_s, size_t = t0.shape[dim], t0.shape[tdim]
    lanes = _lanes_layout(t0, dim) if lanes is None else lanes
    if lanes:
        un = unroll or min(max(_next_pow2(size_s), 4), 128 if t0.is_cuda else 64)
        bt = block_t or min(_next_pow2(size_t), 4 if t0.is_cuda else 16)
    else:
        bt = block_t or min(_next_pow2(size_t), 64 if t0.is_cuda else 1024)
        un = unroll or min(size_s, 8)
    strides = [
        v for t in tensors for v in (t.stride(0), t.stride(1), t.stride(dim), t.stride(tdim))
    ]
    with _device_guard(t0):
        kernel[(t0.shape[0] * t0.shape[1], triton.cdiv(size_t, bt))](
            *tensors, t0.shape[1], size_s, size_t, *strides,
            REVERSE=reverse, LANES=lanes, CARRY=lanes and size_s > un, UNROLL=un, BLOCK_T=bt,
            num_warps=num_warps or 1,
        )  # fmt: skip


def _corner_pool_fwd(
    x: torch.Tensor, dim: int, reverse: bool, block_t: int | None = None,
    unroll: int | None = None, num_warps: int | None = None, lanes: bool | None = None,
) -> torch.Tensor:  # fmt: skip
    """One-direction forward. x: (N, C, H, W) -> y, same shape and dtype."""
    y = torch.empty_like(x)
    if x.numel():
        kernel = _corner_pool_fwd_kernel
        _launch_lines(kernel, [x, y], dim, reverse, block_t, unroll, num_warps, lanes)
    return y


def _corner_pool_bwd(
    y: torch.Tensor, grad: torch.Tensor, dim: int, reverse: bool, block_t: int | None = None,
    unroll: int | None = None, num_warps: int | None = None, lanes: bool | None = None,
) -> torch.Tensor:  # fmt: skip
    """One-direction backward. y: pooled output, grad: dL/dy, (N, C, H, W) -> dL/dx."""
    gx = torch.empty_like(y)
    if y.numel():
        kernel = _corner_pool_bwd_kernel
        _launch_lines(kernel, [y, grad, gx], dim, reverse, block_t, unroll, num_warps, lanes)
    return gx


def _fused_corner_pool_fwd(
    a: torch.Tensor, b: torch.Tensor, reverse: bool, save: bool,
    unroll: int | None = None, num_warps: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Fused forward. a, b: (N, C, H, W) -> (out, pool_a(a), pool_b(b)).

    The pooled maps are allocated and written only when ``save``. Grid: (N*C,), one plane per
    program; BLOCK_W = the power of two >= W (at least 4), one warp per 128 columns. UNROLL
    rows of a and b per tile, 2 x UNROLL loads of 16 bytes in flight per thread: 8 when the
    grid is small and a row one warp (N*C <= 1024: at most ~8 one-warp programs per SM of a
    132-SM GPU, so the grid, not registers, limits the warps; 86-223 registers on sm_90),
    else 2 (one warp: <= 64 registers, 32 warps per SM; rows of several warps scan across
    them through shared memory: ~100-130 registers). Rows wider than FUSED_MAX_W: pool_a(a)
    and pool_b(b) by the one-direction kernels, then their sum (28 bytes per element).
    """
    n, c, h, w = a.shape
    if w > FUSED_MAX_W:
        ya, yb = _corner_pool_fwd(a, 2, reverse), _corner_pool_fwd(b, 3, reverse)
        return ya + yb, (ya if save else None), (yb if save else None)
    out = torch.empty_like(a)
    ya, yb = (torch.empty_like(out), torch.empty_like(out)) if save else (None, None)
    if a.numel() == 0:
        return out, ya, yb
    bw = max(_next_pow2(w), 4)
    with _device_guard(a):
        _fused_corner_pool_fwd_kernel[(n * c,)](
            a, b, out, ya if save else out, yb if save else out, c, h, w,
            *a.stride(), *b.stride(), *out.stride(),
            REVERSE=reverse, SAVE=save,
            UNROLL=unroll or min(h, 8 if n * c <= 1024 and bw <= 128 else 2),
            BLOCK_W=bw,
            num_warps=num_warps or max(1, min(bw // 128, 16)),
        )  # fmt: skip
    return out, ya, yb


class _CornerPoolTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, direction: str) -> torch.Tensor:
        ctx.dim, ctx.reverse = DIRECTIONS[direction]
        y = _corner_pool_fwd(x, ctx.dim, ctx.reverse)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return _corner_pool_bwd(y, grad, ctx.dim, ctx.reverse), None


class _FusedCornerPoolTriton(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a: torch.Tensor, b: torch.Tensor, corner: str) -> torch.Tensor:
        ctx.reverse = corner == "tl"
        save = ctx.needs_input_grad[0] or ctx.needs_input_grad[1]
        out, ya, yb = _fused_corner_pool_fwd(a, b, ctx.reverse, save)
        if save:
            ctx.save_for_backward(ya, yb)
        return out

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        ya, yb = ctx.saved_tensors
        ga = _corner_pool_bwd(ya, grad, 2, ctx.reverse) if ctx.needs_input_grad[0] else None
        gb = _corner_pool_bwd(yb, grad, 3, ctx.reverse) if ctx.needs_input_grad[1] else None
        return ga, gb, None


# ---------------------------------------------------------------- public
def corner_pool(x: torch.Tensor, direction: str, backend: str = "auto") -> torch.Tensor:
    """Corner pooling along one direction. x: (N, C, H, W) float -> (N, C, H, W).

    direction: "top", "bottom", "left" or "right" (see the module docstring).
    backend: "auto" (Triton for CUDA fp16/bf16/fp32 tensors, torch otherwise), "triton" or
    "torch" (see kernels._backend).
    The output is saved for the backward: modifying it in place makes autograd raise.
    """
    _check(x, "x", direction=direction, backend=backend)
    if use_triton(x, backend):
        return _CornerPoolTriton.apply(x, direction)
    return _CornerPoolReference.apply(x, direction)


def corner_pool_backward(
    y: torch.Tensor, grad: torch.Tensor, direction: str, backend: str = "auto"
) -> torch.Tensor:
    """dL/dx of :func:`corner_pool` from its output y and dL/dy, (N, C, H, W) each: the
    backward both autograd paths run (the tie rule above), for callers that own the graph."""
    _check(y, "y", direction=direction, backend=backend)
    dim, reverse = DIRECTIONS[direction]
    if use_triton((y, grad), backend):
        return _corner_pool_bwd(y, grad, dim, reverse)
    gs = grad if dim == 2 else grad.transpose(2, 3).contiguous()
    return _from_scan_layout(_backward_rows(_scan_layout(y, dim), gs, reverse), dim)


def fused_corner_pool(
    a: torch.Tensor, b: torch.Tensor, corner: str, backend: str = "auto"
) -> torch.Tensor:
    """CornerNet's pooled sum in one pass. a, b: (N, C, H, W) -> (N, C, H, W).

    corner "tl": top(a) + left(b); "br": bottom(a) + right(b).
    """
    dir_a, dir_b = _check_pair(a, b, corner)
    _check(a, "a", backend=backend)
    if use_triton((a, b), backend):
        return _FusedCornerPoolTriton.apply(a, b, corner)
    return _CornerPoolReference.apply(a, dir_a) + _CornerPoolReference.apply(b, dir_b)
