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
otherwise).

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
# A tile is UNROLL scan positions x BLOCK_T lines, laid out one of two ways, chosen per launch
# from the strides (_launch_lines), so that global accesses run along the contiguous axis:
# - rows (the scan axis is not contiguous: top/bottom of NCHW): a tuple of UNROLL vectors of
#   BLOCK_T lines, consecutive scan positions, all loaded before the first store, then taken
#   one after another with the running max in registers (a carry vector between tiles).
# - lanes (the scan axis is contiguous: left/right): [BLOCK_T, UNROLL // 4, 4] tiles (lines,
#   lanes, 4), lane l holding 4 consecutive positions of each line (one 16-byte access for
#   fp32; the lines in registers), blocks of 4 in the order the pass visits them, ascending
#   or descending in memory. A thread scans its block in registers, starting from what
#   enters it: an inclusive tl.associative_scan of one value per lane (the block's max, or
#   its run summary), moved one lane up by tl.gather (one shuffle). Forward scans only:
#   reverse=True compiles to flips costing ~8x the shuffles, and non-commutative reverse
#   scans have given wrong results (triton #4362). A carry per line (the same in every lane)
#   joins chunks when the scan axis is longer than UNROLL (CARRY).
# Masked loads take no `other`: a masked position lies past the end of its line or scan, in
# visit order after every valid one, so what it holds reaches only masked stores.


_NAN = tl.constexpr(tl.PropagateNan.ALL)  # maxima propagate NaN, as torch.maximum does


@triton.jit
def _max_nan(a, b):
    # the running max as a scan's combine (elsewhere tl.maximum is called inline: each call of
    # a jit function costs the interpreter milliseconds)
    return tl.maximum(a, b, propagate_nan=_NAN)


@triton.jit
def _open_run(open_a, closed_a, open_b, closed_b):
    # blocks in visit order, a before b (forward scans keep operand order, triton #2362):
    # (dy summed over the run still open at the block's end, whether a run closed in it)
    return tl.where(closed_b, open_b, open_a + open_b), closed_a | closed_b


@triton.jit
def _shift_in(incl, first):
    # [R, L] inclusive scan along the lanes -> exclusive: lane l gets lane l-1's value (one
    # shuffle), lane 0 `first`
    lane = tl.arange(0, incl.shape[1])[None, :]
    src = tl.broadcast_to(tl.maximum(lane - 1, 0), incl.shape)
    return tl.where(lane == 0, first, tl.gather(incl, src, 1))


@triton.jit
def _last_lane(v):
    # [R, L]: lane L-1's value in every lane
    return tl.gather(v, tl.full(v.shape, v.shape[1] - 1, tl.int32), 1)


@triton.jit
def _columns(t, DESC: tl.constexpr):
    # [R, L, 4] -> its 4 columns, [R, L] each, in visit order (DESC: column 3 first); in-thread
    lo, hi = tl.split(tl.reshape(t, [t.shape[0], t.shape[1], 2, 2]))
    c0, c2 = tl.split(lo)
    c1, c3 = tl.split(hi)
    return (c3, c2, c1, c0) if DESC else (c0, c1, c2, c3)


@triton.jit
def _tile(c, DESC: tl.constexpr):
    # _columns' inverse
    c0, c1, c2, c3 = (c[3], c[2], c[1], c[0]) if DESC else (c[0], c[1], c[2], c[3])
    lo, hi = tl.join(c0, c2), tl.join(c1, c3)
    return tl.reshape(tl.join(lo, hi), [c0.shape[0], c0.shape[1], 4])


@triton.jit
def _block_tile(c0, S, L: tl.constexpr, DESC: tl.constexpr):
    # Positions c0 .. c0+4L-1 of a pass as [1, L, 4] tiles: p, the pass position, and m, the
    # memory index, ascending along the 4 columns in both orders (16-byte accesses when
    # aligned); lane l holds visit positions c0+4l .. c0+4l+3. ok: the mask, from m so that it
    # is the same over a lane's 4 columns (one from p would not be when descending: split
    # accesses).
    lane = tl.arange(0, L)[None, :, None]
    col = tl.arange(0, 4)[None, None, :]
    if DESC:
        m = (S - c0 - 4 * (lane + 1)) + col
        p = c0 + 4 * lane + 3 - col
    else:
        m = (c0 + 4 * lane) + col
        p = m
    return p, m, (m >= 0) & (m < S)


