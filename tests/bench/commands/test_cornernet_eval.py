"""``python -m bench cornernet-eval``: a release-format checkpoint through the release's test
pipeline, scored by pycocotools; resumable; bad checkpoints are clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.data.synthetic import generate_synthetic
from bench.results.coco_eval import evaluate_coco
from detectors import build_detector


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    return generate_synthetic(root, num_train=2, num_val=4, image_size=64, card=False, workers=1)


def _release_file(path: Path, num_classes: int) -> Path:
    """A tiny CornerNet saved as the release saves it: its official state dict, 'module.'."""
    torch.manual_seed(0)
    det = build_detector("cornernet", num_classes, backbone="tiny")
    torch.save(det.model.official_state_dict(), path)
    return path


def test_release_checkpoint_is_evaluated_and_resumes(data_root: Path, tmp_path: Path) -> None:
    ckpt = _release_file(tmp_path / "release.pkl", 9)
    out = tmp_path / "eval"
    argv = ["cornernet-eval", "--checkpoint", str(ckpt), "--data", f"synthetic:{data_root}",
            "--backbone", "tiny", "--device", "cpu", "--out", str(out), "--json"]  # fmt: skip
    assert main(argv) == 0
    doc = json.loads((out / "results.json").read_text())
    assert doc["options"]["images"] == 4 and doc["test_config"]["flip"] is False
    # the stored statistics are pycocotools' on the saved detections
    again = evaluate_coco(
        data_root / "annotations" / "instances_val.json", str(out / "detections.json")
    )
    assert doc["results"]["AP"] == again["AP"] and doc["results"]["num_images"] == 4
    partial = json.loads((out / "partial.json").read_text())
    assert len(partial["images"]) == 4
    # a rerun finds every image done: same detections, nothing recomputed
    before = (out / "detections.json").read_text()
    assert main(argv) == 0
    assert (out / "detections.json").read_text() == before
    # other options in the same folder are refused
    assert main([*argv, "--flip"]) == 2


def test_checkpoint_of_another_model_is_a_clear_error(
    data_root: Path, tmp_path: Path, capsys
) -> None:
    ckpt = _release_file(tmp_path / "four.pkl", 4)  # 4 classes; the dataset has 9
    argv = ["cornernet-eval", "--checkpoint", str(ckpt), "--data", f"synthetic:{data_root}",
            "--backbone", "tiny", "--out", str(tmp_path / "o")]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "four.pkl" in err and "9 classes" in err
    assert main([*argv[:2], str(tmp_path / "missing.pkl"), *argv[3:]]) == 2
    assert main([*argv[:4], "coco:/no/such/folder", *argv[5:]]) == 2
