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

Public: corner_pool(x, direction, backend="auto"), fused_corner_pool(a, b, corner, backend),
corner_pool_reference, fused_corner_pool_reference (the specification and CPU path). The
benchmark baselines corner_pool_cummax and corner_pool_loop are in kernels.corner_pool_baselines.
backend="auto" runs Triton on CUDA tensors and the torch reference on CPU tensors.

Triton: a program owns whole lines across the scan axis and walks the scan axis row by row,
the running max (forward) or the run's gradient sum (backward) in registers. No
tl.associative_scan: no reverse scans (triton #4362, #8412), and the interpreter runs it
vectorised. The backward reads the saved output y instead of argmax indices (a reset, a new
maximum, is y[s] > y[s-1]). The fused forward gives each (n, c) plane to one program: pass 1
writes pool_a(a) to out, pass 2 adds pool_b(b) to it; its backward is two one-direction launches.

Memory traffic per element (fp32, 4 B): corner_pool forward reads x, writes y: 8 B; backward
reads y and dy, writes dx: 12 B. Fused forward reads a and b and writes out (12 B), then pass 2
re-reads and re-writes out: 12 B of DRAM traffic while the plane stays in L2, up to 20 B if
not (+8 B to save both pooled maps when a gradient is needed). Eager flip + cummax + flip + add
moves about 76 B (values and int64 indices).

CPU reference: one in-place torch.maximum per row (W-scans transpose to rows first), and for
the backward one pass per row of the run sums. Top pool at (1, 256, 128, 128) fp32, 1 thread,
median of 5 on a shared machine: forward 19 ms (loop 36, cummax 321), backward 62 ms (loop
177, cummax 69). Left: forward 58 ms (loop 356, cummax 99), backward 147 ms (loop 590,
cummax 85: the transposes cost it there).
"""

from __future__ import annotations

import contextlib
import os

import torch
import triton
import triton.language as tl

# direction -> (dim of the scan axis, reverse: True when the scan starts at the far end)
DIRECTIONS: dict[str, tuple[int, bool]] = {
    "top": (2, True),
    "bottom": (2, False),
    "left": (3, True),
    "right": (3, False),
}
# corner -> (direction applied to a, direction applied to b)
CORNERS: dict[str, tuple[str, str]] = {"tl": ("top", "left"), "br": ("bottom", "right")}
BACKENDS = ("auto", "triton", "torch")


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
def _check(
    x: torch.Tensor, name: str, direction: str | None = None, backend: str = "torch"
) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name}: expected a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 4:
        raise ValueError(f"{name}: expected 4 dims (N, C, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name}: expected a floating-point dtype, got {x.dtype}")
    if direction is not None and direction not in DIRECTIONS:
        raise ValueError(f"direction: expected one of {sorted(DIRECTIONS)}, got {direction!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def _check_pair(a: torch.Tensor, b: torch.Tensor, corner: str) -> tuple[str, str]:
    _check(a, "a")
    _check(b, "b")
    if a.shape != b.shape or a.dtype != b.dtype or a.device != b.device:
        raise ValueError(
            f"a and b must match: got shape {tuple(a.shape)} vs {tuple(b.shape)}, "
            f"dtype {a.dtype} vs {b.dtype}, device {a.device} vs {b.device}"
        )
    if corner not in CORNERS:
        raise ValueError(f"corner: expected one of {sorted(CORNERS)}, got {corner!r}")
    return CORNERS[corner]


def _use_triton(x: torch.Tensor, backend: str) -> bool:
    """Pick the backend: "auto" takes Triton for CUDA fp16/bf16/fp32 tensors, torch otherwise."""
    supported = x.dtype in (torch.float16, torch.bfloat16, torch.float32)
    if backend != "triton":
        return backend == "auto" and x.is_cuda and supported
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs a CUDA tensor or TRITON_INTERPRET=1, got {x.device}"
        )
    if not supported:
        raise ValueError(f"backend='triton' supports float16, bfloat16, float32, got {x.dtype}")
    return True


# ---------------------------------------------------------------- Triton
@triton.jit
def _max_lines(
    src, dst, saved, S, stride_src, stride_dst, line_ok,
    REVERSE: tl.constexpr, UNROLL: tl.constexpr, ADD: tl.constexpr, SAVE: tl.constexpr,
):  # fmt: skip
    # Running max along the scan axis for a vector of lines: src/dst/saved point at each line's
    # element 0, stride_* step along the scan axis. UNROLL rows per trip: their loads do not
    # depend on the carry, so they are in flight together. ADD: dst += max instead of dst = max.
    if REVERSE:  # walk from the far end, stepping backwards
        last = tl.zeros([], tl.int64) + S - 1  # int64 offsets; a tensor even if S is 1
        src += last * stride_src
        dst += last * stride_dst
        saved += last * stride_dst
        stride_src = -stride_src
        stride_dst = -stride_dst
    carry = tl.full(line_ok.shape, float("-inf"), tl.float32)
    for s0 in range(0, S, UNROLL):
        for r in tl.static_range(UNROLL):
            ok = line_ok & (s0 + r < S)
            # fp32 right after the load: bf16 arithmetic is wrong in the interpreter
            x = tl.load(src, mask=ok, other=float("-inf")).to(tl.float32)
            carry = tl.maximum(carry, x, propagate_nan=tl.PropagateNan.ALL)
            if ADD:
                tl.store(dst, carry + tl.load(dst, mask=ok, other=0.0).to(tl.float32), mask=ok)
            else:
                tl.store(dst, carry, mask=ok)
            if SAVE:
                tl.store(saved, carry, mask=ok)
            src += stride_src
            dst += stride_dst
            saved += stride_dst


@triton.jit
def _corner_pool_fwd_kernel(
    x_ptr, y_ptr, C, S, T,
    stride_xn, stride_xc, stride_xs, stride_xt,
    stride_yn, stride_yc, stride_ys, stride_yt,
    REVERSE: tl.constexpr, UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # program (plane n*C+c, strip of BLOCK_T lines across the scan axis), one thread per line
    pid = tl.program_id(0)
    n, c = (pid // C).to(tl.int64), (pid % C).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    x_line = x_ptr + n * stride_xn + c * stride_xc + t.to(tl.int64) * stride_xt
    y_line = y_ptr + n * stride_yn + c * stride_yc + t.to(tl.int64) * stride_yt
    _max_lines(
        x_line, y_line, y_line, S, stride_xs, stride_ys, t < T, REVERSE, UNROLL, False, False
    )


@triton.jit
def _corner_pool_bwd_kernel(
    y_ptr, g_ptr, gx_ptr, C, S, T,
    stride_yn, stride_yc, stride_ys, stride_yt,
    stride_gn, stride_gc, stride_gs, stride_gt,
    stride_xn, stride_xc, stride_xs, stride_xt,
    REVERSE: tl.constexpr, UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # Scan positions s are visited from last to first (v = S-1-s). A position is a reset when
    # its running max is new (s = 0 or y[s] > y[s-1]); it receives dy summed over its run, the
    # positions from it up to the next reset. acc holds that sum; it restarts after a reset.
    pid = tl.program_id(0)
    n, c = (pid // C).to(tl.int64), (pid % C).to(tl.int64)
    t = tl.program_id(1) * BLOCK_T + tl.arange(0, BLOCK_T)
    t_ok = t < T
    tt = t.to(tl.int64)
    y_at = y_ptr + n * stride_yn + c * stride_yc + tt * stride_yt
    g_at = g_ptr + n * stride_gn + c * stride_gc + tt * stride_gt
    x_at = gx_ptr + n * stride_xn + c * stride_xc + tt * stride_xt
    if REVERSE:  # scan position S-1 is memory index 0 and s-1 is one index further
        step_y, step_g, step_x = stride_ys, stride_gs, stride_xs
    else:  # scan position S-1 is memory index S-1 and s-1 is one index back
        last = tl.zeros([], tl.int64) + S - 1
        y_at += last * stride_ys
        g_at += last * stride_gs
        x_at += last * stride_xs
        step_y, step_g, step_x = -stride_ys, -stride_gs, -stride_xs
    y_cur = tl.load(y_at, mask=t_ok, other=0.0).to(tl.float32)
    acc = tl.zeros([BLOCK_T], tl.float32)
    next_reset = tl.full([BLOCK_T], 1, tl.int1)  # the last position opens a run
    for v0 in range(0, S, UNROLL):
        for r in tl.static_range(UNROLL):
            ok = t_ok & (v0 + r < S)
            first = v0 + r >= S - 1  # scan position 0: always a reset
            y_prev = tl.load(y_at + step_y, mask=ok & (v0 + r < S - 1), other=float("-inf"))
            g = tl.load(g_at, mask=ok, other=0.0).to(tl.float32)
            acc = tl.where(next_reset, g, acc + g)
            reset = (y_cur > y_prev.to(tl.float32)) | first
            tl.store(x_at, tl.where(reset, acc, 0.0), mask=ok)
            next_reset = reset
            y_cur = y_prev.to(tl.float32)  # carried: y is read once
            y_at += step_y
            g_at += step_g
            x_at += step_x


@triton.jit
def _fused_corner_pool_fwd_kernel(
    a_ptr, b_ptr, out_ptr, ya_ptr, yb_ptr, C, H, W,
    stride_an, stride_ac, stride_ah, stride_aw,
    stride_bn, stride_bc, stride_bh, stride_bw,
    stride_on, stride_oc, stride_oh, stride_ow,
    REVERSE: tl.constexpr, SAVE: tl.constexpr, UNROLL: tl.constexpr,
    BLOCK_H: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # One program owns a whole (n, c) plane, so its two passes need no cross-program sync:
    # pass 1 scans a along H into out, pass 2 scans b along W and adds it to out (the plane it
    # re-reads was just written by this program and is usually still in L2).
    pid = tl.program_id(0)
    n, c = (pid // C).to(tl.int64), (pid % C).to(tl.int64)
    a_pl = a_ptr + n * stride_an + c * stride_ac
    b_pl = b_ptr + n * stride_bn + c * stride_bc
    o_pl = n * stride_on + c * stride_oc
    for w0 in range(0, W, BLOCK_W):
        j = (w0 + tl.arange(0, BLOCK_W)).to(tl.int64)  # lines: columns
        o = o_pl + j * stride_ow
        _max_lines(a_pl + j * stride_aw, out_ptr + o, ya_ptr + o, H, stride_ah, stride_oh,
                   j < W, REVERSE, UNROLL, False, SAVE)  # fmt: skip
    # pass 2 reads what other threads of this program stored in pass 1
    tl.debug_barrier()
    for h0 in range(0, H, BLOCK_H):
        i = (h0 + tl.arange(0, BLOCK_H)).to(tl.int64)  # lines: rows
        o = o_pl + i * stride_oh
        _max_lines(b_pl + i * stride_bh, out_ptr + o, yb_ptr + o, W, stride_bw, stride_ow,
                   i < H, REVERSE, UNROLL, True, SAVE)  # fmt: skip


def _next_pow2(n: int) -> int:
    return triton.next_power_of_2(max(int(n), 1))


def _device_guard(t: torch.Tensor) -> contextlib.AbstractContextManager:
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _launch_lines(
    kernel: triton.JITFunction, tensors: list[torch.Tensor], dim: int, reverse: bool,
    block_t: int | None, unroll: int | None, num_warps: int | None,
) -> None:  # fmt: skip
    """Launch a one-direction kernel on (N, C, H, W) tensors scanning along ``dim``.

    One thread per line across the scan axis: BLOCK_T up to 64 lanes (1-2 warps), so that a
    batch-1 map still gives N*C*ceil(T/64) programs; UNROLL 8 rows of independent loads.
    CPU tensors run in the interpreter, whose cost is per program and op, not per element:
    they get one strip of up to 1024 lines.
    """
    t0, tdim = tensors[0], 5 - dim  # tdim: the other spatial axis
    size_s, size_t = t0.shape[dim], t0.shape[tdim]
    bt = block_t or min(_next_pow2(size_t), 64 if t0.is_cuda else 1024)
    strides = [
        v for t in tensors for v in (t.stride(0), t.stride(1), t.stride(dim), t.stride(tdim))
    ]
    with _device_guard(t0):
        kernel[(t0.shape[0] * t0.shape[1], triton.cdiv(size_t, bt))](
            *tensors, t0.shape[1], size_s, size_t, *strides,
            REVERSE=reverse, UNROLL=unroll or min(_next_pow2(size_s), 8), BLOCK_T=bt,
            num_warps=num_warps or max(1, min(bt // 32, 4)),
        )  # fmt: skip


def _corner_pool_fwd(
    x: torch.Tensor, dim: int, reverse: bool, block_t: int | None = None,
    unroll: int | None = None, num_warps: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """One-direction forward. x: (N, C, H, W) -> y, same shape and dtype."""
    y = torch.empty_like(x)
    if x.numel():
        _launch_lines(_corner_pool_fwd_kernel, [x, y], dim, reverse, block_t, unroll, num_warps)
    return y


def _corner_pool_bwd(
    y: torch.Tensor, grad: torch.Tensor, dim: int, reverse: bool, block_t: int | None = None,
    unroll: int | None = None, num_warps: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """One-direction backward. y: pooled output, grad: dL/dy, (N, C, H, W) -> dL/dx."""
    gx = torch.empty_like(y)
    if y.numel():
        kernel = _corner_pool_bwd_kernel
        _launch_lines(kernel, [y, grad, gx], dim, reverse, block_t, unroll, num_warps)
    return gx


def _fused_corner_pool_fwd(
    a: torch.Tensor, b: torch.Tensor, reverse: bool, save: bool,
    block: int | None = None, unroll: int | None = None, num_warps: int = 4,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:  # fmt: skip
    """Fused forward. a, b: (N, C, H, W) -> (out, pool_a(a), pool_b(b)).

    The pooled maps are allocated and written only when ``save``. Grid: (N*C,), one plane per
    program; lines of up to 128 lanes (``block``) per pass, UNROLL 8 rows.
    """
    out = torch.empty_like(a)
    ya, yb = (torch.empty_like(out), torch.empty_like(out)) if save else (None, None)
    if a.numel() == 0:
        return out, ya, yb
    n, c, h, w = a.shape
    with _device_guard(a):
        _fused_corner_pool_fwd_kernel[(n * c,)](
            a, b, out, ya if save else out, yb if save else out, c, h, w,
            *a.stride(), *b.stride(), *out.stride(),
            REVERSE=reverse, SAVE=save, UNROLL=unroll or min(_next_pow2(max(h, w)), 8),
            BLOCK_H=block or min(_next_pow2(h), 128), BLOCK_W=block or min(_next_pow2(w), 128),
            num_warps=num_warps,
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
    backend: "auto" (Triton for CUDA tensors, torch otherwise), "triton" or "torch".
    The output is saved for the backward: modifying it in place makes autograd raise.
    """
    _check(x, "x", direction=direction, backend=backend)
    if _use_triton(x, backend):
        return _CornerPoolTriton.apply(x, direction)
    return _CornerPoolReference.apply(x, direction)


def fused_corner_pool(
    a: torch.Tensor, b: torch.Tensor, corner: str, backend: str = "auto"
) -> torch.Tensor:
    """CornerNet's pooled sum in one pass. a, b: (N, C, H, W) -> (N, C, H, W).

    corner "tl": top(a) + left(b); "br": bottom(a) + right(b).
    """
    dir_a, dir_b = _check_pair(a, b, corner)
    _check(a, "a", backend=backend)
    if _use_triton(a, backend):
        return _FusedCornerPoolTriton.apply(a, b, corner)
    return _CornerPoolReference.apply(a, dir_a) + _CornerPoolReference.apply(b, dir_b)