@triton.jit
def _rows_fwd(
    x_pl, y_pl, S, T, t0, stride_xs, stride_xt, stride_ys, stride_yt,
    REVERSE: tl.constexpr, UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # BLOCK_T lines from t0 in the lanes; x_pl, y_pl: the (n, c) plane
    t = t0 + tl.arange(0, BLOCK_T)
    t_ok = t < T
    src = x_pl + t.to(tl.int64) * stride_xt
    dst = y_pl + t.to(tl.int64) * stride_yt
    if REVERSE:  # scan position 0 is memory index S-1: start there and step backwards
        last = tl.zeros([], tl.int64) + S - 1  # int64 offsets; a tensor even if S is 1
        src += last * stride_xs
        dst += last * stride_ys
        stride_xs = -stride_xs
        stride_ys = -stride_ys
    carry = tl.full([BLOCK_T], float("-inf"), tl.float32)
    for s0 in range(0, S, UNROLL):
        # every load of the tile before the first store: a store may alias a later load, so
        # the compiler would not hoist loads above it (one load in flight per thread)
        xs = ()
        for r in tl.static_range(UNROLL):
            ok = t_ok & (s0 + r < S)
            # fp32 right after the load: bf16 arithmetic is wrong in the interpreter
            xs += (tl.load(src + r * stride_xs, mask=ok).to(tl.float32),)
        for r in tl.static_range(UNROLL):
            carry = tl.maximum(carry, xs[r], propagate_nan=_NAN)
            tl.store(dst + r * stride_ys, carry, mask=t_ok & (s0 + r < S))
        src += UNROLL * stride_xs
        dst += UNROLL * stride_ys


@triton.jit
def _rows_bwd(
    y_pl, g_pl, x_pl, S, T, t0, stride_ys, stride_yt, stride_gs, stride_gt, stride_xs, stride_xt,
    REVERSE: tl.constexpr, UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # Scan positions are visited from last to first (v = S-1-s). A position is a reset when its
    # running max is new (s = 0 or y[s] > y[s-1]); it receives dy summed over its run, the
    # positions from it up to the next reset. acc holds that sum; it restarts after a reset.
    t = t0 + tl.arange(0, BLOCK_T)
    t_ok = t < T
    y_at = y_pl + t.to(tl.int64) * stride_yt
    g_at = g_pl + t.to(tl.int64) * stride_gt
    x_at = x_pl + t.to(tl.int64) * stride_xt
    if not REVERSE:  # scan position S-1 is memory index S-1 and s-1 is one index back
        last = tl.zeros([], tl.int64) + S - 1
        y_at += last * stride_ys
        g_at += last * stride_gs
        x_at += last * stride_xs
        stride_ys = -stride_ys
        stride_gs = -stride_gs
        stride_xs = -stride_xs
    acc = tl.zeros([BLOCK_T], tl.float32)
    next_reset = tl.full([BLOCK_T], 1, tl.int1)  # the last position opens a run
    for v0 in range(0, S, UNROLL):
        ys = ()  # UNROLL + 1 rows: y[s-1] of the tile's last position is the next tile's first
        for r in tl.static_range(UNROLL + 1):
            ok = t_ok & (v0 + r < S)
            ys += (tl.load(y_at + r * stride_ys, mask=ok).to(tl.float32),)
        gs = ()
        for r in tl.static_range(UNROLL):
            ok = t_ok & (v0 + r < S)
            gs += (tl.load(g_at + r * stride_gs, mask=ok).to(tl.float32),)
        for r in tl.static_range(UNROLL):
            acc = tl.where(next_reset, gs[r], acc + gs[r])
            reset = (ys[r] > ys[r + 1]) | (v0 + r >= S - 1)  # scan position 0: always a reset
            tl.store(x_at + r * stride_xs, tl.where(reset, acc, 0.0), mask=t_ok & (v0 + r < S))
            next_reset = reset
        y_at += UNROLL * stride_ys
        g_at += UNROLL * stride_gs
        x_at += UNROLL * stride_xs


@triton.jit
def _lanes_fwd(
    x_pl, y_pl, S, T, t0, stride_xs, stride_xt, stride_ys, stride_yt,
    REVERSE: tl.constexpr, CARRY: tl.constexpr, UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # lines t0 .. t0+BLOCK_T-1 as [BLOCK_T, L, 4] tiles, chunks of UNROLL positions in scan
    # order (REVERSE: descending)
    L: tl.constexpr = UNROLL // 4
    t = t0 + tl.arange(0, BLOCK_T)[:, None, None]
    t_ok = t < T
    lane = tl.arange(0, L)[None, :]
    carry = tl.full([BLOCK_T, L], float("-inf"), tl.float32)  # the same in every lane
    for c0 in range(0, S, UNROLL):
        _, m, ok = _block_tile(c0, S, L, REVERSE)
        x = tl.load(x_pl + t * stride_xt + m * stride_xs, mask=ok & t_ok)
        # fp32 at once: bf16 arithmetic is wrong in the interpreter
        c = _columns(x.to(tl.float32), REVERSE)
        block_max = tl.maximum(
            tl.maximum(c[0], c[1], propagate_nan=_NAN),
            tl.maximum(c[2], c[3], propagate_nan=_NAN),
            propagate_nan=_NAN,
        )
        block_max = tl.where(lane == 0, tl.maximum(block_max, carry, propagate_nan=_NAN), block_max)
        upto = tl.associative_scan(block_max, 1, _max_nan)  # the max up to block l's end
        y0 = tl.maximum(_shift_in(upto, carry), c[0], propagate_nan=_NAN)
        y1 = tl.maximum(y0, c[1], propagate_nan=_NAN)
        y2 = tl.maximum(y1, c[2], propagate_nan=_NAN)
        y = _tile((y0, y1, y2, tl.maximum(y2, c[3], propagate_nan=_NAN)), REVERSE)
        tl.store(y_pl + t * stride_yt + m * stride_ys, y, mask=ok & t_ok)
        if CARRY:
            carry = _last_lane(upto)


@triton.jit
def _block_resets(y, y_after, p, S):
    # reset[e] of a block's 4 columns (visit order): y[e] > y[e+1] (the scan's predecessor),
    # y_after the next block's first; the last scan position, visited last, always resets
    return (
        (y[0] > y[1]) | (p[0] >= S - 1),
        (y[1] > y[2]) | (p[1] >= S - 1),
        (y[2] > y[3]) | (p[2] >= S - 1),
        (y[3] > y_after) | (p[3] >= S - 1),
    )


@triton.jit
def _lanes_bwd(
    y_pl, g_pl, x_pl, S, T, t0, stride_ys, stride_yt, stride_gs, stride_gt, stride_xs, stride_xt,
    REVERSE: tl.constexpr, CARRY: tl.constexpr, UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # _rows_bwd's recurrence over blocks of 4 in visit order (v = S-1-s; REVERSE: ascending
    # memory). Each lane sums dy over the runs of its block as if none entered it, and
    # summarises the block as (dy sum of the run open at its end, whether a run closed in it);
    # a forward scan of the summaries gives the open run's sum entering each block.
    L: tl.constexpr = UNROLL // 4
    t2 = t0 + tl.arange(0, BLOCK_T)[:, None]
    t = t2[:, :, None]
    t_ok = t < T
    lane = tl.arange(0, L)[None, :]
    carry = tl.zeros([BLOCK_T, L], tl.float32)  # the same in every lane
    for c0 in range(0, S, UNROLL):
        p, m, ok = _block_tile(c0, S, L, not REVERSE)
        after = c0 + 4 * (lane + 1)  # the next block's first position, visited after lane l's
        m_after = after if REVERSE else S - 1 - after
        y = tl.load(y_pl + t * stride_yt + m * stride_ys, mask=ok & t_ok)
        g = tl.load(g_pl + t * stride_gt + m * stride_gs, mask=ok & t_ok)
        y_after = tl.load(y_pl + t2 * stride_yt + m_after * stride_ys, mask=(after < S) & (t2 < T))
        g = _columns(g.to(tl.float32), not REVERSE)
        reset = _block_resets(
            _columns(y.to(tl.float32), not REVERSE), y_after.to(tl.float32),
            _columns(p, not REVERSE), S,
        )  # fmt: skip
        part = (g[0],)  # run sums within the block
        closed = (tl.zeros_like(reset[0]),)  # whether a run closed earlier in the block
        for e in tl.static_range(1, 4):
            part += (tl.where(reset[e - 1], g[e], part[e - 1] + g[e]),)
            closed += (closed[e - 1] | reset[e - 1],)
        open_end = tl.where(reset[3], 0.0, part[3])
        closed_end = closed[3] | reset[3]
        open_end = tl.where((lane == 0) & ~closed_end, carry + open_end, open_end)
        upto, _ = tl.associative_scan((open_end, closed_end), 1, _open_run)
        entering = _shift_in(upto, carry)  # the open run's sum entering block l
        dx = ()
        for e in tl.static_range(4):
            acc = tl.where(closed[e], part[e], entering + part[e])
            dx += (tl.where(reset[e], acc, 0.0),)
        tl.store(x_pl + t * stride_xt + m * stride_xs, _tile(dx, not REVERSE), mask=ok & t_ok)
        if CARRY:
            carry = _last_lane(upto)


@triton.jit
def _corner_pool_fwd_kernel(
    x_ptr, y_ptr, C, S, T,
    stride_xn, stride_xc, stride_xs, stride_xt,
    stride_yn, stride_yc, stride_ys, stride_yt,
    REVERSE: tl.constexpr, LANES: tl.constexpr, CARRY: tl.constexpr,
    UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # program (plane n*C+c, strip of BLOCK_T lines across the scan axis), tiles of UNROLL scan
    # positions laid out as rows or LANES (see above); CARRY: lanes' lines span several chunks
    pid = tl.program_id(0)
    n, c = (pid // C).to(tl.int64), (pid % C).to(tl.int64)
    t0 = tl.program_id(1).to(tl.int64) * BLOCK_T
    x_pl = x_ptr + n * stride_xn + c * stride_xc
    y_pl = y_ptr + n * stride_yn + c * stride_yc
    if LANES:
        _lanes_fwd(x_pl, y_pl, S, T, t0, stride_xs, stride_xt, stride_ys, stride_yt,
                   REVERSE, CARRY, UNROLL, BLOCK_T)  # fmt: skip
    else:
        _rows_fwd(x_pl, y_pl, S, T, t0, stride_xs, stride_xt, stride_ys, stride_yt,
                  REVERSE, UNROLL, BLOCK_T)  # fmt: skip


@triton.jit
def _corner_pool_bwd_kernel(
    y_ptr, g_ptr, gx_ptr, C, S, T,
    stride_yn, stride_yc, stride_ys, stride_yt,
    stride_gn, stride_gc, stride_gs, stride_gt,
    stride_xn, stride_xc, stride_xs, stride_xt,
    REVERSE: tl.constexpr, LANES: tl.constexpr, CARRY: tl.constexpr,
    UNROLL: tl.constexpr, BLOCK_T: tl.constexpr,
):  # fmt: skip
    # the forward's grid and tiles; y: the pooled output, g: dL/dy, gx: dL/dx
    pid = tl.program_id(0)
    n, c = (pid // C).to(tl.int64), (pid % C).to(tl.int64)
    t0 = tl.program_id(1).to(tl.int64) * BLOCK_T
    y_pl = y_ptr + n * stride_yn + c * stride_yc
    g_pl = g_ptr + n * stride_gn + c * stride_gc
    x_pl = gx_ptr + n * stride_xn + c * stride_xc
    if LANES:
        _lanes_bwd(y_pl, g_pl, x_pl, S, T, t0, stride_ys, stride_yt, stride_gs, stride_gt,
                   stride_xs, stride_xt, REVERSE, CARRY, UNROLL, BLOCK_T)  # fmt: skip
    else:
        _rows_bwd(y_pl, g_pl, x_pl, S, T, t0, stride_ys, stride_yt, stride_gs, stride_gt,
                  stride_xs, stride_xt, REVERSE, UNROLL, BLOCK_T)  # fmt: skip


@triton.jit
def _fused_corner_pool_fwd_kernel(
    a_ptr, b_ptr, out_ptr, ya_ptr, yb_ptr, C, H, W,
    stride_an, stride_ac, stride_ah, stride_aw,
    stride_bn, stride_bc, stride_bh, stride_bw,
    stride_on, stride_oc, stride_oh, stride_ow,
    REVERSE: tl.constexpr, SAVE: tl.constexpr, UNROLL: tl.constexpr, BLOCK_W: tl.constexpr,
):  # fmt: skip
    # One program owns an (n, c) plane and walks it once, UNROLL whole rows (BLOCK_W >= W) at
    # a time in pool_a's scan order: pool_a(a) is a running max down the rows (a carry per
    # column), pool_b(b) a lanes scan of each row (as _lanes_fwd), and out, their sum, is
    # written once. A row is a [1, BLOCK_W // 4, 4] tile in pool_b's order.
    L: tl.constexpr = BLOCK_W // 4
    pid = tl.program_id(0)
    n, c = (pid // C).to(tl.int64), (pid % C).to(tl.int64)
    p, m, ok_w = _block_tile(0, W, L, REVERSE)  # "tl": left scans from column W-1
    a_at = a_ptr + n * stride_an + c * stride_ac + m * stride_aw
    b_at = b_ptr + n * stride_bn + c * stride_bc + m * stride_bw
    o_at = n * stride_on + c * stride_oc + m * stride_ow  # out, ya and yb share out's strides
    if REVERSE:  # "tl": top scans from row H-1 upwards
        last = tl.zeros([], tl.int64) + H - 1
        a_at += last * stride_ah
        b_at += last * stride_bh
        o_at += last * stride_oh
        stride_ah = -stride_ah
        stride_bh = -stride_bh
        stride_oh = -stride_oh
    carry = tl.full([1, L, 4], float("-inf"), tl.float32)
    for i0 in range(0, H, UNROLL):
        aa, bb = (), ()  # the whole tile is loaded before the first store
        for r in tl.static_range(UNROLL):
            ok = ok_w & (i0 + r < H)
            x = tl.load(a_at + r * stride_ah, mask=ok)
            aa += (x.to(tl.float32),)
            x = tl.load(b_at + r * stride_bh, mask=ok)
            bb += (x.to(tl.float32),)
        for r in tl.static_range(UNROLL):
            carry = tl.maximum(carry, aa[r], propagate_nan=_NAN)
            cb = _columns(bb[r], REVERSE)
            block_max = tl.maximum(
                tl.maximum(cb[0], cb[1], propagate_nan=_NAN),
                tl.maximum(cb[2], cb[3], propagate_nan=_NAN),
                propagate_nan=_NAN,
            )
            upto = tl.associative_scan(block_max, 1, _max_nan)
            y0 = tl.maximum(_shift_in(upto, float("-inf")), cb[0], propagate_nan=_NAN)
            y1 = tl.maximum(y0, cb[1], propagate_nan=_NAN)
            y2 = tl.maximum(y1, cb[2], propagate_nan=_NAN)
            pool_b = _tile((y0, y1, y2, tl.maximum(y2, cb[3], propagate_nan=_NAN)), REVERSE)
            o = o_at + r * stride_oh
            ok = ok_w & (i0 + r < H)
            tl.store(out_ptr + o, carry + pool_b, mask=ok)
            if SAVE:  # what the backward needs, from the same registers
                tl.store(ya_ptr + o, carry, mask=ok)
                tl.store(yb_ptr + o, pool_b, mask=ok)
        a_at += UNROLL * stride_ah
        b_at += UNROLL * stride_bh
        o_at += UNROLL * stride_oh


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
