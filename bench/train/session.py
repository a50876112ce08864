"""One training session's state and its lifecycle around the loop (:mod:`bench.train.loop`):
:func:`setup` (data, seeded model, optimiser, schedule, provenance), :func:`resume` (from
``last.pt``, refusing another configuration or other data), :func:`save_checkpoint` (``last.pt``
and the snapshots, atomically) and :func:`summary`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.data.coco import CocoDetection
from bench.data.stream import build_train_transforms, micro_batch_count, micro_steps
from bench.distributed import DistContext, barrier, context, local_device
from bench.errors import UsageError
from bench.results.env import git_revision
from bench.results.store import write_csv_atomic, write_json_atomic
from bench.train.checkpoints import (
    anchor_record,
    check_resume,
    data_fingerprint,
    detector_record,
    load_checkpoint,
    restore_training,
    save_atomic,
    training_checkpoint,
)
from bench.train.config import ADDED_FIELDS, BOOKKEEPING, TrainConfig, lr_factor
from detectors import DETECTORS

__all__ = ["Session", "resume", "save_checkpoint", "setup", "snapshot_path", "summary"]


def _check_parallel(cfg: TrainConfig, ctx: DistContext) -> int:
    """Micro-batches this rank runs per step; UsageError for an impossible split."""
    try:
        count = micro_batch_count(cfg.batch_size, ctx.world_size, cfg.micro_batch)
    except ValueError as exc:
        raise UsageError(f"--batch-size {cfg.batch_size}: {exc}") from exc
    if cfg.sync_bn and ctx.is_distributed and count % ctx.world_size:
        raise UsageError(
            f"--sync-bn: SyncBatchNorm exchanges statistics in every forward, so every process "
            f"must run as many micro-batches; {count} per step do not divide among "
            f"{ctx.world_size} processes (choose --micro-batch accordingly)"
        )
    return micro_steps(cfg.batch_size, ctx.world_size, cfg.micro_batch, ctx.rank)


@dataclass
class Session:
    """Everything one training session works on (built by :func:`setup`)."""

    name: str
    cfg: TrainConfig
    ctx: DistContext
    device: torch.device
    per_step: int  # micro-batches this rank runs per step
    dataset: CocoDetection
    record: dict[str, Any]  # detector_record: what the checkpoint says it holds
    provenance: dict[str, Any]  # compared on resume (but BOOKKEEPING and world_size)
    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler | None
    amp: bool
    run_dir: Path
    snapshots: set[int]  # images seen at which a snapshot is kept
    state: dict[str, Any] = field(default_factory=dict)
    consistent: bool = True  # model, optimiser and state describe the same step
    last_save: float = 0.0  # time.monotonic() of the last checkpoint
    in_step: bool = False  # between a step's start and its step count update
    step_start: tuple = ()  # (buffers, RNG state, CUDA RNG states) at the step's start
    stop_signal: int | None = None  # SIGINT / SIGTERM received (stop after this step)
    stop_requested: bool = False  # some rank received one (agreed in the step's all-reduce)

    @property
    def ckpt_path(self) -> Path:
        return self.run_dir / "last.pt"

    @property
    def curve_path(self) -> Path:
        return self.run_dir / "loss_curve.csv"


def setup(
    name: str, *, data_root, out_dir, cfg: TrainConfig, device, backbone: str, preset: str,
    detector_kwargs: Mapping[str, Any] | None, builder: Callable | None,
) -> Session:  # fmt: skip
    """Data, model (seeded), optimiser, schedule and provenance of a session."""
    ctx = context()
    device = local_device(device, ctx)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested, but torch sees no CUDA device")
    per_step = _check_parallel(cfg, ctx)
    dataset = CocoDetection.from_root(
        data_root, "train", build_train_transforms(cfg), remove_empty=True
    )
    fingerprint = data_fingerprint(dataset.ann_file, len(dataset))
    record = detector_record(
        name, backbone=backbone, preset=preset, kwargs=detector_kwargs,
        num_classes=dataset.num_classes, label_to_cat_id=dataset.cat_ids,
    )  # fmt: skip
    if builder is None:
        if name not in DETECTORS:
            raise UsageError(f"unknown detector {name!r}: expected one of {', '.join(DETECTORS)}")
        builder = DETECTORS[name]
    sha, dirty = git_revision()
    provenance = {
        "config": asdict(cfg),
        "detector": record,
        "command": list(sys.argv),
        "seed": cfg.seed,
        "data_fingerprint": fingerprint,
        "git": sha + ("-dirty" if dirty else ""),
        "world_size": ctx.world_size,  # bookkeeping: not compared on resume
    }
    torch.manual_seed(cfg.seed)
    model = builder(dataset.num_classes, backbone=backbone, preset=preset, **record["kwargs"])
    model.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    total = cfg.total_steps
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, total, cfg))
    amp = device.type == "cuda" and cfg.amp != "none"
    scaler = torch.amp.GradScaler("cuda") if amp and cfg.amp == "fp16" else None
    state = {"step": 0, "elapsed": 0.0, "loss_curve": [], "log_window": {}, "finished": False}
    state["anchors"] = anchor_record(model)  # what the weights were trained against
    # a snapshot is taken at the first step whose images seen reach each requested number
    snapshots = {-(-n // cfg.batch_size) * cfg.batch_size for n in cfg.snapshot_images}
    return Session(
        name, cfg, ctx, device, per_step, dataset, record, provenance, model, optimizer,
        scheduler, scaler, amp, Path(out_dir) / name, snapshots, state,
    )  # fmt: skip


def resume(run: Session) -> tuple[dict[str, Any] | None, int | None]:
    """Restore ``last.pt`` if there is one (refusing another configuration or data): returns
    (the summary of a run that had finished, or None; the step resumed from, or None)."""
    if not run.ckpt_path.exists():
        return None, None
    ckpt = load_checkpoint(run.ckpt_path)
    stored = {**ADDED_FIELDS, **(ckpt.get("config") or {})}
    check_resume({**ckpt, "config": stored}, run.ckpt_path, run.provenance, ignore=BOOKKEEPING)
    if ckpt.get("finished"):
        done = summary(run, ckpt, None, True, None)
        if run.ctx.is_main:
            write_json_atomic(run.run_dir / "summary.json", done)
        barrier()
        return done, None
    restore_training(ckpt, run.model, run.optimizer, run.scheduler, run.scaler, run.device)
    run.state.update({k: ckpt[k] for k in ("step", "elapsed", "loss_curve", "log_window")})
    if run.state["loss_curve"] and run.ctx.is_main:  # drop rows logged after the checkpoint
        write_csv_atomic(run.curve_path, pd.DataFrame(run.state["loss_curve"]))
    return None, run.state["step"]


def save_checkpoint(run: Session) -> None:
    """Write ``last.pt`` (and the snapshot due at this step) atomically (rank 0)."""
    seen = run.state["step"] * run.cfg.batch_size
    extra = {"images_seen": seen, "total_steps": run.cfg.total_steps}
    ckpt = training_checkpoint(
        run.model, run.optimizer, run.scheduler, run.scaler,
        state={**run.state, **extra}, provenance=run.provenance, device=run.device,
    )  # fmt: skip
    save_atomic(ckpt, run.ckpt_path)
    if seen in run.snapshots:
        save_atomic(ckpt, snapshot_path(run.run_dir, seen))


def snapshot_path(run_dir: Path, images_seen: int) -> Path:
    """Where the checkpoint taken after ``images_seen`` images is kept."""
    return Path(run_dir) / "snapshots" / f"images_{images_seen:08d}.pt"


def summary(run: Session, state: Mapping[str, Any], sec, skipped: bool, resumed_from) -> dict:
    """The session's summary (see :func:`train_detector`) from ``state`` (the run's, or a
    finished checkpoint's)."""
    record, cfg, ctx = run.record, run.cfg, run.ctx
    curve = state.get("loss_curve") or []
    if sec is None and state["step"]:  # nothing timed this session: the whole run's mean
        sec = float(state["elapsed"]) / int(state["step"])
    return {
        "detector": record["name"],
        "backbone": record["backbone"],
        "steps": int(state["step"]),
        "total_steps": cfg.total_steps,
        "images_seen": int(state["step"]) * cfg.batch_size,
        "finished": bool(state["finished"]),
        "seconds_per_iter": sec,
        "batch_size": cfg.batch_size,
        "micro_batch": cfg.micro_batch,
        "world_size": ctx.world_size,
        "final_loss": curve[-1]["loss"] if curve else None,
        "train_seconds": float(state["elapsed"]),
        "resumed_from": resumed_from,
        "skipped": skipped,
        "checkpoint": str(run.ckpt_path),
        "loss_curve": str(run.curve_path),
    }
