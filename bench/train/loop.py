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
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeRemainingColumn

from bench.data.stream import (
    IMAGE_MEAN,
    IMAGE_STD,
    build_train_transforms,
    normalize_images,
    stream_indices,
    stream_loader,
)
from bench.distributed import (
    all_reduce_sum,
    barrier,
    wrap_model,
)
from bench.results.store import write_csv_atomic, write_json_atomic
from bench.train.config import AMP_DTYPES, TrainConfig, lr_factor
from bench.train.session import Session, resume, save_checkpoint, setup, snapshot_path, summary
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
    "TrainingInterrupted",
    "train_detector",
]


def _step(run: Session, net: torch.nn.Module, micro: Iterator) -> tuple[dict[str, float], bool]:
    """One optimiser step over this rank's micro-batches (module docstring): returns the
    losses summed over ranks and whether a checkpoint is due by time (agreed by all ranks)."""
    cfg, model, optimizer, device = run.cfg, run.model, run.optimizer, run.device
    # what an interruption inside this step must restore before saving: the forward updates
    # BatchNorm's running statistics and draws dropout masks before the step is complete
    run.step_start = (
        {k: b.detach().clone() for k, b in model.named_buffers()},
        torch.get_rng_state(),
        torch.cuda.get_rng_state_all() if device.type == "cuda" else [],
    )
    run.in_step = True
    lr = optimizer.param_groups[0]["lr"]
    optimizer.zero_grad(set_to_none=True)
    sums: dict[str, float] = {}
    for j in range(run.per_step):
        images, targets = next(micro)
        images = normalize_images(images.to(device, non_blocking=True))
        targets = [{k: t[k].to(device) for k in ("boxes", "labels")} for t in targets]
        share = len(targets) / cfg.batch_size  # n_i / B
        last = j == run.per_step - 1
        sync = contextlib.nullcontext() if last or net is model else net.no_sync()
        with sync:
            with torch.autocast(device.type, dtype=AMP_DTYPES.get(cfg.amp), enabled=run.amp):
                outputs = net(images)
            losses = model.loss(float32_outputs(outputs), targets)  # DDP wraps forward only
            weight = share * run.ctx.world_size  # DDP divides the gradient by W
            loss = losses["loss"] if weight == 1.0 else losses["loss"] * weight
            (run.scaler.scale(loss) if run.scaler is not None else loss).backward()
        for k, v in losses.items():
            if k.startswith("loss"):
                sums[k] = sums.get(k, 0.0) + share * float(v.detach())
    keys = sorted(sums)
    due = time.monotonic() - run.last_save >= cfg.checkpoint_every_seconds
    stop = run.stop_signal is not None
    reduced = all_reduce_sum([*(sums[k] for k in keys), float(due), float(stop)])
    values = dict(zip(keys, reduced[:-2]))
    if not math.isfinite(values["loss"]):
        raise RuntimeError(f"{run.name}: loss is {values['loss']} at step {run.state['step']}")
    run.consistent = False  # from here until the step count is updated
    if run.scaler is not None:
        run.scaler.step(optimizer)
        run.scaler.update()
    else:
        optimizer.step()
    run.scheduler.step()
    run.state["step"] += 1
    run.consistent, run.in_step = True, False
    window = run.state["log_window"]
    for k, v in {**values, "lr": lr}.items():
        window[k] = window.get(k, 0.0) + v
    window["n"] = window.get("n", 0) + 1
    run.stop_requested = bool(reduced[-1])  # on any rank: every rank stops after this step
    return values, bool(reduced[-2])


def _restore_step_start(run: Session) -> None:
    """Undo what an interrupted step did before its optimiser step (buffers, RNG), so that
    the checkpoint is the last complete step's, bitwise."""
    buffers, rng, cuda_rng = run.step_start
    with torch.no_grad():
        for k, b in run.model.named_buffers():
            b.copy_(buffers[k])
    torch.set_rng_state(rng)
    if cuda_rng:
        torch.cuda.set_rng_state_all(cuda_rng)


class TrainingInterrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM stopped training after a complete step, saved as ``checkpoint``."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None) -> None:
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        super().__init__(f"{signal.Signals(signum).name} at step {step}")


