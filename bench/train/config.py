"""The training budget every detector in a comparison shares: :class:`TrainConfig` and the
learning-rate schedule (:func:`lr_factor`). The loop is :mod:`bench.train.loop`."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

__all__ = ["ADDED_FIELDS", "AMP_DTYPES", "BOOKKEEPING", "SCHEDULES", "TrainConfig", "lr_factor"]

SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# fields that change how often things are written, not what is trained
BOOKKEEPING = (
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


# TrainConfig fields newer than some checkpoints: a checkpoint without one used the default
ADDED_FIELDS = {"micro_batch": None, "sync_bn": False, "snapshot_images": ()}
