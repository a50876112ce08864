"""Heatmap peaks: sigmoid, k x k max-pool NMS and top-k, the first half of CornerNet's decode.

Maths, for logits x of shape (B, C, H, W), kernel size k (odd), r = (k - 1) // 2:

    s[b,c,y,x]    = sigmoid(x[b,c,y,x])                                  (computed in float32)
    m[b,c,y,x]    = max { s[b,c,y',x'] : |y'-y| <= r, |x'-x| <= r, inside the map }
    p[b,c,y,x]    = s[b,c,y,x] if s[b,c,y,x] == m[b,c,y,x] else 0       ("peaks", the NMS)
    n             = c*H*W + y*W + x                                      (flat index per image)
    top-k over n of p[b] in descending order, ties broken by the LOWER flat index n.

This is the original's `_nms` (max_pool2d, stride 1, padding r, keep where pooled == value)
followed by its `_topk` over C*H*W. Plateaus (equal neighbours) all survive, as in the
original. If fewer than k positions are peaks, the remaining slots hold suppressed positions
with score 0: the lowest flat indices among them (the original leaves that choice to
torch.topk's tie order, which is unspecified). k > C*H*W raises ValueError (as torch.topk
does); k = 0 returns empty tensors. The equality test is exact in sigmoid space, so logits
whose sigmoids round to the same float32 (saturated peaks) tie exactly as in the original.

Public functions:
    heatmap_peaks(heat_logits, k, kernel=3, backend="auto") -> scores, classes, ys, xs (B, k)
    heatmap_peaks_reference(heat_logits, k, kernel=3)       the torch specification / CPU path

Triton path, an exact two-stage top-k (keys are unique, so "the k largest" is one set):
    key = (float32 bits of p) << 32 | (2**32 - 1 - n)     (int64; p >= 0, so bits order like p)
    group (c, band, x) = positions (c, band*ROWS + i, x), i < ROWS: ROWS rows of one column
1. pass 1, _heatmap_peaks_fwd_kernel(GATHER=False): one thread lane per group computes the
   k x k window maximum of the logits (separable: the horizontal maxima of ROWS + 2r rows,
   then a rolling vertical maximum; sigmoid is monotone, so max(sigmoid) == sigmoid(max)), the
   peak test and the key of each position, and writes only the group's largest key: (B, G),
   G = C * ceil(H / ROWS) * W. No sort, no shuffle, no barrier.
2. torch.topk picks the min(k, G) groups with the largest maxima. Every position of the top k
   lies in one of them: its group's maximum m is >= its key, so fewer than k keys exceed m.
3. pass 2, the same kernel (GATHER=True), recomputes all ROWS keys of those groups:
   (B, min(k, G) * ROWS); a final torch.topk over them gives the answer, then unpacked.
The Triton path takes k <= MAX_TRITON_K (1024).

Memory traffic per heatmap element: pass 1 reads it once from DRAM (neighbour columns and
the 2r halo rows of each band, (ROWS + 2r) / ROWS of the map, hit L1/L2) and writes 8 / ROWS
bytes of group maxima (0.5 B at ROWS = 16); the group top-k reads those once. Pass 2 and
the final top-k touch k * ROWS positions per image, independent of the map size. The torch
reference moves about 84 B per element (fp32: sigmoid 8, four shifted torch.maximum passes
48, compare and multiply 24, topk 4).

NaN logits are outside the contract: the reference keeps NaN scores (torch.topk ranks them
first), the Triton path scores a NaN position 0, and its neighbours' peak tests follow the
platform's max (NaN-propagating in the interpreter, NaN-ignoring on a GPU).
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl

from kernels._backend import check_backend, check_float_tensor, is_int, use_triton

_LOW32 = 0xFFFFFFFF
# Largest per-image top-k the Triton path takes: pass 2 and the final topk handle k * ROWS
# keys per image, so this is an API limit (cornernet_decode follows it), not a register one.
MAX_TRITON_K = 1024


# ---------------------------------------------------------------- torch reference
def _window_max(s: torch.Tensor, kernel: int) -> torch.Tensor:
    """k x k stride-1 max over the last two dims, out-of-map cells ignored: (B, C, H, W).

    Equal to max_pool2d(s, kernel, 1, (kernel - 1) // 2) but separable (rows, then columns),
    2 * (k - 1) whole-map torch.maximum calls and no copy: on CPU about 10x faster than
    max_pool2d at (1, 80, 128, 128). Always returns a new tensor.
    """
    r = (kernel - 1) // 2
    out = s
    for dim in (2, 3) if r > 0 else ():  # H first: its shifted slices are contiguous row blocks
        src, size = out, out.shape[dim]
        if size == 1:
            continue
        out = torch.empty_like(src)
        n = size - 1  # the first shift writes the new buffer: out[i] = max(s[i], s[i-1])
        torch.maximum(src.narrow(dim, 1, n), src.narrow(dim, 0, n), out=out.narrow(dim, 1, n))
        out.narrow(dim, 0, 1).copy_(src.narrow(dim, 0, 1))
        for d in range(1, min(r, size - 1) + 1):
            n = size - d
            lo = out.narrow(dim, 0, n)
            torch.maximum(lo, src.narrow(dim, d, n), out=lo)  # neighbour d below / right
            if d > 1:
                hi = out.narrow(dim, d, n)
                torch.maximum(hi, src.narrow(dim, 0, n), out=hi)  # neighbour d above / left
    return out if out is not s else s.clone()  # always a new tensor


def _split_index(n: torch.Tensor, height: int, width: int) -> tuple[torch.Tensor, ...]:
    """Flat indices c*H*W + y*W + x (B, k) -> classes, ys, xs (int64, each (B, k))."""
    cls = torch.div(n, height * width, rounding_mode="floor")
    rem = n - cls * (height * width)
    ys = torch.div(rem, width, rounding_mode="floor")
    return cls, ys, rem - ys * width


def _unpack_keys(keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Packed int64 keys -> float32 scores (the high word's bits) and flat indices (int64)."""
    return (keys >> 32).to(torch.int32).view(torch.float32), _LOW32 - (keys & _LOW32)


def _topk_lowest_index(flat: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Top-k of (B, N) non-negative float32 rows, ties broken by the lower column index.

    Fast path: torch.topk(k + 1) decides the set unless the k-th and (k+1)-th values tie; the
    k winners are then reordered by (value desc, index asc). On a boundary tie (e.g. fewer than
    k peaks, so zeros compete) the exact path ranks unique packed int64 keys instead.
    """
    n = flat.shape[1]
    vals, idx = flat.topk(min(k + 1, n), dim=1)
    if k < n and bool((vals[:, k - 1] == vals[:, k]).any()):
        keys = flat.view(torch.int32).to(torch.int64) << 32
        keys |= _LOW32 - torch.arange(n, device=flat.device)
        return _unpack_keys(keys.topk(k, dim=1).values)
    vals, idx = vals[:, :k], idx[:, :k]
    idx, order = idx.sort(dim=1)  # index ascending, then a stable sort by value descending
    vals = vals.gather(1, order)
    vals, order = vals.sort(dim=1, descending=True, stable=True)
    return vals, idx.gather(1, order)


def heatmap_peaks_reference(
    heat_logits: torch.Tensor, k: int, kernel: int = 3
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Torch specification of :func:`heatmap_peaks` (any device); see the module docstring."""
    _check(heat_logits, k, kernel, "torch")
    return _peaks_reference(heat_logits, int(k), int(kernel))


def _peaks_reference(heat_logits: torch.Tensor, k: int, kernel: int) -> tuple[torch.Tensor, ...]:
    """:func:`heatmap_peaks_reference` on checked inputs (cornernet_decode checks once)."""
    b, c, h, w = heat_logits.shape
    # a new tensor (the input is never modified), contiguous for the flat view
    s = torch.sigmoid(heat_logits.float().contiguous())
    if kernel > 1:  # keep where pooled == value: s * keep, as the original (3x a masked_fill)
        s.mul_(_window_max(s, kernel).eq_(s))
    if k == 0:
        empty = torch.empty(b, 0, dtype=torch.int64, device=s.device)
        return s.new_empty(b, 0), empty, empty.clone(), empty.clone()
    scores, n = _topk_lowest_index(s.view(b, c * h * w), k)
    return scores, *_split_index(n, h, w)


# ---------------------------------------------------------------- Triton
@triton.jit
def _peak_key(score, n):
    # (float32 bits of score) << 32 | (2**32 - 1 - n): score >= 0, so the bits order like the
    # scores, and the lower flat index n wins ties in a descending sort
    bits = score.to(tl.int32, bitcast=True).to(tl.int64)
    return (bits << 32) | (4294967295 - n.to(tl.int64))


@triton.jit
def _heatmap_peaks_fwd_kernel(
    x_ptr,
    gid_ptr,
    out_ptr,
    H,
    W,
    n_bands,
    n_groups,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    KERNEL: tl.constexpr,
    ROWS: tl.constexpr,
    BLOCK: tl.constexpr,
    GATHER: tl.constexpr,
):
    """Peak keys of BLOCK groups (one thread lane each) of image program_id(1).

    A group is ROWS rows of one column of one class plane: group g = (c * n_bands + band) * W
    + x holds (c, band * ROWS + r, x) for r < ROWS (rows >= H excluded). GATHER = False (pass
    1): groups pid * BLOCK + lane, n_groups = groups per image; writes each group's largest
    key to out (B, n_groups). GATHER = True (pass 2): the groups listed in gid (B, n_groups);
    writes every key of each to out (B, n_groups, ROWS), -1 for rows past the map.
    """
    pid = tl.program_id(0)
    pid_b = tl.program_id(1)
    R: tl.constexpr = (KERNEL - 1) // 2
    lane = pid * BLOCK + tl.arange(0, BLOCK)
    live = lane < n_groups
    if GATHER:
        g = tl.load(gid_ptr + pid_b.to(tl.int64) * n_groups + lane, mask=live, other=0)
        g = g.to(tl.int32)
    else:
        g = tl.minimum(lane, n_groups - 1)  # idle lanes redo the last group: no load masks
    # one division pair per lane, shared by its ROWS elements
    x = g % W
    t = g // W
    c = t // n_bands
    y0 = (t - c * n_bands) * ROWS
    n0 = c * (H * W) + x  # flat index of (c, 0, x); C*H*W < 2**31 is checked by the caller
    # int64 offsets: a strided view may span more than 2**31 elements of its storage
    base = x_ptr + pid_b.to(tl.int64) * stride_xb + c.to(tl.int64) * stride_xc
    base += x.to(tl.int64) * stride_xw  # row offsets below are int32: (H - 1) * stride_xh < 2**31
    # Separable window: ring holds the horizontal maxima of the last 2R input rows, mid the
    # centre logits of the last R (sigmoid is monotone: max(sigmoid) == sigmoid(max)).
    # Rows outside the map are clamped to its edge, a row the window holds anyway, so only
    # the neighbour columns need masks (loop-invariant), and their offsets are immediates.
    ring = ()
    mid = ()
    best = tl.full([BLOCK], -1.0, tl.float32)
    best_y = y0
    scores = ()
    for i in tl.static_range(ROWS + 2 * R):
        yy = y0 + (i - R)
        # above the band only the map's top edge can cut a row, below it only the bottom
        yy = tl.maximum(yy, 0) if i < R else tl.minimum(yy, H - 1)
        row = base + yy * stride_xh
        h = None
        for dx in tl.static_range(KERNEL):
            if dx == R:
                v = tl.load(row)
            else:
                ok = (x + (dx - R) >= 0) & (x + (dx - R) < W)
                v = tl.load(row + (dx - R) * stride_xw, mask=ok, other=float("-inf"))
            # bf16 is read as raw bits by the interpreter: convert right after the load
            v = v.to(tl.float32)
            h = v if dx == 0 else tl.maximum(h, v)
            if dx == R and i >= R:  # the centre of output row i - R
                mid = mid + (v,)
        ring = ring + (h,)
        if i >= 2 * R:  # output row r = i - 2R: its window's last row has been read
            wmax = ring[0]
            for j in tl.static_range(1, 2 * R + 1):
                wmax = tl.maximum(wmax, ring[j])
            logit = mid[0]
            ring = ring[1:]
            mid = mid[1:]
            y = y0 + (i - 2 * R)
            valid = y < H
            score = tl.sigmoid(logit)
            # compare in sigmoid space like the original: saturated neighbours tie there
            score = tl.where(score == tl.sigmoid(wmax), score, 0.0)
            if GATHER:
                scores = scores + (tl.where(valid, score, -1.0),)
            else:
                # strict >: of equal scores the upper row (lower flat index) stays, so the
                # group's best is its largest key; best starts below every score (>= 0)
                better = valid & (score > best)
                best = tl.where(better, score, best)
                best_y = tl.where(better, y, best_y)
    if GATHER:
        # stores after every load: a store between loads would keep later loads behind it
        out = out_ptr + (pid_b.to(tl.int64) * n_groups + lane) * ROWS
        for r in tl.static_range(ROWS):
            key = _peak_key(scores[r], n0 + (y0 + r) * W)
            tl.store(out + r, tl.where(scores[r] >= 0.0, key, -1), mask=live)
    else:
        key = _peak_key(best, n0 + best_y * W)
        tl.store(out_ptr + pid_b.to(tl.int64) * n_groups + lane, key, mask=live)


def _heatmap_peaks_pass(
    heat: torch.Tensor, gid: torch.Tensor | None, n_groups: int, kernel: int, rows: int, block: int
) -> torch.Tensor:
    """Run _heatmap_peaks_fwd_kernel: pass 1 (gid None) -> (B, n_groups) group maxima; pass 2
    -> (B, n_groups * rows) keys of the groups in gid (B, n_groups). heat: (B, C, H, W).

    Heuristic: BLOCK groups per program, one per thread up to 4 warps. A map whose row offsets
    reach 2**31 elements (a strided view) is copied, since the kernel's row offsets are int32.
    """
    b, _, h, w = heat.shape
    if (h - 1) * abs(heat.stride(2)) >= 2**31:
        heat = heat.contiguous()
    size = n_groups if gid is None else n_groups * rows
    out = torch.empty(b, size, dtype=torch.int64, device=heat.device)
    _heatmap_peaks_fwd_kernel[(triton.cdiv(n_groups, block), b)](
        heat,
        out if gid is None else gid,
        out,
        h,
        w,
        triton.cdiv(h, rows),
        n_groups,
        *heat.stride(),
        KERNEL=kernel,
        ROWS=rows,
        BLOCK=block,
        GATHER=gid is not None,
        num_warps=max(1, min(4, block // 32)),
    )
    return out


def _heatmap_peaks_fwd(
    heat: torch.Tensor, k: int, kernel: int, block: int | None = None, rows: int | None = None
) -> tuple[torch.Tensor, ...]:
    """heat (B, C, H, W) -> scores, classes, ys, xs (B, k): group maxima (pass 1), torch.topk
    of the groups, their keys (pass 2), torch.topk of the keys (see the module docstring).

    Heuristic: ROWS = min(16, H) rows per group: the 2r halo rows cost (ROWS + 2r) / ROWS of
    the loads, pass 1 writes 8 / ROWS bytes per element and pass 2 handles k * ROWS positions;
    at 80 x 128 x 128, 640 programs of BLOCK = 128 groups (4 warps, one group per thread).
    The interpreter pays per operation rather than per element, so there BLOCK goes up to
    8192. `block` and `rows` override (tests force many programs and bands).
    """
    b, c, h, w = heat.shape
    rows = min(rows or 16, h)
    groups = c * triton.cdiv(h, rows) * w
    if block is None:
        cap = 8192 if os.environ.get("TRITON_INTERPRET") == "1" else 128
        block = min(cap, triton.next_power_of_2(groups))
    best = _heatmap_peaks_pass(heat, None, groups, kernel, rows, block)
    kg = min(k, groups)
    gid = best.topk(kg, dim=1, sorted=False).indices  # (B, kg): the order does not matter
    keys = _heatmap_peaks_pass(heat, gid, kg, kernel, rows, min(block, triton.next_power_of_2(kg)))
    # keys are unique, so the order is fully determined
    scores, n = _unpack_keys(keys.topk(k, dim=1).values)
    return scores, *_split_index(n, h, w)


# ---------------------------------------------------------------- public
def _check(heat: torch.Tensor, k: int, kernel: int, backend: str) -> None:
    check_float_tensor(heat, "heat_logits", "B, C, H, W")
    total = heat.shape[1] * heat.shape[2] * heat.shape[3]
    if total == 0:
        raise ValueError(f"heat_logits: expected C*H*W > 0, got shape {tuple(heat.shape)}")
    if total >= 2**31:
        raise ValueError(f"heat_logits: C*H*W must be < 2**31, got {total}")
    if not is_int(k) or not 0 <= k <= total:
        raise ValueError(f"k: expected an int in [0, C*H*W = {total}], got {k!r}")
    if not is_int(kernel) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel: expected an odd int >= 1, got {kernel!r}")
    check_backend(backend)


def _triton_k_limit(name: str, k: int) -> str | None:
    """None when the Triton path takes ``k``, else the ValueError message for backend="triton"."""
    if k <= MAX_TRITON_K:
        return None
    return f"{name}: backend='triton' supports {name} <= {MAX_TRITON_K}, got {k}"


def heatmap_peaks(
    heat_logits: torch.Tensor, k: int, kernel: int = 3, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k local maxima of sigmoid(heat_logits) per image, CornerNet's `_nms` + `_topk`.

    heat_logits: (B, C, H, W) logits, any float dtype and strides; not modified.
    k: 0 <= k <= C*H*W (ValueError otherwise); kernel: odd NMS window size (1 disables NMS).
    A NaN logit raises ValueError (+-inf are fine: sigmoid 1 and 0).
    backend: "auto" (Triton for CUDA fp16/bf16/fp32 tensors, the reference otherwise), "triton"
    or "torch" (see kernels._backend).
    Returns scores (B, k) float32 in descending order (ties: lower flat index first), and
    classes, ys, xs (B, k) int64. Slots past the number of peaks hold score-0 positions.
    The Triton path takes k <= MAX_TRITON_K (1024); "auto" uses the reference above that.
    """
    _check(heat_logits, k, kernel, backend)
    # one host sync per call (not in _check: the reference path would sync twice); a NaN
    # logit would rank first (Triton) or anywhere (torch.topk), so it is refused. amax
    # propagates NaN: one reduction, no mask (9x cheaper than isnan(x).any() on the CPU)
    if not heat_logits.is_meta and heat_logits.numel() and bool(heat_logits.amax().isnan()):
        raise ValueError("heat_logits: expected no NaN, got NaN values")
    k, kernel = int(k), int(kernel)
    empty = k == 0 or heat_logits.shape[0] == 0
    if empty or not use_triton(heat_logits, backend, _triton_k_limit("k", k)):
        return _peaks_reference(heat_logits, k, kernel)
    return _heatmap_peaks_fwd(heat_logits, k, kernel)
