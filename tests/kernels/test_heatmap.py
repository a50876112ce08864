"""heatmap_peaks: Triton (interpreter on CPU) against the torch reference, and the reference
against an independent max_pool2d formulation of the original's `_nms` + `_topk`."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels.heatmap import (
    MAX_TRITON_K,
    _heatmap_peaks_fwd,
    _heatmap_peaks_pass,
    _window_max,
    heatmap_peaks,
    heatmap_peaks_reference,
)


def _assert_same(got: tuple, ref: tuple) -> None:
    scores, *ints = got
    ref_scores, *ref_ints = ref
    # Triton's sigmoid and torch's may differ in the last bit
    torch.testing.assert_close(scores, ref_scores, atol=1e-6, rtol=1e-6)
    for a, b in zip(ints, ref_ints):
        assert a.dtype == torch.int64
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def _original_style(heat: torch.Tensor, kernel: int) -> torch.Tensor:
    """Peak map as the original computes it: (B, C, H, W) sigmoid * (max_pool2d == sigmoid)."""
    s = torch.sigmoid(heat.float())
    return s * (F.max_pool2d(s, kernel, stride=1, padding=(kernel - 1) // 2) == s).float()


CASES = [  # (B, C, H, W), k, kernel
    ((1, 3, 16, 16), 20, 3),
    ((2, 1, 1, 1), 1, 3),  # 1x1 maps
    ((2, 3, 5, 7), 105, 3),  # k = C*H*W: every position, most with score 0
    ((1, 2, 9, 13), 17, 3),  # odd sizes
    ((1, 4, 6, 5), 9, 5),
    ((2, 2, 7, 3), 11, 1),  # kernel 1: no suppression
]


@pytest.mark.parametrize("shape,k,kernel", CASES, ids=str)
def test_triton_matches_reference(shape: tuple, k: int, kernel: int) -> None:
    heat = torch.randn(shape) * 3
    ref = heatmap_peaks_reference(heat, k, kernel)
    _assert_same(heatmap_peaks(heat, k, kernel, backend="triton"), ref)


@pytest.mark.parametrize(
    "k,block,rows",
    [(2, 4, None), (5, 8, 2), (16, 16, 3), (16, 64, 1), (70, 4, 4), (33, 2, 5)],
    ids=str,
)
def test_triton_many_programs_and_bands(k: int, block: int, rows: int | None) -> None:
    # groups of 1 to 5 rows (a partial last band when 5 % rows != 0), programs of 2 to 64
    # groups: the two-stage top-k must still be exact, up to k = C*H*W
    heat = torch.randn(2, 2, 5, 7)
    got = _heatmap_peaks_fwd(heat, k, 3, block=block, rows=rows)
    _assert_same(got, heatmap_peaks_reference(heat, k))


def _reference_keys(heat: torch.Tensor, kernel: int, rows: int) -> torch.Tensor:
    """Keys (score bits << 32 | 2**32 - 1 - n) of the original's peak map, grouped as the
    kernel groups them: (B, C * bands * W, rows), -1 for rows past the map."""
    b, c, h, w = heat.shape
    n = torch.arange(c * h * w).view(1, c, h, w)
    keys = (_original_style(heat, kernel).view(torch.int32).long() << 32) | (0xFFFFFFFF - n)
    bands = -(-h // rows)
    keys = F.pad(keys, (0, 0, 0, bands * rows - h), value=-1)
    # (B, C, bands * rows, W) -> (B, C, bands, W, rows) -> (B, C * bands * W, rows)
    return keys.view(b, c, bands, rows, w).transpose(3, 4).reshape(b, -1, rows)


def _assert_same_keys(got: torch.Tensor, ref: torch.Tensor) -> None:
    # flat indices exactly; scores up to the last bit of Triton's sigmoid against torch's
    assert torch.equal(got < 0, ref < 0)  # -1: a row past the map
    got, ref = got[ref >= 0], ref[ref >= 0]
    torch.testing.assert_close(got & 0xFFFFFFFF, ref & 0xFFFFFFFF, atol=0, rtol=0)
    scores = [(t >> 32).int().view(torch.float32) for t in (got, ref)]
    torch.testing.assert_close(*scores, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize(
    "shape,rows,kernel",
    [((2, 3, 9, 11), 4, 3), ((1, 2, 16, 5), 16, 5), ((1, 2, 7, 6), 1, 3), ((2, 1, 5, 4), 3, 1)],
    ids=str,
)
def test_pass1_writes_each_groups_largest_key(shape: tuple, rows: int, kernel: int) -> None:
    heat = torch.randint(-3, 4, shape).float() / 2  # plateaus: ties inside groups
    ref = _reference_keys(heat, kernel, rows).amax(2)
    _assert_same_keys(_heatmap_peaks_pass(heat, None, ref.shape[1], kernel, rows, block=8), ref)


def test_pass2_writes_every_key_of_the_listed_groups() -> None:
    heat = torch.randint(-3, 4, (2, 3, 10, 7)).float() / 2
    ref = _reference_keys(heat, 3, 4)  # 3 bands, the last one half past the map
    gid = torch.stack([torch.randperm(ref.shape[1])[:9] for _ in range(2)])
    got = _heatmap_peaks_pass(heat, gid, 9, 3, 4, block=4).view(2, 9, 4)
    _assert_same_keys(got, ref.gather(1, gid[..., None].expand(-1, -1, 4)))


@pytest.mark.parametrize("k", [1, 100, 399], ids=str)
@pytest.mark.parametrize("rows", [None, 4], ids=str)
def test_all_equal_map(k: int, rows: int | None) -> None:
    # every position is a plateau peak with the same score: the k lowest flat indices win,
    # taken from groups of every band and program
    heat = torch.full((2, 3, 19, 7), 1.5)
    scores, cls, ys, xs = got = _heatmap_peaks_fwd(heat, k, 3, block=16, rows=rows)
    _assert_same(got, heatmap_peaks_reference(heat, k))
    assert bool((scores == scores[0, 0]).all())
    assert torch.equal(cls * 133 + ys * 7 + xs, torch.arange(k).expand(2, k))


def test_top_keys_concentrated_in_few_groups() -> None:
    # a plateau column of 13 equal peaks fills 4 groups of 4 rows: 13 of the top 20 sit in
    # them, so the k best groups must be expanded, not just their maxima kept
    heat = torch.rand(1, 2, 13, 9) * 2
    heat[0, 1, :, 3] = 5.0
    for rows in (4, None):
        got = _heatmap_peaks_fwd(heat, 20, 3, block=4, rows=rows)
        _assert_same(got, heatmap_peaks_reference(heat, 20))
        scores, cls, ys, xs = got
        assert (cls[0, :13] * 117 + ys[0, :13] * 9 + xs[0, :13]).tolist() == [
            117 + 9 * y + 3 for y in range(13)
        ]


def test_top_keys_in_k_distinct_groups() -> None:
    # no NMS, 30 groups (columns of 2 rows), the top 20 in the first row of 20 of them: all k
    # best groups are needed, not fewer
    heat = torch.full((1, 1, 2, 30), -10.0)
    heat[0, 0, 0] = 3 - torch.arange(30) / 10
    scores, cls, ys, xs = got = _heatmap_peaks_fwd(heat, 20, 1, block=4)
    _assert_same(got, heatmap_peaks_reference(heat, 20, 1))
    assert ys.tolist() == [[0] * 20] and xs.tolist() == [list(range(20))]


@pytest.mark.parametrize("k", [1, MAX_TRITON_K], ids=str)
@pytest.mark.parametrize("rows", [None, 3], ids=str)
def test_k_one_and_max_triton_k(k: int, rows: int | None) -> None:
    heat = torch.randn(2, 4, 16, 17)  # 1088 positions per image, batch 2
    got = _heatmap_peaks_fwd(heat, k, 3, rows=rows)
    _assert_same(got, heatmap_peaks_reference(heat, k))
    if rows is None:
        _assert_same(heatmap_peaks(heat, k, backend="triton"), got)


@pytest.mark.parametrize("k", [1, 6, 40, 189], ids=str)
def test_ties_break_to_lower_flat_index(k: int) -> None:
    heat = torch.randint(-2, 3, (2, 3, 7, 9)).float()  # plateaus: equal neighbours all survive
    ref = heatmap_peaks_reference(heat, k)
    _assert_same(heatmap_peaks(heat, k, backend="triton"), ref)
    scores, cls, ys, xs = ref
    n = cls * 63 + ys * 9 + xs
    # descending scores; among equal scores, ascending flat index
    assert bool((scores[:, 1:] <= scores[:, :-1]).all())
    tie = scores[:, 1:] == scores[:, :-1]
    assert bool((n[:, 1:] > n[:, :-1])[tie].all())


def test_saturated_logits_tie_in_sigmoid_space() -> None:
    # 20 and 25 both give sigmoid == 1.0 in float32: the original keeps both as peaks
    heat = torch.full((1, 1, 3, 3), -5.0)
    heat[0, 0, 1, 1], heat[0, 0, 1, 2] = 20.0, 25.0
    for backend in ("torch", "triton"):
        scores, _, ys, xs = heatmap_peaks(heat, 2, backend=backend)
        assert scores.tolist() == [[1.0, 1.0]]
        assert list(zip(ys[0].tolist(), xs[0].tolist())) == [(1, 1), (1, 2)]


def test_fewer_peaks_than_k_fill_with_lowest_zero_positions() -> None:
    ys, xs = torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij")
    heat = -((ys - 2).abs() + (xs - 1).abs())[None, None]  # one peak, at (2, 1): flat index 9
    for backend in ("torch", "triton"):
        scores, cls, py, px = heatmap_peaks(heat, 5, backend=backend)
        assert scores[0, 0].item() == 0.5 and (py[0, 0].item(), px[0, 0].item()) == (2, 1)
        # the other slots: score 0 at the lowest flat indices
        assert scores[0, 1:].tolist() == [0.0] * 4
        assert (py[0, 1:] * 4 + px[0, 1:]).tolist() == [0, 1, 2, 3]


def test_reference_matches_original_formulation() -> None:
    heat = torch.randn(2, 5, 11, 13)
    for kernel in (1, 3, 5):
        peaks = _original_style(heat, kernel).view(2, -1)
        scores, cls, ys, xs = heatmap_peaks_reference(heat, 30, kernel)
        top = peaks.topk(30).values
        torch.testing.assert_close(scores, top, atol=0, rtol=0)
        picked = peaks.gather(1, cls * 143 + ys * 13 + xs)
        torch.testing.assert_close(picked, scores, atol=0, rtol=0)


@pytest.mark.parametrize("shape", [(1, 2, 1, 1), (1, 1, 1, 5), (2, 1, 6, 1), (1, 2, 5, 8)], ids=str)
def test_window_max_equals_max_pool2d(shape: tuple) -> None:
    x = torch.randint(-3, 4, shape).float()
    for kernel in (1, 3, 5, 7):  # windows wider than the map too
        expected = F.max_pool2d(x, kernel, stride=1, padding=(kernel - 1) // 2)
        assert torch.equal(_window_max(x, kernel), expected), kernel


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_non_contiguous_input_not_modified(backend: str) -> None:
    base = torch.randn(2, 9, 11, 3)
    heat = base.permute(0, 3, 1, 2)  # (2, 3, 9, 11), channels-last strides
    before = heat.clone()
    got = heatmap_peaks(heat, 12, backend=backend)
    _assert_same(got, heatmap_peaks_reference(heat.contiguous(), 12))
    assert torch.equal(heat, before)


def test_empty_outputs_and_half_dtypes() -> None:
    heat = torch.randn(2, 2, 5, 5)
    scores, cls, ys, xs = heatmap_peaks(heat, 0, backend="triton")
    assert scores.shape == cls.shape == ys.shape == xs.shape == (2, 0)
    scores, cls, ys, xs = heatmap_peaks(heat[:0], 3, backend="triton")  # empty batch
    assert scores.shape == cls.shape == ys.shape == xs.shape == (0, 3)
    for dtype in (torch.float16, torch.bfloat16):  # computed in float32 after the load
        half = heat.to(dtype)
        ref = heatmap_peaks_reference(half.float(), 7)
        _assert_same(heatmap_peaks(half, 7, backend="triton"), ref)
        _assert_same(heatmap_peaks(half, 7, backend="torch"), ref)


@settings(max_examples=12, deadline=None)
@given(
    shape=st.tuples(st.integers(1, 2), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9)),
    kernel=st.sampled_from([1, 3, 5]),
    seed=st.integers(0, 2**31 - 1),
    small_blocks=st.booleans(),
    rows=st.sampled_from([None, 1, 2, 4]),
    data=st.data(),
)
def test_hypothesis_triton_equals_reference(shape, kernel, seed, small_blocks, rows, data) -> None:
    k = data.draw(st.integers(1, shape[1] * shape[2] * shape[3]))
    gen = torch.Generator().manual_seed(seed)
    heat = torch.randint(-3, 4, shape, generator=gen).float() / 2  # many ties on purpose
    got = _heatmap_peaks_fwd(heat, k, kernel, block=4 if small_blocks else None, rows=rows)
    _assert_same(got, heatmap_peaks_reference(heat, k, kernel))


NAN_HEAT = torch.zeros(1, 2, 3, 3).index_fill_(3, torch.tensor([1]), float("nan"))


@pytest.mark.parametrize(
    "heat,k,kernel,backend,match",
    [
        (torch.zeros(3, 4, 4), 1, 3, "torch", "4 dims"),
        (torch.zeros(1, 1, 4, 4, dtype=torch.int64), 1, 3, "torch", "floating-point"),
        (torch.zeros(1, 2, 3, 3), 19, 3, "torch", r"k: expected an int in \[0, C\*H\*W = 18\]"),
        (torch.zeros(1, 2, 3, 3), -1, 3, "torch", "k: expected"),
        (torch.zeros(1, 2, 3, 3), 2, 2, "torch", "kernel: expected an odd int"),
        (torch.zeros(1, 2, 3, 3), 2, 3, "cuda", "backend: expected one of"),
        (torch.zeros(1, 0, 3, 3), 0, 3, "torch", r"C\*H\*W > 0"),
        ([[0.0]], 1, 3, "torch", "torch.Tensor"),
        (NAN_HEAT, 2, 3, "torch", "heat_logits: expected no NaN"),
        (NAN_HEAT, 2, 3, "triton", "heat_logits: expected no NaN"),
        (NAN_HEAT, 2, 3, "auto", "heat_logits: expected no NaN"),
    ],
    ids=str,
)
def test_bad_input_raises(heat, k, kernel, backend, match) -> None:
    with pytest.raises(ValueError, match=match):
        heatmap_peaks(heat, k, kernel, backend=backend)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_gpu_real_shape(dtype: torch.dtype) -> None:
    # unit logits: the top scores stay many float32 ulps apart, so a last-bit difference
    # between Triton's sigmoid and torch's cannot reorder them
    heat = torch.randn(2, 80, 128, 128, device="cuda").to(dtype)
    got = heatmap_peaks(heat, 100)  # auto -> Triton on CUDA
    _assert_same(got, heatmap_peaks_reference(heat.float(), 100))
    strided = heat[:, :, ::2, 1::2]
    _assert_same(heatmap_peaks(strided, 1000), heatmap_peaks_reference(strided.float(), 1000))
