"""``python -m bench kernels``: the kernels against their torch references and baselines.

Times every case of :data:`bench.measure.kernel_cases.KERNEL_CASES` that runs on the device
(the definition tests/benchmarks times too; the shapes, providers and the bandwidth columns
are described in :mod:`bench.measure.kernel_timing`), writes ``kernels.json`` /
``kernels.csv`` / ``kernels.md`` and ``env.json`` into ``--out`` (default
``reports/kernels/<date>-<device>/``) and prints the table (``--wide``: every column).

``--aot [--arch 80 90] [--dtypes float32|all]``: no timing and no GPU; every specialisation
the launchers choose at these shapes is compiled ahead of time for the given compute
capabilities and its static figures (registers, spills, shared memory, occupancy, loads in
flight, instructions) are written to ``<out>/aot-<arch>/`` (default
``reports/kernels/aot-<arch>/``): see :mod:`bench.aot.compile`. Exit code 1 when a kernel
does not compile.
"""

from __future__ import annotations

import argparse
import datetime
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from bench.aot.cases import dtypes_from
from bench.aot.compile import ARCHS
from bench.aot.report import write_aot_reports
from bench.commands._output import writable_folder
from bench.commands._tables import Col, add_wide_option, print_table
from bench.errors import UsageError
from bench.measure.kernel_timing import NOMINAL_GBPS, copy_bandwidth, kernel_cases, run_cases
from bench.results.env import collect_env
from bench.results.report import render_markdown
from bench.results.store import save_rows, write_text_atomic
from bench.spec import add_device_options, add_timing_options, parse_timing, resolve_device


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench kernels``."""
    add_device_options(parser, dtype=False)
    add_timing_options(
        parser, warmup_help="default: 10 GPU, 1 CPU", iters_help="default: 100 GPU, 5 CPU"
    )
    parser.add_argument("--out", type=Path, default=None,
                        help="default reports/kernels/<date>-<device>/; with --aot: the "
                        "folder that receives aot-<arch>/ (default reports/kernels)")  # fmt: skip
    add_wide_option(parser)
    aot = parser.add_argument_group("static analysis (--aot; no GPU needed)")
    aot.add_argument(
        "--aot",
        action="store_true",
        help="compile every kernel ahead of time and write the static table",
    )
    aot.add_argument(
        "--arch",
        type=int,
        nargs="+",
        choices=(80, 90),
        default=None,
        help="compute capabilities (default: 80 90)",
    )
    aot.add_argument(
        "--dtypes", default=None, help="float32 (default), all, or a comma-separated list"
    )
    aot.add_argument("--filter", default=None, help="only the cases whose label contains this")
    aot.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: CPUs)")
    aot.add_argument("--artifacts", type=Path, default=None,
                     help="also keep each kernel's TTGIR, PTX and SASS in this folder")  # fmt: skip


COLUMNS = ("case", "provider", "median_ms", "p90_ms", "x_vs_torch", "GB/s", "of_copy", "of_peak")


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(rows: list[dict[str, Any]], env: dict[str, Any], device: str) -> str:
    """The saved table as Markdown, headed by the device, versions and date."""

    intro = (
        f"Device: {device}; torch {env.get('torch_version')}, triton {env.get('triton_version')}, "
        f"CUDA {env.get('cuda_version')}; {env.get('date_utc')}; git {env.get('git_revision')}; "
        f"copy bandwidth {env.get('copy_bandwidth_gbps', 0):.0f} GB/s. Times in ms "
        f"({env.get('iters')} timed calls after {env.get('warmup')} warm-up); GB/s and "
        "fractions of bandwidth for pooling as bench/measure/kernel_timing.py defines them."
    )
    body = [[_cell(r.get(c)) for c in COLUMNS] for r in rows]
    return render_markdown([("h", 1, "Kernel benchmarks"), ("p", intro), ("table", COLUMNS, body)])


def run(args: argparse.Namespace) -> int:
    """``python -m bench kernels``: time, print and save the table; returns the exit code."""

    if args.aot:
        return run_aot(args)
    aot_only = {"--arch": args.arch, "--dtypes": args.dtypes, "--filter": args.filter,
                "--jobs": args.jobs, "--artifacts": args.artifacts}  # fmt: skip
    if any(v is not None for v in aot_only.values()):
        used = [k for k, v in aot_only.items() if v is not None]
        raise UsageError(f"{', '.join(used)}: only with --aot")
    device = resolve_device(args.device)
    gpu = device.type == "cuda"
    timing = parse_timing(args.warmup, args.iters, (10, 100) if gpu else (1, 5))
    warmup, iters = timing.warmup, timing.iters
    console = Console(stderr=True)
    dev_name = torch.cuda.get_device_name(device) if gpu else "cpu"
    date = datetime.date.today().isoformat()
    slug = dev_name.replace(" ", "-").replace("/", "-")
    out = writable_folder(args.out or f"reports/kernels/{date}-{slug}", "--out")
    peak = next((v for k, v in NOMINAL_GBPS.items() if k in dev_name), None) if gpu else None
    with torch.no_grad():
        copy = copy_bandwidth(device)
    rows = run_cases(kernel_cases(device), device, warmup=warmup, iters=iters, copy_gbps=copy,
                     peak_gbps=peak, progress=lambda s: console.log(s, markup=False))  # fmt: skip
    env = collect_env()
    env.update(copy_bandwidth_gbps=copy, nominal_bandwidth_gbps=peak, warmup=warmup, iters=iters)
    save_rows(out, "kernels", rows, env=env)
    write_text_atomic(out / "kernels.md", markdown(rows, env, dev_name if gpu else env["cpu"]))
    # a narrow terminal keeps case, provider, median and speed-up, then p90, GB/s, of copy
    cols = [Col("case", "name"), Col("provider", "text"), Col("median ms"), Col("p90 ms", keep=1),
            Col("x vs torch"), Col("GB/s", keep=2), Col("of copy", keep=3)]  # fmt: skip
    cells = []
    for r in rows:
        gb = f"{r['GB/s']:.1f}" if "GB/s" in r else ""
        frac = f"{r['of_copy']:.0%}" if r.get("of_copy") else ""
        cells.append([r["case"], r["provider"], f"{r['median_ms']:.3f}", f"{r['p90_ms']:.3f}",
                      f"{r['x_vs_torch']:.2f}", gb, frac])  # fmt: skip
    title = f"kernels on {dev_name} (copy bandwidth {copy:.0f} GB/s)"
    print_table(Console(), title, cols, cells, wide=args.wide, full=out / "kernels.md")
    print(f"wrote {out}")
    return 0


def run_aot(args: argparse.Namespace) -> int:
    """``python -m bench kernels --aot``: compile, print and save the static tables."""

    if args.jobs is not None and args.jobs < 1:
        raise UsageError(f"--jobs {args.jobs}: expected >= 1")
    out = writable_folder(args.out or "reports/kernels", "--out")
    if args.artifacts:
        writable_folder(args.artifacts, "--artifacts")
    rows, folders = write_aot_reports(
        args.arch or ARCHS, dtypes_from(args.dtypes), out,
        pattern=args.filter, jobs=args.jobs,
        artifacts=str(args.artifacts) if args.artifacts else None,
    )  # fmt: skip
    if not rows:
        raise UsageError(f"--filter {args.filter!r}: no case matches")
    for r in rows:
        what = f"sm_{r['arch']} {r['kernel']} {r['variant']} {r['dtype']}"
        if r["error"]:
            print(f"{what}: FAILED {r['error'][:500]}")
            continue
        per_thread = f", {r['instr_per_thread']} instr/thread" if r["instr_per_thread"] else ""
        print(f"{what}: {r['regs']} regs, spills {r['spill_stores']}/{r['spill_loads']} B, "
              f"smem {r['smem']} B, {r['warps_per_sm']} warps/SM, {r['loads_in_flight']} loads "
              f"({r['bytes_in_flight']} B) in flight{per_thread}")  # fmt: skip
    for folder in folders:
        print(f"wrote {folder}")
    return int(any(r["error"] for r in rows))
