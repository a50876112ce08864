"""bench.train.loop / bench.train.checkpoints: outputs, bitwise resume, data checks, fp16 zoo
files, CLI.

Most cases train a tiny dummy detector (conv + BatchNorm + dropout, so that buffers and RNG
state matter for an exact resume) passed as ``builder=``; one CLI case trains a registry
detector for two steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bench.cli import main
from bench.data.synthetic import generate_synthetic
from bench.errors import UsageError
from bench.train.checkpoints import export_half, load_checkpoint, load_detector, save_atomic
from bench.train.loop import (
    TrainConfig,
    TrainingInterrupted,
    lr_factor,
    stream_indices,
    train_detector,
)
from detectors.base import Detector

# 5 steps of batch 2 at 32 px, every augmentation on
CFG = TrainConfig(images_seen=10, batch_size=2, input_size=32, log_every=2, warmup_fraction=0.2)


class DummyDetector(Detector):
    """Global-pooled class logits and a mean-box regression; records a digest of each batch."""

    name = "dummy"

    def __init__(self, num_classes: int, width: int = 4) -> None:
        stem = nn.Sequential(nn.Conv2d(3, width, 3, 2, 1), nn.BatchNorm2d(width), nn.ReLU())
        super().__init__(num_classes, stem)
        self.drop = nn.Dropout(0.5)
        self.cls = nn.Conv2d(width, num_classes, 1)
        self.box = nn.Conv2d(width, 4, 1)
        self.seen: list[str] = []

    def forward(self, images: torch.Tensor) -> dict:
        self.seen.append(hashlib.sha1(images.detach().cpu().numpy().tobytes()).hexdigest())
        f = self.drop(self.backbone(images))  # (N, width, H/2, W/2)
        return {"cls": self.cls(f).mean((2, 3)), "box": self.box(f).mean((2, 3))}

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        present = torch.zeros_like(outputs["cls"])
        boxes = torch.zeros_like(outputs["box"])
        for i, t in enumerate(targets):
            present[i, t["labels"]] = 1.0
            if len(t["boxes"]):
                boxes[i] = t["boxes"].mean(0) / 32
        loss_cls = F.binary_cross_entropy_with_logits(outputs["cls"], present)
        loss_box = F.l1_loss(outputs["box"], boxes)
        return {"loss": loss_cls + loss_box, "loss_cls": loss_cls, "loss_box": loss_box}


class Builder:
    """A registry-style builder that keeps the models it built."""

    def __init__(self) -> None:
        self.built: list[DummyDetector] = []

    def __call__(
        self, num_classes: int, backbone: str = "tiny", preset: str = "synthetic", width: int = 4
    ) -> DummyDetector:
        self.built.append(DummyDetector(num_classes, width))
        return self.built[-1]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("train") / "syn"
    return generate_synthetic(root, num_train=6, num_val=2, image_size=48, workers=1, card=False)


def _train(data_root: Path, out: Path, cfg: TrainConfig = CFG, **kwargs) -> tuple[dict, Builder]:
    builder = Builder()
    kwargs.setdefault("builder", builder)
    summary = train_detector(
        "dummy", data_root=data_root, out_dir=out, cfg=cfg, progress=False, **kwargs
    )
    return summary, builder


def test_short_run_writes_checkpoint_curve_and_provenance(data_root: Path, tmp_path: Path):
    summary, _ = _train(data_root, tmp_path)
    assert summary["finished"] and summary["steps"] == 5 and summary["images_seen"] == 10
    assert summary["seconds_per_iter"] > 0 and math.isfinite(summary["final_loss"])
    ckpt = load_checkpoint(tmp_path / "dummy" / "last.pt")
    assert ckpt["step"] == 5 and ckpt["images_seen"] == 10 and ckpt["finished"]
    assert ckpt["config"] == dataclasses.asdict(CFG) and ckpt["seed"] == CFG.seed
    ann = json.loads((data_root / "annotations" / "instances_train.json").read_text())
    cat_ids = sorted(c["id"] for c in ann["categories"])
    assert ckpt["detector"]["num_classes"] == len(cat_ids) == 9
    assert ckpt["detector"]["label_to_cat_id"] == cat_ids
    digest = hashlib.sha256((data_root / "annotations" / "instances_train.json").read_bytes())
    assert ckpt["data_fingerprint"] == f"sha256:{digest.hexdigest()}:6 images"
    assert isinstance(ckpt["git"], str) and ckpt["git"] and isinstance(ckpt["command"], list)
    for key in ("optimizer", "scheduler", "rng"):
        assert ckpt[key]
    curve = pd.read_csv(tmp_path / "dummy" / "loss_curve.csv")
    assert list(curve.columns) == [
        "step", "images_seen", "loss", "loss_box", "loss_cls", "lr", "seconds",
    ]  # fmt: skip
    assert curve["step"].tolist() == [2, 4, 5] and curve["images_seen"].tolist() == [4, 8, 10]
    assert (curve["loss"] - curve["loss_box"] - curve["loss_cls"]).abs().max() < 1e-5
    # lr column: the mean of the factors applied at the steps of each row
    expected = [
        CFG.lr * sum(lr_factor(s, 5, CFG) for s in steps) / len(steps)
        for steps in ([0, 1], [2, 3], [4])
    ]
    assert curve["lr"].tolist() == pytest.approx(expected)
    assert json.loads((tmp_path / "dummy" / "summary.json").read_text())["steps"] == 5


def test_resume_matches_an_uninterrupted_run_bitwise(data_root: Path, tmp_path: Path):
    _, whole = _train(data_root, tmp_path / "whole")
    first, part1 = _train(data_root, tmp_path / "split", stop_after=2)
    assert first["steps"] == 2 and not first["finished"] and len(part1.built[0].seen) == 2
    second, part2 = _train(data_root, tmp_path / "split")
    assert second["resumed_from"] == 2 and second["finished"]
    assert len(part2.built[0].seen) == 3  # only the remaining steps were trained
    a, b = whole.built[0].state_dict(), part2.built[0].state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert whole.built[0].seen == part1.built[0].seen + part2.built[0].seen
    curves = [
        pd.read_csv(p / "dummy" / "loss_curve.csv")
        for p in (tmp_path / "whole", tmp_path / "split")
    ]
    cols = ["step", "images_seen", "loss", "loss_box", "loss_cls", "lr"]
    pd.testing.assert_frame_equal(curves[0][cols], curves[1][cols], check_exact=True)
    # a finished run is detected and skipped
    third, part3 = _train(data_root, tmp_path / "split")
    assert third["skipped"] and third["steps"] == 5 and part3.built[0].seen == []


def test_ctrl_c_saves_the_last_complete_step(data_root: Path, tmp_path: Path):
    class Interrupting(DummyDetector):
        def forward(self, images: torch.Tensor) -> dict:
            if len(self.seen) == 3:
                raise KeyboardInterrupt
            return super().forward(images)

    with pytest.raises(KeyboardInterrupt):
        _train(data_root, tmp_path, builder=lambda k, **_: Interrupting(k))
    ckpt = load_checkpoint(tmp_path / "dummy" / "last.pt")
    assert ckpt["step"] == 3 and not ckpt["finished"]
    assert pd.read_csv(tmp_path / "dummy" / "loss_curve.csv")["step"].tolist() == [2]
    summary, _ = _train(data_root, tmp_path)
    assert summary["resumed_from"] == 3 and summary["steps"] == 5


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_ctrl_c_inside_a_step_resumes_bitwise(data_root: Path, tmp_path: Path):
    """A KeyboardInterrupt after the forward (BatchNorm statistics updated, dropout drawn) but
    before the optimiser step saves the last complete step as it was: the resumed run ends
    bitwise equal to an uninterrupted one (num_batches_tracked and the RNG included)."""

    class Interrupting(DummyDetector):
        def loss(self, outputs: dict, targets: list) -> dict:
            if len(self.seen) == 4:  # the forward of the 4th step has run
                raise KeyboardInterrupt
            return super().loss(outputs, targets)

    _, whole = _train(data_root, tmp_path / "whole")
    with pytest.raises(KeyboardInterrupt):
        _train(data_root, tmp_path / "split", builder=lambda k, **_: Interrupting(k))
    assert load_checkpoint(tmp_path / "split" / "dummy" / "last.pt")["step"] == 3
    second, rest = _train(data_root, tmp_path / "split")
    assert second["resumed_from"] == 3 and second["finished"]
    assert _same_state(whole.built[0], rest.built[0])


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGINT"])
def test_a_signal_stops_after_a_complete_saved_step(data_root: Path, tmp_path: Path, signame):
    """SIGTERM (as SIGINT) while a step runs: the step completes, is saved, and training
    stops with TrainingInterrupted; the rerun resumes there and ends bitwise equal."""
    sig = getattr(signal, signame)

    class Signalled(DummyDetector):
        def forward(self, images: torch.Tensor) -> dict:
            if len(self.seen) == 3:  # inside the 4th step
                os.kill(os.getpid(), sig)
            return super().forward(images)

    _, whole = _train(data_root, tmp_path / "whole")
    before = signal.getsignal(sig)
    with pytest.raises(TrainingInterrupted) as stop:
        _train(data_root, tmp_path / "split", builder=lambda k, **_: Signalled(k))
    assert stop.value.signum == sig and stop.value.step == 4
    assert load_checkpoint(tmp_path / "split" / "dummy" / "last.pt")["step"] == 4
    assert signal.getsignal(sig) is before  # the handlers are put back
    second, rest = _train(data_root, tmp_path / "split")
    assert second["resumed_from"] == 4 and second["finished"]
    assert _same_state(whole.built[0], rest.built[0])


def test_cli_says_what_was_saved_when_stopped(monkeypatch, tmp_path: Path, capsys):
    from bench.commands import train as train_cmd

    def stopped(*args, **kwargs):
        raise TrainingInterrupted(signal.SIGTERM, 7, tmp_path / "x" / "last.pt")

    monkeypatch.setattr(train_cmd, "train_detector", stopped)
    monkeypatch.setattr(train_cmd, "_data_root", lambda spec: tmp_path)
    code = main(["train", "--detectors", "retinanet", "--out", str(tmp_path), "--device", "cpu"])
    err = capsys.readouterr().err
    assert code == 143 and "Traceback" not in err
    assert "SIGTERM: stopped after step 7" in err and "rerun the same command" in err


def test_resume_refuses_other_data_or_config(data_root: Path, tmp_path: Path):
    _train(data_root, tmp_path / "out", stop_after=1)
    other = tmp_path / "other"
    shutil.copytree(data_root, other)
    ann_file = other / "annotations" / "instances_train.json"
    ann_file.write_text(json.dumps(json.loads(ann_file.read_text()), indent=1))
    with pytest.raises(UsageError, match="trained on data 'sha256:"):
        _train(other, tmp_path / "out")
    with pytest.raises(UsageError, match="differs in lr"):
        _train(data_root, tmp_path / "out", cfg=dataclasses.replace(CFG, lr=2.5e-4))
    # bookkeeping fields may change between sessions
    summary, _ = _train(data_root, tmp_path / "out", cfg=dataclasses.replace(CFG, log_every=1))
    assert summary["resumed_from"] == 1 and summary["finished"]


def test_resume_of_older_checkpoints_and_micro_batch_is_compared(data_root: Path, tmp_path: Path):
    _train(data_root, tmp_path, stop_after=1)
    path = tmp_path / "dummy" / "last.pt"
    ckpt = load_checkpoint(path)
    for key in ("micro_batch", "sync_bn"):  # a checkpoint written before these fields existed
        del ckpt["config"][key]
    save_atomic(ckpt, path)
    summary, _ = _train(data_root, tmp_path)
    assert summary["resumed_from"] == 1 and summary["finished"]
    # micro-batches change BatchNorm's batches: not bookkeeping
    with pytest.raises(UsageError, match="differs in micro_batch"):
        _train(data_root, tmp_path, cfg=dataclasses.replace(CFG, micro_batch=1))


def test_same_images_for_every_detector_and_seed_dependence(data_root: Path, tmp_path: Path):
    cfg = dataclasses.replace(CFG, images_seen=8)  # 4 steps: past one epoch of 6 images
    _, narrow = _train(data_root, tmp_path / "a", cfg=cfg)
    _, wide = _train(data_root, tmp_path / "b", cfg=cfg, detector_kwargs={"width": 8})
    assert wide.built[0].cls.in_channels == 8
    assert narrow.built[0].seen == wide.built[0].seen and len(narrow.built[0].seen) == 4
    _, reseeded = _train(data_root, tmp_path / "c", cfg=dataclasses.replace(cfg, seed=1))
    assert reseeded.built[0].seen != narrow.built[0].seen


def test_stream_indices_are_epoch_permutations_fixed_by_the_seed():
    order = stream_indices(3, 5, 0, 15)
    for epoch in range(3):
        assert sorted(order[5 * epoch : 5 * epoch + 5]) == list(range(5))
    assert stream_indices(3, 5, 7, 4) == order[7:11]  # any window of the same stream
    assert stream_indices(4, 5, 0, 15) != order


def test_lr_schedules():
    cfg = TrainConfig(warmup_fraction=0.1)
    factors = [lr_factor(s, 100, cfg) for s in range(100)]
    assert factors[:10] == pytest.approx([(s + 1) / 11 for s in range(10)])
    assert factors[10] == 1.0 and factors[-1] < 1e-3
    assert all(a >= b for a, b in zip(factors[10:], factors[11:]))
    step = dataclasses.replace(cfg, schedule="step", warmup_fraction=0.0)
    assert [lr_factor(s, 100, step) for s in (0, 89, 90, 99)] == [1.0, 1.0, 0.1, 0.1]


@pytest.mark.parametrize(
    "field,value,match",
    [("batch_size", 0, "batch_size"), ("schedule", "poly", "schedule"), ("amp", "fp8", "amp")],
    ids=str,
)
def test_config_rejects_bad_values(field: str, value: object, match: str):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**{field: value})


def test_export_half_and_load_detector_round_trip(data_root: Path, tmp_path: Path):
    _, builder = _train(data_root, tmp_path)
    last = tmp_path / "dummy" / "last.pt"
    zoo = export_half(last, tmp_path / "zoo" / "dummy-tiny.pt")
    saved = load_checkpoint(zoo)
    assert set(saved) == {"model", "detector", "manifest"}
    assert saved["model"]["cls.weight"].dtype == torch.float16
    assert saved["model"]["backbone.1.num_batches_tracked"].dtype == torch.int64
    assert saved["manifest"]["images_seen"] == 10 and saved["manifest"]["dtype"] == "float16"
    assert zoo.stat().st_size < last.stat().st_size
    model = load_detector(zoo, "cpu", builder=Builder())
    assert not model.training
    trained = builder.built[0].state_dict()
    for key, value in model.state_dict().items():
        want = trained[key].half().float() if trained[key].is_floating_point() else trained[key]
        assert value.dtype == trained[key].dtype and torch.equal(value, want), key


def test_cli_bad_input_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    assert main(["train", "--detectors", "no_such_net", "--out", str(tmp_path)]) == 2
    assert "no_such_net" in capsys.readouterr().err
    missing = tmp_path / "missing"
    assert main(["train", "--detectors", "all", "--data", f"coco:{missing}"]) == 2
    assert str(missing) in capsys.readouterr().err
    assert main(["train", "--data", "coco:" + str(tmp_path), "--batch-size", "0"]) == 2


def test_cli_trains_a_registry_detector_and_exports_it(data_root: Path, tmp_path: Path):
    from detectors import DETECTORS

    name = "retinanet"
    args = ["train", "--detectors", name, "--data", f"synthetic:{data_root}", "--budget", "2"]
    args += ["--batch-size", "2", "--input-size", "64", "--out", str(tmp_path / "runs")]
    args += ["--export-zoo", str(tmp_path / "zoo"), "--no-progress", "--device", "cpu"]
    assert main(args) == 0
    summary = json.loads((tmp_path / "runs" / "train_summary.json").read_text())
    assert summary["detectors"][0]["steps"] == 1
    model = load_detector(tmp_path / "zoo" / f"{name}-tiny.pt", "cpu")
    assert isinstance(model, Detector) and type(model) is type(DETECTORS[name](9))


@pytest.mark.parametrize(
    ("variant", "base", "kwargs"),
    [
        ("cornernet-no-corner-pool", "cornernet", {"corner_pooling": False}),
        ("retinanet-paper-anchors", "retinanet", {"anchors": "paper"}),
    ],
    ids=str,
)
def test_cli_trains_an_ablation_variant_under_its_own_name(
    data_root: Path, tmp_path: Path, variant: str, base: str, kwargs: dict
):
    args = ["train", "--detectors", variant, "--data", f"synthetic:{data_root}"]
    args += ["--budget", "2", "--batch-size", "2", "--input-size", "64", "--no-progress"]
    args += ["--out", str(tmp_path / "runs"), "--export-zoo", str(tmp_path / "zoo")]
    assert main([*args, "--device", "cpu"]) == 0
    assert (tmp_path / "runs" / variant / base / "last.pt").is_file()
    record = load_checkpoint(tmp_path / "zoo" / f"{variant}-tiny.pt")["detector"]
    assert record["name"] == base and record["kwargs"] == kwargs
    manifest = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert list(manifest["files"]) == [f"{variant}-tiny"]
    model = load_detector(tmp_path / "zoo" / f"{variant}-tiny.pt", "cpu")  # rebuilt with kwargs
    if "anchors" in kwargs:
        assert model.config.anchor_sizes[0][0] == 32  # the paper's P3 anchors
