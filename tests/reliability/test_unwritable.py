"""Issue 13 item 7: an output that cannot be written is one line and exit code 2, never a
traceback, and never costs the previous files.

Every command that writes checks its output folder before the work (``--out`` that is a file,
or lies under one; a folder without write permission), and a write that fails later anyway (a
full disk) is turned into ``error: cannot write FILE: REASON`` by ``bench.cli``. The atomic
writer leaves the previous file (``last.pt``) whole and no temporary file behind.
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.commands import analyze, anchors, kernels, latency
from bench.commands import run as run_cmd
from bench.results.store import ResultStore
from bench.train import checkpoints

REPO = Path(__file__).resolve().parents[2]


def _never(*args, **kwargs):
    raise AssertionError("the command started its work before checking its output folder")


def _commands(tmp_path: Path, monkeypatch) -> dict[str, list[str]]:
    """Each writing command's argv (without ``--out``), its work replaced by ``_never``."""
    monkeypatch.setattr(latency, "time_suite", _never)
    monkeypatch.setattr(kernels, "copy_bandwidth", _never)
    monkeypatch.setattr(run_cmd, "prepare_data", _never)
    monkeypatch.setattr(anchors, "_load_or_fit", _never)
    monkeypatch.setattr(analyze, "budget_table", _never)
    monkeypatch.setattr(analyze, "oracle_table", _never)
    return {
        "train": ["train", "--detectors", "fcos", "--data", f"coco:{tmp_path / 'no-data'}"],
        "latency": ["latency", "--detectors", "fcos", "--device", "cpu"],
        "kernels": ["kernels", "--device", "cpu"],
        "run": ["run", "--detectors", "fcos", "--profile", "smoke", "--device", "cpu"],
        "anchors": ["anchors", "--fit", "--size", "64", "64", "--data", str(tmp_path)],
        "analyze": ["analyze", "budgets", "--runs", str(tmp_path)],
    }


@pytest.mark.parametrize("command", ["train", "latency", "kernels", "run", "anchors", "analyze"])
@pytest.mark.parametrize("under", [False, True], ids=["out-is-a-file", "out-under-a-file"])
def test_out_that_is_or_lies_under_a_file_is_exit_2_before_the_work(
    command, under, tmp_path, monkeypatch, capsys
):
    argv = _commands(tmp_path, monkeypatch)[command]
    blocker = tmp_path / "results.txt"
    blocker.write_text("not a folder\n")
    out = blocker / "sub" if under else blocker
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    what = f"lies under {blocker}, which is a file" if under else "is a file"
    assert f"error: --out {out}: {what}; expected a folder" in err
    assert "Traceback" not in err
    assert blocker.read_text() == "not a folder\n"


def _run_folder(folder: Path) -> Path:
    store = ResultStore(folder, config={"test": 1}, env={"cpu": "Test CPU"})
    store.add_row({"detector": "alpha", "backbone": "tiny", "input_size": 64, "device": "cpu",
                   "dtype": "fp32", "batch": 1, "AP": 0.5, "AP50": 0.7, "anchors_per_image": 0,
                   "latency_ms_p50": 10.0})  # fmt: skip
    return folder


def test_report_into_a_folder_whose_plots_is_a_file_is_exit_2(tmp_path, capsys):
    folder = _run_folder(tmp_path / "run")
    (folder / "plots").write_text("a file\n")
    assert main(["report", str(folder)]) == 2
    err = capsys.readouterr().err
    assert f"error: DIR {folder / 'plots'}: is a file; expected a folder" in err
    assert "Traceback" not in err and not (folder / "report.md").exists()


@pytest.mark.parametrize("step", ["create", "write"])
def test_read_only_file_system_is_exit_2_before_the_work(step, tmp_path, monkeypatch, capsys):
    """EROFS (simulated: no test can mount one) while creating the folder or a file in it."""
    argv = _commands(tmp_path, monkeypatch)["analyze"]
    out = tmp_path / "ro" / "out"
    if step == "write":
        out.mkdir(parents=True)
    reason = os.strerror(errno.EROFS)

    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, reason)

    monkeypatch.setattr(Path, "mkdir", refuse)
    monkeypatch.setattr(tempfile, "mkstemp", refuse)
    assert main([*argv, "--out", str(out)]) == 2
    what = "create the folder" if step == "create" else "write in the folder"
    assert f"error: --out {out}: cannot {what} ({reason})" in capsys.readouterr().err


def test_folders_without_write_permission_are_exit_2(tmp_path, capsys, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    folder = _run_folder(tmp_path / "run")
    monkeypatch.setattr(analyze, "budget_table", _never)
    locked.chmod(0o555)
    folder.chmod(0o555)
    try:
        (locked / "probe").touch()
    except PermissionError:
        pass
    else:  # root (with CAP_DAC_OVERRIDE) writes anyway; the file and EROFS cases cover it
        locked.chmod(0o755)
        folder.chmod(0o755)
        pytest.skip(f"euid {os.geteuid()} ignores folder permissions")
    try:
        assert main(["analyze", "budgets", "--runs", str(tmp_path), "--out", str(locked)]) == 2
        err = capsys.readouterr().err
        assert f"error: --out {locked}: cannot write in the folder (Permission denied)" in err
        out = locked / "sub"
        assert main(["analyze", "budgets", "--runs", str(tmp_path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert f"error: --out {out}: cannot create the folder (Permission denied)" in err
        assert main(["report", str(folder)]) == 2
        assert f"error: DIR {folder}: cannot write" in capsys.readouterr().err
    finally:
        locked.chmod(0o755)
        folder.chmod(0o755)


FULL_DISK = """
import errno, os, sys
real = os.replace
def replace(src, dst, *args, **kwargs):  # the disk fills up as report.md is written
    if str(dst).endswith("report.md"):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))
    return real(src, dst, *args, **kwargs)
os.replace = replace
from bench.cli import main
sys.exit(main(["report", sys.argv[1]]))
"""


def test_full_disk_while_writing_is_one_line_and_exit_2(tmp_path):
    folder = _run_folder(tmp_path / "run")
    (folder / "report.md").write_text("the previous report\n")
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", FULL_DISK, str(folder)], capture_output=True,
                          text=True, env=env, cwd=tmp_path, timeout=120)  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    reason = os.strerror(errno.ENOSPC)
    assert f"error: cannot write {folder / 'report.md'}: {reason} (ENOSPC)" in done.stderr
    assert (folder / "report.md").read_text() == "the previous report\n"
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_cli_keeps_other_os_errors_as_they_are(monkeypatch):
    def broken(args):
        raise ConnectionResetError(errno.ECONNRESET, "reset")

    monkeypatch.setattr(analyze, "run", broken)
    with pytest.raises(ConnectionResetError):
        main(["analyze", "budgets"])


@pytest.mark.parametrize("where", ["torch.save", "os.replace"])
def test_a_failed_checkpoint_write_keeps_the_previous_last_pt(where, tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    checkpoints.save_atomic({"step": 1, "w": torch.ones(3)}, path)
    real_save = torch.save

    def save(obj, fh, *args, **kwargs):  # half a checkpoint, then the disk is full
        real_save(obj, fh, *args, **kwargs)
        fh.truncate(fh.tell() // 2)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    def replace(src, dst, *args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(src), None, str(dst))

    if where == "torch.save":
        monkeypatch.setattr(torch, "save", save)
    else:
        monkeypatch.setattr(os, "replace", replace)
    with pytest.raises(OSError) as caught:
        checkpoints.save_atomic({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert caught.value.errno == errno.ENOSPC
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["step"] == 1 and torch.equal(ckpt["w"], torch.ones(3))
