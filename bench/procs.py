"""Temporary names a process owns, and clearing the ones a killed process left behind.

A write that is interrupted cleanly removes its own temporary file or folder; a process
killed with SIGKILL (or a power cut) cannot. Every temporary name therefore carries the
process id of its writer, ``<prefix><pid>-<token><suffix>``: the next writer of the same
destination removes those whose process is gone (:func:`clear_stale`) and leaves alone
those of a process still running (a concurrent writer, e.g. another rank).

Worker processes are tied to their parent with :func:`die_with_parent` (Linux): a pool
whose parent was killed would otherwise go on rendering for its remaining tasks.
"""

from __future__ import annotations

import ctypes
import os
import re
import secrets
import shutil
import signal
import sys
from pathlib import Path


def pid_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (of any user; zombies count as alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    except OSError:
        return False
    return True


def owned_name(prefix: str, suffix: str = "") -> str:
    """``prefix + "<this pid>-<8 hex digits>" + suffix``: a temporary name this process owns."""
    return f"{prefix}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def clear_stale(folder: Path, prefix: str, suffix: str = "") -> list[Path]:
    """Remove the entries ``folder/<prefix><pid>-<hex><suffix>`` (files or folders) whose
    process ``pid`` no longer exists; returns what was removed. Errors are ignored: a stale
    temporary that cannot be removed costs disk space, not correctness."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)-[0-9a-f]+" + re.escape(suffix) + r"$")
    removed = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        match = pattern.match(entry.name)
        if match is None or pid_alive(int(match.group(1))):
            continue
        path = Path(entry.path)
        try:
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue
        removed.append(path)
    return removed


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with_parent(parent: int) -> None:
    """Ask the kernel to SIGKILL this process when its parent (pid ``parent``) dies (Linux
    ``prctl``; a no-op elsewhere). For pool initialisers (``initargs=(os.getpid(),)``): a
    worker must not outlive a parent killed with SIGKILL, which cannot stop its pool."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # the parent died before the call: no signal would come
        os._exit(1)
