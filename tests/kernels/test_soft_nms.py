"""soft_nms against the original's recorded output (tests/fixtures/soft_nms.pt), against a
scalar transcription of the original loop (ties, swaps), Triton against the torch path, and
batched_soft_nms against soft_nms_per_class (its specification)."""

from __future__ import annotations

import importlib
import os

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kernels
from kernels.soft_nms import (
    METHODS,
    _rows,
    _soft_nms_loop,
    batched_soft_nms,
    soft_nms,
    soft_nms_per_class,
    soft_nms_reference,
)

METHOD_NAMES = {0: "hard", 1: "linear", 2: "gaussian"}
# the module (kernels.soft_nms as an attribute is the function kernels/__init__ exports)
soft_nms_module = importlib.import_module("kernels.soft_nms")
soft_nms_cpu = importlib.import_module("kernels.soft_nms_cpu")


@pytest.fixture(scope="module")
def cases(fixtures_dir: str) -> list:
    return torch.load(os.path.join(fixtures_dir, "soft_nms.pt"), weights_only=True)["cases"]


def _torch_loop(boxes, scores, method="gaussian", **kw):
    """The reference's torch-tensor loop (its CUDA path) run on CPU."""
    offset = kw.get("offset", 1.0)
    rows, idx = _rows(boxes, scores, offset)
    args = (kw.get("sigma", 0.5), kw.get("iou_threshold", 0.5), kw.get("score_threshold", 0.001))
    n = _soft_nms_loop(rows, idx, METHODS[method], *args, offset, xp=torch)
    return idx[:n], rows[:n, 5]


def _scalar_soft_nms(boxes, scores, method, sigma=0.5, nt=0.5, thr=0.001, offset=1.0):
    """The loop as the original describes it, one box at a time, in float32 (test oracle)."""
    f = np.float32
    a = [
        [f(v) for v in box] + [f(s), i]
        for i, (box, s) in enumerate(zip(boxes.tolist(), scores.tolist()))
    ]
    n, i = len(a), 0
    while i < n:
        p = i
        for q in range(i + 1, n):
            if a[p][4] < a[q][4]:  # strict: the first maximum wins
                p = q
        a[i], a[p] = a[p], a[i]
        tx1, ty1, tx2, ty2 = a[i][:4]
        q = i + 1
        while q < n:
            x1, y1, x2, y2 = a[q][:4]
            iw = min(tx2, x2) - max(tx1, x1) + f(offset)
            ih = min(ty2, y2) - max(ty1, y1) + f(offset)
            if iw > 0 and ih > 0:
                area = (x2 - x1 + f(offset)) * (y2 - y1 + f(offset))
                ua = (tx2 - tx1 + f(offset)) * (ty2 - ty1 + f(offset)) + area - iw * ih
                iou = iw * ih / ua
                if method == "gaussian":
                    w = f(np.exp(np.float64(-(iou * iou) / f(sigma))))  # a double, stored as float
                else:
                    w = (f(0) if method == "hard" else f(1) - iou) if iou > nt else f(1)
                a[q][4] = f(w * a[q][4])
                if a[q][4] < thr:
                    a[q] = a[n - 1]  # the last box moves into the dropped slot
                    n -= 1
                    q -= 1
            q += 1
        i += 1
    return [r[5] for r in a[:n]], [float(r[4]) for r in a[:n]]


