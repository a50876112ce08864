"""``python -m bench kernels``: the table of kernels against their references, saved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from bench.cli import main
from bench.commands.kernels import markdown
from bench.measure.kernel_timing import run_cases


def test_cpu_table_is_printed_and_saved(tmp_path: Path) -> None:
    out = tmp_path / "k"
    assert (
        main(["kernels", "--device", "cpu", "--iters", "1", "--warmup", "0", "--out", str(out)])
        == 0
    )
    doc = json.loads((out / "kernels.json").read_text())
    rows = doc["rows"]
    providers = {(r["case"].split(" ")[0], r["provider"]) for r in rows}
    assert ("corner_pool", "loop") in providers and ("cornernet_decode", "dense") in providers
    assert not any(p == "triton" for _, p in providers)  # CUDA only
    pool = [r for r in rows if r["case"].startswith("corner_pool")]
    assert all(r["GB/s"] > 0 and r["of_copy"] > 0 for r in pool)
    assert all(r["median_ms"] > 0 and r["p90_ms"] >= r["median_ms"] for r in rows)
    assert {r["x_vs_torch"] for r in rows if r["provider"] == "torch"} == {1.0}
    assert doc["env"]["copy_bandwidth_gbps"] > 0
    text = (out / "kernels.md").read_text()
    assert "| corner_pool tl fwd (1, 256, 128, 128) | torch |" in text
    assert (out / "kernels.csv").is_file() and (out / "env.json").is_file()


def test_speedups_and_bandwidth_are_computed_from_the_timings() -> None:
    cases = [
        {"case": "c", "provider": "torch", "fn": lambda: None, "elements": 10**6,
         "bytes_per_element": 12},
        {"case": "c", "provider": "slow", "fn": lambda: sum(range(20000))},
    ]  # fmt: skip
    rows = run_cases(cases, torch.device("cpu"), warmup=0, iters=3, copy_gbps=1e9, peak_gbps=None)
    fast, slow = rows
    assert slow["x_vs_torch"] == pytest.approx(fast["median_ms"] / slow["median_ms"])
    assert fast["GB/s"] == pytest.approx(12e6 / (fast["median_ms"] * 1e-3) / 1e9)
    assert fast["of_peak"] is None and "GB/s" not in slow
    assert "| c | slow |" in markdown(rows, {}, "cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA error")
def test_cuda_without_a_gpu_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["kernels", "--device", "cuda"]) == 2
    assert "no CUDA device" in capsys.readouterr().err


@pytest.mark.slow
def test_aot_table_is_printed_and_saved(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    # one case, one arch: two small kernels compiled in a subprocess without the interpreter
    out = tmp_path / "k"
    argv = ["kernels", "--aot", "--arch", "90", "--filter", "corner_pool top fwd+bwd (1,"]
    assert main([*argv, "--out", str(out)]) == 0
    doc = json.loads((out / "aot-90" / "table.json").read_text())
    rows = {r["kernel"]: r for r in doc["rows"]}
    assert set(rows) == {"_corner_pool_fwd_kernel", "_corner_pool_bwd_kernel"}
    fwd = rows["_corner_pool_fwd_kernel"]
    assert fwd["error"] is None and fwd["arch"] == 90 and fwd["dtype"] == "fp32"
    assert fwd["cases"] == ["corner_pool top fwd+bwd (1,256,128,128) float32"]
    assert 0 < fwd["regs"] <= 255 and fwd["ldg"] > 0 and fwd["warps_per_sm"] > 0
    assert fwd["bytes_per_element"] == fwd["doc_bytes_per_element"] == 8  # read x, write y
    assert doc["env"]["archs"] == [90] and doc["env"]["ptxas_version"] != "unknown"
    text = (out / "aot-90" / "table.md").read_text()
    variant = "REVERSE=True LANES=False CARRY=False UNROLL=8 BLOCK_T=64"  # rows layout
    assert f"| _corner_pool_fwd_kernel | {variant} |" in text
    assert (out / "aot-90" / "table.csv").is_file() and (out / "aot-90" / "env.json").is_file()
    assert not (out / "aot-80").exists()
    assert "sm_90 _corner_pool_bwd_kernel REVERSE=True" in capsys.readouterr().out


def test_aot_options_need_aot(capsys: pytest.CaptureFixture) -> None:
    assert main(["kernels", "--arch", "90", "--dtypes", "all"]) == 2
    assert "--arch, --dtypes: only with --aot" in capsys.readouterr().err
