"""Every Triton kernel compiles for sm_80 and sm_90 at the benchmark shapes, without a GPU.

bench.aot.cases calls the public kernels functions on meta tensors that claim to be CUDA tensors, so
the launchers choose the specialisations a GPU run would compile (corner pooling in the four
directions and the fused TL/BR pair at (1|8, 256, 128, 128), heatmap peaks and CornerNet
decode at 80 x 128 x 128 with K = 100, soft-NMS of 1000 boxes), and compiles each one with
triton.compile and the ptxas of the triton wheel. One compilation of both archs serves every
test (module fixture); it runs in a subprocess, because tests/conftest.py sets
TRITON_INTERPRET=1, which triton reads when it is imported. float32 only by default;
CORNERBENCH_AOT_DTYPES=all (or "float32,bfloat16") adds the other dtypes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest

from bench.aot.cases import benchmark_cases, dtypes_from, kernel_functions
from bench.aot.compile import ARCHS, aot_table

pytestmark = pytest.mark.slow

DTYPES = dtypes_from(os.environ.get("CORNERBENCH_AOT_DTYPES"))

# Registers per thread each kernel may use at the benchmark shapes, on sm_80 and sm_90 and in
# every dtype (measured with triton 3.8 / ptxas 12.9 in the comments). Past its budget a
# kernel loses resident warps (64 K registers per SM: 32 registers let 64 warps fit, 64 let
# 32, 72 let 28, 128 let 16) or comes close to spilling (255 is the hardware limit).
REGISTER_BUDGET: dict[str, int] = {
    # one-warp scans holding a tile of loads (8 x 8 B or 4-8 x 16 B per thread): 42-64, but
    # 66 for the sm_80 bottom forward (fp32) and 65 for the sm_80 right backward (lanes,
    # fp32), 28 resident warps instead of 32; 72 admits those and nothing much wider
    "_corner_pool_fwd_kernel": 72,
    "_corner_pool_bwd_kernel": 72,
    # the batch-1 fused kernel (N*C <= 1024: UNROLL = 8 whole rows of a and b in flight) uses
    # 62-223 registers on purpose: its 256 one-warp programs are 0.1-0.2 of a wave, so the
    # grid, not registers, limits occupancy; 232 stays clear of 255 (test_no_spills guards
    # the rest). The batch-8 grid (UNROLL = 2) is several waves: FUSED_REGISTER_BUDGET below
    "_fused_corner_pool_fwd_kernel": 232,
    # two-stage peaks, one group of ROWS = 16 rows per thread: pass 1 (GATHER=False, the
    # group's best key) 32-44, pass 2 (GATHER=True, all 16 keys held to be stored) 62-72
    "_heatmap_peaks_fwd_kernel": 80,
    # 7 programs per image, a fraction of one wave: occupancy does not matter, spills would
    "_decode_pairs_kernel": 192,  # 168
    "_decode_gather_kernel": 64,  # 32
    # one program per class keeps its (up to 1024) boxes in registers: 160-168
    "_soft_nms_fwd_kernel": 192,
}
# the fused kernel launched with UNROLL = 2 (N*C > 1024, several waves): 46-64 registers, so
# 32 one-warp programs per SM (the 32-CTA limit). 64 is that threshold, not a margin: one
# more register would cost 4 of the 32 warps, which this test should report
FUSED_REGISTER_BUDGET = ("_fused_corner_pool_fwd_kernel", "UNROLL=2", 64)


def _budget(row: dict[str, Any]) -> int:
    kernel, unroll, budget = FUSED_REGISTER_BUDGET
    if row["kernel"] == kernel and unroll in row["variant"].split():
        return budget
    return REGISTER_BUDGET.get(row["kernel"], 0)


@pytest.fixture(scope="module")
def rows() -> list[dict[str, Any]]:
    """Every specialisation on every arch, compiled once (2 processes)."""
    return aot_table(ARCHS, DTYPES, jobs=2)


def _failures(rows: list[dict[str, Any]], arch: int, bad) -> list[str]:
    """``"kernel variant dtype: why"`` for each row of ``arch`` where ``bad(row)`` says why."""
    mine = [r for r in rows if r["arch"] == arch]
    assert mine, f"no kernel compiled for sm_{arch}"
    return [f"{r['kernel']} {r['variant']} {r['dtype']}: {bad(r)}" for r in mine if bad(r)]


def _compiled(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if not r["error"]]  # the others fail test_compiles


def test_every_kernel_and_case_is_covered(rows: list[dict[str, Any]]) -> None:
    launched = {r["kernel"] for r in rows}
    kernels = {k.split(":")[1] for k in kernel_functions() if k.endswith("_kernel")}
    assert kernels <= launched, f"never launched at the benchmark shapes: {kernels - launched}"
    assert set(REGISTER_BUDGET) >= kernels, "give each kernel a register budget"
    cases = {c for r in rows for c in r["cases"]}
    assert cases == set(benchmark_cases(DTYPES))
    assert {r["dtype"] for r in rows} >= {"fp32"}


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
def test_compiles(rows: list[dict[str, Any]], arch: int) -> None:
    assert not _failures(rows, arch, lambda r: r["error"])


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
def test_no_spills(rows: list[dict[str, Any]], arch: int) -> None:
    def spills(r: dict[str, Any]) -> str | None:
        if r["spill_stores"] or r["spill_loads"] or r["ldl"] or r["stl"]:
            return f"spills {r['spill_stores']}/{r['spill_loads']} B, LDL/STL {r['ldl']}/{r['stl']}"
        return None

    assert not _failures(_compiled(rows), arch, spills)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
def test_registers_within_budget(rows: list[dict[str, Any]], arch: int) -> None:
    def over(r: dict[str, Any]) -> str | None:
        budget = _budget(r)
        return f"{r['regs']} registers > {budget}" if r["regs"] > budget else None

    assert not _failures(_compiled(rows), arch, over)


@pytest.mark.parametrize("arch", ARCHS, ids=lambda a: f"sm_{a}")
def test_pooling_moves_the_bytes_its_docstring_counts(
    rows: list[dict[str, Any]], arch: int
) -> None:
    # the global loads and stores in the SASS, loop bodies times their trips, per element:
    # no element read twice by the same pass (the backward's one extra load per line aside)
    pool = [r for r in _compiled(rows) if r["arch"] == arch and "corner_pool" in r["kernel"]]
    assert pool, "no corner-pooling kernel compiled"
    for r in pool:
        what = f"{r['kernel']} {r['variant']} {r['dtype']}"
        assert r["bytes_per_element"] is not None, (
            f"{what}: loops changed, update bench.aot.compile._MODELS"
        )
        assert r["bytes_per_element"] == pytest.approx(r["doc_bytes_per_element"], rel=0.01), what