@contextlib.contextmanager
def _deferred_signals(run: Session):
    """SIGINT and SIGTERM while training set ``run.stop_signal``: the loop stops after the
    step in progress, saves it and raises :class:`TrainingInterrupted`. A second signal
    interrupts at once (KeyboardInterrupt). Signal handlers can only be set from the main
    thread; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame) -> None:
        if run.stop_signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        run.stop_signal = signum

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


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
    run = setup(
        name, data_root=data_root, out_dir=out_dir, cfg=cfg, device=device, backbone=backbone,
        preset=preset, detector_kwargs=detector_kwargs, builder=builder,
    )  # fmt: skip
    finished, resumed_from = resume(run)
    if finished is not None:
        return finished
    ctx, state, total = run.ctx, run.state, cfg.total_steps
    net = wrap_model(run.model, run.device, sync_bn=cfg.sync_bn)  # DDP, or the model itself
    end = total if stop_after is None else min(total, state["step"] + max(0, int(stop_after)))
    step_times: list[float] = []
    run.last_save = time.monotonic()
    bar = _progress(progress and ctx.is_main, name, total, state["step"])
    micro = iter(
        stream_loader(
            run.dataset, cfg.seed, cfg.batch_size, state["step"], end, rank=ctx.rank,
            world_size=ctx.world_size, micro_batch=cfg.micro_batch,
            num_workers=cfg.num_workers, pin_memory=run.device.type == "cuda",
        )
    )  # fmt: skip
    net.train()  # the DDP wrapper and the model
    try:
        with _deferred_signals(run):
            _loop(run, net, micro, end, bar, step_times)
    except TrainingInterrupted:
        raise  # saved after its complete step
    except KeyboardInterrupt:
        if run.in_step and run.consistent:  # inside a step, before its optimiser step
            _restore_step_start(run)
        if run.consistent and state["step"] > (resumed_from or 0) and ctx.is_main:
            save_checkpoint(run)
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    timed = step_times[1:] if len(step_times) > 1 else step_times
    sec = sum(timed) / len(timed) if timed else None
    done = summary(run, state, sec, False, resumed_from)
    if ctx.is_main:
        write_json_atomic(run.run_dir / "summary.json", done)
    barrier()
    return done


def _loop(run: Session, net, micro, end: int, bar, step_times: list) -> None:
    """The steps of a session up to ``end``, with checkpoints and the loss curve; a stop
    signal (:func:`_deferred_signals`) ends it after a complete, saved step."""
    cfg, ctx, state, total = run.cfg, run.ctx, run.state, run.cfg.total_steps
    t0 = time.perf_counter()
    for _ in range(state["step"], end):
        values, due = _step(run, net, micro)
        if run.device.type == "cuda":
            torch.cuda.synchronize(run.device)
        dt = time.perf_counter() - t0  # the whole iteration, data loading included
        step_times.append(dt)
        state["elapsed"] += dt
        state["finished"] = state["step"] >= total
        if state["step"] % cfg.log_every == 0 or state["step"] in (end, total):
            _log_row(state, cfg, run.curve_path if ctx.is_main else None)
        if bar is not None:
            bar[0].update(bar[1], advance=1, loss=values["loss"])
        step = state["step"]
        snap = step * cfg.batch_size in run.snapshots
        stop = run.stop_requested
        if due or step % cfg.checkpoint_every_steps == 0 or step == end or snap or stop:
            if ctx.is_main:
                save_checkpoint(run)
            barrier()
            run.last_save = time.monotonic()
        if stop and step < end:  # at the last step the session simply ends
            signum = run.stop_signal or signal.SIGINT  # another rank's signal: SIGINT
            raise TrainingInterrupted(signum, step, run.ckpt_path)
        t0 = time.perf_counter()


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


def _progress(enabled: bool, name: str, total: int, done: int):
    if not enabled:
        return None

    bar = Progress(
        "[bold]{task.description}",  # the name, escaped: it prints as it is
        BarColumn(),
        MofNCompleteColumn(),
        "loss {task.fields[loss]:.4f}",
        TimeRemainingColumn(),
    )
    task = bar.add_task(escape(name), total=total, completed=done, loss=float("nan"))
    bar.start()
    return bar, task
