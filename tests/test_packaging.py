"""The three top-level package names also exist on PyPI: they must resolve to this repository."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["kernels", "detectors", "bench"], ids=str)
def test_package_resolves_to_this_repository(name: str) -> None:
    module = importlib.import_module(name)
    assert Path(module.__file__).resolve().parent == REPO / name


def test_every_package_folder_is_declared_in_pyproject() -> None:
    """A wheel install carries only the declared packages: a new folder must be listed."""
    import tomllib

    declared = set(tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]
                   ["packages"])  # fmt: skip
    found = {
        ".".join(init.parent.relative_to(REPO).parts)
        for top in ("kernels", "detectors", "bench")
        for init in (REPO / top).rglob("__init__.py")
    }
    assert found == declared


def test_cli_help_lists_subcommands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("run", "data", "eval", "kernels", "anchors"):
        assert command in out


def test_cli_unknown_command_exits_2() -> None:
    from bench.cli import main

    assert main(["no-such-command"]) == 2
