"""``python -m bench gpu-check``: the plan, its time budget, its dry run, and a report that is
written whatever fails."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch

from bench.cli import COMMANDS, main
from bench.measure import gpu_plan as gpu_check
from bench.measure.gpu_plan import BUDGET_S, DEADLINE_S, PART_NAMES, Part, part_limit, plan


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_without_cuda_it_says_so_and_exits_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu"
    assert main(["gpu-check", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "needs a CUDA device" in err and "--dry-run" in err
    assert not out.exists()  # nothing was run or written


MODES = {"protocol": {}, "quick": {"quick": True}, "dry-run": {"dry_run": True}}


@pytest.mark.parametrize("mode", MODES)
def test_parts_are_commands_their_modules_accept(tmp_path: Path, mode: str) -> None:
    from bench.measure.kernel_check import build_parser

    named = {p.name: p.argv for p in plan(tmp_path, **MODES[mode])}
    assert list(named) == list(PART_NAMES)
    dry = mode == "dry-run"
    assert named["tests"][1:5] == ("-m", "pytest", "-m", "gpu")
    assert f"--junitxml={tmp_path / 'tests.xml'}" in named["tests"]
    check = build_parser().parse_args(named["correctness"][3:])  # exits on an unknown option
    assert named["correctness"][1:3] == ("-m", "bench.measure.kernel_check")
    assert check.out == tmp_path and check.dry_run == dry
    for name in ("kernels", "latency"):
        argv = named[name]
        assert argv[1:4] == ("-m", "bench", name)
        parser = argparse.ArgumentParser()
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        args = parser.parse_args(argv[4:])
        assert args.device == ("cpu" if dry else "cuda") and Path(args.out).parent == tmp_path
        assert args.iters == {"protocol": None, "quick": 20, "dry-run": 1}[mode]  # None: 100
    assert ("synthetic" if dry else "paper") in named["latency"]


@pytest.mark.parametrize("quick", [False, True], ids=["protocol", "quick"])
def test_the_time_budget_fits_the_deadline(tmp_path: Path, quick: bool) -> None:
    parts = plan(tmp_path, quick=quick)
    assert DEADLINE_S <= 8 * 60
    assert sum(p.budget_s for p in parts) <= DEADLINE_S
    assert all(p.budget_s > 0 for p in parts) and set(BUDGET_S) == set(PART_NAMES)


def test_a_part_may_use_the_slack_but_not_the_later_parts_budgets() -> None:
    assert part_limit(60, remaining_s=480, later_budgets_s=285) == 195
    assert part_limit(60, remaining_s=100, later_budgets_s=90) == 60  # its own budget at least
    assert part_limit(60, remaining_s=30, later_budgets_s=0) == 30  # never past the deadline
    assert part_limit(60, remaining_s=-5, later_budgets_s=0) == 0


def test_failure_excerpt_finds_what_explains_the_failure() -> None:
    pytest_log = "collected 3\n" + "=" * 10 + " FAILURES " + "=" * 10 + "\nassert 1 == 2\nE boom\n"
    assert gpu_check.failure_excerpt(pytest_log).startswith("=" * 10 + " FAILURES")
    tb = "x\nTraceback (most recent call last):\n  File a\nOld\nTraceback (most recent call last):"
    tb += '\n  File "b"\nValueError: last\n'
    assert gpu_check.failure_excerpt(tb) == 'Traceback (most recent call last):\n  File "b"\n' + (
        "ValueError: last"
    )
    plain = "\n".join(str(i) for i in range(100))
    assert gpu_check.failure_excerpt(plain).splitlines() == [str(i) for i in range(70, 100)]
    assert len(gpu_check.failure_excerpt("y" * 10_000, limit=100)) < 120


@pytest.mark.slow
def test_dry_run_runs_every_part_and_writes_the_report(tmp_path: Path, capsys) -> None:
    out = tmp_path / "dry"
    assert main(["gpu-check", "--dry-run", "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "gpu-check [4/4] tests: passed" in err  # progress: part, then seconds
    report = json.loads((out / "gpu_check.json").read_text())
    assert [p["name"] for p in report["parts"]] == list(PART_NAMES)
    assert all(p["status"] == "passed" and p["returncode"] == 0 for p in report["parts"])
    assert all(p["seconds"] <= p["limit_s"] and (out / p["log"]).is_file() for p in report["parts"])
    assert report["dry_run"] and report["finished"] and report["failed"] == []
    assert set(report["versions"]) >= {"torch", "triton", "cuda", "driver"}
    assert report["date_utc"] and "dry run" in report["device"]
    correctness = json.loads((out / "correctness.json").read_text())
    assert correctness["dry_run"] and len(correctness["rows"]) >= 20
    assert all(r["ok"] for r in correctness["rows"])
    assert {r["dtype"] for r in correctness["rows"]} == {"float32", "float16"}
    assert (out / "kernels" / "kernels.json").is_file()
    assert (out / "latency" / "latency.json").is_file()
    suite = ET.parse(out / "tests.xml").getroot().find("testsuite")
    assert int(suite.get("tests")) > 0 and suite.get("skipped") == suite.get("tests")  # no CUDA
    assert "DRY RUN" in (out / "README.md").read_text()


def _fake_plan(parts: list[tuple[str, list[str], float]]):
    def fake(out: Path, *, quick: bool = False, dry_run: bool = False) -> list[Part]:
        return [Part(name, "injected", tuple(argv), budget) for name, argv, budget in parts]

    return fake


def test_a_failing_part_is_recorded_and_the_others_still_run(tmp_path, monkeypatch) -> None:
    py = sys.executable
    monkeypatch.setattr(gpu_check, "plan", _fake_plan([
        ("first", [py, "-c", "print('fine')"], 30),
        ("boom", [py, "-c", "raise RuntimeError('injected failure')"], 30),
        ("missing", [str(tmp_path / "no-such-program")], 30),  # the harness itself fails
        ("after", [py, "-c", "print('still ran')"], 30),
    ]))  # fmt: skip
    out = tmp_path / "report"
    assert main(["gpu-check", "--dry-run", "--out", str(out)]) == 1
    report = json.loads((out / "gpu_check.json").read_text())
    status = {p["name"]: p["status"] for p in report["parts"]}
    assert status == {"first": "passed", "boom": "failed", "missing": "failed", "after": "passed"}
    boom, missing = report["parts"][1], report["parts"][2]
    assert boom["returncode"] == 1 and "RuntimeError: injected failure" in boom["traceback"]
    assert "FileNotFoundError" in missing["traceback"]
    assert report["finished"] and report["failed"] == ["boom", "missing"]
    assert "still ran" in (out / "after.txt").read_text()
    readme = (out / "README.md").read_text()
    assert "| boom | failed |" in readme and "RuntimeError: injected failure" in readme


def test_a_part_past_its_limit_is_stopped_and_the_deadline_holds(
    tmp_path, monkeypatch, capsys
) -> None:
    py = sys.executable
    sleeper = "import time; print('measured so far', flush=True); time.sleep(60)"
    monkeypatch.setattr(gpu_check, "plan", _fake_plan([
        ("slow", [py, "-c", sleeper], 2.0), ("next", [py, "-c", "pass"], 0.5),
    ]))  # fmt: skip
    monkeypatch.setattr(gpu_check, "HEARTBEAT_S", 0.5)
    monkeypatch.setattr(gpu_check, "MIN_START_S", 1.0)
    out = tmp_path / "report"
    assert main(["gpu-check", "--dry-run", "--out", str(out), "--deadline", "3"]) == 1
    report = json.loads((out / "gpu_check.json").read_text())
    slow, after = report["parts"]
    assert slow["status"] == "timed out" and 2.0 <= slow["limit_s"] <= 2.5  # the slack: 0.5 s
    assert slow["limit_s"] <= slow["seconds"] < slow["limit_s"] + 11  # + terminate's grace
    assert "measured so far" in (out / "slow.txt").read_text()  # what it wrote is kept
    assert after["status"] == "not run" and "deadline" in after["error"]
    assert report["finished"] and report["failed"] == ["slow", "next"]
    assert re.search(
        r"gpu-check \[1/2\] slow: \d s \.\.\. measured so far", capsys.readouterr().err
    )
