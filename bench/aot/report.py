"""The static kernel tables of ``python -m bench kernels --aot``, one folder per arch.

:func:`write_aot_reports` compiles every specialisation
(:func:`bench.aot.compile.aot_table`) and writes
``<out>/aot-<arch>/``: ``table.md``, ``table.json`` ({env, rows}), ``table.csv`` and
``env.json`` (:func:`bench.results.env.collect_env` plus the ptxas version, archs, dtypes and the SM
limits used for occupancy). The columns are defined in :mod:`bench.aot.compile` and
:mod:`bench.aot.sass` and summarised under each table.
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from bench.aot.compile import aot_table
from bench.aot.sass import GPU_LIMITS
from bench.results.env import collect_env
from bench.results.report import render_markdown
from bench.results.store import write_csv_atomic, write_json_atomic, write_text_atomic

__all__ = ["COLUMNS", "environment", "markdown", "write_aot_reports", "write_tables"]

# (row key, column header) of the Markdown table; the JSON and CSV hold every key
COLUMNS: tuple[tuple[str, str], ...] = (
    ("kernel", "kernel"), ("variant", "variant"), ("unit_strides", "unit strides"),
    ("dtype", "dtype"), ("num_warps", "warps"), ("regs", "regs"),
    ("spill_stores", "spill st B"), ("spill_loads", "spill ld B"), ("stack", "stack B"),
    ("smem", "smem B"), ("warps_per_sm", "warps/SM"), ("occupancy", "occupancy"),
    ("limited_by", "limited by"), ("ldg_widths", "LDG"), ("loads_in_flight", "loads in flight"),
    ("bytes_in_flight", "bytes in flight"), ("instr_static", "instr static"),
    ("instr_per_thread", "instr/thread"), ("instr_per_element", "instr/elem"),
    ("bytes_per_element", "B/elem SASS"), ("doc_bytes_per_element", "B/elem doc"),
    ("waves", "waves"), ("ptxas_s", "ptxas s"), ("cases", "cases"),
)  # fmt: skip

NOTES = (
    "One row per specialisation the launchers choose; cases: the calls that launch it. Unit "
    "strides: the stride arguments specialised to 1 (a line kernel with unit `*t` strides, "
    "LANES=False, has a warp read one contiguous row per step; with unit `*s` strides and "
    "LANES=True the lanes run along the scan axis, 4 consecutive positions each; a thread "
    "walking a unit-stride row of its own would be uncoalesced, which these counts do not "
    "show). regs, spills, stack: ptxas -v. "
    "warps/SM: resident warps per SM, and the resource that limits them. LDG: the global "
    "loads in the SASS (count x width). Loads and bytes in flight: the most global loads one "
    "thread issues before it needs the first one's value (static, bench/aot/sass.py). "
    "instr/thread: the SASS instructions one thread executes, each loop body times its trip "
    "count (empty where a trip count is data-dependent). Pooling and heatmap-peaks kernels, "
    "per element of the map: instr/elem, B/elem SASS (the bytes of the global loads and "
    "stores the code issues, L1 hits included) and, for pooling, B/elem doc (what the "
    "kernel's docstring counts). waves: the largest grid / (CTAs per "
    "SM x SMs). ptxas s: ptxas's own time on the machine that made the table. A static count "
    "is a proxy, not a measurement."
)


def environment(archs: Sequence[int], dtypes: Sequence[str]) -> dict[str, Any]:
    """:func:`bench.results.env.collect_env` plus the ptxas version, archs, dtypes and SM limits."""
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds

    env = collect_env()
    cmd = [triton.knobs.nvidia.ptxas.path, "--version"]
    text = subprocess.run(cmd, capture_output=True, text=True).stdout
    release = [
        line for line in text.splitlines() if "release" in line
    ]  # "..., release 12.9, V12.9.86"
    env["ptxas_version"] = release[0].split("release")[-1].strip() if release else "unknown"
    env.update(archs=list(archs), dtypes=list(dtypes))
    env["sm_limits"] = {str(a): vars(GPU_LIMITS[a]) for a in archs}
    return env


def _cell(key: str, value: Any) -> str:
    if value is None:
        return ""
    if key == "occupancy":
        return f"{value:.0%}"
    if key == "cases":
        return "; ".join(value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def markdown(rows: Sequence[dict[str, Any]], env: dict[str, Any], arch: int) -> str:
    """The table of one arch as Markdown: versions and date first, definitions after."""

    lim = GPU_LIMITS[arch]
    intro = (
        f"sm_{arch}, compiled ahead of time without a GPU by `python -m bench kernels --aot`: "
        f"triton {env.get('triton_version')}, ptxas {env.get('ptxas_version')}, torch "
        f"{env.get('torch_version')}; {env.get('date_utc')}; git {env.get('git_revision')}; "
        f"dtypes {', '.join(env.get('dtypes', []))}. Occupancy and waves for the {lim.gpu}: "
        f"{lim.sms} SMs, each {lim.max_warps} warps, {lim.max_ctas} CTAs, {lim.regs} registers "
        f"and {lim.smem // 1024} KB of shared memory."
    )
    mine = [r for r in rows if r["arch"] == arch]
    blocks: list = [("h", 1, f"Triton kernels compiled for sm_{arch}"), ("p", intro)]
    blocks += [
        ("warn", f"{r['kernel']} {r['variant']} did not compile: {r['error'][:300]}")
        for r in mine
        if r.get("error")
    ]
    body = [[_cell(k, r.get(k)) for k, _ in COLUMNS] for r in mine]
    blocks += [("table", [h for _, h in COLUMNS], body), ("p", NOTES)]
    return render_markdown(blocks)


def write_tables(rows: Sequence[dict[str, Any]], env: dict[str, Any], out: Path) -> list[Path]:
    """Write ``out/aot-<arch>/`` for each arch of ``rows``; returns the folders."""

    folders = []
    for arch in sorted({r["arch"] for r in rows}):
        folder = Path(out, f"aot-{arch}")
        mine = [r for r in rows if r["arch"] == arch]
        write_json_atomic(folder / "table.json", {"env": env, "rows": mine})
        flat = [r | {"cases": "; ".join(r["cases"])} for r in mine]
        write_csv_atomic(folder / "table.csv", pd.DataFrame(flat))
        write_json_atomic(folder / "env.json", env)
        write_text_atomic(folder / "table.md", markdown(rows, env, arch))
        folders.append(folder)
    return folders


def write_aot_reports(
    archs: Sequence[int], dtypes: Sequence[str], out: Path, *, pattern: str | None = None,
    jobs: int | None = None, artifacts: str | None = None,
) -> tuple[list[dict[str, Any]], list[Path]]:  # fmt: skip
    """Compile (:func:`bench.aot.compile.aot_table`) and write the tables; ``(rows, folders)``."""

    rows = aot_table(archs, dtypes, pattern=pattern, jobs=jobs, artifacts=artifacts)
    return rows, write_tables(rows, environment(archs, dtypes), out)
