"""``python -m bench gpu-check``: is cornerbench correct and fast on this GPU? One command.

On a machine with CUDA it runs, each in its own process so one failure cannot hide the
others:

1. the GPU-marked tests (``pytest -m gpu``): the Triton kernels against their torch
   references in fp32/fp16/bf16 at real shapes, including what the CPU interpreter cannot
   check (programs running concurrently, memory ordering across programs), and the GPU
   benchmark cases;
2. ``python -m bench kernels --device cuda`` (kernels vs references, GB/s, share of bandwidth);
3. ``python -m bench latency --suite paper --device cuda`` (every detector on Hourglass-104 at
   511 x 511, 80 classes, next to the CornerNet paper's 244 ms on a Titan X).

Everything lands in ``--out`` (default ``reports/gpu/<device>-<date>/``): ``tests.txt`` and
``tests.xml`` (JUnit), ``kernels/``, ``latency/``, ``env.json``, and ``gpu_check.json``
with each step's command, exit code and seconds; ``README.md`` sums it up. Exit code 0 when
every step passed, 1 otherwise; without CUDA it says so and exits 2, running nothing.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
import time
from pathlib import Path

import torch

from bench.errors import UsageError

__all__ = ["add_arguments", "run", "steps"]

REPO_DIR = Path(__file__).resolve().parent.parent


def steps(out: Path, *, quick: bool) -> list[tuple[str, list[str]]]:
    """(name, argv) of each step, writing under ``out``; ``quick`` shortens the timings."""
    py = sys.executable
    tests = [py, "-m", "pytest", "-m", "gpu", "-q", "-rs", "-p", "no:cacheprovider",
             f"--junitxml={out / 'tests.xml'}", str(REPO_DIR / "tests")]  # fmt: skip
    kernels = [py, "-m", "bench", "kernels", "--device", "cuda", "--out", str(out / "kernels")]
    latency = [py, "-m", "bench", "latency", "--suite", "paper", "--device", "cuda",
               "--out", str(out / "latency")]  # fmt: skip
    if quick:
        kernels += ["--iters", "20"]
        latency += ["--iters", "20", "--warmup", "3"]
    return [("tests", tests), ("kernels", kernels), ("latency", latency)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench gpu-check``."""
    parser.add_argument(
        "--out", type=Path, default=None, help="default reports/gpu/<device>-<date>/"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="20 timed iterations instead of the protocol's 100 (marked in the report)",
    )  # fmt: skip
    parser.add_argument(
        "--skip", default="", help="comma-separated steps to skip: tests,kernels,latency"
    )


def _readme(device: str, records: list[dict], env: dict, quick: bool) -> str:
    lines = [
        f"# GPU check: {device}",
        "",
        f"torch {env.get('torch_version')}, triton {env.get('triton_version')}, CUDA "
        f"{env.get('cuda_version')}, driver {env.get('gpu_driver')}; {env.get('date_utc')}; "
        f"git {env.get('git_revision')}; command `python -m bench gpu-check"
        f"{' --quick' if quick else ''}`.",
        "",
        "| step | exit code | seconds | output |",
        "|---|---|---|---|",
    ]
    for r in records:
        lines.append(f"| {r['step']} | {r['returncode']} | {r['seconds']:.0f} | {r['output']} |")
    lines += ["", "Tables: `kernels/kernels.md`, `latency/latency.csv`; test log: `tests.txt`."]
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace) -> int:
    """``python -m bench gpu-check``: returns 0 (all passed), 1 (a step failed), 2 (no CUDA)."""
    from bench.env import collect_env
    from bench.results import write_json_atomic, write_text_atomic

    if not torch.cuda.is_available():
        print(
            f"gpu-check needs a CUDA device, and torch {torch.__version__} sees none (built "
            f"with CUDA {torch.version.cuda}); nothing was run. On a CPU, run the tests "
            "(`python -m pytest -q`) and `python -m bench kernels` instead.",
            file=sys.stderr,
        )
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    unknown = skip - {"tests", "kernels", "latency"}
    if unknown:
        raise UsageError(f"--skip {args.skip!r}: unknown step(s) {sorted(unknown)}")
    device = torch.cuda.get_device_name()
    slug = device.replace(" ", "-").replace("/", "-")
    out = Path(args.out or f"reports/gpu/{slug}-{datetime.date.today().isoformat()}")
    out.mkdir(parents=True, exist_ok=True)
    records = []
    for name, argv in steps(out, quick=args.quick):
        if name in skip:
            continue
        print(f"gpu-check: {name}: {' '.join(argv)}", file=sys.stderr)
        start = time.monotonic()
        proc = subprocess.run(argv, cwd=REPO_DIR, capture_output=True, text=True)
        log = out / f"{name}.txt"
        write_text_atomic(log, proc.stdout + proc.stderr)
        records.append({"step": name, "argv": argv, "returncode": proc.returncode,
                        "seconds": time.monotonic() - start, "output": log.name})  # fmt: skip
        tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
        print(f"gpu-check: {name}: exit {proc.returncode}; " + " / ".join(tail), file=sys.stderr)
    env = collect_env()
    write_json_atomic(out / "env.json", env)
    write_json_atomic(out / "gpu_check.json", {"device": device, "quick": args.quick,
                                               "steps": records})  # fmt: skip
    write_text_atomic(out / "README.md", _readme(device, records, env, args.quick))
    failed = [r["step"] for r in records if r["returncode"] != 0]
    print(
        f"gpu-check: wrote {out}; " + (f"FAILED: {', '.join(failed)}" if failed else "all passed")
    )
    return 1 if failed else 0
