"""Named points where a test can hold the process, to signal it at exactly that moment.

``fault_point(name)`` is called at a few places where an interruption matters: between a
temporary file's fsync and its rename (``write:<file name>``, in
:func:`bench.results.store.write_atomic`) and right after a training checkpoint is saved
(``checkpoint-saved``, in :mod:`bench.train.loop`). It does nothing (one ``os.environ``
lookup) unless the environment asks for that point:

- ``CORNERBENCH_FAULT_AT``: the point's name, e.g. ``write:last.pt``;
- ``CORNERBENCH_FAULT_COUNT``: which time the point is reached to hold at (default 1: the
  first), e.g. 2 to stop in the second write of ``last.pt``, when a previous one exists;
- ``CORNERBENCH_FAULT_MARKER``: a path; the point creates an empty file there, then waits
  while that file exists (at most ``HOLD_SECONDS``).

The test (``tests/reliability/test_signals.py``) starts a command with these set, waits for
the marker, sends SIGINT, SIGTERM or SIGKILL, and removes the marker: a handler that only
records the signal (training's) lets the process go on from the point it was held at, as it
would have after a signal at that moment.
"""

from __future__ import annotations

import os
import time

__all__ = ["HOLD_SECONDS", "fault_point"]

HOLD_SECONDS = 60.0  # the longest a point holds: a test that lost its process must not hang

_hits: dict[str, int] = {}  # times each requested point was reached in this process


def fault_point(name: str) -> None:
    """Hold here if ``CORNERBENCH_FAULT_AT`` is ``name`` (module docstring); else return."""
    if os.environ.get("CORNERBENCH_FAULT_AT") != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(os.environ.get("CORNERBENCH_FAULT_COUNT", "1")):
        return
    marker = os.environ["CORNERBENCH_FAULT_MARKER"]
    os.close(os.open(marker, os.O_WRONLY | os.O_CREAT, 0o666))  # an empty file
    deadline = time.monotonic() + HOLD_SECONDS
    while os.path.exists(marker) and time.monotonic() < deadline:
        time.sleep(0.01)
