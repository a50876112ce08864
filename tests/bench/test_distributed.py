"""bench.distributed with torchrun: DDP training equals one process, resume on another number
of processes, sharded evaluation equals unsharded; the single-process helpers; usage errors.

The multi-process cases launch ``python -m torch.distributed.run --standalone
--nproc-per-node 2 -m bench ...`` (torchrun; ``--standalone`` picks a free port itself) on the
CPU with gloo, one thread per process, and compare with one process run in this one. They
train and evaluate yolov3 on the tiny backbone (one of the registry's cheapest) at 64 px.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bench import distributed
from bench.cli import main
from bench.data.synthetic import generate_synthetic
from bench.distributed import DistContext
from bench.errors import UsageError
from bench.results.coco_eval import STAT_NAMES
from bench.train import loop as train
from bench.train import session
from bench.train.checkpoints import (
    anchor_record,
    detector_record,
    export_half,
    load_checkpoint,
    load_detector,
)

DETECTOR = "yolov3"
# 3 steps of a global batch of 5 in micro-batches of 2 (cut 2 + 2 + 1: ranks run 2 and 1)
TRAIN = ["--detectors", DETECTOR, "--budget", "15", "--batch-size", "5", "--input-size", "64"]
TRAIN += ["--lr", "0.01", "--no-progress", "--device", "cpu"]
TOL = {"rtol": 1e-5, "atol": 1e-6}  # float32 rounding of another summation order


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("dist") / "syn"
    return generate_synthetic(root, num_train=8, num_val=16, image_size=64, card=False, workers=1)


def torchrun(*args: str) -> None:
    """``python -m bench ARGS`` on 2 CPU processes under torchrun; fails the test on error."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node"]
    cmd += ["2", "-m", "bench", *args]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for var in distributed.ENV_VARS:  # torchrun sets them, whatever launched pytest
        env.pop(var, None)
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def params(out: Path) -> dict[str, torch.Tensor]:
    """The trained parameters in ``out``'s last.pt (not BatchNorm's running statistics:
    under DDP they are rank 0's, which saw only its own micro-batches)."""
    model = load_detector(out / DETECTOR / "last.pt")
    return {k: v.detach() for k, v in model.named_parameters()}


def test_ddp_steps_equal_one_process_and_resume_on_one(data_root: Path, tmp_path: Path):
    data = ["--data", f"synthetic:{data_root}"]
    two, one, whole = tmp_path / "two", tmp_path / "one", tmp_path / "whole"
    torchrun("train", *TRAIN, *data, "--micro-batch", "2", "--stop-after", "2", "--out", str(two))
    base = ["train", *TRAIN, *data, "--stop-after", "2"]
    assert main([*base, "--micro-batch", "2", "--out", str(one)]) == 0
    assert main([*base, "--out", str(whole)]) == 0  # one forward of 5: other BN batches
    torch.testing.assert_close(params(two), params(one), **TOL)
    ckpts = {p: load_checkpoint(p / DETECTOR / "last.pt") for p in (two, one)}
    assert ckpts[two]["step"] == 2 and ckpts[two]["world_size"] == 2
    assert ckpts[two]["loss_curve"][-1]["loss"] == pytest.approx(
        ckpts[one]["loss_curve"][-1]["loss"], rel=1e-6
    )  # losses summed over ranks: the single-process figure
    # the tolerance tells the runs apart: the whole-batch run is far outside it
    gap = max(float((params(two)[k] - w).abs().max()) for k, w in params(whole).items())
    assert gap > 1000 * TOL["atol"]

    # the 2-process checkpoint continues on 1 process, as the 1-process run does
    for out in (two, one):
        assert main(["train", *TRAIN, *data, "--micro-batch", "2", "--out", str(out)]) == 0
    summary = json.loads((two / "train_summary.json").read_text())["detectors"][0]
    assert summary["resumed_from"] == 2 and summary["steps"] == 3 and summary["finished"]
    assert summary["world_size"] == 1
    torch.testing.assert_close(params(two), params(one), **TOL)


