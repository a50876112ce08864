"""Provenance of a benchmark run: machine, versions, git revision, command, time.

``collect_env()`` returns a flat dict of strings and numbers (JSON-ready), stored with every
result file. Nothing is queried at import time. Every probe is optional: a missing GPU,
``nvidia-smi``, package or git checkout gives ``"n/a"`` / ``"unknown"``, never an error.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import shlex
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch

from bench import REPO_DIR

NA = "n/a"
PACKAGES: tuple[str, ...] = ("torch", "torchvision", "triton", "numpy", "pycocotools", "pandas")


def _run(cmd: list[str], cwd: Path | None = None, timeout: float = 10.0) -> str | None:
    """stdout of ``cmd`` stripped, or None if it cannot run or fails."""
    try:
        proc = subprocess.run(
            cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo on Linux, else ``platform``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or NA


def package_version(name: str) -> str:
    """The installed distribution's version (without importing it), or ``"not installed"``."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def git_revision(repo_dir: str | os.PathLike | None = None) -> tuple[str, bool]:
    """``(sha, dirty)`` of the checkout holding this package; ``("unknown", False)`` outside git.

    ``dirty``: tracked files differ from HEAD (untracked files do not count, as with
    ``git describe --dirty``). Read-only: ``--no-optional-locks`` keeps git from refreshing
    the index.
    """
    repo = Path(repo_dir) if repo_dir is not None else REPO_DIR
    git = ["git", "--no-optional-locks", "-C", str(repo)]
    sha = _run([*git, "rev-parse", "HEAD"])
    if not sha:
        return "unknown", False
    status = _run([*git, "status", "--porcelain", "--untracked-files=no"])
    return sha, bool(status)


def _gpu() -> dict[str, Any]:
    info: dict[str, Any] = {
        "gpu_name": NA,
        "gpu_count": 0,
        "gpu_driver": NA,
        "cuda_version": NA,
        "cudnn_version": NA,
    }
    if torch.version.cuda:
        info["cuda_version"] = str(torch.version.cuda)
    if not torch.cuda.is_available():
        return info
    info["gpu_count"] = torch.cuda.device_count()
    info["gpu_name"] = torch.cuda.get_device_name(torch.cuda.current_device())
    cudnn = torch.backends.cudnn.version()
    if cudnn:
        info["cudnn_version"] = str(cudnn)
    smi = _run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"])
    if smi:
        info["gpu_driver"] = smi.splitlines()[0].strip()
    return info


def collect_env() -> dict[str, Any]:
    """Provenance of this process, as a flat dict of strings and numbers.

    Keys: cpu, cpu_count, cpu_count_usable, torch_threads, gpu_name, gpu_count, gpu_driver,
    cuda_version (the CUDA torch was built with), cudnn_version, ``<package>_version`` for
    torch, torchvision, triton, numpy, pycocotools and pandas, python_version, platform,
    git_revision (a sha, "-dirty" appended when tracked files have changes; "unknown" outside
    a git checkout), git_dirty (0/1), command, date_utc (ISO 8601), hostname.
    """
    sha, dirty = git_revision()
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    env: dict[str, Any] = {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count() or 0,
        "cpu_count_usable": usable,
    }
    env["torch_threads"] = torch.get_num_threads()
    env.update(_gpu())
    for name in PACKAGES:
        env[f"{name}_version"] = package_version(name)
    env.update(
        {
            "python_version": platform.python_version(),
            "platform": platform.platform(),
            "git_revision": f"{sha}-dirty" if dirty else sha,
            "git_dirty": int(dirty),
            "command": shlex.join(getattr(sys, "orig_argv", sys.argv)),
            "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "hostname": socket.gethostname(),
        }
    )
    return env
