"""The speed-regression gate over every pytest-benchmark case here (policy:
bench/results/regression.py).

After each CPU benchmark its median is divided by a calibration measured just before it
and compared with tests/benchmarks/baseline.json: more than the baseline's tolerance
(2x) slower fails the test at teardown with a message naming the case and the figures. On a
machine with CUDA nothing is gated (GPU figures are recorded results, not pass/fail).
``CORNERBENCH_BENCH_BASELINE=update`` rewrites the baseline from this run instead.

Kernel cases: a module that times some of bench/measure/kernel_cases.py's shared cases names
them in ``CPU_ROUNDS`` (workload name -> timed rounds on the CPU) and takes a ``kernel_case``
argument: :func:`pytest_generate_tests` parametrises it over those cases (id ``case.id``,
triton's marked ``gpu``), so the test ids are ``test_bench_kernel[<name>-<provider>]``, the
keys of baseline.json. The ``time_case`` fixture builds a case on :data:`DEVICE` (SMALL shapes
on the CPU, FULL on a GPU), times it and checks its result.
"""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import pytest
import torch

from bench.measure.kernel_cases import CaseUnavailable, KernelCase, cases_named
from bench.results.regression import calibrate, check, load_baseline, write_baseline

BASELINE = Path(__file__).with_name("baseline.json")
UPDATE_ENV = "CORNERBENCH_BENCH_BASELINE"
_measured: dict[str, float] = {}
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
GPU_ROUNDS, GPU_WARMUP = 50, 5


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


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    """``kernel_case``: the shared cases named by the module's ``CPU_ROUNDS``."""
    if "kernel_case" not in metafunc.fixturenames:
        return
    cases = cases_named(*metafunc.module.CPU_ROUNDS)
    params = [pytest.param(c, id=c.id, marks=[pytest.mark.gpu] if c.cuda_only else [])
              for c in cases]  # fmt: skip
    metafunc.parametrize("kernel_case", params)


@pytest.fixture
def time_case(benchmark, request: pytest.FixtureRequest):
    """``time_case(case)``: build ``case`` on DEVICE, time it, check its result.

    CPU: the module's ``CPU_ROUNDS[case.name]`` rounds after one warm-up round (the first
    touches freshly allocated buffers); GPU: GPU_ROUNDS after GPU_WARMUP, the timed call
    synchronised (pytest-benchmark times on the host), and triton.testing.do_bench's CUDA-event
    figure in ``extra_info["cuda_ms"]``.
    """

    def run(case: KernelCase) -> None:
        try:
            inputs, fn = case.build(DEVICE)
        except CaseUnavailable as exc:
            pytest.skip(str(exc))
        benchmark.group = inputs.label
        benchmark.extra_info.update(case=case.name, provider=case.provider, device=str(DEVICE))
        if DEVICE.type == "cuda":
            import triton.testing  # triton on use: TRITON_INTERPRET at import decides it

            benchmark.extra_info["cuda_ms"] = triton.testing.do_bench(fn)

            def timed():
                out = fn()
                torch.cuda.synchronize()
                return out

            rounds = {"rounds": GPU_ROUNDS, "warmup_rounds": GPU_WARMUP}
        else:
            timed = fn
            rounds = {"rounds": request.module.CPU_ROUNDS[case.name], "warmup_rounds": 1}
        out = benchmark.pedantic(timed, iterations=1, **rounds)
        if inputs.check is not None:
            inputs.check(out)

    return run
