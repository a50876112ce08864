"""Anchor fitting (k-means, per-level quantiles), coverage, and the paper-anchors ablation."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.ops import box_iou

from bench.anchors.coverage import anchor_coverage, best_anchor_iou, load_boxes
from bench.anchors.fit import (
    fit_levels,
    fit_priors,
    kmeans_iou,
    wh_iou,
)
from bench.cli import main
from bench.data.synthetic import generate_synthetic
from bench.spec import ANCHOR_ABLATIONS, ANCHOR_DETECTORS
from detectors import build_detector

K = 3
#: detectors whose paper preset has as many anchors per location as the synthetic one
SAME_HEADS = ("retinanet", "faster_rcnn", "yolov3")


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 24-image, 64 px synthetic training set (and 6 validation images)."""
    root = tmp_path_factory.mktemp("data") / "syn"
    return generate_synthetic(root, num_train=24, num_val=6, image_size=64, card=False, workers=1)


def _clusters(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    centres = np.array([[10.0, 10.0], [40.0, 20.0], [20.0, 80.0]])  # areas 100, 800, 1600
    wh = np.concatenate([c * rng.uniform(0.95, 1.05, size=(40, 2)) for c in centres])
    return centres, wh


# ---------------------------------------------------------------- k-means
def test_kmeans_recovers_hand_built_clusters_sorted_by_area() -> None:
    centres, wh = _clusters(np.random.default_rng(1))
    got, mean_iou = kmeans_iou(wh[np.random.default_rng(2).permutation(len(wh))], k=3)
    np.testing.assert_allclose(got, centres, rtol=0.03)
    assert mean_iou == pytest.approx(wh_iou(wh, got).max(1).mean())
    assert mean_iou > 0.9


def test_kmeans_and_priors_are_deterministic() -> None:
    _, wh = _clusters(np.random.default_rng(3))
    wh = np.concatenate([wh, np.random.default_rng(4).uniform(5, 60, size=(60, 2))])
    first, second = kmeans_iou(wh, k=9, seed=7), kmeans_iou(wh, k=9, seed=7)
    np.testing.assert_array_equal(first[0], second[0])
    assert first[1] == second[1]
    priors, score = fit_priors(wh, (3, 3, 3))
    assert (priors, score) == fit_priors(wh, (3, 3, 3))
    assert [len(level) for level in priors] == [3, 3, 3]
    areas = [w * h for level in priors for w, h in level]
    assert areas == sorted(areas)


def test_wh_iou_by_hand_and_bad_input() -> None:
    got = wh_iou(np.array([[10.0, 10.0]]), np.array([[10.0, 10.0], [20.0, 5.0], [5.0, 5.0]]))
    np.testing.assert_allclose(got, [[1.0, 50 / 150, 0.25]])
    with pytest.raises(ValueError, match="at least k"):
        kmeans_iou(np.ones((2, 2)), k=3)
    with pytest.raises(ValueError, match="positive"):
        kmeans_iou(np.array([[1.0, 0.0]] * 4), k=2)


# ---------------------------------------------------------------- coverage
class _HandAnchors:
    """A stand-in detector whose anchors are hand-built."""

    def anchor_grid(self, height: int, width: int) -> tuple[torch.Tensor, list[int]]:
        anchors = torch.tensor([[0.0, 0, 10, 10], [0, 0, 20, 20], [0, 0, 60, 60]])
        return anchors, [3]


def test_coverage_equals_a_hand_count() -> None:
    boxes = [
        torch.tensor([[0.0, 0, 10, 10], [0, 0, 10, 14]]),  # sizes 10, 11.8: IoU 1, 100/140
        torch.tensor(
            [
                [0.0, 0, 16, 16],  # size 16: IoU 256/400 = 0.64 with the 20 px anchor
                [100, 100, 130, 130],  # size 30: no overlap
                [0, 0, 60, 50],  # size 54.8: IoU 3000/3600
            ]
        ),
        torch.zeros(0, 4),  # an image without boxes
    ]
    cov = anchor_coverage(_HandAnchors(), boxes, 128)
    assert cov["boxes"] == 5
    assert cov["coverage50"] == pytest.approx(4 / 5)
    assert cov["coverage70"] == pytest.approx(3 / 5)
    assert cov["mean_best_iou"] == pytest.approx((1 + 100 / 140 + 0.64 + 0 + 3000 / 3600) / 5)
    by = cov["by_size"]
    assert by["<12"] == {"boxes": 2, "coverage50": 1.0, "coverage70": 1.0}
    assert by["12-24"] == {"boxes": 1, "coverage50": 1.0, "coverage70": 0.0}
    assert by["24-48"] == {"boxes": 1, "coverage50": 0.0, "coverage70": 0.0}
    assert by[">48"] == {"boxes": 1, "coverage50": 1.0, "coverage70": 1.0}
    with pytest.raises(ValueError, match="no anchors"):
        anchor_coverage(object(), boxes, 128)


def test_best_anchor_iou_in_blocks_matches_one_matrix(monkeypatch: pytest.MonkeyPatch) -> None:
    import bench.anchors.coverage as cov

    anchors, _ = build_detector("retinanet", K).anchor_grid(64, 64)
    xy = torch.rand(37, 2) * 50
    boxes = torch.cat([xy, xy + 4 + torch.rand(37, 2) * 30], 1)
    monkeypatch.setattr(cov, "_BLOCK", 5)
    values, index = best_anchor_iou(anchors, boxes)
    expected = box_iou(boxes, anchors).max(1)
    torch.testing.assert_close(values, expected.values)
    torch.testing.assert_close(index, expected.indices)


@pytest.mark.parametrize("name", ANCHOR_DETECTORS, ids=str)
def test_anchor_grid_is_what_forward_places(name: str) -> None:
    model = build_detector(name, K).eval()
    anchors, counts = model.anchor_grid(64, 96)
    with torch.no_grad():
        out = model(torch.zeros(1, 3, 64, 96))
    torch.testing.assert_close(anchors, out["anchors"].float())
    assert counts == out["num_anchors_per_level"]


# ---------------------------------------------------------------- paper anchors
def _same_except_anchors(name: str) -> tuple[object, object]:
    synthetic, paper = build_detector(name, K), build_detector(name, K, anchors="paper")
    a, b = synthetic.config, paper.config
    assert type(a) is type(b)
    for field in dataclasses.fields(a):
        if field.name not in a.ANCHOR_FIELDS:
            assert getattr(a, field.name) == getattr(b, field.name), field.name
    return synthetic, paper


@pytest.mark.parametrize("name", ANCHOR_DETECTORS, ids=str)
def test_paper_anchors_change_the_anchors_and_only_them(name: str) -> None:
    synthetic, paper = _same_except_anchors(name)
    assert not torch.equal(
        synthetic.anchor_grid(128, 128)[0][:5], paper.anchor_grid(128, 128)[0][:5]
    )
    reference = build_detector(name, K, preset="paper").config
    if name == "dssd":  # the paper's 7 maps at 512 px: its first 6 maps' boxes on the 6 maps
        assert paper.config.aspect_ratios == reference.aspect_ratios[:6]
        assert paper.config.scales == reference.scales[:7]
    else:
        assert paper.config.anchor_values() == reference.anchor_values()
    # the same modules; only head layers whose width is anchors per location differ
    shapes = {k: v.shape for k, v in synthetic.state_dict().items()}
    paper_shapes = {k: v.shape for k, v in paper.state_dict().items()}
    assert shapes.keys() == paper_shapes.keys()
    changed = [k for k in shapes if shapes[k] != paper_shapes[k]]
    n_synthetic = sum(p.numel() for p in synthetic.parameters())
    n_paper = sum(p.numel() for p in paper.parameters())
    if name in SAME_HEADS:  # 9 (RetinaNet), 3 (Faster R-CNN's RPN, YOLOv3) per location
        assert changed == [] and n_synthetic == n_paper
    else:  # SSD300's 4 or 6 boxes per map and DSSD's 8 vs the synthetic preset's 6
        assert changed and all(k.startswith("head.") for k in changed)
        assert n_synthetic != n_paper


def test_anchors_keyword_errors_and_explicit_fields_win() -> None:
    with pytest.raises(ValueError, match="anchors='coco'.*paper"):
        build_detector("retinanet", K, anchors="coco")
    with pytest.raises(ValueError, match="unknown option.*anchors"):
        build_detector("centernet", K, anchors="paper")
    model = build_detector("retinanet", K, anchors="paper", aspect_ratios=(1.0,))
    assert model.config.aspect_ratios == (1.0,)
    assert model.config.anchor_sizes[0][0] == 32  # the paper's P3


def test_paper_anchor_ablations_resolve_in_run_and_train() -> None:
    from bench.measure.suite import select_variants
    from bench.spec import Variant, named_variants, parse_detectors

    assert ("retinanet-paper-anchors", "retinanet", {"anchors": "paper"}) in ANCHOR_ABLATIONS
    builders = {"retinanet": build_detector, "cornernet": build_detector}
    got = select_variants("retinanet-paper-anchors,cornernet", builders, ablations=True)
    assert got[0] == Variant("retinanet-paper-anchors", "retinanet", {"anchors": "paper"})
    assert [v.name for v in got[1:]] == [
        "cornernet",
        "cornernet-no-corner-pool",
        "cornernet-no-gaussian",
    ]
    # added by default only where trained weights exist
    have = {"retinanet-paper-anchors"}.__contains__
    got = select_variants("retinanet,cornernet", builders, ablations=True, has_weights=have)
    assert [v.name for v in got] == [
        "retinanet", "cornernet", "cornernet-no-corner-pool", "cornernet-no-gaussian",
        "retinanet-paper-anchors",
    ]  # fmt: skip
    assert "retinanet-paper-anchors" not in {
        v.name for v in select_variants("retinanet", builders, ablations=False, has_weights=have)
    }
    # bench train resolves the same names (bench.spec.parse_detectors)
    assert [v.name for v in parse_detectors("yolov3-paper-anchors")] == ["yolov3-paper-anchors"]
    assert named_variants()["yolov3-paper-anchors"] == ("yolov3", {"anchors": "paper"})
    assert named_variants()["cornernet-no-gaussian"] == ("cornernet", {"gaussian_bump": False})


# ---------------------------------------------------------------- level fit and the CLI
def test_level_fit_keeps_the_structure_and_is_deterministic(data_root: Path) -> None:
    boxes = torch.cat(load_boxes(data_root, "train", 64))
    kwargs = {"iters": 2, "multiples": (2.0,)}
    fit = fit_levels("retinanet", boxes, (64, 64), **kwargs)
    assert fit == fit_levels("retinanet", boxes, (64, 64), **kwargs)
    sizes = fit["fields"]["anchor_sizes"]
    assert [len(level) for level in sizes] == [3] * 5
    flat = [s for level in sizes for s in level]
    assert flat == sorted(flat)  # finer levels hold the smaller anchors
    assert len(fit["fields"]["aspect_ratios"]) == 3
    model = build_detector("retinanet", K, **fit["fields"])
    cov = anchor_coverage(model, [boxes], 64)
    assert cov["mean_best_iou"] == pytest.approx(fit["mean_best_iou"])
    ssd = fit_levels("ssd", boxes, (64, 64), **kwargs)["fields"]
    assert len(ssd["scales"]) == 7 and [len(r) for r in ssd["aspect_ratios"]] == [2] * 6


def test_cli_fit_and_coverage(
    data_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "fit"
    argv = ["anchors", "--fit", "--coverage", "--data", str(data_root), "--out", str(out)]
    assert main([*argv, "--detectors", "yolov3", "--json"]) == 0
    captured = capsys.readouterr().out
    assert "priors=(((" in captured
    table = json.loads(captured[captured.index("{") :])
    assert set(table["yolov3"]) == {"synthetic", "synthetic-hand", "fitted", "paper"}
    fit = json.loads((out / "fit.json").read_text())
    assert fit["input_size"] == [64, 64] and fit["split"] == "train"
    assert (out / "fit.md").read_text().startswith("# Anchors fitted to")
    assert (out / "coverage.md").is_file() and (out / "coverage.json").is_file()
    # --coverage alone reuses the saved fit (same annotations) and prints a table
    argv = ["anchors", "--coverage", "--data", str(data_root), "--out", str(out)]
    assert main([*argv, "--detectors", "yolov3"]) == 0
    captured = capsys.readouterr()
    assert "yolov3" in captured.out and "fitting" not in captured.err
    assert main(["anchors", "--detectors", "yolov3"]) == 2  # counting needs --size
