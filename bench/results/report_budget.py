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

Those views use the main schedule (the budget most seed-0 runs were trained for). Rows of
other schedules (e.g. an 80k-image run of a detector still rising at 40k) get their own
table, and runs repeated with other seeds a seed-spread table (mean, standard deviation,
range of the finished runs' AP and AP50).

Mid-schedule snapshots come from a cosine schedule not yet decayed: they are not what a
schedule of that length would reach (usually less; RetinaNet, SSD and YOLOv3 at 40k images
of an 80k schedule scored more than their finished 40k schedules).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bench.results.store import write_atomic

__all__ = [
    "BUDGETS_NAME",
    "budget_blocks",
    "equal_time",
    "normalise_rows",
    "plot_budgets",
    "run_key",
    "seed_spread",
]

BUDGETS_NAME = "budgets.json"
Block = tuple[Any, ...]


def normalise_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Rows with ``seed`` and ``schedule`` filled in (files written before they were recorded:
    seed 0, and the schedule is the largest ``images_seen`` of that detector's such rows)."""
    rows = [dict(r) for r in rows if isinstance(r, dict) and {"detector", "images_seen"} <= set(r)]
    longest: dict[str, int] = {}
    for r in rows:
        if r.get("schedule") is None:
            longest[r["detector"]] = max(longest.get(r["detector"], 0), int(r["images_seen"]))
    for r in rows:
        r.setdefault("seed", 0)
        if r.get("schedule") is None:
            r["schedule"] = longest[r["detector"]]
    return rows


def run_key(row: Mapping[str, Any]) -> tuple[str, int, int]:
    """(detector, schedule, seed): the training run a row belongs to."""
    return str(row["detector"]), int(row.get("schedule") or 0), int(row.get("seed") or 0)


def _load(out_dir: Path) -> list[dict[str, Any]]:
    try:
        rows = json.loads((out_dir / BUDGETS_NAME).read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    return normalise_rows(rows) if isinstance(rows, list) else []


def _main_schedule(rows: Sequence[Mapping[str, Any]]) -> int:
    """The schedule most seed-0 runs were trained for (the smallest on a tie)."""
    counts: dict[int, int] = {}
    for r in rows:
        if r["seed"] == 0 and r["images_seen"] == r["schedule"]:
            counts[r["schedule"]] = counts.get(r["schedule"], 0) + 1
    if not counts:
        return min(r["schedule"] for r in rows)
    return min(counts, key=lambda s: (-counts[s], s))


def seed_spread(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per (detector, schedule) trained with two or more seeds: the finished runs' spread.

    Keys: detector, schedule, seeds (list), AP_mean, AP_sd, AP50_mean, AP50_sd, AP50_min,
    AP50_max (sd: sample standard deviation, n - 1).
    """
    ends: dict[tuple[str, int], dict[int, Mapping[str, Any]]] = {}
    for r in rows:
        if r.get("finished"):
            ends.setdefault((r["detector"], r["schedule"]), {})[r["seed"]] = r
    out = []
    for (name, schedule), by_seed in ends.items():
        if len(by_seed) < 2:
            continue
        seeds = sorted(by_seed)
        ap = np.array([by_seed[s]["AP"] for s in seeds], dtype=float)
        ap50 = np.array([by_seed[s]["AP50"] for s in seeds], dtype=float)
        out.append(
            {"detector": name, "schedule": schedule, "seeds": seeds,
             "AP_mean": float(ap.mean()), "AP_sd": float(ap.std(ddof=1)),
             "AP50_mean": float(ap50.mean()), "AP50_sd": float(ap50.std(ddof=1)),
             "AP50_min": float(ap50.min()), "AP50_max": float(ap50.max())}
        )  # fmt: skip
    return out


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
    import matplotlib  # matplotlib: imported on use (start-up time)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # matplotlib: imported on use (start-up time)

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
    write_atomic(path, lambda fh: fig.savefig(fh, format="png", dpi=110), binary=True)
    plt.close(fig)
    return path


def budget_blocks(out_dir: str | Path) -> list[Block]:
    """The budgets section, or nothing when the run folder has no ``budgets.json``."""
    out_dir = Path(out_dir)
    every = _load(out_dir)
    if not every:
        return []
    main = _main_schedule(every)
    rows = [r for r in every if r["seed"] == 0 and r["schedule"] == main]
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
    blocks.append(("p", f"One cosine schedule of {main:,} images per detector (seed 0)."))
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
         "decayed yet: they are not what a schedule of that length would reach (usually "
         "less, but a detector limited by steps at a high learning rate can score more: "
         "compare a longer schedule's snapshot with the finished shorter one, below).")
    )  # fmt: skip
    return blocks + _other_schedule_blocks(every, main) + _seed_blocks(every)


def _other_schedule_blocks(rows: Sequence[Mapping[str, Any]], main: int) -> list[Block]:
    other = [r for r in rows if r["seed"] == 0 and r["schedule"] != main]
    if not other:
        return []
    budgets = sorted({r["images_seen"] for r in other})
    by = {(run_key(r), r["images_seen"]): r for r in other}
    cells = []
    for key in dict.fromkeys(run_key(r) for r in other):
        ap = [by.get((key, b)) for b in budgets]
        cells.append([key[0], f"{key[1]:,}", *(f"{r['AP50']:.3f}" if r else "-" for r in ap)])
    return [
        ("h", 3, "Longer schedules"),
        ("p", f"Detectors also trained on a schedule other than {main:,} images (same recipe, "
         "seed 0), AP50 at its snapshots. Not an equal budget: read it as how far each would "
         "go, not as the comparison."),
        ("table", ["detector", "schedule", *(f"AP50 @ {b:,}" for b in budgets)], cells),
    ]  # fmt: skip


def _seed_blocks(rows: Sequence[Mapping[str, Any]]) -> list[Block]:
    spread = seed_spread(rows)
    if not spread:
        return []
    cells = [
        [s["detector"], f"{s['schedule']:,}", ",".join(map(str, s["seeds"])),
         f"{s['AP_mean']:.3f} ± {s['AP_sd']:.3f}", f"{s['AP50_mean']:.3f} ± {s['AP50_sd']:.3f}",
         f"{s['AP50_min']:.3f} - {s['AP50_max']:.3f}"]
        for s in spread
    ]  # fmt: skip
    return [
        ("h", 3, "Seeds"),
        ("p", "The same detector and schedule trained with different seeds (initialisation and "
         "data order): mean ± sample standard deviation of the finished runs. A difference "
         "between two detectors smaller than this spread is not a difference of method."),
        ("table", ["detector", "schedule", "seeds", "AP", "AP50", "AP50 range"], cells),
    ]  # fmt: skip
