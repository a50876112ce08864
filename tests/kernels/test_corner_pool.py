"""Corner pooling: the torch reference against the original CornerNet's vectors, the baselines
and gradcheck; Triton (the interpreter on CPU) against the reference, forward and backward,
including the tie rule (a tie's gradient goes to the first maximum met in scan order)."""

from __future__ import annotations

import importlib
import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kernels import (
    corner_pool,
    corner_pool_backward,
    corner_pool_reference,
    fused_corner_pool,
    fused_corner_pool_reference,
)
from kernels.corner_pool import (
    DIRECTIONS,
    _corner_pool_bwd,
    _corner_pool_fwd,
    _fused_corner_pool_fwd,
    _lanes_layout,
)
from kernels.corner_pool_baselines import corner_pool_cummax, corner_pool_loop

DIRS = ["top", "bottom", "left", "right"]
CORNERS = {"tl": ("top", "left"), "br": ("bottom", "right")}


def _fwd_bwd(fn, x: torch.Tensor, grad: torch.Tensor, *args) -> tuple[torch.Tensor, torch.Tensor]:
    """Output and input gradient of fn(x, *args) for the output gradient ``grad``."""
    x = x.detach().clone().requires_grad_(True)
    y = fn(x, *args)
    y.backward(grad)
    return y.detach(), x.grad


