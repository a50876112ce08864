"""Ahead-of-time compilation of every Triton kernel at the benchmark shapes, without a GPU.

The launches that :func:`bench.aot.cases.record_launches` records (the public kernels
functions on meta tensors that claim to be CUDA tensors) are specialised as triton's JIT does
(its binder and ``_pack_args``: pointers and ints aligned to 16, ints equal to 1 become
constexpr), deduplicated, and each specialisation is compiled by ``triton.compile`` for
``GPUTarget("cuda", arch, 32)`` down to PTX and cubin, with the ptxas and cuobjdump that ship
in the triton wheel.

Each row (one specialisation on one arch) holds: registers, spill stores and loads, stack
and ptxas time (ptxas -v), shared memory, occupancy (:func:`bench.aot.sass.occupancy`), global
loads and their widths, loads and bytes in flight per thread, static instruction count
(cuobjdump -sass, :func:`bench.aot.sass.sass_figures`), and where the kernel's loop trip counts
are known (:data:`_MODELS`) instructions and global bytes per thread; for the corner-pooling
and heatmap-peaks kernels also instructions and bytes per element, and for corner pooling
the bytes per element its docstring counts. Per-thread figures use the first launch of a
specialisation.

TRITON_INTERPRET must be unset when triton is imported (it swaps JITFunctions for the
interpreter's): :func:`aot_table` runs ``python -m bench.aot.compile`` in a subprocess without it
when this process has it set (the test suite does). Compiled kernels go to triton's cache
with their ptxas log and SASS, so a second run takes seconds.

    python -m bench.aot.compile [--arch 80 90] [--dtypes float32|all] [--filter TEXT] [--jobs N]
                        [--artifacts DIR] --json PATH
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import functools
import importlib
import io
import json
import math
import multiprocessing
import os
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from bench import REPO_DIR
from bench.aot.cases import Launch, dtypes_from, record_launches
from bench.aot.sass import GPU_LIMITS, occupancy, parse_ptxas_log, parse_sass, sass_figures

__all__ = ["ARCHS", "aot_table", "compile_table"]

ARCHS = (80, 90)


# per-kernel trip counts of the SASS loops (address order), elements per thread and the bytes
# per element the kernel's docstring counts; v: the launch's arguments by name
@dataclass(frozen=True)
class _Model:
    trips: tuple[int, ...] | None = ()
    elements_per_thread: float | None = None
    doc_bytes_per_element: float | None = None


def _lines_model(v: dict[str, Any], warps: int, elem: int, rw: int) -> _Model:
    # one loop over the scan axis in both layouts; rw: elements read and written per element
    trips = (math.ceil(v["S"] / v["UNROLL"]),)
    return _Model(trips, v["S"] * v["BLOCK_T"] / (32 * warps), rw * elem)


def _lines_bwd_model(v: dict[str, Any], warps: int, elem: int) -> _Model:
    # read y, dy; write dx; plus one load of a neighbouring y: per UNROLL rows (rows layout,
    # the tile's UNROLL + 1 rows) or per block of 4 positions (lanes layout, y_after)
    model = _lines_model(v, warps, elem, 3)
    extra = elem / (4 if v["LANES"] else v["UNROLL"])
    return _Model(model.trips, model.elements_per_thread, 3 * elem + extra)


def _fused_model(v: dict[str, Any], warps: int, elem: int) -> _Model:
    # one pass over the plane, UNROLL whole rows per trip
    trips = (math.ceil(v["H"] / v["UNROLL"]),)
    # read a and b, write out (+ write both pooled maps when SAVE)
    return _Model(trips, v["H"] * v["W"] / (32 * warps), (3 + 2 * v["SAVE"]) * elem)


def _peaks_model(v: dict[str, Any], warps: int, elem: int) -> _Model:
    # straight-line code: a thread handles one group of ROWS rows of a column (BLOCK groups
    # per program); pass 1's halo and neighbour columns are loaded too, so its SASS bytes per
    # element exceed the DRAM bytes its docstring counts (which is not compared here)
    return _Model((), v["ROWS"] * v["BLOCK"] / (32 * warps))


_MODELS: dict[str, Callable[[dict[str, Any], int, int], _Model]] = {
    "_corner_pool_fwd_kernel": lambda v, w, e: _lines_model(v, w, e, 2),  # read x, write y
    "_corner_pool_bwd_kernel": _lines_bwd_model,
    "_fused_corner_pool_fwd_kernel": _fused_model,
    "_heatmap_peaks_fwd_kernel": _peaks_model,
    "_decode_pairs_kernel": lambda v, w, e: _Model((math.ceil(v["K"] / v["BLOCK_J"]),)),
    "_soft_nms_fwd_kernel": lambda v, w, e: _Model(None),  # one trip per pick: data-dependent
}


def _specialise(launch: Launch, backend: Any) -> tuple[Any, dict, dict, dict]:
    """``(options, signature, constexprs, attrs)`` as JITFunction.run would compute them."""
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds
    from triton.runtime.jit import create_function_from_signature

    fn = launch.fn
    binder = create_function_from_signature(fn.signature, fn.params, backend)
    kwargs = dict(
        launch.kwargs,
        debug=bool(fn.debug) or triton.knobs.runtime.debug,
        instrumentation_mode=triton.knobs.compilation.instrumentation_mode,
    )
    bound, spec, opts = binder(*launch.args, **kwargs)
    return fn._pack_args(backend, kwargs, bound, spec, opts)


def _tasks(launches: list[Launch], arch: int) -> list[dict[str, Any]]:
    """One compile task per distinct specialisation on ``arch``, in order of first launch."""
    # triton on use: TRITON_INTERPRET at import decides what it holds
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    backend = make_backend(GPUTarget("cuda", arch, 32))
    tasks: dict[str, dict[str, Any]] = {}
    for ln in launches:
        options, sig, constexprs, attrs = _specialise(ln, backend)
        parts = (sig, constexprs, attrs, options.__dict__)
        key = repr((ln.fn.__module__, ln.fn.__name__, *(sorted(d.items()) for d in parts)))
        if key in tasks:
            if ln.case not in tasks[key]["cases"]:
                tasks[key]["cases"].append(ln.case)
            tasks[key]["programs"] = max(tasks[key]["programs"], math.prod(ln.grid))
            continue
        names = ln.fn.arg_names
        values = dict(zip(names, ln.args)) | {k: v for k, v in ln.kwargs.items() if k in names}
        cx = {names[path[0]]: v for path, v in constexprs.items()}
        floats = [t[1:] for t in sig.values() if t.startswith(("*fp", "*bf"))]
        dtype = "/".join(dict.fromkeys(floats))  # e.g. "fp32/fp16": scores and fp16 tags
        elem = next((v.element_size() for v in values.values() if isinstance(v, torch.Tensor)), 4)
        model = _MODELS.get(ln.fn.__name__, lambda v, w, e: _Model())
        scalars = {k: v for k, v in values.items() if not isinstance(v, torch.Tensor)}
        strides = [k for k in cx if k.startswith(("stride", "s_"))]  # specialised to 1
        variant = " ".join(f"{k}={v}" for k, v in cx.items() if k not in strides)
        tasks[key] = dict(
            arch=arch, module=ln.fn.__module__, kernel=ln.fn.__name__, variant=variant,
            unit_strides=" ".join(strides), dtype=dtype, num_warps=options.num_warps,
            cases=[ln.case], programs=math.prod(ln.grid),
            model=model(scalars, options.num_warps, elem), compile=parts,
        )  # fmt: skip
    return list(tasks.values())


def _cuobjdump_sass(cubin: bytes) -> str:
    """The SASS of a cubin, by the cuobjdump of the triton wheel."""
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "kernel.cubin")
        path.write_bytes(cubin)
        cmd = [triton.knobs.nvidia.cuobjdump.path, "-sass", str(path)]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def _keep_ptxas_log_and_sass(
    backend=None, stages=None, options=None, language=None, capability=None
):
    """triton's add_stages_inspection_hook: the ptxas -v log and the SASS go into the metadata.

    So they are cached with the kernel (cuobjdump takes about a second a kernel). Called
    without arguments it returns the (key, hash) added to the cache key: kernels cached
    without this hook, which lack both, are not picked up.
    """
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds

    if backend is None:
        return "cornerbench-ptxas-log-and-sass", "1"
    make_cubin = stages["cubin"]

    def cubin(src: str, metadata: dict) -> bytes:
        log, dump = io.StringIO(), triton.knobs.nvidia.dump_ptxas_log
        triton.knobs.nvidia.dump_ptxas_log = True  # make_cubin prints the log
        try:
            with contextlib.redirect_stdout(log):
                out = make_cubin(src, metadata)
        finally:
            triton.knobs.nvidia.dump_ptxas_log = dump
        metadata["ptxas_log"], metadata["sass"] = log.getvalue(), _cuobjdump_sass(out)
        return out

    stages["cubin"] = cubin


def _compile(task: dict[str, Any], artifacts: str | None = None) -> dict[str, Any]:
    """Compile one task; its row of figures (``error`` set when it does not compile)."""
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import ASTSource

    row = {k: v for k, v in task.items() if k not in ("model", "compile", "module")}
    sig, constexprs, attrs, options = task["compile"]
    fn = getattr(importlib.import_module(task["module"]), task["kernel"])
    hook = triton.knobs.runtime.add_stages_inspection_hook
    triton.knobs.runtime.add_stages_inspection_hook = _keep_ptxas_log_and_sass
    try:
        k = triton.compile(
            ASTSource(fn, sig, constexprs, attrs),
            target=GPUTarget("cuda", task["arch"], 32),
            options=options,
        )
    except Exception as exc:  # a failure is a row: the table says which and why
        return row | {"error": f"{type(exc).__name__}: {exc}"[:4000]}
    finally:
        triton.knobs.runtime.add_stages_inspection_hook = hook
    sass = k.metadata.sass
    if artifacts:
        stem = Path(artifacts, f"sm{task['arch']}_{task['kernel']}_{k.hash[:10]}")
        stem.parent.mkdir(parents=True, exist_ok=True)
        for ext, text in (("ttgir", k.asm["ttgir"]), ("ptx", k.asm["ptx"]), ("sass", sass)):
            stem.with_suffix(f".{ext}").write_text(text)
    model: _Model = task["model"]
    row |= parse_ptxas_log(k.metadata.ptxas_log) | {"smem": k.metadata.shared}
    row |= occupancy(task["arch"], row["regs"], row["smem"], task["num_warps"])
    row["waves"] = round(task["programs"] / (row["ctas_per_sm"] * GPU_LIMITS[task["arch"]].sms), 3)
    row |= sass_figures(parse_sass(sass), model.trips)
    per = row["elements_per_thread"] = model.elements_per_thread
    ipt, bpt = row["instr_per_thread"], row["global_bytes_per_thread"]
    row["instr_per_element"] = round(ipt / per, 2) if per and ipt is not None else None
    row["bytes_per_element"] = round(bpt / per, 2) if per and bpt is not None else None
    return row | {"doc_bytes_per_element": model.doc_bytes_per_element, "error": None}


def compile_table(
    archs: Sequence[int] = ARCHS,
    dtypes: Sequence[str] = ("float32",),
    pattern: str | None = None,
    jobs: int | None = None,
    artifacts: str | None = None,
) -> list[dict[str, Any]]:
    """Rows of every specialisation on every arch, compiled in this process (see the module
    docstring); ``jobs`` processes compile in parallel (default: the usable CPUs)."""

    launches = record_launches(dtypes, pattern)
    tasks = [t for arch in archs for t in _tasks(launches, arch)]
    jobs = max(1, min(jobs or len(os.sched_getaffinity(0)), len(tasks)))
    work = functools.partial(_compile, artifacts=artifacts)
    if jobs == 1:
        return [work(t) for t in tasks]
    # fork: the workers inherit the imported kernels; each compiles whole tasks
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(jobs, mp_context=ctx) as pool:
        return list(pool.map(work, tasks))


def aot_table(
    archs: Sequence[int] = ARCHS,
    dtypes: Sequence[str] = ("float32",),
    pattern: str | None = None,
    jobs: int | None = None,
    artifacts: str | None = None,
) -> list[dict[str, Any]]:
    """:func:`compile_table`, in a subprocess without TRITON_INTERPRET when it is set here.

    Rows of kernels that do not compile have ``error`` set; RuntimeError when the subprocess
    fails before writing any row (a case that launches nothing, an import error).
    """
    import triton  # triton on use: TRITON_INTERPRET at import decides what it holds

    if not triton.knobs.runtime.interpret:
        return compile_table(archs, dtypes, pattern, jobs, artifacts)
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp, "rows.json")
        cmd = [sys.executable, "-m", "bench.aot.compile", "--json", str(out), "--dtypes"]
        cmd += [",".join(dtypes), "--arch", *map(str, archs)]
        cmd += (["--filter", pattern] if pattern else []) + (["--jobs", str(jobs)] if jobs else [])
        cmd += ["--artifacts", artifacts] if artifacts else []
        proc = subprocess.run(cmd, env=env, cwd=REPO_DIR, capture_output=True, text=True)
        if not out.is_file():  # exit status 1 with rows: some kernel did not compile
            raise RuntimeError(
                f"{shlex.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}"
            )
        return json.loads(out.read_text())


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m bench.aot.compile``: compile and write the rows as JSON; 1 if any failed."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.aot.compile", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--arch", type=int, nargs="+", default=list(ARCHS), choices=sorted(GPU_LIMITS)
    )
    parser.add_argument("--dtypes", default="float32", help="float32 (default), all, or a list")
    parser.add_argument("--filter", default=None, help="only cases whose label contains this")
    parser.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: CPUs)")
    parser.add_argument("--artifacts", default=None, help="folder for TTGIR, PTX and SASS")
    parser.add_argument("--json", required=True, help="where to write the rows")
    args = parser.parse_args(argv)
    rows = compile_table(
        args.arch, dtypes_from(args.dtypes), args.filter, args.jobs, args.artifacts
    )
    Path(args.json).write_text(json.dumps(rows, indent=1))
    return int(any(r.get("error") for r in rows))


if __name__ == "__main__":
    sys.exit(main())
