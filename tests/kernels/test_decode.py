"""cornernet_decode against the original CornerNet's recorded detections (tests/fixtures/decode.pt)
and the Triton path (interpreter on CPU) against the torch reference."""

from __future__ import annotations

import os

import pytest
import torch

import kernels
from kernels.decode import (
    canonical_detections,
    cornernet_decode,
    cornernet_decode_dense,
    cornernet_decode_reference,
)

HEADS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr")
SETTINGS = ("K", "kernel", "ae_threshold", "num_dets")


@pytest.fixture(scope="module")
def cases(fixtures_dir: str) -> dict:
    return torch.load(os.path.join(fixtures_dir, "decode.pt"), weights_only=True)["cases"]


def _assert_same_detections(got: torch.Tensor, ref: torch.Tensor, tol: float = 1e-5) -> None:
    assert got.shape == ref.shape and got.dtype == torch.float32
    for g, r in zip(canonical_detections(got), canonical_detections(ref)):
        assert g.shape == r.shape, f"{g.shape[0]} valid detections, expected {r.shape[0]}"
        torch.testing.assert_close(g, r, atol=tol, rtol=tol)
    assert bool((got[..., 4] >= -1).all())


def _random_heads(b: int, c: int, h: int, w: int, scale: float = 1.0) -> list[torch.Tensor]:
    return [
        torch.randn(b, c, h, w) * 2,
        torch.randn(b, c, h, w) * 2,
        torch.randn(b, 1, h, w) * scale,
        torch.randn(b, 1, h, w) * scale,
        torch.rand(b, 2, h, w),
        torch.rand(b, 2, h, w),
    ]


@pytest.mark.parametrize("name", ["small", "medium", "coco"])
@pytest.mark.parametrize(
    "fn", [cornernet_decode_reference, cornernet_decode_dense], ids=lambda f: f.__name__
)
def test_torch_matches_original(cases: dict, name: str, fn) -> None:
    case = cases[name]
    got = fn(*(case[k] for k in HEADS), **{k: case[k] for k in SETTINGS})
    _assert_same_detections(got, case["detections"])


@pytest.mark.parametrize(
    "name", ["small", "medium", pytest.param("coco", marks=pytest.mark.gpu)]
)  # coco takes ~10 s in the interpreter
def test_triton_matches_original(cases: dict, name: str) -> None:
    case = cases[name]
    heads = [case[k].cuda() if torch.cuda.is_available() else case[k] for k in HEADS]
    got = cornernet_decode(*heads, **{k: case[k] for k in SETTINGS}, backend="triton")
    _assert_same_detections(got.cpu(), case["detections"])


def test_default_backend_and_package_export(cases: dict) -> None:
    assert kernels.cornernet_decode is cornernet_decode
    assert kernels.cornernet_decode_reference is cornernet_decode_reference
    case = cases["small"]
    kwargs = {k: case[k] for k in SETTINGS}
    auto = cornernet_decode(*(case[k] for k in HEADS), **kwargs)  # CPU tensors: the reference
    torch.testing.assert_close(
        auto, cornernet_decode_reference(*(case[k] for k in HEADS), **kwargs)
    )


@pytest.mark.parametrize(
    "shape,K,num_dets",
    [((1, 1, 1, 1), 1, 1), ((2, 3, 5, 7), 13, 169), ((1, 2, 9, 4), 72, 300), ((2, 4, 6, 6), 9, 0)],
    ids=str,
)
def test_triton_matches_reference_random(shape: tuple, K: int, num_dets: int) -> None:
    heads = _random_heads(*shape, scale=0.3)
    kwargs = dict(K=K, num_dets=num_dets, ae_threshold=0.5)
    got = cornernet_decode(*heads, **kwargs, backend="triton")
    _assert_same_detections(got, cornernet_decode_reference(*heads, **kwargs))


def test_more_corners_than_peaks_and_non_contiguous() -> None:
    # K = C*H*W: most corners are suppressed positions with score 0, still paired (as the
    # original does); channels-last and sliced inputs
    heads = [
        t.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2) for t in _random_heads(1, 2, 4, 5)
    ]
    heads[0] = torch.randn(1, 2, 4, 10)[..., ::2]
    assert not heads[0].is_contiguous() and not heads[4].is_contiguous()
    kwargs = dict(K=40, num_dets=1600, ae_threshold=1.0)
    ref = cornernet_decode_reference(*heads, **kwargs)
    _assert_same_detections(cornernet_decode(*heads, **kwargs, backend="triton"), ref)
    _assert_same_detections(cornernet_decode_dense(*[h.contiguous() for h in heads], **kwargs), ref)


