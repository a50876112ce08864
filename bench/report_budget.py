"""The report's section on training budgets: AP at equal images seen and at equal time.

Detectors differ about 4x in seconds per training step, so "the same budget" has two
meanings. ``budgets.json`` in a run folder (``bench run`` copies it from the weights folder;
written by ``python -m bench analyze budgets``) holds, per detector, AP at several points of
one training schedule (the ``bench train --snapshots`` checkpoints and the end) with the
training seconds spent to reach each. From it:

- the equal-images view: AP50 at each number of images seen;
- the equal-time view: the time budget T is the shortest full-schedule training time of any
  detector; each detector shows the AP50 of its last checkpoint reached within T (so a slow
  detector is judged on the part of its schedule it reached in the time the fastest one
  needed for all of its own). Snapshots are coarse (10k, 20k, 40k images): the view is a
  lower bound for detectors that would have reached more between snapshots.
- a plot of AP50 against images seen and against training seconds.

Mid-schedule snapshots come from a cosine schedule not yet decayed: they understate what a
schedule of that length would reach.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["BUDGETS_NAME", "budget_blocks", "equal_time", "plot_budgets"]

BUDGETS_NAME = "budgets.json"
Block = tuple[Any, ...]


def _load(out_dir: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads((out_dir / BUDGETS_NAME).read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return [r for r in rows if isinstance(r, dict) and {"detector", "images_seen"} <= set(r)]


def equal_time(rows: Sequence[Mapping[str, Any]]) -> tuple[float | None, dict[str, Mapping]]:
    """(T, detector -> its last row with train_seconds <= T); T = the shortest finished run."""
    finished = [r["train_seconds"] for r in rows if r.get("finished")]
    if not finished:
        return None, {}
    limit = min(finished)
    best: dict[str, Mapping[str, Any]] = {}
    for r in sorted(rows, key=lambda r: r["images_seen"]):
        if r["train_seconds"] <= limit * 1.001:  # the fastest run's own end counts
            best[r["detector"]] = r
    return limit, best


def plot_budgets(rows: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """AP50 against images seen (left) and training seconds (right), one line per detector."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for name in dict.fromkeys(r["detector"] for r in rows):
        mine = sorted((r for r in rows if r["detector"] == name), key=lambda r: r["images_seen"])
        ap = [r["AP50"] for r in mine]
        axes[0].plot([r["images_seen"] for r in mine], ap, marker="o", label=name)
        axes[1].plot([r["train_seconds"] / 60 for r in mine], ap, marker="o", label=name)
    axes[0].set_xlabel("images seen")
    axes[1].set_xlabel("training minutes (one CPU core)")
    axes[0].set_ylabel("validation AP50")
    axes[1].legend(fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def budget_blocks(out_dir: str | Path) -> list[Block]:
    """The budgets section, or nothing when the run folder has no ``budgets.json``."""
    out_dir = Path(out_dir)
    rows = _load(out_dir)
    if not rows:
        return []
    budgets = sorted({r["images_seen"] for r in rows})
    names = list(dict.fromkeys(r["detector"] for r in rows))
    by = {(r["detector"], r["images_seen"]): r for r in rows}
    cells = []
    for name in names:
        ends = [r for r in rows if r["detector"] == name and r.get("finished")]
        minutes = f"{ends[-1]['train_seconds'] / 60:.1f}" if ends else "(unfinished)"
        ap = [by.get((name, b)) for b in budgets]
        cells.append([name, *(f"{r['AP50']:.3f}" if r else "-" for r in ap), minutes])
    blocks: list[Block] = [("h", 2, "Training budgets: equal images and equal time")]
    blocks.append(("table", ["detector", *(f"AP50 @ {b:,}" for b in budgets), "train min"], cells))
    limit, reached = equal_time(rows)
    if limit is not None:
        blocks.append(
            ("p", f"Equal wall-clock: T = {limit / 60:.1f} min, the shortest full training; "
             "each detector's last checkpoint within T.")
        )  # fmt: skip
        eq = [
            [n, f"{r['images_seen']:,}", f"{r['AP50']:.3f}"] if (r := reached.get(n)) else
            [n, "-", "no checkpoint within T"]
            for n in names
        ]  # fmt: skip
        blocks.append(("table", ["detector", "images seen by T", "AP50 at T"], eq))
    rel = "plots/budgets.png"
    plot_budgets(rows, out_dir / rel)
    blocks.append(("img", rel, "AP50 against images seen and against training time"))
    blocks.append(
        ("p", "Mid-schedule points come from one cosine schedule whose learning rate has not "
         "decayed yet: they understate what a schedule of that length would reach.")
    )  # fmt: skip
    return blocks