def test_sharded_run_gives_the_unsharded_ap_and_detections(data_root: Path, tmp_path: Path):
    from detectors import DETECTORS

    cats = json.loads((data_root / "annotations" / "instances_val.json").read_text())
    cats = sorted(c["id"] for c in cats["categories"])
    torch.manual_seed(3)
    model = DETECTORS[DETECTOR](len(cats))
    record = detector_record(
        DETECTOR, backbone="tiny", preset="synthetic", kwargs={}, num_classes=len(cats),
        label_to_cat_id=cats,
    )  # fmt: skip
    zoo = tmp_path / "zoo"
    ckpt = {"model": model.state_dict(), "detector": record, "config": {}}
    export_half({**ckpt, "anchors": anchor_record(model)}, zoo / "yolov3-tiny.pt")
    common = ["run", "--profile", "smoke", "--data", f"synthetic:{data_root}", "--no-progress"]
    common += ["--detectors", DETECTOR, "--weights", str(zoo), "--device", "cpu"]
    torchrun(*common, "--out", str(tmp_path / "two"))
    assert main([*common, "--out", str(tmp_path / "one")]) == 0
    rows = {}
    for run in ("one", "two"):
        (rows[run],) = json.loads((tmp_path / run / "results.json").read_text())["rows"]
    one, two = rows["one"], rows["two"]
    assert one["num_images"] == two["num_images"] == 16 and one["num_detections"] > 0
    for key in (*STAT_NAMES, "per_class", "num_detections", "assignment"):
        assert two[key] == one[key], key
    detections = [json.loads((tmp_path / r / one["detections"]).read_text()) for r in rows]
    assert detections[0] == detections[1]
    assert (
        two["latency_iters"] == one["latency_iters"]
        and (tmp_path / "two" / two["sample"]).is_file()
    )


@pytest.mark.parametrize("command", ["train", "run"], ids=str)
def test_world_size_without_torchrun_variables_exits_2(
    command: str, data_root: Path, tmp_path: Path, monkeypatch, capsys
):
    for var in distributed.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("WORLD_SIZE", "2")
    args = [command, "--detectors", DETECTOR, "--data", f"synthetic:{data_root}"]
    assert main([*args, "--out", str(tmp_path), "--device", "cpu", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "RANK" in err and "MASTER_ADDR" in err and "torchrun" in err
    assert not any(tmp_path.iterdir())  # stopped before any work


@pytest.mark.parametrize(
    "cfg,match",
    [
        (dict(batch_size=1), "smaller than the 2 processes"),
        (dict(batch_size=4, micro_batch=4), "fewer than the 2 processes"),
        (dict(batch_size=5, micro_batch=2, sync_bn=True), "--sync-bn"),
    ],
    ids=str,
)
def test_impossible_splits_over_processes_are_usage_errors(
    cfg: dict, match: str, data_root: Path, tmp_path: Path, monkeypatch
):
    monkeypatch.setattr(session, "context", lambda: DistContext(rank=0, world_size=2))
    config = dataclasses.replace(train.TrainConfig(images_seen=8, input_size=64), **cfg)
    with pytest.raises(UsageError, match=match):
        train.train_detector(DETECTOR, data_root=data_root, out_dir=tmp_path, cfg=config)
    assert not any(tmp_path.iterdir())


def test_single_process_helpers_are_identities(monkeypatch):
    for var in distributed.ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    assert distributed.init_from_env("cpu") == distributed.context() == DistContext()
    monkeypatch.setenv("WORLD_SIZE", "two")
    with pytest.raises(UsageError, match="WORLD_SIZE='two'"):
        distributed.init_from_env("cpu")
    assert distributed.all_reduce_sum([1, 2.5]) == [1.0, 2.5]
    assert distributed.gather_to_main({"a": 1}) == [{"a": 1}]
    assert distributed.gather_outcomes(lambda: 7) == [7] and distributed.on_main(lambda: 8) == 8
    with pytest.raises(KeyError):
        distributed.gather_outcomes(lambda: {}["missing"])
    model = torch.nn.BatchNorm2d(2)
    assert distributed.wrap_model(model, torch.device("cpu"), sync_bn=True) is model


def test_shard_and_local_device_follow_the_rank():
    ctx = DistContext(rank=1, world_size=3, local_rank=1)
    assert distributed.shard(list(range(8)), ctx) == [1, 4, 7]
    parts = [distributed.shard(range(8), DistContext(r, 3)) for r in range(3)]
    assert sorted(sum(parts, [])) == list(range(8))
    assert distributed.local_device("cuda", ctx) == torch.device("cuda", 1)
    assert distributed.local_device("cuda:0", ctx) == torch.device("cuda", 0)
    assert distributed.local_device("cpu", ctx) == torch.device("cpu")
    assert distributed.local_device("cuda", DistContext()) == torch.device("cuda")
