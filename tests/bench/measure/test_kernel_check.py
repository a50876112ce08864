"""``python -m bench.measure.kernel_check``: gpu-check's correctness part catches a wrong kernel."""

from __future__ import annotations

import os

import pytest
import torch

import kernels
from bench.measure.kernel_check import DTYPES, check_kernels, main

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
needs_triton_here = pytest.mark.skipif(
    DEVICE.type == "cpu" and os.environ.get("TRITON_INTERPRET") != "1",
    reason="Triton on the CPU needs TRITON_INTERPRET=1 (tests/conftest.py sets it)",
)


@needs_triton_here
def test_a_wrong_kernel_fails_its_check_and_the_others_still_pass(monkeypatch, capsys) -> None:
    real = kernels.heatmap_peaks

    def off_by_a_bit(heat, k, kernel=3, backend="auto"):
        scores, *ints = real(heat, k, kernel, backend=backend)
        return (scores + 1e-3, *ints)

    monkeypatch.setattr(kernels, "heatmap_peaks", off_by_a_bit)
    rows = check_kernels(DEVICE, tiny=True, seed=0)
    failed = [r for r in rows if not r["ok"]]
    assert [r["kernel"] for r in failed] == ["heatmap_peaks k=10"] * len(DTYPES["tiny"])
    assert all("AssertionError" in r["error"] and "Traceback" in r["traceback"] for r in failed)
    assert sum(r["ok"] for r in rows) == len(rows) - len(failed) >= 20
    assert "FAILED: AssertionError" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_without_cuda_and_without_dry_run_it_exits_2(tmp_path, capsys) -> None:
    assert main(["--out", str(tmp_path)]) == 2
    assert "--dry-run" in capsys.readouterr().err
    assert not (tmp_path / "correctness.json").exists()
