"""The kernel benchmark cases are defined once (bench/measure/kernel_cases.py): ``python -m
bench kernels`` and the pytest-benchmark modules of tests/benchmarks/ time the same cases, and
the regression gate's baseline names exactly the CPU ones."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import torch

from bench import REPO_DIR
from bench.measure.kernel_cases import KERNEL_CASES, SMALL, cases_for, size_for
from bench.measure.kernel_timing import kernel_cases

BENCHMARKS = "tests/benchmarks"
KERNEL_TEST = re.compile(r"^(tests/benchmarks/test_bench_\w+\.py)::test_bench_kernel\[(.+)\]$")


@pytest.fixture(scope="module")
def collected() -> list[str]:
    """The node ids pytest collects in tests/benchmarks (what pytest-benchmark names them)."""
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", BENCHMARKS,
         "-p", "no:cacheprovider"],
        cwd=REPO_DIR, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [line for line in proc.stdout.splitlines() if line.startswith(BENCHMARKS)]


def test_ids_are_unique_and_every_workload_has_a_torch_reference() -> None:
    ids = [c.id for c in KERNEL_CASES]
    assert len(ids) == len(set(ids))
    names = {c.name for c in KERNEL_CASES}
    assert names == {c.name for c in KERNEL_CASES if c.provider == "torch"}  # x_vs_torch
    assert size_for("cpu") is SMALL and all(not c.cuda_only for c in cases_for("cpu"))


def test_the_cli_times_every_shared_case_that_runs_here() -> None:
    device = torch.device("cpu")
    rows = kernel_cases(device)
    assert [r["id"] for r in rows] == [c.id for c in cases_for(device)]
    assert all(r["provider"] == r["id"].rsplit("-", 1)[1] for r in rows)
    assert {r["case"] for r in rows if r["id"].startswith("corner_pool_tl_fwd_bwd-")} == {
        "corner_pool tl fwd+bwd (1, 256, 128, 128)"
    }


def test_the_pytest_benchmarks_time_every_shared_case_once(collected: list[str]) -> None:
    timed = [m.group(2) for m in map(KERNEL_TEST.match, collected) if m]
    assert sorted(timed) == sorted(c.id for c in KERNEL_CASES)


def test_the_baseline_gates_every_cpu_case_by_its_test_id(collected: list[str]) -> None:
    entries = json.loads((REPO_DIR / BENCHMARKS / "baseline.json").read_text())["entries"]
    assert set(entries) <= set(collected), "baseline names no test: " + str(
        sorted(set(entries) - set(collected))
    )
    cpu_ids = {c.id for c in cases_for("cpu")}
    gated = {m.group(2) for m in map(KERNEL_TEST.match, entries) if m}
    assert gated == cpu_ids
