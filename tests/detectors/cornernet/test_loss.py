"""CornerNet losses against the original release's vectors (tests/fixtures/losses.pt)."""

from __future__ import annotations

import os

import pytest
import torch
from torch.testing import assert_close

from detectors.cornernet.loss import (
    CornerNetLoss,
    ae_loss,
    cornernet_loss,
    focal_loss,
    gather_at,
    regr_loss,
)
from detectors.cornernet.targets import build_batch_targets

SUM_TOL = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(scope="module")
def cases(fixtures_dir: str) -> list[dict]:
    return torch.load(os.path.join(fixtures_dir, "losses.pt"), weights_only=True)["cases"]


@pytest.mark.parametrize("i", range(3), ids=lambda i: f"case{i}")
def test_losses_match_release(cases: list[dict], i: int) -> None:
    c = cases[i]
    assert_close(focal_loss(c["logits"], c["gt"]), c["focal"], **SUM_TOL)
    pull, push = ae_loss(c["tag0"], c["tag1"], c["mask"])
    assert_close(pull, c["pull"], **SUM_TOL)
    assert_close(push, c["push"], **SUM_TOL)
    assert_close(regr_loss(c["regr"], c["gt_regr"], c["mask"]), c["regr_loss"], **SUM_TOL)


def test_focal_sums_over_stacks(cases: list[dict]) -> None:
    c = cases[0]
    per_stack = [focal_loss(logits, c["gt"]) for logits in c["logits"]]
    assert_close(per_stack[0] + per_stack[1], focal_loss(c["logits"], c["gt"]))


def test_focal_without_positives_is_the_undivided_negative_term() -> None:
    logits = torch.randn(2, 3, 8, 8)
    gt = torch.rand(2, 3, 8, 8) * 0.9
    p = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    expected = -(torch.log(1 - p) * p**2 * (1 - gt) ** 4).sum()
    assert_close(focal_loss(logits, gt), expected)
    gt[0, 1, 2, 3] = 1.0  # one positive: now normalised by 1 and the positive term counts
    pos = torch.log(p[0, 1, 2, 3]) * (1 - p[0, 1, 2, 3]) ** 2
    neg_mask = gt < 1
    neg = (torch.log(1 - p) * p**2 * (1 - gt) ** 4)[neg_mask].sum()
    assert_close(focal_loss(logits, gt), -(pos + neg))


def test_ae_loss_bool_and_uint8_masks_agree(cases: list[dict]) -> None:
    for c in cases:
        as_uint8 = ae_loss(c["tag0"], c["tag1"], c["mask"])
        as_bool = ae_loss(c["tag0"], c["tag1"], c["mask"].bool())
        assert_close(as_bool, as_uint8, rtol=0, atol=0)
        assert as_bool[1] > 0  # the release's push would be 0 with the bool mask


@pytest.mark.parametrize("tag_shape", ["BM1", "BM"])
def test_ae_loss_single_image_equals_its_share_of_the_batch(
    cases: list[dict], tag_shape: str
) -> None:
    c = cases[1]  # three images with 1, 0 and 12 objects
    tag0, tag1 = c["tag0"], c["tag1"]
    if tag_shape == "BM":
        tag0, tag1 = tag0[..., 0], tag1[..., 0]
    singles = [ae_loss(tag0[b : b + 1], tag1[b : b + 1], c["mask"][b : b + 1]) for b in range(3)]
    assert singles[1][0] == 0 and singles[1][1] == 0  # no objects: no loss
    pull, push = ae_loss(tag0, tag1, c["mask"])
    assert_close(sum(s[0] for s in singles), pull, **SUM_TOL)
    assert_close(sum(s[1] for s in singles), push, **SUM_TOL)


def test_push_is_the_mean_over_distinct_pairs() -> None:
    means = torch.tensor([[0.0, 0.3, 2.0, 0.5, 9.0]])
    mask = torch.tensor([[1, 1, 1, 1, 0]], dtype=torch.bool)
    d = (means[0, :4, None] - means[0, None, :4]).abs()
    expected = torch.relu(1 - d)[~torch.eye(4, dtype=torch.bool)].mean()
    pull, push = ae_loss(means, means, mask)
    assert pull == 0
    assert_close(push, expected, rtol=1e-3, atol=0)  # the release's 1e-4 terms


def test_regr_loss_ignores_empty_slots() -> None:
    regr, gt = torch.zeros(2, 4, 2), torch.zeros(2, 4, 2)
    regr[0, 0] = torch.tensor([0.5, 3.0])  # smooth L1: 0.125 + 2.5
    regr[1, 3] = float("nan")  # an empty slot, never read
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]], dtype=torch.uint8)
    assert_close(regr_loss(regr, gt, mask), torch.tensor(2.625 / (3 + 1e-4)))


