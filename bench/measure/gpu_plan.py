"""The plan behind ``python -m bench gpu-check`` (:mod:`bench.commands.gpu_check`) and its
runner: is cornerbench correct and fast on this GPU, within a 15-minute GPU loan.

The plan (:func:`plan`), in this order, each part in its own process so that one failure
(a crash, a broken CUDA context) cannot hide the others:

1. ``correctness``: ``python -m bench.measure.kernel_check``, each Triton kernel against its torch
   reference at the benchmark's shapes in fp32/fp16/bf16, one line and one JSON row per check;
2. ``kernels``: ``python -m bench kernels --device cuda`` (kernels vs references, GB/s, share
   of bandwidth);
3. ``latency``: ``python -m bench latency --suite paper --device cuda`` (every detector on
   Hourglass-104 at 511 x 511, 80 classes, next to the CornerNet paper's 244 ms on a Titan X);
4. ``tests``: the GPU-marked tests (``pytest -m gpu``): the kernels at more shapes, launch
   configurations and strides, what the CPU interpreter cannot check (programs running
   concurrently, memory ordering across programs), the GPU benchmark cases.

Time. Each part has an estimated budget on an H100 (:data:`BUDGET_S`, how each figure was
estimated is written beside it); they sum to well under the deadline, 8 minutes
(``--deadline``), first-time Triton compilation included. A part may overrun its budget only
into time that the later parts' budgets do not need (:func:`part_limit`: the plan's slack and
what earlier parts left unused); past its limit it is stopped
and recorded as timed out, and a part that cannot start before the deadline is recorded as
not run, so the command ends within the deadline whatever happens. ``--quick`` times 20
iterations instead of the protocol's 100 (marked in the report). Progress (which part,
elapsed seconds, the last line of its log every 30 s) goes to stderr.

Report, in ``--out`` (default ``reports/gpu/<device>-<date>/``): ``gpu_check.json`` (device;
torch, triton, CUDA and driver versions; date; git revision; the plan with budgets; each
part's command, status, exit code, seconds, limit, and for a failure its error and
traceback or failing tests) and ``README.md`` with the same as tables, both rewritten
atomically when the run starts and after each part, so that a run cut short still leaves
what was measured; ``env.json``; each part's log ``<part>.txt`` (written as it runs) and its
outputs: ``correctness.json``, ``kernels/``, ``latency/``, ``tests.xml`` (JUnit).

``--dry-run`` runs the same plan on the CPU with the GPU hidden (``CUDA_VISIBLE_DEVICES=``),
the Triton kernels through the interpreter (``TRITON_INTERPRET=1`` in each part's
environment, so it is set before triton is imported there), at tiny shapes and one timed
iteration: ``correctness`` at interpreter sizes in fp32/fp16; ``kernels`` at its own CPU
shapes, torch providers only (``bench kernels`` has no size option, and its Triton providers
exist on CUDA only); ``latency`` on the synthetic suite (tiny backbone) at 64 px; the GPU
tests collected and skipped. It measures nothing; it checks that every part starts, runs and
reports, in about 20 s of CPU time.

Exit code 0 when every part passed, 1 otherwise (failed, timed out, not run); without CUDA
and without ``--dry-run`` it says so and exits 2, running nothing.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import REPO_DIR
from bench.results.store import write_json_atomic, write_text_atomic

__all__ = [
    "BUDGET_S",
    "DEADLINE_S",
    "Part",
    "failure_excerpt",
    "part_limit",
    "plan",
    "run_check",
    "say",
]

# 8 minutes: a 15-minute loan less the machine's start (1-2 min), the transfers and a margin
DEADLINE_S = 480.0
HEARTBEAT_S = 30.0  # seconds between progress lines while a part runs
MIN_START_S = 5.0  # a part is not started with less time than this left before the deadline

# Estimated seconds per part on one H100 (an H200 is no slower), (protocol, --quick), on a
# fresh machine: the Triton cache (~/.triton/cache, shared by the parts) starts empty, so each
# kernel specialisation (dtype, constexprs, 16-byte alignment of pointers and strides) is
# compiled once, by the first part that launches it. NOT MEASURED ON A GPU: no GPU was
# available when this was written; replace with the seconds of a real run's gpu_check.json.
# The pieces the estimates are made of:
# - start: a Python process importing torch, triton and this package (2 s on the 2-core CPU
#   machine this was written on) and creating a CUDA context: ~8 s with a margin.
# - compile: ../shared/tools/aot_compile.py --quick compiled 20 of our specialisations for
#   sm_90 there in 22 s of CPU time (44 s of wall time: two training jobs shared the cores):
#   ~0.5 s per pooling, decode or Soft-NMS kernel, ~3 s for heatmap_peaks at k=100 and ~7 s
#   at k=1024, ~1.5 s for the first in a process; the GPU host's cores assumed no faster.
# - GPU work: bytes over ~3 TB/s, FLOPs over ~100 TFLOP/s (TF32 convolutions at batch 1),
#   ~10 us per launch and ~20 us per host synchronisation in Python loops.
BUDGET_S: dict[str, tuple[float, float]] = {
    # start 8 + compile ~35 (pooling: 4 directions x forward/backward + 4 fused variants = 12
    # specialisations x 3 dtypes x 0.5 s; heatmap_peaks 3 x 3 s; decode ~4 x 0.5 s; Soft-NMS
    # 4 x 0.6 s) + the checks and their references ~10 (pooling references: a loop of
    # torch.maximum per row; Soft-NMS reference on the CPU, ~40 ms per call) = ~53
    "correctness": (60.0, 60.0),
    # start 8 + compile ~3 (batch 8 and 1000 boxes reuse correctness's specialisations) +
    # copy bandwidth 1 + 13 cases x (10 warm-up + 100 | 20 timed calls): the torch Soft-NMS
    # loop on the GPU (1000 picks x ~20 launches and 2 host syncs: ~0.15 s a call) 17 | 5 s,
    # the row-loop pooling baselines at batch 8 (~3000 launches: ~30 ms a call) 7 | 2 s, the
    # rest 2 | 1 s = ~38 | ~20
    "kernels": (45.0, 25.0),
    # start 8 + 8 detectors x (build Hourglass-104 with random weights on the CPU ~4 s (3-6 s
    # measured on the 2-core machine) + first calls ~2 s (cuDNN heuristics, lazy loading) +
    # (10 + 100 | 3 + 20) iterations x ~25 ms: forward 0.46-0.69 TFLOP (counted with
    # torch.utils.flop_counter) ~6 ms at 100 TFLOP/s plus ~1000 launches ~10 ms, decode and
    # NMS ~5 ms, preprocessing ~2 ms) = ~78 | ~61
    "latency": (90.0, 70.0),
    # start and collection ~10 + compile ~95 (the num_warps sweep: 4 warp counts x 3 block
    # widths x 4 directions x forward/backward + 8 fused = 104 x 0.5 s; maps that are not
    # 16-aligned, 37 x 70: ~20 x 0.5 s; heatmap_peaks k=1000 on a strided map: 3 dtypes x 7 s;
    # Soft-NMS at 3000 boxes ~6 x 1 s) + 10 pytest-benchmark cases ~20 + `bench run` on CUDA
    # (tiny detector, 100 timed images) ~15 + the rest ~5 = ~145
    "tests": (150.0, 150.0),
}
PART_NAMES = tuple(BUDGET_S)


@dataclass(frozen=True)
class Part:
    """One step of the plan: a command run in its own process from the repository root."""

    name: str
    what: str  # one line for the report
    argv: tuple[str, ...]
    budget_s: float  # estimated seconds on an H100 (BUDGET_S)


def plan(out: Path, *, quick: bool = False, dry_run: bool = False) -> list[Part]:
    """The parts of a run writing under ``out``, in the order they run.

    ``quick``: 20 timed iterations instead of 100. ``dry_run``: the same parts on the CPU at
    tiny shapes and one iteration (the caller hides the GPU and sets TRITON_INTERPRET=1)."""
    py, device, mode = sys.executable, "cpu" if dry_run else "cuda", int(quick)
    correctness = [py, "-m", "bench.measure.kernel_check", "--out", str(out)]
    kernels = [py, "-m", "bench", "kernels", "--device", device, "--out", str(out / "kernels")]
    suite = "synthetic" if dry_run else "paper"
    latency = [py, "-m", "bench", "latency", "--suite", suite, "--device", device,
               "--out", str(out / "latency")]  # fmt: skip
    tests = [py, "-m", "pytest", "-m", "gpu", "-v", "-p", "no:cacheprovider",
             f"--junitxml={out / 'tests.xml'}", str(REPO_DIR / "tests")]  # fmt: skip
    if dry_run:
        correctness += ["--dry-run"]
        kernels += ["--iters", "1", "--warmup", "0"]
        latency += ["--iters", "1", "--warmup", "0", "--input-size", "64"]
    elif quick:
        kernels += ["--iters", "20"]
        latency += ["--iters", "20", "--warmup", "3"]
    whats = {
        "correctness": "each Triton kernel against its torch reference",
        "kernels": "kernel timings against the references and baselines, GB/s",
        "latency": f"per-stage latency of every detector, {suite} suite",
        "tests": "the GPU-marked tests (pytest -m gpu)",
    }
    argvs = {"correctness": correctness, "kernels": kernels, "latency": latency, "tests": tests}
    return [Part(n, whats[n], tuple(argvs[n]), BUDGET_S[n][mode]) for n in PART_NAMES]


def part_limit(budget_s: float, remaining_s: float, later_budgets_s: float) -> float:
    """Seconds a part may run: at least its budget, and more when the time left before the
    deadline exceeds what the later parts' budgets need (the plan's slack, and what earlier
    parts left unused); never past the deadline."""
    return max(0.0, min(remaining_s, max(budget_s, remaining_s - later_budgets_s)))


def _tail(path: Path, lines: int) -> list[str]:
    try:
        with open(path, "rb") as fh:
            fh.seek(max(0, fh.seek(0, os.SEEK_END) - 8192))
            text = fh.read().decode("utf-8", errors="replace")
    except OSError:
        return []
    return [line for line in text.replace("\r", "\n").splitlines() if line.strip()][-lines:]


def failure_excerpt(log: str, limit: int = 6000) -> str:
    """What explains a failed part: pytest's FAILURES/ERRORS sections and summary, else the
    last Python traceback, else the last 30 lines of its log; at most ``limit`` characters
    (the start and the end kept)."""
    section = re.search(r"^=+ (FAILURES|ERRORS) =+$", log, flags=re.MULTILINE)
    at = section.start() if section else log.rfind("Traceback (most recent call last)")
    text = log[log.rfind("\n", 0, at) + 1 :] if at >= 0 else "\n".join(log.splitlines()[-30:])
    if len(text) > limit:
        text = text[: limit // 2] + "\n[...]\n" + text[-limit // 2 :]
    return text.rstrip()


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _run_part(part: Part, log_path: Path, limit: float, env: dict, label: str) -> dict:
    """Run ``part`` with its output in ``log_path``, stopping it after ``limit`` seconds;
    returns status, returncode, seconds, and error and traceback unless it passed."""
    start = time.monotonic()
    timed_out = False
    with open(log_path, "w", encoding="utf-8") as log:
        log.write(f"$ {shlex.join(part.argv)}\n")
        log.flush()
        proc = subprocess.Popen(
            part.argv, cwd=REPO_DIR, env=env, stdin=subprocess.DEVNULL, stdout=log,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            while True:
                left = start + limit - time.monotonic()
                if left <= 0:
                    timed_out = True
                    break
                try:
                    proc.wait(timeout=min(HEARTBEAT_S, left))
                    break
                except subprocess.TimeoutExpired:
                    if time.monotonic() < start + limit:
                        last = " | ".join(_tail(log_path, 1))[:150]
                        say(f"{label}: {time.monotonic() - start:.0f} s ... {last}")
        finally:  # past its limit, or an exception or Ctrl-C here: never leave it running
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
    seconds = time.monotonic() - start
    rec: dict[str, Any] = {"status": "passed", "returncode": proc.returncode, "seconds": seconds}
    if timed_out:
        error = f"stopped after {seconds:.0f} s (limit {limit:.0f} s, budget {part.budget_s:.0f} s)"
        rec.update(status="timed out", error=error)
    elif proc.returncode != 0:
        rec.update(status="failed", error=f"exit code {proc.returncode}")
    if rec["status"] != "passed":
        rec["traceback"] = failure_excerpt(log_path.read_text(encoding="utf-8", errors="replace"))
    return rec


def _readme(report: dict) -> str:
    v = report["versions"]
    if report["dry_run"]:
        mode = "DRY RUN on the CPU (Triton interpreter, tiny shapes): no GPU measurement here"
    elif report["quick"]:
        mode = "--quick: 20 timed iterations, not the protocol's 100"
    else:
        mode = "the protocol: 100 timed iterations"
    lines = [
        f"# GPU check: {report['device']}",
        "",
        f"torch {v['torch']}, triton {v['triton']}, CUDA {v['cuda']}, driver {v['driver']}; "
        f"{report['date_utc']}; git {report['git_revision']}; `{report['command']}`; {mode}.",
        "",
        f"{'Finished' if report['finished'] else 'RUNNING or cut short'} after "
        f"{report['elapsed_s']:.0f} s; deadline {report['deadline_s']:.0f} s, planned "
        f"{report['budget_s']:.0f} s (estimates for an H100: "
        "BUDGET_S in bench/measure/gpu_plan.py).",
        "",
        "| part | status | seconds | budget | limit | log | error |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in report["parts"]:
        cells = [p["name"], p["status"], f"{p['seconds']:.0f}" if "seconds" in p else ""]
        cells += [f"{p['budget_s']:.0f}", f"{p['limit_s']:.0f}" if "limit_s" in p else ""]
        cells += [f"`{p['log']}`" if "log" in p else "", p.get("error", "")]
        lines.append("| " + " | ".join(cells) + " |")
    for p in report["parts"]:
        if p.get("traceback"):
            lines += ["", f"## {p['name']}: {p['status']}", "", "```", p["traceback"], "```"]
    lines += [
        "",
        "Outputs: `correctness.json`, `kernels/kernels.md`, `latency/latency.csv`, `tests.xml`; "
        "the logs `<part>.txt`; all of the above as data: `gpu_check.json`.",
    ]
    return "\n".join(lines) + "\n"


def _save(out: Path, report: dict) -> None:
    """Rewrite gpu_check.json and README.md atomically (a reader never sees half a file)."""
    write_json_atomic(out / "gpu_check.json", report)
    write_text_atomic(out / "README.md", _readme(report))


def _new_report(
    parts: list[Part], skip: set[str], env: dict, *, dry_run: bool, quick: bool, deadline: float
) -> dict:
    device = f"CPU {env['cpu']} (dry run)" if dry_run else torch.cuda.get_device_name()
    versions = {"torch": torch.__version__, "triton": env["triton_version"],
                "cuda": env["cuda_version"], "driver": env["gpu_driver"],
                "cudnn": env["cudnn_version"], "python": env["python_version"]}  # fmt: skip
    return {
        "device": device, "dry_run": dry_run, "quick": quick, "versions": versions,
        "date_utc": env["date_utc"], "git_revision": env["git_revision"],
        "command": env["command"], "deadline_s": deadline,
        "budget_s": sum(p.budget_s for p in parts if p.name not in skip),
        "elapsed_s": 0.0, "finished": False,
        "parts": [
            {"name": p.name, "what": p.what, "argv": list(p.argv), "budget_s": p.budget_s,
             "status": "skipped" if p.name in skip else "pending"}
            for p in parts
        ],
    }  # fmt: skip


def _run_plan(parts: list[Part], report: dict, out: Path, deadline: float, t0: float) -> None:
    """Run the parts not skipped, in order, each within :func:`part_limit`; the report is
    saved before and after each part. Only Ctrl-C / SystemExit stop it (recorded first)."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", COLUMNS="160")  # COLUMNS: rich tables in logs
    if report["dry_run"]:  # read by triton when the part imports it; no GPU for torch
        env.update(TRITON_INTERPRET="1", CUDA_VISIBLE_DEVICES="")
    todo = [i for i, rec in enumerate(report["parts"]) if rec["status"] == "pending"]
    for n, i in enumerate(todo, 1):
        part, rec = parts[i], report["parts"][i]
        label = f"gpu-check [{n}/{len(todo)}] {part.name}"
        elapsed = time.monotonic() - t0
        later = sum(parts[j].budget_s for j in todo[n:])
        limit = part_limit(part.budget_s, deadline - elapsed, later)
        if limit < MIN_START_S:
            error = f"not started: {elapsed:.0f} s elapsed of the {deadline:.0f} s deadline"
            rec.update(status="not run", error=error)
            say(f"{label}: {error}")
            continue
        rec.update(status="running", started_s=elapsed, limit_s=limit, log=f"{part.name}.txt")
        _save(out, report)
        say(
            f"{label}: started at {elapsed:.0f} s (budget {part.budget_s:.0f} s, limit "
            f"{limit:.0f} s): {shlex.join(part.argv)}"
        )
        try:
            rec.update(_run_part(part, out / rec["log"], limit, env, label))
        except Exception as exc:  # the harness failed on this part: record it, go on
            rec.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            rec.update(traceback=traceback.format_exc(), seconds=time.monotonic() - t0 - elapsed)
        except BaseException:  # Ctrl-C, SystemExit: record it, then stop
            rec.update(status="interrupted", seconds=time.monotonic() - t0 - elapsed)
            raise
        finally:
            report["elapsed_s"] = time.monotonic() - t0
            _save(out, report)
        tail = " / ".join(_tail(out / rec["log"], 2))[:300]
        say(
            f"{label}: {rec['status']} in {rec['seconds']:.0f} s (budget "
            f"{part.budget_s:.0f} s); {report['elapsed_s']:.0f} s elapsed | {tail}"
        )


def run_check(
    parts: list[Part], out: Path, *, skip: set[str], env: dict, dry_run: bool, quick: bool,
    deadline: float, t0: float,
) -> dict:  # fmt: skip
    """Run ``parts`` (:func:`plan`) but ``skip`` into ``out`` by ``t0 + deadline``
    (``time.monotonic`` seconds): ``env.json``, ``gpu_check.json`` and ``README.md`` are
    written before the first part and after each. Returns the report (``failed``: the parts
    that did not pass)."""
    report = _new_report(parts, skip, env, dry_run=dry_run, quick=quick, deadline=deadline)
    write_json_atomic(out / "env.json", env)
    _save(out, report)
    todo = ", ".join(f"{p.name} {p.budget_s:.0f} s" for p in parts if p.name not in skip)
    say(
        f"gpu-check on {report['device']}: {todo} (planned {report['budget_s']:.0f} s, "
        f"deadline {deadline:.0f} s)"
    )
    _run_plan(parts, report, out, deadline, t0)
    failed = [p["name"] for p in report["parts"] if p["status"] not in ("passed", "skipped")]
    report.update(elapsed_s=time.monotonic() - t0, finished=True, failed=failed)
    _save(out, report)
    return report
