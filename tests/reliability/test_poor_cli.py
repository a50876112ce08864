"""Reliability issue, "Poor, fix too": how the command line ends when it cannot finish.

- ``bench compare --json | head``: the reader closes the pipe early. ``bench.cli`` catches the
  BrokenPipeError once for every command, points stdout at devnull (Python's advice) and exits
  141 (128 + SIGPIPE, what a shell reports for a program cut off by ``head``): no traceback.
- ``bench compare`` of two runs on different data warns on stderr, naming both folders and
  what differs (``dataset`` of results.json, ``data_fingerprint`` of run.json).
- Ctrl-C in any command: one line on stderr (what was saved, how to resume), exit 130.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bench.cli import main
from bench.commands import data as data_cmd
from bench.commands import run as run_cmd
from bench.results.store import ResultStore

REPO = Path(__file__).resolve().parents[2]


def _run_folder(folder: Path, source: str, fingerprint: str, images: int = 50) -> Path:
    dataset = {"root": str(folder.parent / source), "split": "val", "images": images,
               "source": f"{source}/instances_val.json"}  # fmt: skip
    store = ResultStore(folder, config={"test": 1}, env={"cpu": "Test CPU"}, dataset=dataset,
                        fingerprint=fingerprint)  # fmt: skip
    for name in ("centernet", "retinanet"):
        store.add_row({"detector": name, "backbone": "tiny", "input_size": 64, "device": "cpu",
                       "dtype": "fp32", "batch": 1, "AP": 0.5, "AP50": 0.7,
                       "anchors_per_image": 0, "latency_ms_p50": 10.0})  # fmt: skip
    return folder


def test_compare_json_into_a_closed_pipe_exits_141_without_traceback(tmp_path):
    a = _run_folder(tmp_path / "a", "synth", "fp1")
    b = _run_folder(tmp_path / "b", "synth", "fp1")
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench", "compare", str(a), str(b), "--json"],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    proc.stdout.close()  # as `head` does, before the command writes anything
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err, err


def test_compare_warns_when_the_runs_used_different_data(tmp_path, capsys):
    a = _run_folder(tmp_path / "a", "synth", "fp-synth")
    b = _run_folder(tmp_path / "b", "coco", "fp-coco", images=5000)
    assert main(["compare", str(a), str(b), "--json"]) == 0
    out, err = capsys.readouterr()
    json.loads(out)  # stdout stays JSON
    assert "warning:" in err and str(a) in err and str(b) in err, err
    assert "different data" in err and "fp-synth vs fp-coco" in err and "50 vs 5000" in err, err
    assert main(["compare", str(a), str(b)]) == 0  # the table too
    assert "different data" in capsys.readouterr().err


def test_compare_same_data_no_warning(tmp_path, capsys):
    a = _run_folder(tmp_path / "a", "synth", "fp1")
    b = _run_folder(tmp_path / "b", "synth", "fp1")
    assert main(["compare", str(a), str(b)]) == 0
    assert "warning" not in capsys.readouterr().err


def _interrupt(*args, **kwargs):
    raise KeyboardInterrupt


def _main(argv: list[str]) -> int:
    try:
        return main(argv)
    except KeyboardInterrupt:  # would stop pytest itself
        pytest.fail("Ctrl-C escaped bench.cli.main (a traceback for the user)")


def test_ctrl_c_in_run_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run_cmd, "run_spec", lambda *args, **kwargs: None)
    monkeypatch.setattr(run_cmd, "run_suite", _interrupt)
    assert _main(["run", "--device", "cpu", "--out", str(tmp_path / "out")]) == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.strip().splitlines() == [err.strip()]  # one line
    assert err.startswith("interrupted (Ctrl-C):") and "rerun the same command" in err, err


def test_ctrl_c_in_data_is_one_line_and_exit_130(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(data_cmd, "generate_synthetic", _interrupt)
    assert _main(["data", "synthetic", "--out", str(tmp_path / "d")]) == 130
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [err.strip()]
    assert err.startswith("interrupted (Ctrl-C):") and "generation restarts" in err, err
