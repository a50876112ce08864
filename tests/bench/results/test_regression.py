"""The speed-regression gate's policy (bench/results/regression.py) on given figures, and its
baseline."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.results.regression import Baseline, calibrate, check, load_baseline, write_baseline

REPO = Path(__file__).resolve().parents[3]
BASE = Baseline({"case": 4.0}, tolerance=2.0)


def test_machine_noise_passes_and_a_real_slowdown_fails() -> None:
    calib = 3.0
    assert check("case", 4.0 * calib, calib, BASE) is None  # as recorded
    assert check("case", 1.4 * 4.0 * calib, calib, BASE) is None  # 1.4x: the noise measured
    assert check("case", 0.2 * 4.0 * calib, calib, BASE) is None  # a speed-up
    message = check("case", 2.5 * 4.0 * calib, calib, BASE)  # 2.5x slower
    assert message is not None and "case" in message and "10.000 x" in message


def test_a_faster_machine_is_not_a_regression() -> None:
    """Both the case and the calibration run twice as fast: same normalised figure."""
    assert check("case", 6.0, 1.5, BASE) is None
    assert check("case", 24.0, 6.0, BASE) is None  # both twice as slow: still fine
    assert check("case", 24.0, 1.5, BASE) is not None  # only the case slowed down: caught


def test_unknown_cases_are_not_gated() -> None:
    assert check("new case", 1e6, 1.0, BASE) is None


def test_baseline_round_trip_and_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    assert load_baseline(path).entries == {}  # missing: nothing gated
    write_baseline(path, {"b": 2.0, "a": 1.5}, {"date": "today"})
    loaded = load_baseline(path)
    assert dict(loaded.entries) == {"a": 1.5, "b": 2.0} and loaded.tolerance == 2.0
    path.write_text(json.dumps({"entries": {"a": -1}}))
    with pytest.raises(ValueError, match="baseline.json"):
        load_baseline(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected JSON"):
        load_baseline(path)


def test_committed_baseline_covers_every_cpu_benchmark() -> None:
    """Every CPU benchmark case in tests/benchmarks has a committed figure."""
    baseline = load_baseline(REPO / "tests" / "benchmarks" / "baseline.json")
    files = {name.split("::")[0] for name in baseline.entries}
    expected = {
        f"tests/benchmarks/{p.name}" for p in (REPO / "tests" / "benchmarks").glob("test_*.py")
    }
    assert files == expected
    assert all(0.1 < v < 1000 for v in baseline.entries.values())


def test_calibration_measures_both_workloads() -> None:
    calib = calibrate(rounds=3)
    assert calib["torch_ms"] > 0 and calib["python_ms"] > 0
    assert calib["ms"] == pytest.approx((calib["torch_ms"] * calib["python_ms"]) ** 0.5)
