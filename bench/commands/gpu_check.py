"""``python -m bench gpu-check``: is cornerbench correct and fast on this GPU? One command that
fits a 15-minute GPU loan: the plan, its time budgets, the report it writes and ``--dry-run``
are :mod:`bench.measure.gpu_plan`'s. Exit code 0 when every part passed, 1 otherwise, 2 when
there is no CUDA device (nothing is run) or for bad options.
"""

from __future__ import annotations

import argparse
import datetime
import time
from pathlib import Path

import torch

from bench.commands._output import writable_folder
from bench.errors import UsageError
from bench.measure import gpu_plan
from bench.measure.gpu_plan import DEADLINE_S, PART_NAMES, say
from bench.results.env import collect_env


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
        "--dry-run", action="store_true",
        help="the same plan on the CPU: GPU hidden, Triton interpreter, tiny shapes",
    )  # fmt: skip
    parser.add_argument(
        "--skip", default="", help=f"comma-separated parts to skip: {','.join(PART_NAMES)}"
    )
    parser.add_argument(
        "--deadline", type=float, default=DEADLINE_S,
        help=f"seconds for the whole run (default {DEADLINE_S:.0f}); parts are cut to fit",
    )  # fmt: skip


def run(args: argparse.Namespace) -> int:
    """``python -m bench gpu-check``: 0 (all passed), 1 (a part did not pass), 2 (no CUDA)."""

    t0 = time.monotonic()
    if not args.dry_run and not torch.cuda.is_available():
        say(
            f"gpu-check needs a CUDA device, and torch {torch.__version__} sees none (built "
            f"with CUDA {torch.version.cuda}); nothing was run. `python -m bench gpu-check "
            "--dry-run` runs the same plan on the CPU (tiny shapes, Triton's interpreter)."
        )
        return 2
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if skip - set(PART_NAMES):
        raise UsageError(
            f"--skip {args.skip!r}: unknown part(s) {sorted(skip - set(PART_NAMES))}; "
            f"expected some of {', '.join(PART_NAMES)}"
        )
    if not args.deadline > 0:
        raise UsageError(f"--deadline {args.deadline}: expected seconds > 0")
    env = collect_env()  # device, versions, driver, date: recorded before anything runs
    slug = "dry-run" if args.dry_run else torch.cuda.get_device_name().replace(" ", "-")
    date = datetime.date.today().isoformat()
    out = Path(args.out or f"reports/gpu/{slug.replace('/', '-')}-{date}").resolve()
    writable_folder(out, "--out")  # absolute: the parts run from the repository root
    parts = gpu_plan.plan(out, quick=args.quick, dry_run=args.dry_run)
    report = gpu_plan.run_check(
        parts, out, skip=skip, env=env, dry_run=args.dry_run, quick=args.quick,
        deadline=args.deadline, t0=t0,
    )  # fmt: skip
    failed = report["failed"]
    verdict = f"NOT PASSED: {', '.join(failed)}" if failed else "all passed"
    print(f"gpu-check: wrote {out} in {report['elapsed_s']:.0f} s; {verdict}")
    return 1 if failed else 0
