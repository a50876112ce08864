"""The report's sections on evaluation uncertainty and errors, from saved result rows.

- :func:`ap50_marks`: each detector's AP50 against the best one of its table: ``best``,
  ``n.s.`` (its 95% bootstrap interval overlaps the best's: the difference is not
  significant) or ``lower`` (the intervals are disjoint);
- :func:`significance_block`: the pairs of detectors whose AP50 intervals overlap;
- :func:`tide_blocks`: the TIDE table (dAP50 and error count per type) and bar plot.

Rows carry ``AP_ci95`` / ``AP50_ci95`` (``[low, high]``, :mod:`bench.results.bootstrap`) and
``tide``
/ ``tide_counts`` / ``tide_ap50`` (:mod:`bench.results.tide`); rows of older runs without them are
left out. Every batch-size row of a detector shares its evaluation: the first one is used.
Overlapping 95% intervals are a conservative test: disjoint intervals mean a significant
difference, overlapping ones do not prove equality.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results import plots
from bench.results.tide import LABELS

__all__ = ["ap50_marks", "overlapping_pairs", "significance_block", "tide_blocks"]

Block = tuple[Any, ...]


def _interval(row: Mapping[str, Any], field: str = "AP50_ci95") -> tuple[float, float] | None:
    ci = row.get(field)
    if not isinstance(ci, (list, tuple)) or len(ci) != 2 or None in ci:
        return None
    return float(ci[0]), float(ci[1])


def _firsts(rows: Sequence[Mapping[str, Any]], field: str) -> dict[str, Mapping[str, Any]]:
    """detector -> its first row that has ``field``."""
    out: dict[str, Mapping[str, Any]] = {}
    for r in rows:
        if r.get(field) is not None:
            out.setdefault(str(r["detector"]), r)
    return out


def ap50_marks(rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """detector -> ``best`` / ``n.s.`` / ``lower`` (module doc); detectors without an AP50
    interval are absent."""
    firsts = {d: r for d, r in _firsts(rows, "AP50_ci95").items() if _interval(r)}
    if not firsts:
        return {}
    best = max(firsts, key=lambda d: float(firsts[d]["AP50"]))
    lo, hi = _interval(firsts[best])
    marks = {}
    for d, r in firsts.items():
        a, b = _interval(r)
        marks[d] = "best" if d == best else ("n.s." if a <= hi and lo <= b else "lower")
    return marks


def overlapping_pairs(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, str]]:
    """Pairs of detectors (row order) whose AP50 95% intervals overlap."""
    ivs = [(d, iv) for d, r in _firsts(rows, "AP50_ci95").items() if (iv := _interval(r))]
    return [
        (da, db)
        for i, (da, (a0, a1)) in enumerate(ivs)
        for db, (b0, b1) in ivs[i + 1 :]
        if a0 <= b1 and b0 <= a1
    ]


def significance_block(rows: Sequence[Mapping[str, Any]]) -> Block | None:
    """A paragraph naming the detector pairs not significantly different in AP50 (None when
    fewer than two rows carry intervals)."""
    if len(_firsts(rows, "AP50_ci95")) < 2:
        return None
    pairs = overlapping_pairs(rows)
    text = "; ".join(f"{a} / {b}" for a, b in pairs) if pairs else "none"
    return ("p", f"Not significantly different in AP50 (95% intervals overlap): {text}.")


def _tide_cell(row: Mapping[str, Any], name: str) -> str:
    dap = (row.get("tide") or {}).get(name)
    count = (row.get("tide_counts") or {}).get(name)
    if dap is None:
        return "-"
    return f"{dap:.3f}" + (f" ({count:,})" if count is not None else "")


def tide_blocks(rows: Sequence[Mapping[str, Any]], out_dir: str | Path) -> list[Block]:
    """The TIDE section: heading, explanation, table and ``plots/tide.png`` (written here);
    empty when no row has a TIDE breakdown."""

    firsts = _firsts(rows, "tide")
    if not firsts:
        return []
    head = ["detector", "AP50 (TIDE)", *(f"{n} dAP50 (errors)" for n in LABELS.values())]
    cells = [
        [d, "-" if r.get("tide_ap50") is None else f"{r['tide_ap50']:.3f}"]
        + [_tide_cell(r, k) for k in LABELS]
        for d, r in firsts.items()
    ]
    plots.plot_tide(list(firsts.values()), Path(out_dir) / "plots" / "tide.png")
    return [
        ("h", 2, "TIDE error breakdown"),
        ("p", "TIDE (Bolya et al., ECCV 2020) at IoU 0.5: the AP50 each error type costs, as the "
         "AP50 gained when an oracle fixes that type alone (Cls: right box, wrong class; Loc: "
         "right class, IoU in [0.1, 0.5]; Both: wrong class and IoU in (0.1, 0.5); Dupe: a "
         "second detection of a matched object; Bkg: IoU <= 0.1 with every object; Miss: an "
         "object no detection explains). Counts of errors in parentheses. AP50 (TIDE) is "
         "TIDE's own AP50 (it counts classes with detections but no objects, as 0)."),
        ("table", head, cells),
        ("img", "plots/tide.png", "TIDE: AP50 gained by fixing each error type"),
    ]  # fmt: skip