def test_hand_built_pairs() -> None:
    # class 1: tl corner at (x=1, y=2), br corner at (x=6, y=5); tags 0.2 / 0.4 (close enough);
    # a second br corner of class 1 at (x=0, y=7) lies left of the tl corner: rejected.
    tl_heat = torch.full((1, 2, 8, 8), -9.0)
    br_heat = torch.full((1, 2, 8, 8), -9.0)
    tl_heat[0, 1, 2, 1] = 2.0
    br_heat[0, 1, 5, 6] = 1.0
    br_heat[0, 1, 7, 0] = 3.0
    tl_tag, br_tag = torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8)
    tl_tag[0, 0, 2, 1], br_tag[0, 0, 5, 6], br_tag[0, 0, 7, 0] = 0.2, 0.4, 0.2
    tl_regr, br_regr = torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8)
    tl_regr[0, :, 2, 1] = torch.tensor([0.25, 0.5])  # x offset, y offset
    heads = (tl_heat, br_heat, tl_tag, br_tag, tl_regr, br_regr)
    s_tl, s_br = torch.sigmoid(torch.tensor([2.0, 1.0]))
    for backend in ("torch", "triton"):
        dets = cornernet_decode(*heads, K=2, num_dets=4, backend=backend)
        expected = [1.25, 2.5, 6.0, 5.0, (s_tl + s_br).item() / 2, s_tl.item(), s_br.item(), 1.0]
        torch.testing.assert_close(dets[0, 0], torch.tensor(expected))
        assert dets[0, 1:, 4].tolist() == [-1.0, -1.0, -1.0]


def test_inputs_not_modified(cases: dict) -> None:
    case = cases["small"]
    heads = [case[k].clone() for k in HEADS]
    cornernet_decode(*heads, K=20, num_dets=50, backend="torch")
    cornernet_decode(*heads, K=20, num_dets=50, backend="triton")
    for k, t in zip(HEADS, heads):
        assert torch.equal(t, case[k]), k


@pytest.mark.parametrize(
    "change,match",
    [
        ({"K": 0}, r"K: expected an int in \[1, C\*H\*W = 48\]"),
        ({"K": 49}, "K: expected"),
        ({"num_dets": 17}, r"num_dets: expected an int in \[0, K\*K = 16\]"),
        ({"kernel": 4}, "kernel: expected an odd int"),
        ({"backend": "gpu"}, "backend: expected one of"),
        ({"tl_tag": torch.zeros(1, 2, 4, 4)}, r"tl_tag: expected shape \(1, 1, 4, 4\)"),
        ({"br_regr": torch.zeros(1, 2, 4, 5)}, r"br_regr: expected shape \(1, 2, 4, 4\)"),
        ({"br_heat": torch.zeros(1, 2, 4, 4)}, r"br_heat: expected shape \(1, 3, 4, 4\)"),
        ({"tl_heat": torch.zeros(3, 4, 4)}, "tl_heat: expected 4 dims"),
        ({"tl_regr": torch.zeros(1, 2, 4, 4, dtype=torch.int32)}, "tl_regr: expected a floating"),
        ({"br_tag": torch.zeros(1, 1, 4, 4, device="meta")}, "br_tag: expected device cpu"),
    ],
    ids=lambda v: ",".join(v) if isinstance(v, dict) else "",
)
def test_bad_input_raises(change: dict, match: str) -> None:
    args = dict(zip(HEADS, _random_heads(1, 3, 4, 4)))
    args.update(K=4, num_dets=16)
    args.update(change)
    with pytest.raises(ValueError, match=match):
        cornernet_decode(**args)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16], ids=str)
def test_gpu_real_shape(dtype: torch.dtype) -> None:
    heads = _random_heads(2, 80, 128, 128)
    heads[:2] = [h / 2 for h in heads[:2]]  # unit logits: top scores many ulps apart
    heads = [t.cuda().to(dtype) for t in heads]
    got = cornernet_decode(*heads)  # auto -> Triton on CUDA
    ref = cornernet_decode_reference(*[h.float() for h in heads])
    _assert_same_detections(got.cpu(), ref.cpu(), tol=1e-4)
