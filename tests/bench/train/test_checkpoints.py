"""Model-zoo export: fp16 files, loss curves and a manifest that accumulates."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from bench.train.checkpoints import export_zoo, load_checkpoint, save_atomic


def _summary(tmp_path: Path, name: str) -> dict:
    run = tmp_path / "train" / name
    run.mkdir(parents=True)
    ckpt = {
        "model": {"w": torch.randn(3, 3), "steps": torch.tensor(7)},
        "detector": {"name": name, "backbone": "tiny"},
        "config": {"lr": 1e-3},
        "loss_curve": [{"step": 10, "loss": 0.5}],
    }
    save_atomic(ckpt, run / "last.pt")
    (run / "loss_curve.csv").write_text("step,loss\n10,0.5\n")
    return {"checkpoint": str(run / "last.pt"), "backbone": "tiny", "images_seen": 80,
            "loss_curve": str(run / "loss_curve.csv"), "seconds_per_iter": 0.2,
            "train_seconds": 2.0, "final_loss": 0.5}  # fmt: skip


def test_export_writes_fp16_files_and_a_manifest_that_accumulates(tmp_path: Path) -> None:
    zoo = tmp_path / "zoo"
    export_zoo([("a", _summary(tmp_path, "a"))], zoo)
    manifest = export_zoo([("b", _summary(tmp_path, "b"))], zoo)  # a later, separate export
    files = json.loads(manifest.read_text())["files"]
    assert sorted(files) == ["a-tiny", "b-tiny"]
    assert files["b-tiny"] == {
        "file": "b-tiny.pt", "loss_curve": "b-tiny.loss_curve.csv", "images_seen": 80,
        "seconds_per_iter": 0.2, "train_seconds": 2.0, "final_loss": 0.5,
    }  # fmt: skip
    zoo_file = load_checkpoint(zoo / "a-tiny.pt")
    assert zoo_file["model"]["w"].dtype == torch.float16
    assert zoo_file["model"]["steps"].dtype == torch.int64  # non-float tensors unchanged
    assert (zoo / "a-tiny.loss_curve.csv").read_text().startswith("step,loss")
