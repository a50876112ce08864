"""Latency primitives: per-stage timers, repeated measurement, percentiles.

Protocol (the harness's): batch 1, ``warmup`` untimed iterations, then ``iters`` timed ones;
every figure is in milliseconds.

- CPU: ``time.perf_counter`` around each stage (CPU torch ops are synchronous).
- CUDA: a pair of CUDA events per stage, recorded on the current stream; the device is
  synchronised once before the first timed iteration (so warm-up work still queued is not
  counted) and once before reading the events, not between stages, so timing does not add
  stalls of its own. An event pair measures from when the GPU reaches the start event to when
  it reaches the end event: host-side work inside a stage (Python, a CPU decode) is counted
  when the GPU is idle, as it is at batch 1 once a stage has synchronised.

API::

    timer = StageTimer("cuda")
    with timer.stage("forward"):
        out = model(x)
    timer.times()  # {"forward": array([ms, ...])}

    measure(fn, warmup=10, iters=100, device="cuda")  # (iters,) ms per call of fn()
    measure_stages(step, warmup=10, iters=100, device="cuda")
    # step(timer) runs the stages; {"forward": (iters,), ..., "total": (iters,)} ms
    summarize(ms)  # {"p50", "p90", "p99", "mean", "n"}
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

TOTAL = "total"  # reserved: measure_stages' whole-iteration time


def _as_device(device: torch.device | str) -> torch.device:
    dev = torch.device(device)
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"timing supports cpu and cuda devices, got device {dev}")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"device {dev} requested but CUDA is not available")
        if dev.index is None:
            dev = torch.device("cuda", torch.cuda.current_device())
    return dev


def synchronize(device: torch.device | str) -> None:
    """Wait for queued work on ``device`` (no-op on CPU)."""
    dev = _as_device(device)
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


class StageTimer:
    """Records the duration of named stages, one entry per ``stage(name)`` block.

    Args:
        device: ``"cpu"`` (perf_counter) or a CUDA device (CUDA events).
        enabled: when False, ``stage`` only runs its block (used for warm-up).
    """

    def __init__(self, device: torch.device | str = "cpu", *, enabled: bool = True) -> None:
        self.device = _as_device(device)
        self.enabled = enabled
        self._cuda = self.device.type == "cuda"
        # name -> list of ms floats (CPU) or (start, end) event pairs (CUDA), in call order
        self._records: dict[str, list[Any]] = {}
        self._active: set[str] = set()

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the block as stage ``name``; nothing is recorded if the block raises."""
        if name == TOTAL:
            raise ValueError(f"stage name {TOTAL!r} is reserved for the whole iteration")
        if name in self._active:
            raise ValueError(f"stage {name!r} entered again while already running")
        if not self.enabled:
            yield
            return
        self._active.add(name)
        try:
            if self._cuda:
                stream = torch.cuda.current_stream(self.device)
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record(stream)
                yield
                end.record(stream)
                self._records.setdefault(name, []).append((start, end))
            else:
                t0 = time.perf_counter()
                yield
                self._records.setdefault(name, []).append((time.perf_counter() - t0) * 1e3)
        finally:
            self._active.discard(name)

    def counts(self) -> dict[str, int]:
        """How many times each stage has been recorded (no synchronisation)."""
        return {name: len(rec) for name, rec in self._records.items()}

    def times(self) -> dict[str, np.ndarray]:
        """Milliseconds per recorded call of each stage, ``{name: (n_calls,) float64}``.

        On CUDA this synchronises the device once, then reads the events.
        """
        if self._cuda and self._records:
            torch.cuda.synchronize(self.device)
            return {
                name: np.array([s.elapsed_time(e) for s, e in rec], dtype=np.float64)
                for name, rec in self._records.items()
            }
        return {name: np.array(rec, dtype=np.float64) for name, rec in self._records.items()}

    def reset(self) -> None:
        """Forget everything recorded."""
        self._records.clear()


def _check_counts(warmup: int, iters: int) -> None:
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise ValueError(f"warmup must be an int >= 0, got {warmup!r}")
    if isinstance(iters, bool) or not isinstance(iters, int) or iters < 1:
        raise ValueError(f"iters must be an int >= 1, got {iters!r}")


def measure(
    fn: Callable[[], Any], *, warmup: int, iters: int, device: torch.device | str
) -> np.ndarray:
    """Call ``fn()`` ``warmup`` times untimed, then ``iters`` times timed.

    Returns:
        (iters,) float64 array of milliseconds per call.
    """
    _check_counts(warmup, iters)
    timer = StageTimer(device)
    for _ in range(warmup):
        fn()
    synchronize(timer.device)
    for _ in range(iters):
        with timer.stage("call"):
            fn()
    return timer.times()["call"]


def measure_stages(
    step: Callable[[StageTimer], Any],
    *,
    warmup: int,
    iters: int,
    device: torch.device | str,
) -> dict[str, np.ndarray]:
    """Run ``step(timer)`` ``warmup`` times untimed, then ``iters`` times timed.

    ``step`` wraps each of its stages in ``with timer.stage(name):``; every stage must run
    exactly once per iteration (ValueError otherwise).

    Returns:
        ``{stage: (iters,) ms, ..., "total": (iters,) ms}``, where "total" times the whole
        ``step`` call (so it includes work between stages).
    """
    _check_counts(warmup, iters)
    dev = _as_device(device)
    idle = StageTimer(dev, enabled=False)
    for _ in range(warmup):
        step(idle)
    synchronize(dev)
    timer = StageTimer(dev)
    whole = StageTimer(dev)
    for i in range(iters):
        with whole.stage("step"):
            step(timer)
        counts = timer.counts()
        bad = {name: n for name, n in counts.items() if n != i + 1}
        if bad:
            raise ValueError(
                f"every stage must run once per iteration; after iteration {i + 1} the "
                f"stage counts are {counts}"
            )
    out = timer.times()
    out[TOTAL] = whole.times()["step"]
    return out


def summarize(ms: np.ndarray | list[float]) -> dict[str, float]:
    """Percentiles of latencies: ``{"p50", "p90", "p99", "mean", "n"}`` (ms, n an int).

    Percentiles use numpy's default linear interpolation, so p99 of fewer than 100 samples
    lies between the two largest.
    """
    arr = np.asarray(ms, dtype=np.float64)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"summarize expects a non-empty 1-D array of ms, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"summarize expects finite latencies, got {arr[~np.isfinite(arr)]}")
    p50, p90, p99 = np.percentile(arr, [50, 90, 99])
    return {
        "p50": float(p50),
        "p90": float(p90),
        "p99": float(p99),
        "mean": float(arr.mean()),
        "n": int(arr.size),
    }
