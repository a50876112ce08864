"""CornerNet decode: pair top-left and bottom-right corners into scored boxes.

Maths, per image b, with (s, c, y, x) = heatmap_peaks(heat, K, kernel) for each corner type
(sigmoid, k x k max-pool NMS, top-K over C*H*W; see kernels.heatmap):

    X_i = x_i + regr[b,0,y_i,x_i],  Y_i = y_i + regr[b,1,y_i,x_i],  t_i = tag[b,0,y_i,x_i]
    score[i,j] = (s_tl[i] + s_br[j]) / 2,  or -1 when
        c_tl[i] != c_br[j]  or  |t_tl[i] - t_br[j]| > ae_threshold
        or  X_br[j] < X_tl[i]  or  Y_br[j] < Y_tl[i]
    (v, p) = top num_dets of score flattened with p = i*K + j  (torch.topk)
    row = (X_tl[i], Y_tl[i], X_br[j], Y_br[j], v, s_tl[i], s_br[j], float(c_tl[i])),
          i = p // K, j = p % K

This is the original CornerNet `_decode` (heatmap coordinates, rejected pairs at -1; their
order among themselves is whatever torch.topk gives, as in the original). Requirements:
1 <= K <= C*H*W and 0 <= num_dets <= K*K (ValueError otherwise). Outputs are float32 for
every input dtype (the arithmetic is done in float32).

Public functions:
    cornernet_decode(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K=100, kernel=3,
                     ae_threshold=0.5, num_dets=1000, backend="auto") -> (B, num_dets, 8)
    cornernet_decode_reference(...)  torch specification and CPU path: pair scores only, (B, K, K)
    cornernet_decode_dense(...)      the original's algorithm written naively (max_pool2d NMS,
                                     B x K x K x 4 boxes materialised): a benchmark baseline

Memory traffic (fp32, K = 100): the heatmaps as in kernels.heatmap (read once on the Triton
path); the pair kernel gathers 5 numbers per corner (regression, tag) and writes 4 B per pair
(B*K*K*4 = 40 KB per image) plus a (B, 2, K, 4) corner table; torch.topk reads the pair
scores; the gather kernel writes 32 B per detection. The dense version materialises
(B, K, K) scores, masks and (B, K, K, 4) boxes: about 80 B per pair before its gathers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels._backend import check_backend, check_float_tensor, is_int, use_triton
from kernels.heatmap import _heatmap_peaks_fwd, _peaks_reference, _triton_k_limit


# ---------------------------------------------------------------- torch reference
def cornernet_decode_reference(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_tag: torch.Tensor,
    br_tag: torch.Tensor,
    tl_regr: torch.Tensor,
    br_regr: torch.Tensor,
    K: int = 100,
    kernel: int = 3,
    ae_threshold: float = 0.5,
    num_dets: int = 1000,
) -> torch.Tensor:
    """Torch specification of :func:`cornernet_decode`: (B, num_dets, 8) float32.

    Scores are formed per pair (B, K, K) but boxes only for the num_dets winners.
    """
    _check(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, num_dets, "torch")
    heads = (tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr)
    return _decode_reference(*heads, int(K), int(kernel), ae_threshold, int(num_dets))


def _decode_reference(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel,
                      ae_threshold, num_dets) -> torch.Tensor:  # fmt: skip
    """:func:`cornernet_decode_reference` on checked inputs (the public functions check
    once: at 128 px on the CPU the checks cost as much as a tenth of the decode)."""
    # both corner types in one call (2B, C, H, W): per-image results are the same as two
    # calls, with half the small-op overhead that dominates on the CPU at 128 px
    peaks = _peaks_reference(torch.cat((tl_heat, br_heat)), K, kernel)
    (ts, bs), (tc, bc), (ty, by), (tx, bx) = (v.chunk(2) for v in peaks)
    b = torch.arange(tl_heat.shape[0], device=tl_heat.device)[:, None]  # (B, 1)
    # gather at the corners: (B, 2, H, W)[b, c, y, x] -> (B, K)
    tlx = tx + tl_regr[b, 0, ty, tx].float()
    tly = ty + tl_regr[b, 1, ty, tx].float()
    brx = bx + br_regr[b, 0, by, bx].float()
    bry = by + br_regr[b, 1, by, bx].float()
    dist = (
        tl_tag[b, 0, ty, tx].float()[:, :, None] - br_tag[b, 0, by, bx].float()[:, None, :]
    ).abs()
    # (B, K, 1) with (B, 1, K) -> (B, K, K): i indexes tl corners, j br corners
    score = (ts[:, :, None] + bs[:, None, :]) / 2
    bad = (tc[:, :, None] != bc[:, None, :]) | (dist > ae_threshold)
    bad |= (brx[:, None, :] < tlx[:, :, None]) | (bry[:, None, :] < tly[:, :, None])
    score.masked_fill_(bad, -1.0)
    val, pair = score.flatten(1).topk(num_dets, dim=1)
    i = torch.div(pair, K, rounding_mode="floor")
    j = pair - i * K
    cols = (tlx.gather(1, i), tly.gather(1, i), brx.gather(1, j), bry.gather(1, j), val)
    cols += (ts.gather(1, i), bs.gather(1, j), tc.gather(1, i).float())
    return torch.stack(cols, dim=2)


def cornernet_decode_dense(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_tag: torch.Tensor,
    br_tag: torch.Tensor,
    tl_regr: torch.Tensor,
    br_regr: torch.Tensor,
    K: int = 100,
    kernel: int = 3,
    ae_threshold: float = 0.5,
    num_dets: int = 1000,
) -> torch.Tensor:
    """The original decode written naively (benchmark baseline): (B, num_dets, 8) float32.

    max_pool2d NMS, torch.topk without a tie rule, (B, K, K, 4) boxes built before the top-k.
    """
    _check(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, num_dets, "torch")
    bsz, _, h, w = tl_heat.shape

    def corners(heat, tag, regr):
        s = torch.sigmoid(heat.float())
        s = s * (F.max_pool2d(s, kernel, stride=1, padding=(kernel - 1) // 2) == s).float()
        score, n = s.reshape(bsz, -1).topk(K)
        cls, n = n // (h * w), n % (h * w)
        ys, xs = (n // w).float(), (n % w).float()
        # (B, C, H, W) -> (B, H*W, C), gathered at n -> (B, K, C)
        r = regr.float().permute(0, 2, 3, 1).reshape(bsz, h * w, 2)
        r = r.gather(1, n[:, :, None].expand(-1, -1, 2))
        t = tag.float().reshape(bsz, h * w).gather(1, n)
        return score, cls, xs + r[..., 0], ys + r[..., 1], t

    ts, tc, tx, ty, tt = corners(tl_heat, tl_tag, tl_regr)
    bs, bc, bx, by, bt = corners(br_heat, br_tag, br_regr)
    full = (bsz, K, K)
    tx, ty, ts, tc = (v[:, :, None].expand(full) for v in (tx, ty, ts, tc))
    bx, by, bs, bc = (v[:, None, :].expand(full) for v in (bx, by, bs, bc))
    boxes = torch.stack((tx, ty, bx, by), dim=3)  # (B, K, K, 4)
    scores = (ts + bs) / 2
    scores[tc != bc] = -1
    scores[(tt[:, :, None] - bt[:, None, :]).abs() > ae_threshold] = -1
    scores[bx < tx] = -1
    scores[by < ty] = -1
    scores, inds = scores.reshape(bsz, -1).topk(num_dets)

    def pick(v: torch.Tensor) -> torch.Tensor:  # (B, K, K, n) -> rows inds: (B, num_dets, n)
        v = v.reshape(bsz, K * K, -1)
        return v.gather(1, inds[:, :, None].expand(-1, -1, v.shape[2]))

    parts = (pick(boxes), scores[:, :, None], pick(ts[..., None]), pick(bs[..., None]))
    return torch.cat(parts + (pick(tc[..., None]).float(),), dim=2)


# ---------------------------------------------------------------- Triton
@triton.jit
def _load_corners(
    score_ptr, cls_ptr, y_ptr, x_ptr, tag_ptr, regr_ptr, b, k, mask, K,
    stride_tb, stride_th, stride_tw, stride_rb, stride_rc, stride_rh, stride_rw,
):  # fmt: skip
    # corner k of image b: score, class, tag, refined x and y (regression added), float32
    row = b * K + k
    score = tl.load(score_ptr + row, mask=mask, other=0.0)
    cls = tl.load(cls_ptr + row, mask=mask, other=0)
    y = tl.load(y_ptr + row, mask=mask, other=0)
    x = tl.load(x_ptr + row, mask=mask, other=0)
    tag = tl.load(tag_ptr + b * stride_tb + y * stride_th + x * stride_tw, mask=mask, other=0.0)
    r = regr_ptr + b * stride_rb + y * stride_rh + x * stride_rw
    fx = x.to(tl.float32) + tl.load(r, mask=mask, other=0.0).to(tl.float32)
    fy = y.to(tl.float32) + tl.load(r + stride_rc, mask=mask, other=0.0).to(tl.float32)
    return score, cls, tag.to(tl.float32), fx, fy


@triton.jit
def _decode_pairs_kernel(
    ts_ptr, tc_ptr, ty_ptr, tx_ptr, tl_tag_ptr, tl_regr_ptr,
    bs_ptr, bc_ptr, by_ptr, bx_ptr, br_tag_ptr, br_regr_ptr,
    pair_ptr, table_ptr, K, ae_threshold,
    s_ttb, s_tth, s_ttw, s_trb, s_trc, s_trh, s_trw,
    s_btb, s_bth, s_btw, s_brb, s_brc, s_brh, s_brw,
    BLOCK_I: tl.constexpr, BLOCK_J: tl.constexpr,
):  # fmt: skip
    pid_i = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    oi = pid_i * BLOCK_I + tl.arange(0, BLOCK_I)
    mi = oi < K
    ts, tc, tt, tx, ty = _load_corners(
        ts_ptr, tc_ptr, ty_ptr, tx_ptr, tl_tag_ptr, tl_regr_ptr, b, oi, mi, K,
        s_ttb, s_tth, s_ttw, s_trb, s_trc, s_trh, s_trw,
    )  # fmt: skip
    # corner table (B, 2, K, 4) = x, y, score, class: what the final gather reads
    row = table_ptr + ((b * 2) * K + oi) * 4
    tl.store(row, tx, mask=mi)
    tl.store(row + 1, ty, mask=mi)
    tl.store(row + 2, ts, mask=mi)
    tl.store(row + 3, tc.to(tl.float32), mask=mi)
    for j0 in range(0, K, BLOCK_J):
        oj = j0 + tl.arange(0, BLOCK_J)
        mj = oj < K
        bs, bc, bt, bx, by = _load_corners(
            bs_ptr, bc_ptr, by_ptr, bx_ptr, br_tag_ptr, br_regr_ptr, b, oj, mj, K,
            s_btb, s_bth, s_btw, s_brb, s_brc, s_brh, s_brw,
        )  # fmt: skip
        if pid_i == 0:  # one program writes the br half of the table
            brow = table_ptr + ((b * 2 + 1) * K + oj) * 4
            tl.store(brow, bx, mask=mj)
            tl.store(brow + 1, by, mask=mj)
            tl.store(brow + 2, bs, mask=mj)
            tl.store(brow + 3, bc.to(tl.float32), mask=mj)
        score = (ts[:, None] + bs[None, :]) * 0.5  # exact, like / 2 (which is div.full here)
        bad = (tc[:, None] != bc[None, :]) | (tl.abs(tt[:, None] - bt[None, :]) > ae_threshold)
        bad = bad | (bx[None, :] < tx[:, None]) | (by[None, :] < ty[:, None])
        score = tl.where(bad, -1.0, score)
        out = pair_ptr + b * K * K + oi[:, None] * K + oj[None, :]
        tl.store(out, score, mask=mi[:, None] & mj[None, :])


@triton.jit
def _decode_gather_kernel(val_ptr, ind_ptr, table_ptr, out_ptr, K, D, BLOCK: tl.constexpr):
    pid = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    od = pid * BLOCK + tl.arange(0, BLOCK)
    m = od < D
    val = tl.load(val_ptr + b * D + od, mask=m, other=0.0)
    p = tl.load(ind_ptr + b * D + od, mask=m, other=0)
    i = p // K
    tlr = table_ptr + ((b * 2) * K + i) * 4
    brr = table_ptr + ((b * 2 + 1) * K + (p - i * K)) * 4
    out = out_ptr + (b * D + od) * 8
    tl.store(out, tl.load(tlr, mask=m), mask=m)
    tl.store(out + 1, tl.load(tlr + 1, mask=m), mask=m)
    tl.store(out + 2, tl.load(brr, mask=m), mask=m)
    tl.store(out + 3, tl.load(brr + 1, mask=m), mask=m)
    tl.store(out + 4, val, mask=m)
    tl.store(out + 5, tl.load(tlr + 2, mask=m), mask=m)
    tl.store(out + 6, tl.load(brr + 2, mask=m), mask=m)
    tl.store(out + 7, tl.load(tlr + 3, mask=m), mask=m)


def _cornernet_decode_fwd(
    tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, ae_threshold, num_dets
) -> torch.Tensor:
    """Peaks (Triton), pair scores (Triton), torch.topk over K*K, gather rows (Triton).

    Heuristic: pair tiles of BLOCK_I x BLOCK_J <= 2048 scores, BLOCK_J = min(next_pow2(K),
    128) br corners per step (the kernel loops over br blocks, so any K works), BLOCK_I = the
    rest; 7 programs per image at K = 100. The gather uses 256 detections per program.
    """
    bsz = tl_heat.shape[0]
    ts, tc, ty, tx = _heatmap_peaks_fwd(tl_heat, K, kernel)
    bs, bc, by, bx = _heatmap_peaks_fwd(br_heat, K, kernel)
    dev = tl_heat.device
    pair = torch.empty(bsz, K * K, dtype=torch.float32, device=dev)
    table = torch.empty(bsz, 2, K, 4, dtype=torch.float32, device=dev)
    block_j = min(triton.next_power_of_2(K), 128)
    block_i = min(triton.next_power_of_2(K), 2048 // block_j)
    s_tt, s_bt = tl_tag.stride(), br_tag.stride()
    _decode_pairs_kernel[(triton.cdiv(K, block_i), bsz)](
        ts, tc, ty, tx, tl_tag, tl_regr, bs, bc, by, bx, br_tag, br_regr,
        pair, table, K, float(ae_threshold),
        s_tt[0], s_tt[2], s_tt[3], *tl_regr.stride(),
        s_bt[0], s_bt[2], s_bt[3], *br_regr.stride(),
        BLOCK_I=block_i, BLOCK_J=block_j,
    )  # fmt: skip
    val, ind = pair.topk(num_dets, dim=1)
    out = torch.empty(bsz, num_dets, 8, dtype=torch.float32, device=dev)
    if num_dets > 0:
        grid = (triton.cdiv(num_dets, 256), bsz)
        _decode_gather_kernel[grid](val, ind, table, out, K, num_dets, BLOCK=256)
    return out


# ---------------------------------------------------------------- public
def _check(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, num_dets, backend):
    named = {"tl_heat": tl_heat, "br_heat": br_heat, "tl_tag": tl_tag, "br_tag": br_tag}
    named.update(tl_regr=tl_regr, br_regr=br_regr)
    for name, t in named.items():
        check_float_tensor(t, name, "B, C, H, W")
        if t.device != tl_heat.device:
            raise ValueError(
                f"{name}: expected device {tl_heat.device} (as tl_heat), got {t.device}"
            )
    bsz, c, h, w = tl_heat.shape
    channels = {"br_heat": c, "tl_tag": 1, "br_tag": 1, "tl_regr": 2, "br_regr": 2}
    for name, ch in channels.items():
        if tuple(named[name].shape) != (bsz, ch, h, w):
            raise ValueError(
                f"{name}: expected shape {(bsz, ch, h, w)} to match tl_heat "
                f"{tuple(tl_heat.shape)}, got {tuple(named[name].shape)}"
            )
    if not is_int(K) or not 1 <= K <= c * h * w:
        raise ValueError(f"K: expected an int in [1, C*H*W = {c * h * w}], got {K!r}")
    if not is_int(num_dets) or not 0 <= num_dets <= K * K:
        raise ValueError(f"num_dets: expected an int in [0, K*K = {K * K}], got {num_dets!r}")
    if not is_int(kernel) or kernel < 1 or kernel % 2 == 0:
        raise ValueError(f"kernel: expected an odd int >= 1, got {kernel!r}")
    check_backend(backend)


def cornernet_decode(
    tl_heat: torch.Tensor,
    br_heat: torch.Tensor,
    tl_tag: torch.Tensor,
    br_tag: torch.Tensor,
    tl_regr: torch.Tensor,
    br_regr: torch.Tensor,
    K: int = 100,
    kernel: int = 3,
    ae_threshold: float = 0.5,
    num_dets: int = 1000,
    backend: str = "auto",
) -> torch.Tensor:
    """Decode CornerNet head outputs into (B, num_dets, 8) float32 detections.

    tl_heat, br_heat: (B, C, H, W) logits; tl_tag, br_tag: (B, 1, H, W) embeddings;
    tl_regr, br_regr: (B, 2, H, W) offsets (x, y). Any float dtype and strides; not modified.
    Rows: x1, y1, x2, y2 (heatmap coordinates), score (-1: rejected pair), tl score, br score,
    class. backend: "auto" (Triton for CUDA fp16/bf16/fp32 tensors and K <= 1024, the reference
    otherwise), "triton" or "torch" (see kernels._backend). See the module docstring for the
    maths and the limits on K and num_dets.
    """
    _check(tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr, K, kernel, num_dets, backend)
    K, kernel, num_dets = int(K), int(kernel), int(num_dets)
    heads = (tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr)
    args = (*heads, K, kernel, ae_threshold, num_dets)
    empty = tl_heat.shape[0] == 0
    if empty or not use_triton(heads, backend, _triton_k_limit("K", K)):
        return _decode_reference(*args)
    return _cornernet_decode_fwd(*args)


def canonical_detections(dets: torch.Tensor) -> list[torch.Tensor]:
    """Per image, the rows of ``dets`` (B, num_dets, 8) with score > -1, sorted by score
    (descending), then by the other columns: a canonical order for comparing two decodes
    (rejected rows are arbitrary pairs in the original, torch.topk's tie order)."""
    out = []
    for rows in dets:
        rows = rows[rows[:, 4] > -1]
        for col in (7, 6, 5, 3, 2, 1, 0, 4):  # stable sorts: the last key is the primary one
            rows = rows[rows[:, col].argsort(descending=True, stable=True)]
        out.append(rows)
    return out
