"""Equal-budget training of the registered detectors, and ``python -m bench train``.

Every detector trained with one :class:`TrainConfig` gets the same images in the same order
with the same augmentation, the same optimiser (Adam), schedule, input size and seed:

- The data stream is a function of the seed only. Position ``p`` of the stream (step
  ``p // batch_size``) is image ``perm_e[p % N]`` of epoch ``e = p // N``, where ``perm_e`` is
  ``torch.randperm(N)`` from a generator seeded with ``(seed, e)``; its augmentation draws
  come from torch's RNG seeded with ``(seed, p)`` (:func:`stream_indices`). So the stream does
  not depend on the detector, on ``num_workers`` or on where a run was resumed.
- Images are letterboxed to ``input_size``, augmented (scale-crop, flip, colour jitter), then
  normalised on the device with :data:`IMAGE_MEAN` / :data:`IMAGE_STD`.
- The model is initialised after ``torch.manual_seed(seed)``.

Outputs in ``out_dir/<detector>/``: ``last.pt`` (see :mod:`bench.checkpoints`; written
atomically every ``checkpoint_every_steps`` steps or ``checkpoint_every_seconds``, on Ctrl-C
and at the end), ``loss_curve.csv`` (``step, images_seen, loss, loss_<part>..., lr, seconds``;
losses are means over the steps since the previous row) and ``summary.json``. Rerunning with
the same configuration resumes from ``last.pt`` (on the CPU the result is bitwise that of an
uninterrupted run); a finished run is skipped.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.checkpoints import (
    check_resume,
    data_fingerprint,
    detector_record,
    export_half,
    load_checkpoint,
    restore_training,
    save_atomic,
    training_checkpoint,
    zoo_path,
)
from bench.errors import UsageError
from bench.results import write_csv_atomic, write_json_atomic

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "TrainConfig",
    "add_arguments",
    "build_train_transforms",
    "lr_factor",
    "normalize_images",
    "run",
    "stream_indices",
    "train_detector",
]

# ImageNet RGB statistics (torchvision's detection models use them). The one place the
# harness's input normalisation is defined: evaluation and latency must use the same.
IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
SCHEDULES = ("cosine", "step", "constant")
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# fields that change how often things are written, not what is trained
_BOOKKEEPING = ("num_workers", "checkpoint_every_steps", "checkpoint_every_seconds", "log_every")


@dataclass(frozen=True)
class TrainConfig:
    """One training budget, shared by every detector in a comparison."""

    # 20k: ~7 epochs of the 3000-image synthetic train split (2500 steps at batch 8)
    images_seen: int = 20_000
    batch_size: int = 8  # fits every tiny detector at 128 px on a CPU; the paper used 49
    lr: float = 2.5e-4  # Adam, CornerNet paper / release config (not re-tuned for tiny models)
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

    def __post_init__(self) -> None:
        positive = ("images_seen", "batch_size", "input_size", "checkpoint_every_steps")
        for name in (*positive, "log_every"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"TrainConfig.{name} must be an int >= 1, got {value!r}")
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


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> ``(images - IMAGE_MEAN) / IMAGE_STD`` (a new tensor)."""
    mean = torch.tensor(IMAGE_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def build_train_transforms(cfg: TrainConfig) -> Callable[..., tuple[torch.Tensor, dict]]:
    """Letterbox to ``input_size``, then the augmentations switched on in ``cfg``."""
    from bench.data.transforms import (
        ColorJitter,
        Compose,
        Letterbox,
        RandomHorizontalFlip,
        RandomScaleCrop,
    )

    steps: list[Any] = [Letterbox(cfg.input_size)]
    if cfg.scale_crop:
        steps.append(RandomScaleCrop(cfg.scale_range, size=cfg.input_size))
    if cfg.flip:
        steps.append(RandomHorizontalFlip(0.5))
    if cfg.color_jitter:
        steps.append(ColorJitter())
    return Compose(steps)


def _mix(seed: int, value: int) -> int:
    """A 63-bit seed from (seed, value), so that nearby pairs give unrelated streams."""
    return (seed * 0x9E3779B97F4A7C15 + value * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def stream_indices(seed: int, num_images: int, start: int, count: int) -> list[int]:
    """Dataset indices at stream positions ``start .. start + count - 1`` (see module doc)."""
    out: list[int] = []
    perm_epoch, perm = -1, None
    for p in range(start, start + count):
        epoch, offset = divmod(p, num_images)
        if epoch != perm_epoch:
            gen = torch.Generator().manual_seed(_mix(seed, epoch))
            perm_epoch, perm = epoch, torch.randperm(num_images, generator=gen).tolist()
        out.append(perm[offset])
    return out


class _Stream(torch.utils.data.Dataset):
    """Item ``p``: the augmented sample at stream position ``p``."""

    def __init__(self, base: torch.utils.data.Dataset, seed: int) -> None:
        self.base, self.seed = base, seed
        self._epoch, self._perm = -1, []

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, position: int):
        n = len(self.base)
        epoch, offset = divmod(position, n)
        if epoch != self._epoch:  # one permutation per epoch, as in stream_indices
            self._epoch, self._perm = epoch, stream_indices(self.seed, n, epoch * n, n)
        index = self._perm[offset]
        with torch.random.fork_rng(devices=[]):  # the caller's RNG is left untouched
            torch.manual_seed(_mix(self.seed, position + (1 << 40)))
            return self.base[index]


class _StepBatches:
    """Batch sampler: the stream positions of steps ``start .. end - 1``."""

    def __init__(self, batch_size: int, start: int, end: int) -> None:
        self.batch_size, self.start, self.end = batch_size, start, end

    def __len__(self) -> int:
        return max(0, self.end - self.start)

    def __iter__(self) -> Iterator[list[int]]:
        b = self.batch_size
        for s in range(self.start, self.end):
            yield list(range(s * b, (s + 1) * b))


def _float32(obj: Any) -> Any:
    """Floating tensors in a nested dict/list of outputs -> float32 (losses run in fp32)."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() else obj
    if isinstance(obj, Mapping):
        return {k: _float32(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_float32(v) for v in obj)
    return obj


def _batches(
    dataset, cfg: TrainConfig, start_step: int, end_step: int, pin_memory: bool = False
) -> Iterator:
    b = cfg.batch_size
    from bench.data.transforms import collate_detection

    loader = torch.utils.data.DataLoader(
        _Stream(dataset, cfg.seed),
        batch_sampler=_StepBatches(b, start_step, end_step),
        num_workers=cfg.num_workers,
        collate_fn=collate_detection,
        pin_memory=pin_memory,
        # an explicit generator: creating the iterator must not draw from the global RNG
        generator=torch.Generator().manual_seed(cfg.seed),
    )
    return iter(loader)


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
    ``cfg.seed`` before building the model.
    ``builder(num_classes, backbone=, preset=, **detector_kwargs)`` defaults to the registry
    (``detectors.DETECTORS[name]``). ``stop_after`` ends this session after that many steps,
    as an interruption would (the run resumes on the next call). Returns the summary: detector,
    steps, total_steps, images_seen, finished, seconds_per_iter (this session, first step
    excluded), final_loss (last curve row), resumed_from, skipped, paths.
    """
    from bench.data.coco import CocoDetection
    from bench.env import git_revision

    cfg = cfg or TrainConfig()
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError("device cuda requested, but torch sees no CUDA device")
    dataset = CocoDetection.from_root(
        data_root, "train", build_train_transforms(cfg), remove_empty=True
    )
    fingerprint = data_fingerprint(dataset.ann_file, len(dataset))
    record = detector_record(
        name, backbone=backbone, preset=preset, kwargs=detector_kwargs,
        num_classes=dataset.num_classes, label_to_cat_id=dataset.cat_ids,
    )  # fmt: skip
    if builder is None:
        from detectors import DETECTORS

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

    resumed_from = None
    if ckpt_path.exists():
        ckpt = load_checkpoint(ckpt_path)
        check_resume(ckpt, ckpt_path, provenance, ignore=_BOOKKEEPING)
        if ckpt.get("finished"):
            summary = _summary(record, cfg, ckpt, ckpt_path, curve_path, None, True, None)
            write_json_atomic(run_dir / "summary.json", summary)
            return summary
        restore_training(ckpt, model, optimizer, scheduler, scaler, device)
        state.update({k: ckpt[k] for k in ("step", "elapsed", "loss_curve", "log_window")})
        resumed_from = state["step"]
        if state["loss_curve"]:  # drop rows logged after the checkpoint by the stopped run
            write_csv_atomic(curve_path, pd.DataFrame(state["loss_curve"]))

    def checkpoint() -> None:
        extra = {"images_seen": state["step"] * cfg.batch_size, "total_steps": total}
        ckpt = training_checkpoint(
            model, optimizer, scheduler, scaler,
            state={**state, **extra}, provenance=provenance, device=device,
        )  # fmt: skip
        save_atomic(ckpt, ckpt_path)

    end = total if stop_after is None else min(total, state["step"] + max(0, int(stop_after)))
    step_times: list[float] = []
    last_save = time.monotonic()
    consistent = True  # model, optimiser and state describe the same step
    bar = _progress(progress, name, total, state["step"])
    model.train()
    try:
        t0 = time.perf_counter()
        for images, targets in _batches(dataset, cfg, state["step"], end, device.type == "cuda"):
            images = normalize_images(images.to(device, non_blocking=True))
            targets = [{k: t[k].to(device) for k in ("boxes", "labels")} for t in targets]
            lr = optimizer.param_groups[0]["lr"]
            with torch.autocast(device.type, dtype=AMP_DTYPES.get(cfg.amp), enabled=amp):
                outputs = model(images)
            losses = model.loss(_float32(outputs), targets)
            values = {k: float(v.detach()) for k, v in losses.items() if k.startswith("loss")}
            if not math.isfinite(values["loss"]):
                raise RuntimeError(f"{name}: loss is {values['loss']} at step {state['step']}")
            consistent = False  # from here until the step count is updated
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(losses["loss"]).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                losses["loss"].backward()
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
                _log_row(state, cfg, curve_path)
            if bar is not None:
                bar[0].update(bar[1], advance=1, loss=values["loss"])
            now = time.monotonic()
            if (
                state["step"] % cfg.checkpoint_every_steps == 0
                or now - last_save >= cfg.checkpoint_every_seconds
                or state["step"] == end
            ):
                checkpoint()
                last_save = now
            t0 = time.perf_counter()
    except KeyboardInterrupt:
        if consistent and state["step"] > (resumed_from or 0):
            checkpoint()
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    timed = step_times[1:] if len(step_times) > 1 else step_times
    sec = sum(timed) / len(timed) if timed else None
    summary = _summary(record, cfg, state, ckpt_path, curve_path, sec, False, resumed_from)
    write_json_atomic(run_dir / "summary.json", summary)
    return summary


def _log_row(state: dict, cfg: TrainConfig, curve_path: Path) -> None:
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
    write_csv_atomic(curve_path, pd.DataFrame(state["loss_curve"]))


def _summary(record, cfg, state, ckpt_path, curve_path, sec, skipped, resumed_from) -> dict:
    curve = state.get("loss_curve") or []
    return {
        "detector": record["name"],
        "backbone": record["backbone"],
        "steps": int(state["step"]),
        "total_steps": cfg.total_steps,
        "images_seen": int(state["step"]) * cfg.batch_size,
        "finished": bool(state["finished"]),
        "seconds_per_iter": sec,
        "batch_size": cfg.batch_size,
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench train``."""
    d = TrainConfig()
    parser.add_argument("--detectors", default="all", help="comma-separated names, or all")
    parser.add_argument(
        "--data", default="synthetic",
        help="synthetic (generated in data/synthetic if missing), synthetic:PATH or coco:PATH",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    parser.add_argument("--budget", type=int, default=d.images_seen, help="images seen")
    parser.add_argument("--batch-size", type=int, default=d.batch_size)
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--input-size", type=int, default=d.input_size)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=int, default=d.num_workers, help="DataLoader workers")
    parser.add_argument("--amp", choices=[*AMP_DTYPES, "none"], default=d.amp, help="CUDA only")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: auto")
    parser.add_argument("--backbone", default="tiny", help="hourglass preset")
    parser.add_argument("--preset", default="synthetic", help="anchor preset: synthetic or paper")
    parser.add_argument("--stop-after", type=int, default=None, help="steps this session")
    parser.add_argument("--export-zoo", type=Path, default=None, help="write fp16 zoo files here")
    parser.add_argument("--no-progress", action="store_true")


def _data_root(spec: str) -> Path:
    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        from bench.data.coco import find_split
        from bench.data.synthetic import ensure_synthetic

        if path:  # an existing set (whatever its size) is used as it is
            try:
                find_split(path, "train")
                return Path(path)
            except UsageError:
                pass
        return ensure_synthetic(Path(path or "data/synthetic"))
    if kind == "coco" and path:
        if not Path(path).is_dir():
            raise UsageError(f"--data {spec}: folder {path} does not exist")
        return Path(path)
    raise UsageError(f"--data {spec!r}: expected synthetic, synthetic:PATH or coco:PATH")


def _detector_names(spec: str) -> list[str]:
    from detectors import DETECTORS, is_available

    if spec == "all":
        return [n for n in DETECTORS if is_available(n)]
    names = [n.strip() for n in spec.split(",") if n.strip()]
    for n in names:
        if n not in DETECTORS:
            raise UsageError(f"--detectors: unknown {n!r}; expected all or {', '.join(DETECTORS)}")
        if not is_available(n):
            raise UsageError(f"--detectors: {n!r} is not available in this installation")
    if not names:
        raise UsageError(f"--detectors {spec!r}: expected at least one name, or all")
    return names


def run(args: argparse.Namespace) -> int:
    """``python -m bench train``: train each detector in turn; returns the exit code."""
    names = _detector_names(args.detectors)
    try:
        cfg = dataclasses.replace(
            TrainConfig(), images_seen=args.budget, batch_size=args.batch_size, lr=args.lr,
            input_size=args.input_size, seed=args.seed, num_workers=args.workers, amp=args.amp,
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    root = _data_root(args.data)
    summaries = []
    for name in names:
        s = train_detector(
            name, data_root=root, out_dir=args.out, cfg=cfg, device=device,
            backbone=args.backbone, preset=args.preset, progress=not args.no_progress,
            stop_after=args.stop_after,
        )  # fmt: skip
        if args.export_zoo is not None and s["finished"]:
            s["zoo"] = str(
                export_half(s["checkpoint"], zoo_path(args.export_zoo, name, s["backbone"]))
            )
        summaries.append(s)
        status = "skipped (finished before)" if s["skipped"] else f"{s['steps']}/{s['total_steps']}"
        spi = s["seconds_per_iter"]
        print(
            f"{name}: steps {status}, final loss {s['final_loss']}, "
            + (f"{spi:.3f} s/iter" if spi is not None else "")
        )
    from bench.env import collect_env

    write_json_atomic(
        Path(args.out) / "train_summary.json",
        {"config": asdict(cfg), "env": collect_env(), "detectors": summaries},
    )
    return 0