def test_gather_at_matches_permute_and_index() -> None:
    feature = torch.randn(2, 3, 5, 7)
    index = torch.tensor([[0, 34, 8], [12, 12, 6]])
    expected = feature.permute(0, 2, 3, 1).reshape(2, 35, 3)
    expected = torch.stack([expected[n, index[n]] for n in range(2)])
    assert_close(gather_at(feature, index), expected, rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"\[0, 35\)"):
        gather_at(feature, index + 30)


def _problem(stacks: int = 2, dtype: torch.dtype = torch.float32) -> tuple[list, dict]:
    """Random head outputs at 16x16 and targets from real boxes (the second image is empty)."""
    boxes = torch.tensor([[2.0, 3.0, 30.0, 40.0], [20.0, 8.0, 60.0, 50.0], [5.0, 40.0, 25.0, 63.0]])
    samples = [(boxes, torch.tensor([0, 2, 2])), (torch.zeros(0, 4), torch.zeros(0, dtype=int))]
    targets = build_batch_targets(samples, (64, 64), (16, 16), 3, max_objects=6)
    shapes = {"heat": 3, "tag": 1, "regr": 2}
    outputs = [
        {
            f"{corner}_{kind}": torch.randn(2, ch, 16, 16, dtype=dtype, requires_grad=True)
            for corner in ("tl", "br")
            for kind, ch in shapes.items()
        }
        for _ in range(stacks)
    ]
    return outputs, targets


def test_cornernet_loss_composes_the_parts_like_the_release() -> None:
    outputs, t = _problem()
    w = {"pull_weight": 0.1, "push_weight": 0.2, "regr_weight": 1.5}
    got = cornernet_loss(outputs, t, **w)
    focal = focal_loss([o["tl_heat"] for o in outputs], t["tl_heat"]) + focal_loss(
        [o["br_heat"] for o in outputs], t["br_heat"]
    )
    pull = push = regr = 0.0
    for o in outputs:
        tl_tag = o["tl_tag"].permute(0, 2, 3, 1).reshape(2, -1, 1)
        br_tag = o["br_tag"].permute(0, 2, 3, 1).reshape(2, -1, 1)
        p, q = ae_loss(
            torch.stack([tl_tag[n, t["tl_tag"][n]] for n in range(2)]),
            torch.stack([br_tag[n, t["br_tag"][n]] for n in range(2)]),
            t["mask"],
        )
        pull, push = pull + p, push + q
        for c in ("tl", "br"):
            r = o[f"{c}_regr"].permute(0, 2, 3, 1).reshape(2, -1, 2)
            r = torch.stack([r[n, t[f"{c}_tag"][n]] for n in range(2)])
            regr = regr + regr_loss(r, t[f"{c}_regr"], t["mask"])
    total = (focal + 0.1 * pull + 0.2 * push + 1.5 * regr) / 2
    assert_close(got["loss"], total)
    assert_close(got["loss_focal"], focal / 2)
    assert_close(got["loss_push"], 0.2 * push / 2)
    parts = got["loss_focal"] + got["loss_pull"] + got["loss_push"] + got["loss_regr"]
    assert_close(parts, got["loss"])
    assert_close(CornerNetLoss(0.1, 0.2, 1.5)(outputs, t)["loss"], got["loss"])


def test_cornernet_loss_does_not_mutate_and_has_finite_gradients() -> None:
    outputs, targets = _problem()
    before = [{k: v.detach().clone() for k, v in o.items()} for o in outputs]
    targets_before = {k: v.clone() for k, v in targets.items()}
    loss = cornernet_loss(outputs, targets)["loss"]
    loss.backward()
    for o, b in zip(outputs, before):
        for key, value in o.items():
            assert torch.equal(value.detach(), b[key]), key
            assert value.grad is not None and torch.isfinite(value.grad).all(), key
            assert value.grad.abs().sum() > 0, key
    for key, value in targets.items():
        assert torch.equal(value, targets_before[key]), key


def test_single_stack_dict_and_half_precision() -> None:
    outputs, targets = _problem(stacks=1)
    as_list = cornernet_loss(outputs, targets)
    as_dict = cornernet_loss(outputs[0], targets)
    assert_close(as_dict["loss"], as_list["loss"])
    half = [{k: v.detach().half() for k, v in outputs[0].items()}]
    half[0]["tl_heat"] = half[0]["tl_heat"] * 100  # saturated sigmoid: log(1 - p) must stay finite
    got = cornernet_loss(half, targets)["loss"]
    assert got.dtype == torch.float32 and torch.isfinite(got)


def test_cornernet_loss_rejects_mismatched_shapes() -> None:
    outputs, targets = _problem(stacks=1)
    outputs[0]["tl_tag"] = outputs[0]["tl_tag"][:, :, :8]
    with pytest.raises(ValueError, match="tl_tag"):
        cornernet_loss(outputs, targets)
    with pytest.raises(ValueError, match="mask"):
        cornernet_loss(outputs[:1], {k: v for k, v in targets.items() if k != "mask"})
