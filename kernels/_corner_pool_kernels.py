"""The Triton kernels of :mod:`kernels.corner_pool` (private: import from there).

Corner pooling's @triton.jit helpers and its three kernels: _corner_pool_fwd_kernel and
_corner_pool_bwd_kernel (one direction, rows or lanes layout) and
_fused_corner_pool_fwd_kernel (the one-pass TL/BR forward). The maths, the tie rule, the
tiling and the memory traffic per element are in kernels.corner_pool's docstring; the
launchers, the autograd Functions and the public functions are there too.
"""

from __future__ import annotations

import triton
import triton.language as tl

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