def _random_boxes(n: int, gen: torch.Generator, grid: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """n boxes; grid > 0 snaps corners and scores to a coarse grid (duplicates, exact ties)."""
    xy = torch.rand(n, 2, generator=gen) * 40
    wh = torch.rand(n, 2, generator=gen) * 30 + 1
    scores = torch.rand(n, generator=gen)
    if grid:
        xy, wh = (xy / grid).round() * grid, (wh / grid).round() * grid + 1
        scores = torch.tensor([0.9, 0.6, 0.3, 0.0015])[torch.randint(0, 4, (n,), generator=gen)]
    return torch.cat([xy, xy + wh], dim=1), scores


def _batched_one_class(boxes, scores, method="gaussian", **kw):
    labels = torch.full((boxes.shape[0],), 3)
    return batched_soft_nms(boxes, scores, labels, method=method, backend="torch", **kw)


BACKENDS = {
    "reference": soft_nms_reference,
    "torch_loop": _torch_loop,
    "batched": _batched_one_class,
}


@pytest.mark.parametrize("backend", ["reference", "torch_loop", "batched", "triton"])
def test_matches_original(cases: list, backend: str) -> None:
    for case in cases:
        boxes, scores = case["boxes"][:, :4], case["boxes"][:, 4]
        method = METHOD_NAMES[case["method"]]
        if backend == "triton":
            keep, kept = soft_nms(boxes, scores, method=method, backend="triton")
        else:
            keep, kept = BACKENDS[backend](boxes, scores, method=method)
        assert keep.dtype == torch.int64 and kept.dtype == torch.float32
        got = torch.cat([boxes[keep], kept[:, None]], dim=1)
        expected = case["kept"]
        assert got.shape == expected.shape, (method, boxes.shape[0])
        # as a set (the fixture README's rule), then the emission order too
        key = lambda t: sorted(map(tuple, t[:, :4].tolist()))  # noqa: E731
        assert key(got) == key(expected)
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method", ["hard", "linear"])
def test_ties_and_swaps_match_scalar_loop(method: str) -> None:
    gen = torch.Generator().manual_seed(3)
    boxes, scores = _random_boxes(48, gen, grid=8)  # many duplicate boxes and equal scores
    keep_ref, score_ref = _scalar_soft_nms(boxes, scores, method, thr=0.01)
    assert len(keep_ref) < 48, "the case must drop boxes (and so move others)"
    kw = dict(method=method, score_threshold=0.01)
    for keep, kept in (
        soft_nms_reference(boxes, scores, **kw),
        _torch_loop(boxes, scores, **kw),
        _batched_one_class(boxes, scores, **kw),
        soft_nms(boxes, scores, **kw, backend="triton"),
    ):
        assert keep.tolist() == keep_ref
        assert kept.tolist() == score_ref


@settings(max_examples=15, deadline=None)
@given(
    n=st.integers(1, 14),
    seed=st.integers(0, 2**31 - 1),
    grid=st.sampled_from([0, 8]),
    method=st.sampled_from(["hard", "linear", "gaussian"]),
    offset=st.sampled_from([0.0, 1.0]),
)
def test_hypothesis_backends_agree(n, seed, grid, method, offset) -> None:
    boxes, scores = _random_boxes(n, torch.Generator().manual_seed(seed), grid)
    kw = dict(method=method, offset=offset, score_threshold=0.01)
    keep, kept = soft_nms_reference(boxes, scores, **kw)
    oracle = _scalar_soft_nms(boxes, scores, method, thr=0.01, offset=offset)
    assert keep.tolist() == oracle[0]
    np.testing.assert_allclose(kept.numpy(), oracle[1], rtol=1e-6)
    keep_t, kept_t = soft_nms(boxes, scores, **kw, backend="triton")
    assert torch.equal(keep_t, keep)
    torch.testing.assert_close(kept_t, kept, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_per_class_equals_one_call_per_class(backend: str) -> None:
    gen = torch.Generator().manual_seed(1)
    boxes, scores = _random_boxes(40, gen, grid=8)
    labels = torch.tensor([7, 2, 2, 5, 7, 0, 2, 5] * 5)  # class 3 absent, unsorted labels
    keep, kept = soft_nms_per_class(boxes, scores, labels, method="linear", backend=backend)
    expected_keep, expected_scores = [], []
    for c in (0, 2, 5, 7):
        members = (labels == c).nonzero()[:, 0]
        k, s = _scalar_soft_nms(boxes[members], scores[members], "linear")
        expected_keep += members[k].tolist()
        expected_scores += s
    assert keep.tolist() == expected_keep
    torch.testing.assert_close(kept, torch.tensor(expected_scores), atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("backend", ["torch", "triton"])
def test_edge_sizes_strides_dtypes(backend: str) -> None:
    empty = soft_nms(torch.zeros(0, 4), torch.zeros(0), backend=backend)
    assert empty[0].shape == empty[1].shape == (0,)
    one = soft_nms(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([0.0001]), backend=backend)
    assert one[0].tolist() == [0] and one[1].tolist() == [pytest.approx(0.0001)]
    gen = torch.Generator().manual_seed(2)
    boxes, scores = _random_boxes(30, gen)
    packed = torch.cat([scores[:, None], boxes], dim=1).t().contiguous().t()  # column-major
    ref = soft_nms_reference(boxes, scores)
    got = soft_nms(packed[:, 1:], packed[:, 0], backend=backend)
    assert torch.equal(got[0], ref[0]) and torch.allclose(got[1], ref[1])
    before = packed.clone()
    for dtype in (torch.float16, torch.bfloat16):
        got = soft_nms(packed[:, 1:].to(dtype), packed[:, 0].to(dtype), backend=backend)
        ref = soft_nms_reference(packed[:, 1:].to(dtype).float(), packed[:, 0].to(dtype).float())
        assert torch.equal(got[0], ref[0]) and torch.allclose(got[1], ref[1])
    assert torch.equal(packed, before)


NAN, INF = float("nan"), float("inf")
BACKWARDS = torch.tensor([[0.0, 0, 1, 1], [5, 0, 1, 3]])  # box 1: x2 < x1
NAN_BOX = torch.tensor([[0.0, 0, 1, 1], [0, 0, NAN, 3]])


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((torch.zeros(3, 5), torch.zeros(3)), {}, r"boxes: expected shape \(N, 4\)"),
        ((torch.zeros(3, 4), torch.zeros(4)), {}, r"scores: expected shape \(3,\)"),
        ((torch.zeros(3, 4, dtype=torch.int32), torch.zeros(3)), {}, "boxes: expected a floating"),
        ((torch.zeros(3, 4), torch.zeros(3)), {"method": "soft"}, "method: expected one of"),
        ((torch.zeros(3, 4), torch.zeros(3)), {"sigma": 0.0}, "sigma: expected a positive"),
        ((torch.zeros(3, 4), torch.zeros(3)), {"backend": "cuda"}, "backend: expected one of"),
        ((torch.zeros(3, 4), [0.0, 0.0, 0.0]), {}, "scores: expected a torch.Tensor"),
        ((torch.zeros(3, 4), torch.zeros(3, device="meta")), {}, "scores: expected device cpu"),
        (
            (torch.zeros(3, 4), torch.tensor([0.5, NAN, 0.1])),
            {},
            "scores: expected finite.*index 1",
        ),
        (
            (torch.zeros(3, 4), torch.tensor([0.5, 0.2, INF])),
            {},
            "scores: expected finite.*index 2",
        ),
        (
            (BACKWARDS, torch.ones(2)),
            {},
            r"boxes: expected finite x1 <= x2.*\[5.0, 0.0, 1.0, 3.0\]",
        ),
        (
            (BACKWARDS[:, [1, 0, 3, 2]], torch.ones(2)),
            {},
            r"boxes: expected .*\[0.0, 5.0, 3.0, 1.0\] at index 1",
        ),
        ((NAN_BOX, torch.ones(2)), {}, "boxes: expected finite.*index 1"),
        (
            (torch.zeros(3, 4), torch.zeros(3)),
            {"iou_threshold": 5},
            r"iou_threshold: expected .*\[0, 1\], got 5",
        ),
        ((torch.zeros(3, 4), torch.zeros(3)), {"iou_threshold": NAN}, "iou_threshold: expected"),
        (
            (torch.zeros(3, 4), torch.tensor([0.5, NAN, 0.1])),
            {"backend": "triton"},
            "scores: expected finite",
        ),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_input_raises(args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        soft_nms(*args, **kwargs)


@pytest.mark.parametrize(
    "labels,match",
    [
        (torch.zeros(3), "labels: expected an integer dtype"),
        (torch.zeros(4, dtype=torch.int64), r"labels: expected shape \(3,\)"),
        (None, "labels: expected a torch.Tensor"),
    ],
    ids=["float", "shape", "none"],
)
def test_per_class_bad_labels(labels, match) -> None:
    with pytest.raises(ValueError, match=match):
        soft_nms_per_class(torch.zeros(3, 4), torch.zeros(3), labels)


# ---------------------------------------------------------------- batched_soft_nms
def _labelled(n: int, classes: int, seed: int, grid: int = 0):
    gen = torch.Generator().manual_seed(seed)
    boxes, scores = _random_boxes(n, gen, grid)
    return boxes, scores, torch.randint(0, classes, (n,), generator=gen)


def _assert_same(got, expected) -> None:
    assert got[0].dtype == torch.int64 and got[1].dtype == torch.float32
    assert got[0].tolist() == expected[0].tolist()  # indices and their order
    torch.testing.assert_close(got[1], expected[1], atol=0, rtol=0, equal_nan=True)  # bitwise


BATCHED_CASES = {  # name: (boxes, classes, grid, score_threshold)
    "many_classes": (160, 40, 0, 0.001),
    "many_classes_drops": (160, 12, 0, 0.05),
    "ties": (90, 5, 8, 0.01),
    "one_class": (70, 1, 0, 0.01),
}


@pytest.mark.parametrize("method", ["hard", "linear", "gaussian"])
@pytest.mark.parametrize("case", list(BATCHED_CASES))
def test_batched_equals_per_class(case: str, method: str) -> None:
    n, classes, grid, thr = BATCHED_CASES[case]
    boxes, scores, labels = _labelled(n, classes, seed=len(case), grid=grid)
    kw = dict(method=method, score_threshold=thr)
    expected = soft_nms_per_class(boxes, scores, labels, **kw, backend="torch")
    assert 0 < expected[0].shape[0] < n or method != "hard", "the case must drop boxes"
    _assert_same(batched_soft_nms(boxes, scores, labels, **kw, backend="torch"), expected)


def _top(result, k: int) -> tuple[list, list]:
    """The k highest scores of a batched result, ties in result order (as select_detections)."""
    order = torch.sort(result[1], descending=True, stable=True).indices[:k]
    return result[0][order].tolist(), result[1][order].tolist()


@pytest.mark.parametrize("method", ["hard", "linear", "gaussian"])
@pytest.mark.parametrize("case", list(BATCHED_CASES))
@pytest.mark.parametrize("top_k", [1, 7, 40])
def test_batched_top_k_stops_early_with_the_same_top_k(case: str, method: str, top_k: int):
    """top_k: per class a prefix of the full emission, and the same top_k boxes and order."""
    n, classes, grid, thr = BATCHED_CASES[case]
    boxes, scores, labels = _labelled(n, classes, seed=len(case), grid=grid)
    kw = dict(method=method, score_threshold=thr, backend="torch")
    full = batched_soft_nms(boxes, scores, labels, **kw)
    got = batched_soft_nms(boxes, scores, labels, **kw, top_k=top_k)
    assert _top(got, top_k) == _top(full, top_k)
    for c in labels.unique().tolist():  # each class: a prefix of its full emission
        mine, all_ = (r[0][labels[r[0]] == c].tolist() for r in (got, full))
        assert mine == all_[: len(mine)]
    if method == "gaussian" and top_k < 40 and case != "ties":  # tied classes run the loop
        # gaussian keeps most boxes: the early stop must leave some out
        assert got[0].shape[0] < full[0].shape[0]


def test_batched_top_k_bad_value_raises() -> None:
    boxes, scores, labels = _labelled(10, 2, seed=1)
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="top_k must be None or an int >= 1"):
            batched_soft_nms(boxes, scores, labels, top_k=bad)


def test_batched_labels_not_contiguous_nor_sorted() -> None:
    boxes, scores, labels = _labelled(60, 6, seed=5)
    values = torch.tensor([90, -7, 3, 1000, 0, 41])  # gaps, a negative label, unsorted
    labels = values[labels].to(torch.int32)
    expected = soft_nms_per_class(boxes, scores, labels, backend="torch")
    got = batched_soft_nms(boxes, scores, labels, backend="torch")
    _assert_same(got, expected)
    # classes in ascending label order: -7 first, 1000 last
    firsts = [int(labels[got[0][0]]), int(labels[got[0][-1]])]
    assert firsts == [-7, 1000]


def test_batched_fast_path_runs_and_ties_fall_back(monkeypatch) -> None:
    """Distinct scores never reach the per-class loop; tied picks send their class there."""
    calls = []
    real = soft_nms_cpu.loop_numpy

    def counting(*args, **kwargs):
        calls.append(args[0].shape[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(soft_nms_cpu, "loop_numpy", counting)
    boxes, scores, labels = _labelled(120, 10, seed=7)
    expected = soft_nms_per_class(boxes, scores, labels, backend="torch")
    calls.clear()
    _assert_same(batched_soft_nms(boxes, scores, labels, backend="torch"), expected)
    assert calls == []
    labels = torch.zeros(6, dtype=torch.int64)
    labels[3:] = 1
    boxes = torch.tensor([[0.0, 0, 10, 10], [20, 20, 30, 30], [1, 1, 11, 11]] * 2)
    scores = torch.tensor([0.5, 0.5, 0.4, 0.9, 0.8, 0.7])  # class 0: two picks tie at 0.5
    expected = soft_nms_per_class(boxes, scores, labels, backend="torch")
    calls.clear()
    _assert_same(batched_soft_nms(boxes, scores, labels, backend="torch"), expected)
    assert calls == [3]  # class 0 only


@pytest.mark.parametrize("method", ["hard", "linear"])
def test_batched_iou_equal_to_the_threshold_is_not_suppressed(method: str) -> None:
    boxes = torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 20], [50, 50, 60, 60]])
    scores, labels = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([2, 2, 2])
    kw = dict(method=method, iou_threshold=0.5, offset=0.0, backend="torch")
    got = batched_soft_nms(boxes, scores, labels, **kw)  # iou 100 / 200: not above 0.5
    _assert_same(got, soft_nms_per_class(boxes, scores, labels, **kw))
    assert got[0].tolist() == [0, 1, 2] and got[1].tolist() == pytest.approx([0.9, 0.8, 0.7])


@pytest.mark.parametrize("method", ["linear", "gaussian"])
def test_batched_groups_of_classes_and_classes_too_large(monkeypatch, method: str) -> None:
    # a factor matrix of at most 200 elements: classes [0, 1, 3, ...] are cut into groups,
    # and class 2 (24 boxes, 25 * 25 > 200) takes the per-class loop
    monkeypatch.setattr(soft_nms_cpu, "MAX_DENSE", 200)
    labels = torch.tensor([0] * 4 + [1] * 5 + [2] * 24 + [3] * 6 + [4] * 3 + [5] * 7)
    gen = torch.Generator().manual_seed(11)
    boxes, scores = _random_boxes(labels.shape[0], gen)
    perm = torch.randperm(labels.shape[0], generator=gen)
    boxes, scores, labels = boxes[perm], scores[perm], labels[perm]
    kw = dict(method=method, score_threshold=0.05)
    expected = soft_nms_per_class(boxes, scores, labels, **kw, backend="torch")
    _assert_same(batched_soft_nms(boxes, scores, labels, **kw, backend="torch"), expected)


@pytest.mark.parametrize(
    "change",
    ["negative_scores", "inf_threshold", "zero_scores", "nan_threshold"],
)  # non-finite scores and boxes are refused: test_value_errors_name_the_argument
def test_batched_outside_the_fast_path_still_matches(change: str) -> None:
    boxes, scores, labels = _labelled(40, 4, seed=13)
    kw = dict(method="linear", score_threshold=0.01)
    if change == "negative_scores":
        scores = scores - 0.5
    elif change == "inf_threshold":
        kw["score_threshold"] = float("inf")
    elif change == "zero_scores":
        scores[::2] = 0.0
        kw["score_threshold"] = 0.0
    else:
        kw["score_threshold"] = float("nan")
    expected = soft_nms_per_class(boxes, scores, labels, **kw, backend="torch")
    _assert_same(batched_soft_nms(boxes, scores, labels, **kw, backend="torch"), expected)


@settings(max_examples=25, deadline=None)
@given(
    n=st.integers(1, 40),
    classes=st.integers(1, 8),
    seed=st.integers(0, 2**31 - 1),
    grid=st.sampled_from([0, 8]),
    method=st.sampled_from(["hard", "linear", "gaussian"]),
    offset=st.sampled_from([0.0, 1.0]),
    thr=st.sampled_from([0.0, 0.001, 0.05]),
)
def test_hypothesis_batched_equals_per_class(n, classes, seed, grid, method, offset, thr) -> None:
    boxes, scores, labels = _labelled(n, classes, seed, grid)
    kw = dict(method=method, offset=offset, score_threshold=thr, backend="torch")
    expected = soft_nms_per_class(boxes, scores, labels, **kw)
    _assert_same(batched_soft_nms(boxes, scores, labels, **kw), expected)


def test_batched_triton_equals_per_class_triton() -> None:
    boxes, scores, labels = _labelled(24, 3, seed=17)
    for method in ("linear", "gaussian"):
        kw = dict(method=method, score_threshold=0.01)
        got = batched_soft_nms(boxes, scores, labels, **kw, backend="triton")
        _assert_same(got, soft_nms_per_class(boxes, scores, labels, **kw, backend="triton"))
        ref = batched_soft_nms(boxes, scores, labels, **kw, backend="torch")
        assert torch.equal(got[0], ref[0])
        torch.testing.assert_close(got[1], ref[1], atol=0, rtol=1e-6)


def test_batched_edges_dtypes_strides() -> None:
    assert kernels.batched_soft_nms is batched_soft_nms
    empty = batched_soft_nms(torch.zeros(0, 4), torch.zeros(0), torch.zeros(0, dtype=torch.long))
    assert empty[0].shape == empty[1].shape == (0,)
    assert empty[0].dtype == torch.int64 and empty[1].dtype == torch.float32
    one = batched_soft_nms(torch.tensor([[0.0, 0, 2, 2]]), torch.tensor([1e-4]), torch.tensor([4]))
    assert one[0].tolist() == [0] and one[1].tolist() == [pytest.approx(1e-4)]
    boxes, scores, labels = _labelled(50, 5, seed=19)
    packed = torch.cat([scores[:, None], boxes], dim=1).t().contiguous().t()  # column-major
    before = packed.clone()
    for dtype in (torch.float32, torch.float16):
        b, s = packed[:, 1:].to(dtype), packed[:, 0].to(dtype)
        expected = soft_nms_per_class(b.float(), s.float(), labels, backend="torch")
        _assert_same(batched_soft_nms(b, s, labels[None, :].t()[:, 0]), expected)
    assert torch.equal(packed, before)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((torch.zeros(3, 5), torch.zeros(3), torch.zeros(3, dtype=torch.long)), {},
         r"boxes: expected shape \(N, 4\), got \(3, 5\)"),
        ((torch.zeros(3, 4), torch.zeros(4), torch.zeros(3, dtype=torch.long)), {},
         r"scores: expected shape \(3,\), got \(4,\)"),
        ((torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, 1, dtype=torch.long)), {},
         r"labels: expected shape \(3,\), got \(3, 1\)"),
        ((torch.zeros(3, 4), torch.zeros(3), torch.zeros(3)), {},
         "labels: expected an integer dtype, got torch.float32"),
        ((torch.zeros(3, 4), torch.zeros(3), [0, 0, 0]), {}, "labels: expected a torch.Tensor"),
        ((torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, dtype=torch.long)),
         {"method": "soft"}, "method: expected one of"),
        ((torch.zeros(3, 4), torch.zeros(3), torch.zeros(3, dtype=torch.long)),
         {"backend": "numpy"}, "backend: expected one of"),
    ],
    ids=["boxes", "scores", "labels_shape", "labels_dtype", "labels_list", "method", "backend"],
)  # fmt: skip
def test_batched_bad_input_raises(args, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        batched_soft_nms(*args, **kwargs)


GOOD_BOXES = torch.tensor([[0.0, 0, 2, 2], [1, 1, 3, 3], [4, 4, 6, 6]])
GOOD_SCORES = torch.tensor([0.9, 0.5, 0.3])


def _with(t: torch.Tensor, index: tuple, value: float) -> torch.Tensor:
    t = t.clone()
    t[index] = value
    return t


BAD_VALUES = {  # name: (boxes, scores, kwargs, the argument named, the rest of the message)
    "nan_score": (GOOD_BOXES, _with(GOOD_SCORES, (1,), NAN), {}, "scores", "nan at index 1"),
    "inf_score": (GOOD_BOXES, _with(GOOD_SCORES, (2,), INF), {}, "scores", "inf at index 2"),
    "-inf_score": (GOOD_BOXES, _with(GOOD_SCORES, (0,), -INF), {}, "scores", "-inf at index 0"),
    "nan_box": (_with(GOOD_BOXES, (1, 3), NAN), GOOD_SCORES, {}, "boxes", r"finite.*index 1$"),
    "inf_box": (_with(GOOD_BOXES, (2, 2), INF), GOOD_SCORES, {}, "boxes", r"finite.*index 2$"),
    "x2<x1": (_with(GOOD_BOXES, (1, 2), 0.5), GOOD_SCORES, {}, "boxes", r"x1 <= x2.*index 1$"),
    "y2<y1": (_with(GOOD_BOXES, (2, 3), 3.0), GOOD_SCORES, {}, "boxes", r"y1 <= y2.*index 2$"),
    "iou>1": (GOOD_BOXES, GOOD_SCORES, {"iou_threshold": 1.5}, "iou_threshold", r"\[0, 1\]"),
    "iou<0": (GOOD_BOXES, GOOD_SCORES, {"iou_threshold": -0.1}, "iou_threshold", "-0.1"),
    "iou_nan": (GOOD_BOXES, GOOD_SCORES, {"iou_threshold": NAN}, "iou_threshold", "nan"),
    "iou_str": (GOOD_BOXES, GOOD_SCORES, {"iou_threshold": "0.5"}, "iou_threshold", "'0.5'"),
    "sigma<0": (GOOD_BOXES, GOOD_SCORES, {"sigma": -0.5}, "sigma", "positive.*-0.5"),
    "sigma_nan": (GOOD_BOXES, GOOD_SCORES, {"sigma": NAN}, "sigma", "positive.*nan"),
    "sigma_0": (GOOD_BOXES, GOOD_SCORES, {"sigma": 0.0}, "sigma", "positive"),
    "scores_len": (GOOD_BOXES, torch.zeros(4), {}, "scores", r"shape \(3,\), got \(4,\)"),
    "scores_2d": (GOOD_BOXES, torch.zeros(3, 1), {}, "scores", r"shape \(3,\), got \(3, 1\)"),
    "boxes_5": (torch.zeros(3, 5), GOOD_SCORES, {}, "boxes", r"\(N, 4\), got \(3, 5\)"),
    "boxes_1d": (torch.zeros(12), GOOD_SCORES, {}, "boxes", r"\(N, 4\), got \(12,\)"),
}
PUBLIC = {  # every public function of kernels.soft_nms, with labels where it takes them
    "soft_nms": lambda b, s, labels, **kw: soft_nms(b, s, **kw),
    "soft_nms_reference": lambda b, s, labels, backend, **kw: soft_nms_reference(b, s, **kw),
    "soft_nms_per_class": soft_nms_per_class,
    "batched_soft_nms": batched_soft_nms,
}


@pytest.mark.parametrize("backend", ["torch", "triton"])
@pytest.mark.parametrize("fn", list(PUBLIC))
@pytest.mark.parametrize("case", list(BAD_VALUES))
def test_value_errors_name_the_argument(case: str, fn: str, backend: str) -> None:
    """Refused before any backend runs (the Triton paths too: they would read NaN boxes as
    boxes); the message starts with the argument's name."""
    boxes, scores, kwargs, name, detail = BAD_VALUES[case]
    labels = torch.tensor([0, 1, 0])
    with pytest.raises(ValueError, match=rf"^{name}: .*{detail}") as info:
        PUBLIC[fn](boxes, scores, labels, backend=backend, **kwargs)
    assert info.value.args[0].startswith(f"{name}: ")  # the argument, not just a word in it


@pytest.mark.parametrize("fn", ["soft_nms_per_class", "batched_soft_nms"])
@pytest.mark.parametrize(
    "labels,match",
    [(torch.tensor([0, 1]), r"labels: expected shape \(3,\), got \(2,\)"),
     (torch.tensor([[0], [1], [0]]), r"labels: expected shape \(3,\), got \(3, 1\)")],
    ids=["short", "2d"],
)  # fmt: skip
def test_labels_shape_mismatch_names_labels(fn: str, labels, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        PUBLIC[fn](GOOD_BOXES, GOOD_SCORES, labels)


def test_valid_input_still_runs_on_every_public_function() -> None:
    """The checks refuse only what they should: touching boxes (x1 == x2) are fine."""
    boxes = _with(GOOD_BOXES, (2, 2), 4.0)
    for fn in PUBLIC.values():
        keep, kept = fn(boxes, GOOD_SCORES, torch.tensor([0, 1, 0]), backend="torch")
        assert keep.shape == kept.shape and torch.isfinite(kept).all()


@pytest.mark.gpu
@pytest.mark.parametrize("method", ["hard", "linear", "gaussian"])
def test_gpu_many_boxes(method: str) -> None:
    gen = torch.Generator().manual_seed(0)
    boxes, scores = _random_boxes(3000, gen)
    boxes = boxes * 10  # spread out over 700 px
    labels = torch.randint(0, 80, (3000,), generator=gen)
    ref = soft_nms_reference(boxes, scores, method=method)
    _assert_gpu_matches(soft_nms(boxes.cuda(), scores.cuda(), method=method), ref, method)
    ref = soft_nms_per_class(boxes, scores, labels, method=method)
    got = soft_nms_per_class(boxes.cuda(), scores.cuda(), labels.cuda(), method=method)
    _assert_gpu_matches(got, ref, method)


def _assert_gpu_matches(got, ref, method: str) -> None:
    """Compiled without fma contraction and with IEEE division: hard and linear give the
    same float32 roundings; gaussian's float32 exp (a documented deviation) ~1 ulp per weight,
    so the same kept boxes with scores to 1e-6 (their order may differ within that)."""
    keep, kept = got[0].cpu(), got[1].cpu()
    if method != "gaussian":
        assert torch.equal(keep, ref[0])
        torch.testing.assert_close(kept, ref[1], atol=0, rtol=1e-7)
        return
    order, ref_order = torch.argsort(keep), torch.argsort(ref[0])
    assert torch.equal(keep[order], ref[0][ref_order])
    torch.testing.assert_close(kept[order], ref[1][ref_order], atol=0, rtol=1e-6)
