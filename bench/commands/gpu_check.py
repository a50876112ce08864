"""``python -m bench gpu-check``: is cornerbench correct and fast on this GPU? One command that
fits a 15-minute GPU loan.

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

import argparse
import datetime
import time
from pathlib import Path

import torch

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
    out.mkdir(parents=True, exist_ok=True)  # absolute: the parts run from the repository root
    parts = gpu_plan.plan(out, quick=args.quick, dry_run=args.dry_run)
    report = gpu_plan.run_check(
        parts, out, skip=skip, env=env, dry_run=args.dry_run, quick=args.quick,
        deadline=args.deadline, t0=t0,
    )  # fmt: skip
    failed = report["failed"]
    verdict = f"NOT PASSED: {', '.join(failed)}" if failed else "all passed"
    print(f"gpu-check: wrote {out} in {report['elapsed_s']:.0f} s; {verdict}")
    return 1 if failed else 0
