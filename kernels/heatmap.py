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
    cornernet_decode (re-exported from kernels.decode, imported lazily)

Triton path (one pass over the heatmap): program (t, b) takes BLOCK consecutive flat indices
of image b, computes the k x k window maximum of the logits (sigmoid is monotone, so
max(sigmoid) == sigmoid(max)), the peak test and the packed key
    key = (float32 bits of p) << 32 | (2**32 - 1 - n)     (int64; p >= 0, so bits order like p)
and keeps its top KP = max(2, next_pow2(k)) keys with an in-register bitonic top-k. A final
torch.topk over the (B, tiles * KP) unique keys gives the answer; scores and indices are
unpacked. The Triton path takes k <= MAX_TRITON_K (1024).

Memory traffic per heatmap element: the kernel reads it once from DRAM (the k*k - 1 neighbour
reads hit L1/L2) and writes 8 * KP / BLOCK bytes of candidates (1 B at k = 100, BLOCK = 1024);
the final top-k reads those candidates once. The torch reference moves about 84 B per element
(fp32: sigmoid 8, four shifted torch.maximum passes 48, compare and multiply 24, topk 4).
"""

from __future__ import annotations

import numbers
import os

import torch
import triton
import triton.language as tl

BACKENDS = ("auto", "triton", "torch")
_LOW32 = 0xFFFFFFFF
# Largest per-image top-k the Triton path keeps in registers (KP keys per tile).
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
    k, kernel = int(k), int(kernel)
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
# Combine functions of tl.max / tl.min, passed to tl.reduce directly: the interpreter runs
# them vectorised, while each call of a nested @triton.jit function (tl.max is one) costs
# milliseconds there.
_MAX = tl.standard._elementwise_max
_MIN = tl.standard._elementwise_min


@triton.jit
def _bitonic_merge(h, ND: tl.constexpr, STAGE: tl.constexpr, ALTERNATE: tl.constexpr):
    # STAGE compare-and-swap rounds on the hypercube h of shape [2] * ND. Partners differ in
    # one bit; a min and a max over that size-2 axis (tl.reduce with the built-in combines:
    # vectorised in the interpreter, unlike tl.sort's xor_sum, and shuffles on a GPU) give
    # both outcomes. Direction: alternating with bit STAGE (building bitonic runs) or
    # descending. Shapes are written from constexpr parameters only: a local assigned from a
    # constexpr expression is not constexpr in compiled Triton.
    if ALTERNATE:
        flip = tl.reshape(tl.arange(0, 2), [1] * (ND - STAGE - 1) + [2] + [1] * STAGE)
    else:
        flip = 1
    for j in tl.static_range(STAGE):
        lo = tl.reduce(h, ND - STAGE + j, _MIN, keep_dims=True)
        hi = tl.reduce(h, ND - STAGE + j, _MAX, keep_dims=True)
        right = tl.reshape(tl.arange(0, 2), [1] * (ND - STAGE + j) + [2] + [1] * (STAGE - 1 - j))
        h = tl.where((right ^ flip) != 0, hi, lo)
    return h


@triton.jit
def _bitonic_topk(x, LOG_N: tl.constexpr, LOG_K: tl.constexpr):
    """The 2**LOG_K largest of the 2**LOG_N values of 1-D x, in descending order.

    Bitonic network on the hypercube view [2] * LOG_N: stages 1..LOG_K sort runs of 2**LOG_K
    (alternating direction); each later stage keeps the elementwise larger of two sorted runs
    (a bitonic run) and re-sorts it, halving the data.
    """
    h = tl.reshape(x, [2] * LOG_N)
    for i in tl.static_range(1, LOG_K + 1):
        h = _bitonic_merge(h, LOG_N, i, i < LOG_N)
    for i in tl.static_range(LOG_K + 1, LOG_N + 1):
        h = tl.reduce(h, LOG_N - i, _MAX)
        h = _bitonic_merge(h, LOG_N - i + LOG_K, LOG_K, i < LOG_N)
    return tl.reshape(h, [2**LOG_K])


@triton.jit
def _heatmap_peaks_fwd_kernel(
    x_ptr,
    cand_ptr,
    C,
    H,
    W,
    stride_xb,
    stride_xc,
    stride_xh,
    stride_xw,
    n_tiles,
    KERNEL: tl.constexpr,
    LOG_BLOCK: tl.constexpr,
    LOG_KP: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_b = tl.program_id(1)
    BLOCK: tl.constexpr = 2**LOG_BLOCK
    KP: tl.constexpr = 2**LOG_KP
    R: tl.constexpr = (KERNEL - 1) // 2
    n = pid_t.to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    hw = H * W
    valid = n < C * hw
    c = n // hw
    y = (n - c * hw) // W
    x = n - c * hw - y * W
    base = x_ptr + pid_b.to(tl.int64) * stride_xb + c * stride_xc
    # bf16 is read as raw bits by the interpreter: convert right after the load
    logit = tl.load(base + y * stride_xh + x * stride_xw, mask=valid, other=0.0).to(tl.float32)
    wmax = logit
    for dy in tl.static_range(KERNEL):
        for dx in tl.static_range(KERNEL):
            yy = y + (dy - R)
            xx = x + (dx - R)
            m = valid & (yy >= 0) & (yy < H) & (xx >= 0) & (xx < W)
            v = tl.load(base + yy * stride_xh + xx * stride_xw, mask=m, other=float("-inf"))
            wmax = tl.maximum(wmax, v.to(tl.float32))
    score = tl.sigmoid(logit)
    # compare in sigmoid space like the original: saturated neighbours tie there
    score = tl.where(score == tl.sigmoid(wmax), score, 0.0)
    bits = score.to(tl.int32, bitcast=True).to(tl.int64)
    # low word 2**32 - 1 - n: the lower flat index wins ties in a descending sort
    low = tl.full((BLOCK,), 4294967295, tl.int64) - n
    key = tl.where(valid, (bits << 32) | low, -1)
    top = _bitonic_topk(key, LOG_BLOCK, LOG_KP)
    out = cand_ptr + (pid_b.to(tl.int64) * n_tiles + pid_t) * KP + tl.arange(0, KP)
    tl.store(out, top)


def _heatmap_peaks_fwd(
    heat: torch.Tensor, k: int, kernel: int, block: int | None = None
) -> tuple[torch.Tensor, ...]:
    """Launch one program per BLOCK flat positions of each image, then a small torch.topk.

    Heuristic: KP = max(2, next_pow2(k)) candidates per tile; BLOCK = max(4 * KP, 1024) (so
    the final top-k sees at most 1/4, usually 1/8, of the map), never above next_pow2(C*H*W)
    or below KP. The interpreter pays per operation rather than per element, so there BLOCK
    goes up to 32768 (10x faster at 2x20x64x64). `block` overrides (tests force many tiles).
    """
    b, c, h, w = heat.shape
    total = c * h * w
    kp = max(2, triton.next_power_of_2(k))  # >= 2: a 0-d hypercube has no axis to reshape
    if block is None:
        cap = 32768 if os.environ.get("TRITON_INTERPRET") == "1" else max(4 * kp, 1024)
        block = min(cap, triton.next_power_of_2(total))
    block = max(kp, block)
    n_tiles = triton.cdiv(total, block)
    cand = torch.empty(b, n_tiles * kp, dtype=torch.int64, device=heat.device)
    _heatmap_peaks_fwd_kernel[(n_tiles, b)](
        heat,
        cand,
        c,
        h,
        w,
        *heat.stride(),
        n_tiles,
        KERNEL=kernel,
        LOG_BLOCK=block.bit_length() - 1,
        LOG_KP=kp.bit_length() - 1,
        num_warps=4 if block <= 2048 else 8,
    )
    # keys are unique, so the order is fully determined
    scores, n = _unpack_keys(cand.topk(k, dim=1).values)
    return scores, *_split_index(n, h, w)


# ---------------------------------------------------------------- public
def _is_int(v) -> bool:
    """A Python or numpy integer, not a bool."""
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _check(heat: torch.Tensor, k: int, kernel: int, backend: str) -> None:
    if not isinstance(heat, torch.Tensor):
        raise ValueError(f"heat_logits: expected a torch.Tensor, got {type(heat).__name__}")
    if heat.dim() != 4:
        raise ValueError(
            f"heat_logits: expected 4 dims (B, C, H, W), got shape {tuple(heat.shape)}"
        )
    if not heat.is_floating_point():
        raise ValueError(f"heat_logits: expected a floating-point dtype, got {heat.dtype}")
    total = heat.shape[1] * heat.shape[2] * heat.shape[3]
    if total == 0:
        raise ValueError(f"heat_logits: expected C*H*W > 0, got shape {tuple(heat.shape)}")
    if total >= 2**31:
        raise ValueError(f"heat_logits: C*H*W must be < 2**31, got {total}")
    if not _is_int(k) or not 0 <= k <= total:
        raise ValueError(f"k: expected an int in [0, C*H*W = {total}], got {k!r}")
    if not _is_int(kernel) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel: expected an odd int >= 1, got {kernel!r}")
    if backend not in BACKENDS:
        raise ValueError(f"backend: expected one of {BACKENDS}, got {backend!r}")


def _use_triton(x: torch.Tensor, backend: str) -> bool:
    """Pick the backend; "triton" on a CPU tensor needs TRITON_INTERPRET=1."""
    if backend == "torch" or (backend == "auto" and not x.is_cuda):
        return False
    if not x.is_cuda and os.environ.get("TRITON_INTERPRET") != "1":
        raise ValueError(
            f"backend='triton' needs a CUDA tensor (or TRITON_INTERPRET=1), got {x.device}"
        )
    if x.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"backend='triton' supports float16, bfloat16, float32, got {x.dtype}")
    return True


def heatmap_peaks(
    heat_logits: torch.Tensor, k: int, kernel: int = 3, backend: str = "auto"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Top-k local maxima of sigmoid(heat_logits) per image, CornerNet's `_nms` + `_topk`.

    heat_logits: (B, C, H, W) logits, any float dtype and strides; not modified.
    k: 0 <= k <= C*H*W (ValueError otherwise); kernel: odd NMS window size (1 disables NMS).
    backend: "auto" (Triton for CUDA tensors, the reference otherwise), "triton" or "torch".
    Returns scores (B, k) float32 in descending order (ties: lower flat index first), and
    classes, ys, xs (B, k) int64. Slots past the number of peaks hold score-0 positions.
    The Triton path takes k <= MAX_TRITON_K (1024); "auto" uses the reference above that.
    """
    _check(heat_logits, k, kernel, backend)
    k, kernel = int(k), int(kernel)
    if k > MAX_TRITON_K and backend == "triton":
        raise ValueError(f"k: backend='triton' supports k <= {MAX_TRITON_K}, got {k}")
    empty = k == 0 or heat_logits.shape[0] == 0
    if empty or k > MAX_TRITON_K or not _use_triton(heat_logits, backend):
        return heatmap_peaks_reference(heat_logits, k, kernel)
    return _heatmap_peaks_fwd(heat_logits, k, kernel)


def __getattr__(name: str):  # PEP 562: lazy re-export avoids an import cycle with decode.py
    if name == "cornernet_decode":
        from kernels.decode import cornernet_decode

        return cornernet_decode
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