def _ties(shape: tuple[int, ...]) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer-valued input with many ties and an integer gradient: sums are exact in fp32."""
    return torch.randint(-2, 3, shape).float(), torch.randint(-3, 4, shape).float()


def _triton(x: torch.Tensor, direction: str) -> torch.Tensor:
    return corner_pool(x, direction, backend="triton")


# ------------------------------------------------------------------ golden vectors
@pytest.mark.parametrize("backend", ["torch", "triton"], ids=str)
@pytest.mark.parametrize("case", ["small", "wide", "tall"], ids=str)
def test_matches_original_cornernet(fixtures_dir: str, case: str, backend: str) -> None:
    data = torch.load(os.path.join(fixtures_dir, "corner_pool.pt"), weights_only=True)[case]
    for direction in DIRS:
        y, gx = _fwd_bwd(corner_pool, data["input"], data["grad_output"], direction, backend)
        torch.testing.assert_close(y, data[direction])
        torch.testing.assert_close(gx, data[f"{direction}_grad"])


# ------------------------------------------------------------------ the reference
@pytest.mark.parametrize("shape", [(2, 3, 7, 9), (1, 2, 1, 5), (1, 1, 6, 1)], ids=str)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "transposed"], ids=str)
def test_reference_matches_baselines(shape: tuple[int, ...], layout: str) -> None:
    x = torch.randn(shape)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif layout == "transposed":
        x = x.transpose(2, 3).contiguous().transpose(2, 3)
    grad = torch.randn(shape)
    for direction in DIRS:
        y, gx = _fwd_bwd(corner_pool_reference, x, grad, direction)
        # no ties in random floats: all three gradient rules agree
        for baseline in (corner_pool_cummax, corner_pool_loop):
            y_b, gx_b = _fwd_bwd(baseline, x, grad, direction)
            assert torch.equal(y, y_b), (direction, baseline.__name__)
            torch.testing.assert_close(gx, gx_b)


@pytest.mark.parametrize("direction", DIRS, ids=str)
def test_reference_gradcheck(direction: str) -> None:
    x = torch.randn(1, 2, 5, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: corner_pool_reference(t, direction), (x,))


@pytest.mark.parametrize("direction", DIRS, ids=str)
def test_reference_ties_match_original_loop_not_cummax(direction: str) -> None:
    x, grad = _ties((2, 3, 9, 11))
    _, gx = _fwd_bwd(corner_pool_reference, x, grad, direction)
    _, gx_loop = _fwd_bwd(corner_pool_loop, x, grad, direction)
    _, gx_cummax = _fwd_bwd(corner_pool_cummax, x, grad, direction)
    assert torch.equal(gx, gx_loop)
    assert not torch.equal(gx, gx_cummax)  # cummax gives a tie to the nearest maximum


# Worked by hand from the rule. Column (H = 4) x = [3, 1, 3, 2], dy = 1 everywhere.
# top scans rows 3, 2, 1, 0: row 2 sets the max 3, row 0 only ties it, so rows 0..2 take
# their value from row 2 and row 3 from itself. bottom scans 0..3: row 0 owns every output.
TIE_COLUMN = torch.tensor([3.0, 1.0, 3.0, 2.0])
TIE_GRADS = {
    "top": [0.0, 0.0, 3.0, 1.0],
    "bottom": [4.0, 0.0, 0.0, 0.0],
    "left": [0.0, 0.0, 3.0, 1.0],
    "right": [4.0, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("backend", ["torch", "triton"], ids=str)
@pytest.mark.parametrize("direction", DIRS, ids=str)
def test_tie_goes_to_first_maximum_in_scan_order(direction: str, backend: str) -> None:
    shape = (1, 1, 4, 1) if DIRECTIONS[direction][0] == 2 else (1, 1, 1, 4)
    x = TIE_COLUMN.reshape(shape)
    y, gx = _fwd_bwd(corner_pool, x, torch.ones(shape), direction, backend)
    assert y.flatten().tolist() == (
        [3.0, 3.0, 3.0, 2.0] if direction in ("top", "left") else [3.0] * 4
    )
    assert gx.flatten().tolist() == TIE_GRADS[direction]


# ------------------------------------------------------------------ Triton against the reference
SHAPES = [(1, 1, 1, 1), (2, 3, 5, 7), (1, 2, 70, 3), (1, 1, 3, 70), (1, 2, 1, 9)]


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triton_matches_reference(shape: tuple[int, ...]) -> None:
    x, grad = _ties(shape)  # ties everywhere: results must be identical, not just close
    xf, gradf = torch.randn(shape), torch.randn(shape)
    for direction in DIRS:
        y_ref, gx_ref = _fwd_bwd(corner_pool_reference, x, grad, direction)
        y, gx = _fwd_bwd(_triton, x, grad, direction)
        assert torch.equal(y, y_ref), direction
        assert torch.equal(gx, gx_ref), direction
        y_ref, gx_ref = _fwd_bwd(corner_pool_reference, xf, gradf, direction)
        y, gx = _fwd_bwd(_triton, xf, gradf, direction)
        assert torch.equal(y, y_ref), direction
        torch.testing.assert_close(gx, gx_ref)


# (layout, BLOCK_T, UNROLL): rows: vectors of BLOCK_T lines, UNROLL rows per tile; lanes:
# BLOCK_T lines per program, chunks of UNROLL scan positions (4 per lane); powers of two but
# the rows' UNROLL
SMALL_BLOCKS = [("rows", 2, 3), ("rows", 4, 1), ("lanes", 2, 4), ("lanes", 4, 8), ("lanes", 1, 16)]
GPU_DEFAULTS = [("rows", 64, 8), ("lanes", 4, 128)]  # what _launch_lines picks on a GPU


@pytest.mark.parametrize("layout,block_t,unroll", SMALL_BLOCKS + GPU_DEFAULTS, ids=str)
def test_triton_small_blocks(layout: str, block_t: int, unroll: int) -> None:
    # both layouts in every direction (the launcher picks lanes for a contiguous scan axis
    # only), many strips across T and many trips or chunks along S, with partial last ones:
    # (1, 2, 7, 9) -> lanes chunks of 4 and 8 carry the scan from chunk to chunk
    x, grad = _ties((1, 2, 7, 9))
    lanes = layout == "lanes"
    for direction, (dim, reverse) in DIRECTIONS.items():
        y_ref, gx_ref = _fwd_bwd(corner_pool_reference, x, grad, direction)
        y = _corner_pool_fwd(x, dim, reverse, block_t=block_t, unroll=unroll, lanes=lanes)
        gx = _corner_pool_bwd(y, grad, dim, reverse, block_t, unroll, lanes=lanes)
        assert torch.equal(y, y_ref), direction
        assert torch.equal(gx, gx_ref), direction


def test_triton_lanes_float_gradients_close() -> None:
    # random floats: the lanes backward adds a run's dy in another order than the reference
    x, grad = torch.randn(1, 2, 5, 37), torch.randn(1, 2, 5, 37)
    for direction in ("left", "right"):
        dim, reverse = DIRECTIONS[direction]
        y_ref, gx_ref = _fwd_bwd(corner_pool_reference, x, grad, direction)
        y = _corner_pool_fwd(x, dim, reverse, unroll=8, lanes=True)
        gx = _corner_pool_bwd(y, grad, dim, reverse, unroll=8, lanes=True)
        assert torch.equal(y, y_ref), direction
        torch.testing.assert_close(gx, gx_ref)


def test_layout_follows_the_contiguous_axis() -> None:
    # coalescing: vectors along W for every direction of NCHW, along H when H is contiguous
    x = torch.empty(1, 2, 5, 6)
    assert [_lanes_layout(x, d) for d in (2, 3)] == [False, True]
    assert [_lanes_layout(x.transpose(2, 3), d) for d in (2, 3)] == [True, False]
    assert not _lanes_layout(x.contiguous(memory_format=torch.channels_last), 3)
    assert not _lanes_layout(torch.empty(1, 2, 5, 1), 3)  # a scan of length 1: rows


VIEWS = {
    "channels_last": lambda t: t.contiguous(memory_format=torch.channels_last),
    "strided": lambda t: t[:, ::2, :, ::2],
    "transposed": lambda t: t.transpose(2, 3),
}


@pytest.mark.parametrize("layout", list(VIEWS), ids=str)
def test_triton_non_contiguous(layout: str) -> None:
    base0 = torch.randn(2, 3, 6, 10)

    def run(fn, direction: str) -> tuple[torch.Tensor, torch.Tensor]:
        base = base0.clone().requires_grad_(True)
        x = VIEWS[layout](base)
        assert not x.is_contiguous()
        y = fn(x, direction)
        y.sum().backward()  # the output gradient arrives expanded, with zero strides
        return y.detach(), base.grad

    for direction in DIRS:
        y_ref, gx_ref = run(corner_pool_reference, direction)
        y, gx = run(_triton, direction)
        assert torch.equal(y, y_ref), direction
        torch.testing.assert_close(gx, gx_ref)


@pytest.mark.parametrize("layout,block_t,unroll", [(None, None, None), *SMALL_BLOCKS], ids=str)
def test_triton_nan_propagates_like_torch(layout: str | None, block_t, unroll) -> None:
    x = torch.randn(1, 2, 6, 9)
    x[0, 1, 2, 3] = float("nan")
    lanes = None if layout is None else layout == "lanes"
    for direction, (dim, reverse) in DIRECTIONS.items():
        y = _corner_pool_fwd(x, dim, reverse, block_t, unroll, lanes=lanes)
        torch.testing.assert_close(y, corner_pool_reference(x, direction), equal_nan=True)
    for corner, (dir_a, dir_b) in CORNERS.items():
        out, _, _ = _fused_corner_pool_fwd(x, x.flip(2, 3), corner == "tl", False, unroll)
        want = corner_pool_reference(x, dir_a) + corner_pool_reference(x.flip(2, 3), dir_b)
        torch.testing.assert_close(out, want, equal_nan=True)


def test_empty_inputs() -> None:
    for shape in [(0, 2, 3, 3), (1, 2, 0, 4), (1, 1, 4, 0)]:
        for backend in ("torch", "triton"):
            for direction in DIRS:
                y, gx = _fwd_bwd(
                    corner_pool, torch.randn(shape), torch.randn(shape), direction, backend
                )
                assert y.shape == gx.shape == shape


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 2),
    c=st.integers(1, 2),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    direction=st.sampled_from(DIRS),
    seed=st.integers(0, 2**16),
)
def test_triton_matches_reference_hypothesis(
    n: int, c: int, h: int, w: int, direction: str, seed: int
) -> None:
    torch.manual_seed(seed)
    x, grad = _ties((n, c, h, w))
    y_ref, gx_ref = _fwd_bwd(corner_pool_reference, x, grad, direction)
    y, gx = _fwd_bwd(_triton, x, grad, direction)
    assert torch.equal(y, y_ref)
    assert torch.equal(gx, gx_ref)


# ------------------------------------------------------------------ fused
def _fused_both(a: torch.Tensor, b: torch.Tensor, grad: torch.Tensor, fn, *args) -> tuple:
    a = a.detach().clone().requires_grad_(True)
    b = b.detach().clone().requires_grad_(True)
    out = fn(a, b, *args)
    out.backward(grad)
    return out.detach(), a.grad, b.grad


@pytest.mark.parametrize("corner", ["tl", "br"], ids=str)
@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 3, 7, 9), (1, 2, 11, 4)], ids=str)
def test_fused_matches_composed_references(corner: str, shape: tuple[int, ...]) -> None:
    (a, grad), (b, _) = _ties(shape), _ties(shape)
    dir_a, dir_b = CORNERS[corner]
    want = corner_pool_reference(a, dir_a) + corner_pool_reference(b, dir_b)
    assert torch.equal(fused_corner_pool_reference(a, b, corner), want)
    ref = _fused_both(a, b, grad, fused_corner_pool_reference, corner)
    got = _fused_both(a, b, grad, fused_corner_pool, corner, "triton")
    assert torch.equal(ref[0], want)
    for g, r in zip(got, ref):
        assert torch.equal(g, r)
    # no gradient wanted: the pooled maps are not saved, the sum is the same
    with torch.no_grad():
        assert torch.equal(fused_corner_pool(a, b, corner, backend="triton"), want)


@pytest.mark.parametrize("unroll", [1, 3], ids=str)
@pytest.mark.parametrize("corner", ["tl", "br"], ids=str)
def test_fused_small_blocks_channels_last(corner: str, unroll: int) -> None:
    # rows of the plane per tile: 1, or 3 of 9 with a partial last tile; strided rows
    a = torch.randn(1, 3, 9, 6).contiguous(memory_format=torch.channels_last)
    b = torch.randn(1, 3, 6, 9).transpose(2, 3)
    dir_a, dir_b = CORNERS[corner]
    want = corner_pool_reference(a, dir_a) + corner_pool_reference(b, dir_b)
    out, ya, yb = _fused_corner_pool_fwd(a, b, corner == "tl", True, unroll=unroll)
    torch.testing.assert_close(out, want)
    assert torch.equal(ya, corner_pool_reference(a, dir_a))
    assert torch.equal(yb, corner_pool_reference(b, dir_b))


@pytest.mark.parametrize("corner", ["tl", "br"], ids=str)
def test_fused_wide_rows_compose_one_direction_passes(
    corner: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cp = importlib.import_module("kernels.corner_pool")
    monkeypatch.setattr(cp, "FUSED_MAX_W", 8)  # rows of 9 do not fit one program
    (a, grad), (b, _) = _ties((1, 2, 5, 9)), _ties((1, 2, 5, 9))
    ref = _fused_both(a, b, grad, fused_corner_pool_reference, corner)
    got = _fused_both(a, b, grad, fused_corner_pool, corner, "triton")
    for g, r in zip(got, ref):
        assert torch.equal(g, r)


# ------------------------------------------------------------------ validation and dispatch
X = torch.ones(1, 1, 2, 2)
BAD_CALLS = {  # id: (call, what the message must name)
    "rank3": (lambda: corner_pool(torch.randn(3, 4, 5), "top"), "4 dims"),
    "int64": (lambda: corner_pool(X.long(), "top"), "int64"),
    "direction": (lambda: corner_pool(X, "up"), "direction"),
    "direction_none": (lambda: corner_pool(X, None), "direction: expected one of .* got None"),
    "direction_list": (lambda: corner_pool(X, ["top"]), "direction: expected one of"),
    "backward_direction_none": (lambda: corner_pool_backward(X, X, None), "direction: expected"),
    "corner_none": (lambda: fused_corner_pool(X, X, None), "corner: expected one of .* got None"),
    "backend": (lambda: corner_pool(X, "top", backend="cuda"), "backend"),
    "not_a_tensor": (lambda: corner_pool([[1.0]], "top"), "list"),
    "triton_float64": (lambda: corner_pool(X.double(), "top", backend="triton"), "float64"),
    "pair_shape": (lambda: fused_corner_pool(X, torch.randn(1, 1, 2, 3), "tl"), r"\(1, 1, 2, 3\)"),
    "corner": (lambda: fused_corner_pool(X, X, "tr"), "corner"),
    "pair_dtype": (lambda: fused_corner_pool(X, X.half(), "tl"), "float16"),
    "reference_rank2": (lambda: corner_pool_reference(torch.randn(2, 2), "left"), "4 dims"),
}


@pytest.mark.parametrize("case", list(BAD_CALLS), ids=str)
def test_bad_input_raises(case: str) -> None:
    call, match = BAD_CALLS[case]
    with pytest.raises(ValueError, match=match):
        call()


def test_triton_on_cpu_needs_the_interpreter(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    with pytest.raises(ValueError, match="cpu"):
        corner_pool(torch.randn(1, 1, 2, 2), "top", backend="triton")


def test_auto_dispatch_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    # the package attribute kernels.corner_pool is the function; the module is this
    cp = importlib.import_module("kernels.corner_pool")

    def no_triton(*args):
        raise RuntimeError("Triton path taken")

    monkeypatch.setattr(cp._CornerPoolTriton, "apply", no_triton)
    monkeypatch.setattr(cp._FusedCornerPoolTriton, "apply", no_triton)
    x = torch.randn(1, 2, 4, 3)
    for call in (lambda b: corner_pool(x, "left", b), lambda b: fused_corner_pool(x, x, "br", b)):
        call("auto")  # CPU tensors: the reference
        call("torch")
        with pytest.raises(RuntimeError, match="Triton path"):
            call("triton")


# ------------------------------------------------------------------ GPU only
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32], ids=str)
@pytest.mark.parametrize("shape", [(2, 3, 37, 70), (1, 2, 1024, 1024)], ids=str)
def test_gpu_dtypes_and_large_maps(dtype: torch.dtype, shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, device="cuda").to(dtype)
    grad = torch.randn(shape, device="cuda").to(dtype)
    for direction in DIRS:
        y_ref, gx_ref = _fwd_bwd(corner_pool_reference, x, grad, direction)
        y, gx = _fwd_bwd(corner_pool, x, grad, direction)  # auto: Triton on CUDA
        assert torch.equal(y, y_ref), direction
        torch.testing.assert_close(gx, gx_ref)
    for corner, (dir_a, dir_b) in CORNERS.items():
        ref_a, ref_b = corner_pool_reference(x, dir_a), corner_pool_reference(grad, dir_b)
        want = (ref_a.float() + ref_b.float()).to(dtype)
        torch.testing.assert_close(fused_corner_pool(x, grad, corner), want)


# (layout, BLOCK_T, UNROLL) on a GPU: lanes chunks of 64..512 positions (one to four warps
# of lanes, a cross-warp scan when more than 128), 130 columns: a chunk carry or a partial one
GPU_BLOCKS = [
    ("rows", 32, None),
    ("rows", 64, 8),
    ("rows", 256, 3),
    ("lanes", 4, 128),
    ("lanes", 1, 512),
    ("lanes", 8, 64),
]


@pytest.mark.gpu
@pytest.mark.parametrize("num_warps", [1, 2, 4, 8], ids=str)
def test_gpu_num_warps(num_warps: int) -> None:
    x, grad = (t.cuda() for t in _ties((2, 3, 100, 130)))
    for direction, (dim, reverse) in DIRECTIONS.items():
        y_ref, gx_ref = _fwd_bwd(corner_pool_reference, x, grad, direction)
        for layout, block_t, unroll in GPU_BLOCKS:
            lanes = layout == "lanes"
            y = _corner_pool_fwd(x, dim, reverse, block_t, unroll, num_warps, lanes)
            gx = _corner_pool_bwd(y, grad, dim, reverse, block_t, unroll, num_warps, lanes)
            assert torch.equal(y, y_ref), (direction, layout, block_t, unroll)
            assert torch.equal(gx, gx_ref), (direction, layout, block_t, unroll)
    for reverse in (True, False):
        dir_a, dir_b = CORNERS["tl" if reverse else "br"]
        want = corner_pool_reference(x, dir_a) + corner_pool_reference(grad, dir_b)
        for unroll in (None, 1, 2, 8):
            out, _, _ = _fused_corner_pool_fwd(x, grad, reverse, False, unroll, num_warps)
            assert torch.equal(out, want), (reverse, unroll)
