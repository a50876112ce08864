"""bench run (commands.run, measure.suite): the smoke run, resume, interruption, weights, training,
CLI errors.

Most cases inject tiny dummy detectors (``builders=``) so they run in seconds and can count
forward calls; the CLI error cases use the real registry but stop before building a model.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from grid_detector import CALLS, GridDetector, grid

from bench.cli import main
from bench.commands import run as run_cmd
from bench.data.synthetic import generate_synthetic
from bench.errors import UsageError
from bench.measure import suite as run_mod
from bench.measure.detector import error_analysis
from bench.results.coco_eval import STAT_NAMES, evaluate_coco
from bench.results.store import ResultStore
from bench.results.tide import ERROR_TYPES
from bench.train.checkpoints import detector_record, export_half

BUILDERS = {"alpha": grid("alpha"), "beta": grid("beta")}


@pytest.fixture(scope="module")
def data_root(tmp_path_factory) -> Path:
    """A 16-image, 64 px synthetic validation set (and 8 training images)."""
    root = tmp_path_factory.mktemp("data") / "syn"
    return generate_synthetic(root, num_train=8, num_val=16, image_size=64, card=False, workers=1)


@pytest.fixture(autouse=True)
def _no_repo_zoo(monkeypatch, tmp_path) -> None:
    """The default weights folder is an empty one, whatever the repository holds."""
    monkeypatch.setattr(run_cmd, "REPO_DIR", tmp_path / "repo")


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    run_cmd.add_arguments(parser)
    return parser.parse_args(["--profile", "smoke", "--no-progress", *argv])


def smoke(data_root: Path, out: Path, *extra: str, builders=BUILDERS) -> dict:
    args = parse("--data", f"synthetic:{data_root}", "--out", str(out), *extra)
    assert run_cmd.run(args, builders=builders) == 0
    return json.loads((out / "results.json").read_text())


def test_smoke_run_writes_results_report_and_consistent_ap(data_root, tmp_path):
    out = tmp_path / "run"
    doc = smoke(data_root, out, "--batch-size", "1,2")
    for name in ("results.csv", "results.json", "env.json", "report.md", "report.html"):
        assert (out / name).is_file(), name
    assert json.loads((out / "env.json").read_text())["torch_version"] in torch.__version__
    rows = doc["rows"]
    assert [(r["detector"], r["batch"]) for r in rows] == [
        ("alpha", 1), ("alpha", 2), ("beta", 1), ("beta", 2),
    ]  # fmt: skip
    gt = doc["dataset"]["annotations"]
    for r in rows:
        assert r["weights"] == "random" and r["input_size"] == 64 and r["num_images"] == 16
        assert r["anchors_per_image"] == 2 * 8 * 8 and r["positives_per_image"] > 0
        det = out / r["detections"]
        assert det == out / "detections" / f"{r['detector']}.json"
        again = evaluate_coco(gt, det, keep_eval=True)
        assert {k: r[k] for k in STAT_NAMES} == {k: again[k] for k in STAT_NAMES}
        assert r["per_class"] == again["per_class"]
        extra = error_analysis(again["coco_eval"])  # intervals and TIDE from the saved files
        assert {k: r[k] for k in extra} == extra
        for name in ("AP", "AP50"):
            assert 0 <= r[f"{name}_ci95"][0] <= r[f"{name}_ci95"][1] <= 1
        assert set(r["tide"]) == set(r["tide_counts"]) == set(ERROR_TYPES)
        for q in ("p50", "p90", "p99", "mean"):
            assert r[f"latency_ms_{q}"] > 0
        for stage in ("preprocess", "forward", "decode"):
            assert 0 < r[f"latency_{stage}_ms_p50"] <= r["latency_ms_p99"]
        assert r["latency_iters"] == run_mod.PROFILES["smoke"].iters
        assert (out / r["sample"]).is_file()
    assert max(r["AP50"] for r in rows) > 0  # the grid hits some objects: a real check
    table = pd.read_csv(out / "results.csv")
    assert list(table["detector"]) == ["alpha", "alpha", "beta", "beta"]
    report = (out / "report.md").read_text()
    assert "RANDOM WEIGHTS" in report and "alpha" in report
    assert "## TIDE error breakdown" in report and (out / "plots" / "tide.png").is_file()
    assert "data:image/png;base64," in (out / "report.html").read_text()


def test_rerun_resumes_without_recomputing(data_root, tmp_path):
    out = tmp_path / "run"
    first = smoke(data_root, out)
    calls = dict(CALLS)
    second = smoke(data_root, out)
    assert dict(CALLS) == calls  # no forward call: every row was skipped
    assert second["rows"] == first["rows"]
    assert len(second["resumes"]) == 1


def test_interrupted_run_keeps_finished_rows_and_resumes(data_root, tmp_path):
    out = tmp_path / "run"
    stopped = {"alpha": grid("alpha"), "beta": grid("beta-stopped", fail=KeyboardInterrupt)}
    with pytest.raises(KeyboardInterrupt):
        smoke(data_root, out, builders=stopped)
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["detector"] for r in rows] == ["alpha"]
    assert (out / "detections" / "alpha.json").is_file()
    alpha_calls = CALLS["alpha"]
    doc = smoke(data_root, out)
    assert CALLS["alpha"] == alpha_calls  # alpha was not recomputed
    assert [r["detector"] for r in doc["rows"]] == ["alpha", "beta"]


def test_a_failing_detector_costs_only_its_own_row(data_root, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")  # rich: no line wrapping in the captured messages
    out = tmp_path / "run"
    broken = {"alpha": grid("alpha"), "beta": grid("beta-broken", fail=RuntimeError)}
    args = parse("--data", f"synthetic:{data_root}", "--out", str(out), "--batch-size", "1")
    assert run_cmd.run(args, builders=broken) == 1
    assert "beta (RuntimeError: beta-broken: simulated crash)" in capsys.readouterr().err
    rows = json.loads((out / "results.json").read_text())["rows"]
    assert [r["detector"] for r in rows] == ["alpha"]
    assert "alpha" in (out / "report.md").read_text()


def test_out_dir_of_another_run_is_refused(data_root, tmp_path):
    out = tmp_path / "run"
    smoke(data_root, out, "--detectors", "alpha")
    with pytest.raises(UsageError, match="another run"):
        smoke(data_root, out, "--detectors", "alpha", "--batch-size", "2")


def test_cli_exit_2_for_unknown_detector_and_foreign_out_dir(data_root, tmp_path, capsys):
    common = ["--profile", "smoke", "--data", f"synthetic:{data_root}", "--no-progress"]
    assert main(["run", "--detectors", "nope", *common, "--out", str(tmp_path / "a")]) == 2
    assert "nope" in capsys.readouterr().err
    foreign = tmp_path / "foreign"
    ResultStore(foreign, config={"some": "other run"})
    assert main(["run", *common, "--out", str(foreign)]) == 2
    assert "another run" in capsys.readouterr().err
    missing = tmp_path / "no-coco"
    assert main(["run", "--data", f"coco:{missing}", "--out", str(tmp_path / "c")]) == 2
    assert str(missing) in capsys.readouterr().err


def test_explicit_weights_dir_must_hold_every_detector(data_root, tmp_path, capsys):
    empty = tmp_path / "zoo"
    empty.mkdir()
    with pytest.raises(UsageError, match="alpha-tiny.pt"):
        smoke(data_root, tmp_path / "run", "--weights", str(empty))
    common = ["--profile", "smoke", "--data", f"synthetic:{data_root}", "--no-progress"]
    assert main(["run", *common, "--weights", str(empty), "--out", str(tmp_path / "b")]) == 2
    assert "--weights" in capsys.readouterr().err
    assert not (tmp_path / "run" / "results.json").exists()  # refused before any work


def test_zoo_weights_are_loaded_with_their_manifest(data_root, tmp_path):
    zoo = tmp_path / "zoo"
    torch.manual_seed(1)
    model = GridDetector(9, "zoo")
    with torch.no_grad():
        model.head.bias.fill_(3.0)  # confident: every score near sigmoid(3)
    cats = [2, 5, 11, 17, 28, 36, 49, 64, 88]  # the synthetic categories
    record = detector_record(
        "alpha", backbone="tiny", preset="synthetic", kwargs={}, num_classes=9,
        label_to_cat_id=cats,
    )  # fmt: skip
    ckpt = {"model": model.state_dict(), "detector": record, "config": {}, "images_seen": 640}
    export_half(ckpt, zoo / "alpha-tiny.pt")
    curve = pd.DataFrame({"step": [1, 2], "images_seen": [8, 16], "loss": [1.0, 0.5]})
    curve.to_csv(zoo / "alpha-tiny.loss_curve.csv", index=False)
    manifest = {"alpha-tiny": {"file": "alpha-tiny.pt", "seconds_per_iter": 0.25}}
    (zoo / "manifest.json").write_text(json.dumps({"files": manifest}))
    out = tmp_path / "run"
    doc = smoke(data_root, out, "--detectors", "alpha", "--weights", str(zoo))
    (row,) = doc["rows"]
    assert row["weights"] == "zoo" and row["weights_file"] == str(zoo / "alpha-tiny.pt")
    assert row["train_seconds_per_iter"] == 0.25 and row["train_images_seen"] == 640
    dets = json.loads((out / row["detections"]).read_text())
    assert min(d["score"] for d in dets) > 0.9  # the zoo's biases, not a random init
    report = (out / "report.md").read_text()
    assert "RANDOM" not in report and "plots/training_curves.png" in report


def test_train_then_evaluate_the_trained_zoo(data_root, tmp_path):
    out = tmp_path / "run"
    doc = smoke(data_root, out, "--detectors", "alpha", "--train")
    (row,) = doc["rows"]
    assert row["weights"] == "trained"
    assert row["train_images_seen"] == run_mod.PROFILES["smoke"].train_images
    assert (out / "zoo" / "alpha-tiny.pt").is_file()
    assert (out / "train" / "alpha" / "alpha" / "loss_curve.csv").is_file()


def test_ablation_variants_are_cornernet_build_kwargs():
    builders = {"cornernet": grid("c"), "alpha": grid("a")}
    variants = run_mod.select_variants("cornernet,alpha", builders, ablations=True)
    assert [(v.name, v.base, v.kwargs) for v in variants] == [
        ("cornernet", "cornernet", {}),
        ("alpha", "alpha", {}),
        ("cornernet-no-corner-pool", "cornernet", {"corner_pooling": False}),
        ("cornernet-no-gaussian", "cornernet", {"gaussian_bump": False}),
    ]
    assert [v.name for v in run_mod.select_variants("alpha", builders, True)] == ["alpha"]
    with pytest.raises(UsageError, match="unknown detector"):
        run_mod.select_variants("alpha,zeta", builders, False)


def test_ablation_rows_are_built_with_their_kwargs(data_root, tmp_path):
    seen = []

    def cornernet(num_classes, backbone="tiny", preset="synthetic", **kwargs):
        seen.append(kwargs)
        return GridDetector(num_classes, "cornernet", **kwargs)

    doc = smoke(data_root, tmp_path / "run", "--detectors", "cornernet", "--ablations",
                builders={"cornernet": cornernet})  # fmt: skip
    assert [r["detector"] for r in doc["rows"]] == [
        "cornernet", "cornernet-no-corner-pool", "cornernet-no-gaussian",
    ]  # fmt: skip
    assert seen == [{}, {"corner_pooling": False}, {"gaussian_bump": False}]
    assert doc["rows"][1]["build_kwargs"] == {"corner_pooling": False}


@pytest.mark.gpu
def test_cuda_run_times_at_least_100_images(data_root, tmp_path):
    doc = smoke(data_root, tmp_path / "run", "--detectors", "alpha", "--device", "cuda")
    (row,) = doc["rows"]
    assert row["device"] == "cuda" and row["latency_iters"] == 100


def _zoo_file(folder, name, model, anchors):
    from bench.train.checkpoints import detector_record, save_atomic

    rec = detector_record(
        name, backbone="tiny", preset="synthetic", kwargs={}, num_classes=9,
        label_to_cat_id=list(range(1, 10)),
    )  # fmt: skip
    manifest = {"images_seen": 8, "anchors": anchors}
    save_atomic({"model": model.state_dict(), "detector": rec, "manifest": manifest},
                folder / f"{name}-tiny.pt")  # fmt: skip


def test_zoo_weights_that_no_longer_fit_fall_back_with_the_reason(tmp_path) -> None:
    """A changed head (other parameters) or other anchors than the weights were trained
    with: never evaluated silently; random weights and a note naming why."""
    from bench.measure.suite import Variant, resolve_weights
    from bench.train.checkpoints import anchor_record
    from detectors import build_detector

    old_head = build_detector("retinanet", 9, head_group_norm=False)
    _zoo_file(tmp_path, "retinanet", old_head, anchor_record(old_head))
    yolo = build_detector("yolov3", 9)
    _zoo_file(tmp_path, "yolov3", yolo, anchor_record(build_detector("yolov3", 9, anchors="paper")))
    fine = build_detector("faster_rcnn", 9)
    _zoo_file(tmp_path, "faster_rcnn", fine, anchor_record(fine))
    variants = [Variant(n, n) for n in ("retinanet", "yolov3", "faster_rcnn")]
    got = resolve_weights(
        variants, tmp_path, explicit=False, backbone="tiny", preset="synthetic",
        cat_ids=list(range(1, 10)),
    )  # fmt: skip
    assert got["retinanet"].kind == "random" and "do not fit" in got["retinanet"].note
    assert got["yolov3"].kind == "random" and "other anchors" in got["yolov3"].note
    assert got["faster_rcnn"].kind == "zoo", got["faster_rcnn"].note
