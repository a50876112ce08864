"""``python -m bench gpu-check``: refuses without CUDA; its steps are valid commands."""

from __future__ import annotations

import argparse
import importlib
from pathlib import Path

import pytest
import torch

from bench.cli import COMMANDS, main
from bench.gpu_check import steps


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA refusal")
def test_without_cuda_it_says_so_and_exits_2(tmp_path: Path, capsys) -> None:
    out = tmp_path / "gpu"
    assert main(["gpu-check", "--out", str(out)]) == 2
    assert "needs a CUDA device" in capsys.readouterr().err
    assert not out.exists()  # nothing was run or written


@pytest.mark.parametrize("quick", [False, True], ids=["protocol", "quick"])
def test_steps_are_commands_the_subcommands_accept(tmp_path: Path, quick: bool) -> None:
    named = dict(steps(tmp_path, quick=quick))
    assert named["tests"][1:5] == ["-m", "pytest", "-m", "gpu"]
    for name in ("kernels", "latency"):
        argv = named[name]
        assert argv[1:4] == ["-m", "bench", name]
        parser = argparse.ArgumentParser()
        importlib.import_module(COMMANDS[name][0]).add_arguments(parser)
        args = parser.parse_args(argv[4:])  # exits (SystemExit) on an unknown option
        assert args.device == "cuda" and Path(args.out).parent == tmp_path
        assert args.iters == (20 if quick else None)  # None: the protocol's 100 on a GPU
    assert "paper" in named["latency"]
