"""The speed-regression gate that CI runs over the pytest-benchmark cases in tests/benchmarks/.

Absolute CPU timings on shared CI machines move 10-50% from run to run, and a CI machine is
not the machine a baseline was recorded on. So the gate never compares seconds. It compares
each benchmark's median with a *calibration* measured in the same process, just before:

    normalised = median(benchmark) / calibration

where ``calibration`` (:func:`calibrate`, run right before each case) is the geometric mean
of the best times of two fixed workloads standing for where the benchmarked code spends its
time: an element-wise ``torch.maximum`` over (1, 256, 128, 128) float32 tensors
(memory-bound torch, like the pooling and decoding paths) and a pure-Python loop
(interpreter-bound, like pycocotools' accumulate and the soft-NMS loop). A faster or slower
machine moves both.

The committed baseline (``tests/benchmarks/baseline.json``, :func:`load_baseline`) holds the
normalised figure of every CPU benchmark. A case fails when

    normalised > baseline * tolerance        (tolerance 2.0 by default)

i.e. when it got more than twice as slow relative to the calibration. Measured on 2 shared
cores: three runs of the suite spread by at most 1.35x on the normalised figures, while the
regressions the gate exists for are far larger (pooling's torch path swapped for the cummax
baseline: 5x; our decode swapped for the dense one: 7x). Speed-ups pass; a case missing from
the baseline is not gated. GPU cases are recorded, never gated.

Refresh the baseline after an intended change, on an idle machine:
``CORNERBENCH_BENCH_BASELINE=update python -m pytest -q tests/benchmarks``.

Public: ``calibrate``, ``load_baseline``, ``check``, ``write_baseline``, ``Baseline``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.results.store import write_json_atomic

__all__ = ["Baseline", "calibrate", "check", "load_baseline", "write_baseline"]

DEFAULT_TOLERANCE = 2.0
CALIBRATION_SHAPE = (1, 256, 128, 128)  # CornerNet's pooling maps at a 511 input
PYTHON_LOOP = 200_000


@dataclass(frozen=True)
class Baseline:
    """Normalised medians by benchmark name, and the factor a case may grow by."""

    entries: Mapping[str, float] = field(default_factory=dict)
    tolerance: float = DEFAULT_TOLERANCE


def _best_ms(fn: Callable[[], object], rounds: int) -> float:
    fn()  # warm-up: allocations, first-call dispatch
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return min(times)


def calibrate(rounds: int = 11) -> dict[str, float]:
    """Time the two reference workloads; returns ``{"torch_ms", "python_ms", "ms"}``.

    Each is its best of ``rounds`` (medians of these 1-10 ms workloads moved 1.5x between
    runs on a shared 2-core machine, their minima 7%). ``ms`` is their geometric mean, the
    divisor of :func:`check`. Runs on the CPU with the thread count the caller set
    (tests/conftest.py sets 1).
    """
    a, b = torch.randn(CALIBRATION_SHAPE), torch.randn(CALIBRATION_SHAPE)
    out = torch.empty(CALIBRATION_SHAPE)

    def torch_work() -> None:
        torch.maximum(a, b, out=out)

    def python_work() -> int:
        total = 0
        for i in range(PYTHON_LOOP):
            total += i * i % 7
        return total

    torch_ms, python_ms = _best_ms(torch_work, rounds), _best_ms(python_work, rounds)
    return {"torch_ms": torch_ms, "python_ms": python_ms, "ms": math.sqrt(torch_ms * python_ms)}


def load_baseline(path: str | Path) -> Baseline:
    """Read the baseline JSON ``{"tolerance": float, "entries": {name: normalised}}``.

    A missing file is an empty baseline (nothing gated); a malformed one raises ValueError
    naming the file and what was expected.
    """
    path = Path(path)
    if not path.is_file():
        return Baseline()
    try:
        data = json.loads(path.read_text())
        entries = {str(k): float(v) for k, v in data["entries"].items()}
        tolerance = float(data.get("tolerance", DEFAULT_TOLERANCE))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ValueError(
            f"{path}: expected JSON {{'tolerance': float, 'entries': {{name: float}}}} ({exc})"
        ) from exc
    if tolerance <= 1.0 or any(not (v > 0 and math.isfinite(v)) for v in entries.values()):
        raise ValueError(f"{path}: tolerance must be > 1 and every entry a positive number")
    return Baseline(entries, tolerance)


def check(name: str, median_ms: float, calibration_ms: float, baseline: Baseline) -> str | None:
    """None if benchmark ``name`` passes the gate, else the message saying why it fails."""
    if name not in baseline.entries:
        return None
    normalised = median_ms / calibration_ms
    allowed = baseline.entries[name] * baseline.tolerance
    if normalised <= allowed:
        return None
    return (
        f"speed regression in {name}: median {median_ms:.3f} ms = {normalised:.3f} x the "
        f"calibration ({calibration_ms:.3f} ms), baseline {baseline.entries[name]:.3f} x, "
        f"allowed up to {allowed:.3f} x ({baseline.tolerance:g} x the baseline); if the "
        "slowdown is intended, refresh the baseline (see bench/results/regression.py)"
    )


def write_baseline(path: str | Path, entries: Mapping[str, float], meta: Mapping) -> None:
    """Write the baseline atomically (a temporary file, then rename), keys sorted."""
    data = {
        "tolerance": DEFAULT_TOLERANCE,
        "meta": dict(meta),
        "entries": {k: round(float(entries[k]), 6) for k in sorted(entries)},
    }
    write_json_atomic(path, data)
