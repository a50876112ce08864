"""The three top-level package names also exist on PyPI: they must resolve to this repository."""

from __future__ import annotations

import ast
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


#: layers, bottom (0) to top: a module may import only from layers below its own
LAYERS: dict[str, int] = {
    "kernels": 0, "detectors": 1, "bench": 2, "bench.errors": 2, "bench.faults": 2,
    "bench.procs": 2, "bench.distributed": 3, "bench.data": 3, "bench.results": 3, "bench.spec": 3,
    "bench.train": 4, "bench.anchors": 4, "bench.aot": 4,
    "bench.measure": 5, "bench.commands": 6, "bench.cli": 7, "bench.__main__": 8,
}  # fmt: skip


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] not in ("kernels", "detectors", "bench"):
        return None
    return parts[0] if parts[0] != "bench" or len(parts) == 1 else ".".join(parts[:2])


def _is_module(name: str) -> bool:
    path = REPO.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def test_no_module_imports_a_layer_above_its_own() -> None:
    """docs/architecture.md: bench/commands -> measure -> train, anchors, aot -> results,
    data, spec -> detectors -> kernels; nothing imports upward (function-local imports too)."""
    upward = []
    for top in ("kernels", "detectors", "bench"):
        for path in (REPO / top).rglob("*.py"):
            module = ".".join(path.relative_to(REPO).with_suffix("").parts)
            own = _layer(module.removesuffix(".__init__"))
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and not node.level:
                    names = [node.module] + [
                        f"{node.module}.{a.name}" for a in node.names
                        if _is_module(f"{node.module}.{a.name}")
                    ]  # fmt: skip
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                else:
                    continue
                for name in names:
                    other = _layer(name)
                    if other is not None and other != own and LAYERS[other] >= LAYERS[own]:
                        upward.append(f"{path.relative_to(REPO)}: {name}")
    assert upward == []
