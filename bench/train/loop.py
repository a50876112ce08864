"""Equal-budget training of the registered detectors, on one process or under ``torchrun``.

Every detector trained with one :class:`TrainConfig` gets the same images in the same order
with the same augmentation, the same optimiser (Adam), schedule, input size and seed:

- The data stream is a function of the seed only (:mod:`bench.data.stream`): position ``p``
  (step ``p // batch_size``) is a fixed image with fixed augmentation draws, whatever the
  detector, ``num_workers``, the step a run was resumed at, or the number of processes.
- Images are letterboxed to ``input_size``, augmented (scale-crop, flip, colour jitter), then
  normalised on the device with :data:`IMAGE_MEAN` / :data:`IMAGE_STD`.
- The model is initialised after ``torch.manual_seed(seed)``.

Several processes (``torchrun --nproc-per-node W -m bench train``, :mod:`bench.distributed`):
the model is wrapped in ``DistributedDataParallel`` (SyncBatchNorm first with ``sync_bn``).
Each global batch of ``B = batch_size`` images is cut into micro-batches of at most
``micro_batch`` images, dealt to the ranks (:func:`bench.data.stream.micro_batches`); a
rank accumulates the gradients of its micro-batches (``no_sync`` for all but its last one).
Micro-batch ``i`` (``n_i`` images, loss ``L_i`` normalised by the detector within it) is
back-propagated times ``n_i / B * W``, and DDP averages over the ``W`` ranks, so each rank
steps with ``sum_i (n_i / B) * grad L_i`` over all micro-batches of the step. Equivalence:
``W`` processes with ``micro_batch = m`` train the same parameters as one process with
``micro_batch = m`` (the same micro-batches, so the same BatchNorm batch statistics and
losses; only the order of summation differs: float rounding). With ``micro_batch`` None a
rank's whole slice is one micro-batch (``B / W`` images per BatchNorm batch): like one
process with ``micro_batch = B / W`` when ``W`` divides ``B``. ``sync_bn`` (CUDA only)
normalises over the micro-batches running at once on all ranks: no single process does
that. BatchNorm running statistics (used in eval mode) are rank 0's alone (DDP broadcasts
its buffers), so they differ from one process's. Logged losses ``sum_i (n_i / B) * L_i``
are summed over ranks: the single-process figure.

Outputs in ``out_dir/<detector>/``, written by rank 0 alone while the others wait:
``last.pt`` (:mod:`bench.train.checkpoints`, the unwrapped model's state; written atomically every
``checkpoint_every_steps`` steps or ``checkpoint_every_seconds``, on Ctrl-C and at the end),
``loss_curve.csv`` (``step, images_seen, loss, loss_<part>..., lr, seconds``; losses are
means over the steps since the previous row) and ``summary.json``. Rerunning with the same
configuration resumes from ``last.pt`` (on one CPU process bitwise as an uninterrupted
run); a finished run is skipped. The number of processes is bookkeeping, like
``num_workers``: a run resumes on any ``W`` (every rank reads ``last.pt``: ``out_dir`` must
be shared), continuing the same computation when ``micro_batch`` is set. ``micro_batch``
and ``sync_bn`` change the BatchNorm batches, so a resume must keep them. The command line
is :mod:`bench.commands.train`.
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from bench.data.coco import CocoDetection
from bench.data.stream import (
    IMAGE_MEAN,
    IMAGE_STD,
    build_train_transforms,
    micro_batch_count,
    micro_steps,
    normalize_images,
    stream_indices,
    stream_loader,
)
from bench.distributed import (
    DistContext,
    all_reduce_sum,
    barrier,
    context,
    local_device,
    wrap_model,
)
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
from detectors import DETECTORS
from detectors.base import float32_outputs

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "TrainConfig",
    "build_train_transforms",
    "lr_factor",
    "normalize_images",
    "snapshot_path",
    "stream_indices",
    "train_detector",
]

SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# fields that change how often things are written, not what is trained
_BOOKKEEPING = (
    "num_workers",
    "checkpoint_every_steps",
    "checkpoint_every_seconds",
    "log_every",
    "snapshot_images",
)


@dataclass(frozen=True)
class TrainConfig:
    """One training budget, shared by every detector in a comparison."""

    # 40k: ~13 epochs of the 3000-image synthetic train split (5000 steps at batch 8); at
    # 20k (the first zoo's budget) AP50 still doubled with each doubling (training notes)
    images_seen: int = 40_000
    batch_size: int = 8  # global batch; fits every tiny detector at 128 px on a CPU; paper: 49
    micro_batch: int | None = None  # images per forward (gradient accumulation); None: B / W
    sync_bn: bool = False  # SyncBatchNorm across processes (torchrun on CUDA only)
    # Adam. The CornerNet release uses 2.5e-4 at batch 49; on the tiny backbone at batch 8,
    # 1e-3 gave CornerNet AP50 0.149 against 0.048 for 2.5e-4 (20k images, synthetic val)
    lr: float = 1e-3
    weight_decay: float = 0.0  # the CornerNet release uses plain Adam
    schedule: str = "cosine"  # "cosine", "step" (CornerNet: /10 after 450k of 500k) or "constant"
    warmup_fraction: float = 0.05  # linear warm-up over this share of the steps
    step_at: float = 0.9  # "step": 450k / 500k iterations in the CornerNet release
    step_gamma: float = 0.1  # "step": decay_rate 10 in the CornerNet release
    input_size: int = 128  # the synthetic benchmark's image size
    flip: bool = True  # horizontal flip, p = 0.5
    scale_crop: bool = True  # random scale then crop back to input_size
    scale_range: tuple[float, float] = (0.6, 1.3)  # CornerNet release: arange(0.6, 1.4, 0.1)
    color_jitter: bool = True  # CornerNet release: rand_color
    seed: int = 0
    num_workers: int = 0  # DataLoader processes; 0 on a 2-core CPU
    amp: str = "bf16"  # autocast dtype on CUDA ("bf16", "fp16" or "none"); CPU runs fp32
    checkpoint_every_steps: int = 500
    checkpoint_every_seconds: float = 600.0
    log_every: int = 10  # steps per loss_curve.csv row
    # images seen at which a copy of the checkpoint is kept in snapshots/images_<n>.pt, so
    # that AP can be measured part-way through one schedule (budget curves)
    snapshot_images: tuple[int, ...] = (10_000, 20_000)

    def __post_init__(self) -> None:
        positive = ("images_seen", "batch_size", "input_size", "checkpoint_every_steps")
        for name in (*positive, "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an int >= 1, got {value!r}")
        m = self.micro_batch
        if m is not None and (not isinstance(m, int) or isinstance(m, bool) or m < 1):
            raise ValueError(f"TrainConfig.micro_batch must be an int >= 1 or None, got {m!r}")
        if self.num_workers < 0:
            raise ValueError(f"TrainConfig.num_workers must be >= 0, got {self.num_workers}")
        if not (self.lr > 0 and math.isfinite(self.lr)) or self.weight_decay < 0:
            raise ValueError(f"TrainConfig: lr must be > 0, weight_decay >= 0, got {self}")
        if self.schedule not in SCHEDULES:
            raise ValueError(f"TrainConfig.schedule {self.schedule!r}: expected one of {SCHEDULES}")
        if not 0 <= self.warmup_fraction < 1 or not 0 < self.step_at <= 1:
            raise ValueError("TrainConfig: warmup_fraction must lie in [0, 1), step_at in (0, 1]")
        lo, hi = self.scale_range
        if not 0 < lo <= hi:
            raise ValueError(f"TrainConfig.scale_range must be 0 < low <= high, got {lo, hi}")
        if self.amp not in (*AMP_DTYPES, "none"):
            raise ValueError(f"TrainConfig.amp {self.amp!r}: expected bf16, fp16 or none")

    @property
    def total_steps(self) -> int:
        """Optimiser steps in the budget: ``ceil(images_seen / batch_size)``."""
        return -(-self.images_seen // self.batch_size)


def lr_factor(step: int, total_steps: int, cfg: TrainConfig) -> float:
    """Multiplier of ``cfg.lr`` for optimiser step ``step`` (0-based) of ``total_steps``."""
    warmup = int(cfg.warmup_fraction * total_steps)
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if cfg.schedule == "step":
        return cfg.step_gamma if step >= cfg.step_at * total_steps else 1.0
    if cfg.schedule == "cosine":
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return 1.0


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


# TrainConfig fields newer than some checkpoints: a checkpoint without one used the default
_ADDED_FIELDS = {"micro_batch": None, "sync_bn": False, "snapshot_images": ()}


def train_detector(
    name: str,
    *,
    data_root: str | Path,
    out_dir: str | Path,
    cfg: TrainConfig | None = None,
    device: str | torch.device = "cpu",
    backbone: str = "tiny",
    preset: str = "synthetic",
    detector_kwargs: Mapping[str, Any] | None = None,
    progress: bool = True,
    builder: Callable[..., torch.nn.Module] | None = None,
    stop_after: int | None = None,
) -> dict[str, Any]:
    """Train detector ``name`` on the ``train`` split under ``data_root`` (see module doc).

    Images without annotations are left out of the stream (``remove_empty``); the model's
    ``num_classes`` and label map come from the dataset. Seeds torch's global RNG with
    ``cfg.seed`` before building the model. In a process group (:mod:`bench.distributed`,
    joined by the caller) every rank calls this with the same arguments; ``device`` "cuda"
    means the rank's own GPU. ``builder(num_classes, backbone=, preset=, **detector_kwargs)``
    defaults to the registry (``detectors.DETECTORS[name]``). ``stop_after`` ends this session
    after that many steps, as an interruption would (the run resumes on the next call).
    Returns the summary: detector, steps, total_steps, images_seen, finished,
    seconds_per_iter (this session, first step excluded; rank 0's; when this session timed no
    step, e.g. a run finished before, the whole run's mean), final_loss (last curve row),
    resumed_from, skipped, world_size, paths.
    """

    cfg = cfg or TrainConfig()
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
    run_dir = Path(out_dir) / name
    ckpt_path, curve_path = run_dir / "last.pt", run_dir / "loss_curve.csv"

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

    resumed_from = None
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        stored = {**_ADDED_FIELDS, **(ckpt.get("config") or {})}
        check_resume({**ckpt, "config": stored}, ckpt_path, provenance, ignore=_BOOKKEEPING)
        if ckpt.get("finished"):
            summary = _summary(record, cfg, ckpt, ckpt_path, curve_path, None, True, None, ctx)
            if ctx.is_main:
                write_json_atomic(run_dir / "summary.json", summary)
            barrier()
            return summary
        restore_training(ckpt, model, optimizer, scheduler, scaler, device)
        state.update({k: ckpt[k] for k in ("step", "elapsed", "loss_curve", "log_window")})
        resumed_from = state["step"]
        if state["loss_curve"] and ctx.is_main:  # drop rows logged after the checkpoint
            write_csv_atomic(curve_path, pd.DataFrame(state["loss_curve"]))
        del ckpt
    net = wrap_model(model, device, sync_bn=cfg.sync_bn)  # DDP, or the model itself

    def checkpoint() -> None:
        seen = state["step"] * cfg.batch_size
        extra = {"images_seen": seen, "total_steps": total}
        ckpt = training_checkpoint(
            model, optimizer, scheduler, scaler,
            state={**state, **extra}, provenance=provenance, device=device,
        )  # fmt: skip
        save_atomic(ckpt, ckpt_path)
        if seen in snapshots:
            save_atomic(ckpt, snapshot_path(run_dir, seen))

    # a snapshot is taken at the first step whose images seen reach each requested number
    snapshots = {-(-n // cfg.batch_size) * cfg.batch_size for n in cfg.snapshot_images}

    end = total if stop_after is None else min(total, state["step"] + max(0, int(stop_after)))
    step_times: list[float] = []
    last_save = time.monotonic()
    consistent = True  # model, optimiser and state describe the same step
    bar = _progress(progress and ctx.is_main, name, total, state["step"])
    micro = iter(
        stream_loader(
            dataset, cfg.seed, cfg.batch_size, state["step"], end, rank=ctx.rank,
            world_size=ctx.world_size, micro_batch=cfg.micro_batch,
            num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
        )
    )  # fmt: skip
    net.train()  # the DDP wrapper and the model
    try:
        t0 = time.perf_counter()
        for _ in range(state["step"], end):
            lr = optimizer.param_groups[0]["lr"]
            optimizer.zero_grad(set_to_none=True)
            sums: dict[str, float] = {}
            for j in range(per_step):
                images, targets = next(micro)
                images = normalize_images(images.to(device, non_blocking=True))
                targets = [{k: t[k].to(device) for k in ("boxes", "labels")} for t in targets]
                share = len(targets) / cfg.batch_size  # n_i / B
                last = j == per_step - 1
                sync = contextlib.nullcontext() if last or net is model else net.no_sync()
                with sync:
                    with torch.autocast(device.type, dtype=AMP_DTYPES.get(cfg.amp), enabled=amp):
                        outputs = net(images)
                    losses = model.loss(float32_outputs(outputs), targets)  # DDP wraps forward only
                    weight = share * ctx.world_size  # DDP divides the gradient by W
                    loss = losses["loss"] if weight == 1.0 else losses["loss"] * weight
                    (scaler.scale(loss) if scaler is not None else loss).backward()
                for k, v in losses.items():
                    if k.startswith("loss"):
                        sums[k] = sums.get(k, 0.0) + share * float(v.detach())
            keys = sorted(sums)
            due = time.monotonic() - last_save >= cfg.checkpoint_every_seconds
            reduced = all_reduce_sum([*(sums[k] for k in keys), float(due)])
            values = dict(zip(keys, reduced[:-1]))
            if not math.isfinite(values["loss"]):
                raise RuntimeError(f"{name}: loss is {values['loss']} at step {state['step']}")
            consistent = False  # from here until the step count is updated
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            state["step"] += 1
            consistent = True
            window = state["log_window"]
            for k, v in {**values, "lr": lr}.items():
                window[k] = window.get(k, 0.0) + v
            window["n"] = window.get("n", 0) + 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            dt = time.perf_counter() - t0  # the whole iteration, data loading included
            step_times.append(dt)
            state["elapsed"] += dt
            state["finished"] = state["step"] >= total
            if state["step"] % cfg.log_every == 0 or state["step"] in (end, total):
                _log_row(state, cfg, curve_path if ctx.is_main else None)
            if bar is not None:
                bar[0].update(bar[1], advance=1, loss=values["loss"])
            step = state["step"]
            snap = step * cfg.batch_size in snapshots
            if reduced[-1] or step % cfg.checkpoint_every_steps == 0 or step == end or snap:
                if ctx.is_main:
                    checkpoint()
                barrier()
                last_save = time.monotonic()
            t0 = time.perf_counter()
    except KeyboardInterrupt:
        if consistent and state["step"] > (resumed_from or 0) and ctx.is_main:
            checkpoint()
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    timed = step_times[1:] if len(step_times) > 1 else step_times
    sec = sum(timed) / len(timed) if timed else None
    summary = _summary(record, cfg, state, ckpt_path, curve_path, sec, False, resumed_from, ctx)
    if ctx.is_main:
        write_json_atomic(run_dir / "summary.json", summary)
    barrier()
    return summary


def snapshot_path(run_dir: Path, images_seen: int) -> Path:
    """Where the checkpoint taken after ``images_seen`` images is kept."""
    return Path(run_dir) / "snapshots" / f"images_{images_seen:08d}.pt"


def _log_row(state: dict, cfg: TrainConfig, curve_path: Path | None) -> None:
    """Append the window's means to ``state["loss_curve"]``; rewrite ``curve_path`` if given."""
    window = state["log_window"]
    n = window.pop("n", 0)
    if not n:
        return
    row = {"step": state["step"], "images_seen": state["step"] * cfg.batch_size}
    row["loss"] = window.pop("loss") / n
    lr = window.pop("lr")
    row.update({k: window[k] / n for k in sorted(window)})  # the loss_<part> columns
    row["lr"] = lr / n
    row["seconds"] = state["elapsed"]
    state["loss_curve"].append(row)
    state["log_window"] = {}
    if curve_path is not None:
        write_csv_atomic(curve_path, pd.DataFrame(state["loss_curve"]))


def _summary(record, cfg, state, ckpt_path, curve_path, sec, skipped, resumed_from, ctx) -> dict:
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
        "checkpoint": str(ckpt_path),
        "loss_curve": str(curve_path),
    }


def _progress(enabled: bool, name: str, total: int, done: int):
    if not enabled:
        return None

    bar = Progress(
        f"[bold]{name}",
        BarColumn(),
        MofNCompleteColumn(),
        "loss {task.fields[loss]:.4f}",
        TimeRemainingColumn(),
    )
    task = bar.add_task(name, total=total, completed=done, loss=float("nan"))
    bar.start()
    return bar, task
