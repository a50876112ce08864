"""Output folders checked before the work starts.

:func:`writable_folder` creates a command's output folder and writes (and removes) a small
file in it, so that a read-only file system, a folder without permission or an ``--out`` that
is a file (or lies under one) stops the command at once with ``UsageError`` (exit code 2)
naming the option, the folder and the reason, instead of a traceback after minutes of work.
A write that fails later anyway (a disk that fills up during a checkpoint) is turned into one
line and exit code 2 by ``bench.cli``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from bench.errors import UsageError

__all__ = ["writable_folder"]


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__


def _file_above(path: Path) -> Path | None:
    """The nearest existing part of ``path`` when it is not a folder (a file in the way)."""
    for part in (path, *path.parents):
        try:
            if part.exists() or part.is_symlink():
                return None if part.is_dir() else part
        except OSError:  # not searchable: mkdir names the reason
            return None
    return None


def writable_folder(path: str | os.PathLike, option: str) -> Path:
    """Create the folder ``path`` (and its parents) and check that a file can be written in
    it; returns it. ``UsageError`` naming ``option``, the path and the reason otherwise."""
    path = Path(path)
    blocker = _file_above(path)
    if blocker is not None:
        what = "is a file" if blocker == path else f"lies under {blocker}, which is a file"
        raise UsageError(f"{option} {path}: {what}; expected a folder")
    try:
        if not path.is_dir():  # some file systems refuse mkdir of a folder that exists
            path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot create the folder ({_reason(exc)})") from exc
    try:
        fd, probe = tempfile.mkstemp(prefix=".bench-write-test-", dir=path)
    except OSError as exc:
        raise UsageError(f"{option} {path}: cannot write in the folder ({_reason(exc)})") from exc
    os.close(fd)
    os.unlink(probe)
    return path
