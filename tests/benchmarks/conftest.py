"""The speed-regression gate over every pytest-benchmark case here (policy:
bench/results/regression.py).

After each CPU benchmark its median is divided by a calibration measured just before it
and compared with tests/benchmarks/baseline.json: more than the baseline's tolerance
(2x) slower fails the test at teardown with a message naming the case and the figures. On a
machine with CUDA nothing is gated (GPU figures are recorded results, not pass/fail).
``CORNERBENCH_BENCH_BASELINE=update`` rewrites the baseline from this run instead.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import pytest
import torch

from bench.results.regression import calibrate, check, load_baseline, write_baseline

BASELINE = Path(__file__).with_name("baseline.json")
UPDATE_ENV = "CORNERBENCH_BENCH_BASELINE"
_measured: dict[str, float] = {}


def _updating() -> bool:
    return os.environ.get(UPDATE_ENV) == "update"


@pytest.fixture(autouse=True)
def _regression_gate(request: pytest.FixtureRequest):
    if "benchmark" not in request.fixturenames or torch.cuda.is_available():
        yield
        return
    # requested before the test, so that it outlives it (teardown runs in reverse order)
    bm = request.getfixturevalue("benchmark")
    calib = calibrate()  # right before the case: the machine's state when it runs
    yield
    stats = getattr(getattr(bm, "stats", None), "stats", None)
    if stats is None:  # --benchmark-disable, or the test failed before timing
        return
    median_ms = stats.median * 1e3
    bm.extra_info["calibration_ms"] = calib["ms"]
    bm.extra_info["normalised"] = median_ms / calib["ms"]
    name = request.node.nodeid
    _measured[name] = median_ms / calib["ms"]
    if _updating():
        return
    problem = check(name, median_ms, calib["ms"], load_baseline(BASELINE))
    if problem:
        pytest.fail(problem, pytrace=False)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """With CORNERBENCH_BENCH_BASELINE=update, write the measured figures as the baseline."""
    if not (_updating() and _measured):
        return
    meta = {
        "date": datetime.date.today().isoformat(),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "note": "normalised = median / calibration; see bench/results/regression.py",
    }
    old = load_baseline(BASELINE).entries
    write_baseline(BASELINE, {**old, **_measured}, meta)
