"""Issue 13, "no silent wrong results": one test per point, each on its broken input.

1. An unreadable validation image is skipped, not replaced by the next one (before,
   ``CocoDetection.__getitem__`` returned the next image under the bad image's id: its
   detections counted twice, the bad image's objects as misses, the row still reported every
   image).
2. An unreadable image among the first validation images no longer fails every detector:
   latency is timed on the first readable evaluated images (before, ``load_raw_images`` raised
   after the evaluation; the row was dropped and every rerun failed the same way).
3. A run folder is not resumed against changed data: ``run.json`` records a fingerprint of the
   evaluated ground truth; resuming after the dataset was regenerated at the same path exits 2
   (before, new rows were scored against the old ``annotations.json``). A ``run.json`` written
   before fingerprints is accepted.
10. Zoo files that would give wrong results are caught when weights are resolved: a record
    that matches but whose tensors are shaped for another class count (it passed the shape
    check, the model being built with the record's own class count, and failed during
    measurement with a traceback) exits 2 naming the file; NaN / inf weights (evaluated as if
    fine) are warned about, naming the file, and marked in ``weights_note``.

``bench run --profile smoke`` runs through the CLI entry point (real exit codes, captured
console) with a tiny dummy detector whose detections depend on the image, on 18 validation
images of 64 px; a skipped image's reference is the same run on a copy of the data without it.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from grid_detector import grid

from bench.cli import main
from bench.commands import run as run_cmd
from bench.data.synthetic import generate_synthetic
from bench.measure import detector
from bench.measure.suite import resolve_weights
from bench.results.coco_eval import STAT_NAMES
from bench.spec import Variant
from bench.train.checkpoints import detector_record, save_atomic
from detectors import DETECTORS, build_detector

build_grid = grid("grid", batch_norm=True)  # BatchNorm: buffers a zoo file can corrupt


BUILDERS = {"alpha": build_grid}


@pytest.fixture(scope="module")
def base_data(tmp_path_factory) -> Path:
    """18 validation images of 64 px (the smoke profile evaluates the first 16)."""
    root = tmp_path_factory.mktemp("reliability") / "syn"
    return generate_synthetic(root, num_train=1, num_val=18, image_size=64, workers=1, card=False)


@pytest.fixture
def data(base_data: Path, tmp_path: Path) -> Path:
    """A copy of ``base_data`` that a test may break."""
    return Path(shutil.copytree(base_data, tmp_path / "data"))


@pytest.fixture
def isolated(monkeypatch, tmp_path) -> None:
    """No repository zoo, the dummy detector as the registry, no console line wrapping."""
    monkeypatch.setattr(run_cmd, "REPO_DIR", tmp_path / "repo")
    monkeypatch.setattr(run_cmd, "DETECTORS", BUILDERS)
    monkeypatch.setenv("COLUMNS", "400")


@pytest.fixture
def bench_run(capsys, isolated) -> Callable[..., tuple[int, str]]:
    """``bench_run(data, out, *options)`` -> (exit code, stdout + stderr) of
    ``python -m bench run --profile smoke`` with the dummy ``alpha`` detector."""

    def run(data: Path, out: Path, *options: str) -> tuple[int, str]:
        argv = ["run", "--profile", "smoke", "--no-progress", "--data", f"synthetic:{data}"]
        argv += ["--out", str(out), *options]
        if "--detectors" not in options:
            argv += ["--detectors", "alpha"]
        code = main(argv)
        captured = capsys.readouterr()
        return code, captured.out + captured.err

    return run


def without_image(data: Path, dest: Path, file_name: str) -> Path:
    """A copy of ``data`` in ``dest`` without validation image ``file_name`` and its
    annotations: the reference run of a skipped image."""
    dest = Path(shutil.copytree(data, dest))
    (dest / "val" / file_name).unlink()
    ann_file = dest / "annotations" / "instances_val.json"
    coco = json.loads(ann_file.read_text())
    (image_id,) = [im["id"] for im in coco["images"] if im["file_name"] == file_name]
    coco["images"] = [im for im in coco["images"] if im["id"] != image_id]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] != image_id]
    ann_file.write_text(json.dumps(coco))
    return dest


def results(out: Path) -> tuple[dict, list]:
    """(the one row of the run in ``out``, its detections)."""
    (row,) = json.loads((out / "results.json").read_text())["rows"]
    return row, json.loads((out / row["detections"]).read_text())


def test_unreadable_image_is_skipped_named_and_left_out_of_the_ground_truth(
    data, tmp_path, bench_run
):
    reference = without_image(data, tmp_path / "reference", "000005.png")
    bad = data / "val" / "000005.png"
    bad.write_text("x\n")
    out = tmp_path / "out"
    code, text = bench_run(data, out)
    assert code == 0, text
    assert "Traceback" not in text
    assert "UNREADABLE VALIDATION IMAGE(S) SKIPPED" in text and str(bad) in text
    row, dets = results(out)
    assert row["skipped_images"] == ["000005.png"]
    assert json.loads((out / "results.json").read_text())["dataset"]["skipped_images"] == [
        "000005.png"
    ]
    assert row["num_images"] == 16  # the first 16 readable images, as without the bad one

    assert bench_run(reference, tmp_path / "ref-out")[0] == 0
    ref_row, ref_dets = results(tmp_path / "ref-out")
    assert ref_row["skipped_images"] == []
    gt, ref_gt = (
        json.loads((o / "annotations.json").read_text()) for o in (out, tmp_path / "ref-out")
    )
    assert gt == ref_gt  # the bad image and its objects are not in the evaluated ground truth
    assert {k: row[k] for k in STAT_NAMES} == {k: ref_row[k] for k in STAT_NAMES}
    assert dets == ref_dets


def test_latency_uses_the_first_readable_images(data, tmp_path, bench_run, monkeypatch):
    reference = without_image(data, tmp_path / "reference", "000000.png")
    (data / "val" / "000000.png").write_bytes(b"")  # zero bytes
    timed: list[list[str]] = []
    load = detector.load_raw_images

    def spy(paths):
        timed.append([Path(p).name for p in paths])
        return load(paths)

    monkeypatch.setattr(detector, "load_raw_images", spy)
    out = tmp_path / "out"
    code, text = bench_run(data, out)
    assert code == 0, text
    assert "Traceback" not in text and "FAILED" not in text
    assert str(data / "val" / "000000.png") in text
    assert timed == [["000001.png", "000002.png", "000003.png", "000004.png"]]
    row, dets = results(out)
    assert row["skipped_images"] == ["000000.png"] and row["latency_ms_p50"] > 0

    assert bench_run(reference, tmp_path / "ref-out")[0] == 0
    ref_row, ref_dets = results(tmp_path / "ref-out")
    assert {k: row[k] for k in STAT_NAMES} == {k: ref_row[k] for k in STAT_NAMES}
    assert dets == ref_dets


def _stopping(num_classes, backbone="tiny", preset="synthetic", **kw):
    raise KeyboardInterrupt  # Ctrl-C while the second detector is built


def test_resume_on_regenerated_data_is_refused_naming_both_fingerprints(
    data, tmp_path, bench_run, monkeypatch
):
    out = tmp_path / "out"
    builders = dict(run_cmd.DETECTORS)
    monkeypatch.setattr(run_cmd, "DETECTORS", {**builders, "beta": _stopping})
    code, text = bench_run(data, out, "--detectors", "alpha,beta")  # Ctrl-C: one line, 130
    assert code == 130 and "interrupted (Ctrl-C)" in text and "Traceback" not in text, text
    monkeypatch.setattr(run_cmd, "DETECTORS", {**builders, "beta": builders["alpha"]})
    old = json.loads((out / "run.json").read_text())["data_fingerprint"]
    rows = (out / "results.json").read_text()
    generate_synthetic(data, num_train=1, num_val=18, image_size=64, seed=1, workers=1,
                       card=False, overwrite=True)  # fmt: skip

    code, text = bench_run(data, out, "--detectors", "alpha,beta")
    assert code == 2 and "Traceback" not in text
    fresh = tmp_path / "fresh"  # the remedy the message names: another output folder
    assert bench_run(data, fresh, "--detectors", "alpha,beta")[0] == 0
    new = json.loads((fresh / "run.json").read_text())["data_fingerprint"]
    assert old != new
    assert old in text and new in text and str(out) in text
    assert (out / "results.json").read_text() == rows  # nothing scored against the old truth

    legacy = json.loads((fresh / "run.json").read_text())
    del legacy["data_fingerprint"]  # a folder written before fingerprints: resumed
    (fresh / "run.json").write_text(json.dumps(legacy))
    assert bench_run(data, fresh, "--detectors", "alpha,beta")[0] == 0
    assert json.loads((fresh / "run.json").read_text())["data_fingerprint"] == new


def _zoo_file(path, name, model, num_classes, cat_ids):
    rec = detector_record(name, backbone="tiny", preset="synthetic", kwargs={},
                          num_classes=num_classes, label_to_cat_id=cat_ids)  # fmt: skip
    state = {k: v.half() if v.is_floating_point() else v for k, v in model.state_dict().items()}
    save_atomic({"model": state, "detector": rec, "manifest": {"images_seen": 8}}, path)


def test_wrong_shapes_exit_2_and_non_finite_weights_are_marked(
    data, tmp_path, bench_run, monkeypatch
):
    coco = json.loads((data / "annotations" / "instances_val.json").read_text())
    cat_ids = sorted(c["id"] for c in coco["categories"])
    zoo = tmp_path / "zoo"
    shaped = zoo / "centernet-tiny.pt"  # the real detector: shaped for 5 classes, not 9
    _zoo_file(shaped, "centernet", build_detector("centernet", 5), 5, cat_ids)
    dummies = run_cmd.DETECTORS  # the fixtures' registry: alpha
    monkeypatch.setattr(run_cmd, "DETECTORS", {"centernet": DETECTORS["centernet"]})
    code, text = bench_run(
        data, tmp_path / "out", "--detectors", "centernet", "--weights", str(zoo)
    )
    assert code == 2 and "Traceback" not in text
    assert str(shaped) in text and "5 classes" in text
    assert not (tmp_path / "out" / "results.json").exists()  # refused before any work

    monkeypatch.setattr(run_cmd, "DETECTORS", dummies)
    model = dummies["alpha"](len(cat_ids))
    with torch.no_grad():  # inf variance: that channel silently reads 0, every output finite
        model.backbone[1].running_var[1] = float("inf")
    inf_file = zoo / "alpha-tiny.pt"
    _zoo_file(inf_file, "alpha", model, len(cat_ids), cat_ids)
    out = tmp_path / "inf"
    code, text = bench_run(data, out, "--weights", str(zoo))
    assert code == 0 and "Traceback" not in text, text
    assert "non-finite weights" in text and str(inf_file) in text
    row, _ = results(out)
    assert row["weights"] == "zoo" and "non-finite weights" in row["weights_note"]
    assert str(inf_file) in row["weights_note"]
    with torch.no_grad():
        model.head.bias[0] = float("nan")
    _zoo_file(tmp_path / "nan" / "alpha-tiny.pt", "alpha", model, len(cat_ids), cat_ids)
    got = resolve_weights(
        [Variant("alpha", "alpha")], tmp_path / "nan", explicit=True, backbone="tiny",
        preset="synthetic", cat_ids=cat_ids, builders=dummies,
    )  # fmt: skip
    assert got["alpha"].kind == "zoo" and "NaN or inf in 2 tensors" in got["alpha"].note


# ------------------------------------------------ poor: data and weights that fall back silently
def _default_zoo_file(tmp_path: Path, data: Path) -> Path:
    """The dummy detector's file in the (isolated) default zoo, trained on ``data``'s classes."""
    coco = json.loads((data / "annotations" / "instances_val.json").read_text())
    cat_ids = sorted(c["id"] for c in coco["categories"])
    path = tmp_path / "repo" / "zoo" / "alpha-tiny.pt"
    _zoo_file(path, "alpha", build_grid(len(cat_ids)), len(cat_ids), cat_ids)
    return path


def test_coco_data_on_a_synthetic_folder_uses_the_synthetic_preset(
    data, tmp_path, capsys, isolated
):
    _default_zoo_file(tmp_path, data)  # trained with the synthetic preset
    out = tmp_path / "out"
    argv = ["run", "--profile", "smoke", "--no-progress", "--detectors", "alpha"]
    code = main([*argv, "--data", f"coco:{data}", "--out", str(out)])
    text = "".join(capsys.readouterr())
    assert code == 0 and "Traceback" not in text, text
    assert f"{data} holds a synthetic.json" in text and "RANDOM" not in text
    row, _ = results(out)
    assert row["weights"] == "zoo"  # before: the paper preset, no zoo file for it, random


def test_a_corrupt_default_zoo_file_says_why_on_the_console(data, tmp_path, bench_run):
    path = _default_zoo_file(tmp_path, data)
    path.write_bytes(path.read_bytes()[:100])  # truncated
    code, text = bench_run(data, tmp_path / "out")
    assert code == 0 and "Traceback" not in text, text
    assert "RANDOM WEIGHTS" in text
    why = [line for line in text.splitlines() if line.strip().startswith("alpha:")]
    assert why and str(path) in why[0] and "no alpha-tiny.pt" not in why[0], text
    row, _ = results(tmp_path / "out")
    assert row["weights"] == "random" and str(path) in row["weights_note"]


@pytest.mark.parametrize("command", ["run", "train"])
def test_an_incomplete_synthetic_folder_is_not_regenerated_without_overwrite(
    command, data, tmp_path, capsys, isolated
):
    split = "val" if command == "run" else "train"
    (data / "annotations" / f"instances_{split}.json").unlink()  # an interrupted copy, say
    mine = data / "my-notes.txt"
    mine.write_text("the user's own file\n")
    argv = [command, "--data", f"synthetic:{data}", "--out", str(tmp_path / "out")]
    argv += ["--detectors", "alpha" if command == "run" else "centernet", "--no-progress"]
    code = main(argv + (["--profile", "smoke"] if command == "run" else ["--budget", "8"]))
    text = "".join(capsys.readouterr())
    assert code == 2 and "Traceback" not in text, text
    assert str(data) in text and "--overwrite" in text and "missing" in text
    assert mine.read_text() == "the user's own file\n"  # before: regenerated, deleted
    assert not (data / "annotations" / f"instances_{split}.json").exists()
