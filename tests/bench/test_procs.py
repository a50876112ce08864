"""bench.procs: temporary names owned by a pid, stale ones cleared, workers tied to parents."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench.data.synthetic import generate_synthetic
from bench.procs import clear_stale, owned_name, pid_alive
from bench.results.store import write_json_atomic


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_owned_name_carries_this_pid():
    name = owned_name(".x.json.", ".tmp")
    assert name.startswith(f".x.json.{os.getpid()}-") and name.endswith(".tmp")


def test_clear_stale_removes_dead_writers_only(tmp_path: Path):
    dead = _dead_pid()
    assert not pid_alive(dead) and pid_alive(os.getpid())
    stale_file = tmp_path / f".a.json.{dead}-0badc0de.tmp"
    stale_dir = tmp_path / f"data.tmp-{dead}-00ff00ff"
    live = tmp_path / f".a.json.{os.getpid()}-12345678.tmp"
    other = tmp_path / f".b.json.{dead}-0badc0de.tmp"  # another destination's
    for path in (stale_file, live, other):
        path.write_text("x")
    (stale_dir / "val").mkdir(parents=True)
    assert clear_stale(tmp_path, ".a.json.", ".tmp") == [stale_file]
    assert clear_stale(tmp_path, "data.tmp-") == [stale_dir]
    assert live.exists() and other.exists() and not stale_file.exists()


def test_write_atomic_clears_a_temporary_left_by_a_killed_writer(tmp_path: Path):
    stale = tmp_path / f".results.json.{_dead_pid()}-0badc0de.tmp"
    stale.write_text('{"half": ')
    write_json_atomic(tmp_path / "results.json", {"rows": []})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]


def test_generator_clears_a_folder_left_by_a_killed_generator(tmp_path: Path):
    dead = _dead_pid()
    for tag in ("tmp", "old"):
        (tmp_path / f"syn.{tag}-{dead}-0badc0de" / "val").mkdir(parents=True)
    generate_synthetic(tmp_path / "syn", num_train=2, num_val=2, image_size=64, workers=0,
                       card=False)  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["syn"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl is Linux only")
def test_pool_workers_die_with_a_killed_parent(tmp_path: Path):
    script = textwrap.dedent(f"""
        import multiprocessing, os, time
        from bench.procs import die_with_parent
        def work(_):
            open({str(tmp_path / "worker.pid")!r}, "w").write(str(os.getpid()))
            time.sleep(120)
        if __name__ == "__main__":
            ctx = multiprocessing.get_context("fork")
            with ctx.Pool(1, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
                pool.map(work, [0])
    """)  # fmt: skip
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    marker, deadline = tmp_path / "worker.pid", time.monotonic() + 60
    while not (marker.is_file() and marker.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)
    worker = int(marker.read_text())
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while pid_alive(worker) and time.monotonic() < deadline:
        try:  # a killed worker is a zombie until init reaps it; count that as gone
            if Path(f"/proc/{worker}/stat").read_text().split(") ")[1].startswith("Z"):
                break
        except OSError:
            break
        time.sleep(0.05)
    else:
        assert not pid_alive(worker), "the pool worker outlived its SIGKILLed parent"
