"""The report's section on the CornerNet paper's claims, measured on this run's detections.

Each claim is a difference between two rows of the run (same images, same backbone, same
budget): AP(a) - AP(b) and AP50(a) - AP50(b) with 95% paired-bootstrap intervals
(:func:`bench.results.bootstrap.paired_difference_ci`: both detectors are scored on the same
resampled images, so per-image difficulty cancels). A claim's direction holds when the
difference is positive; it is significant when the AP50 interval excludes 0. Rows missing
from the run (e.g. ``--no-ablations``) leave their claim out. The paper's numbers are COCO
minival after 250k iterations on Hourglass-104 (Law & Deng, ECCV 2018, Tables 1, 2 and 4);
nothing here is tuned to reproduce them.

``oracle.json`` in the run folder (``python -m bench analyze cornernet --out RUN``) adds the
oracle table (paper Table 6).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from bench.results.bootstrap import paired_difference_ci
from bench.results.coco_eval import evaluate_coco

__all__ = ["CLAIMS", "claim_blocks", "measure_claims"]

Block = tuple[Any, ...]

#: (claim, detector a, detector b, the paper's AP for b -> a)
CLAIMS: tuple[tuple[str, str, str, str], ...] = (
    ("corner pooling helps (Table 1)", "cornernet", "cornernet-no-corner-pool", "36.5 -> 38.4"),
    ("Gaussian penalty reduction helps (Table 2, none vs object-dependent)", "cornernet",
     "cornernet-no-gaussian", "32.9 -> 38.4"),
    ("corners beat anchors on the same hourglass (Table 4)", "cornernet", "retinanet",
     "32.9 -> 38.4"),
    ("corners beat anchors: two-stage", "cornernet", "faster_rcnn", "-"),
    ("corners beat anchors: SSD", "cornernet", "ssd", "-"),
    ("corners beat anchors: YOLOv3", "cornernet", "yolov3", "-"),
    ("fitted anchors beat the paper's (RetinaNet)", "retinanet", "retinanet-paper-anchors", "-"),
    ("fitted anchors beat the paper's (Faster R-CNN)", "faster_rcnn",
     "faster_rcnn-paper-anchors", "-"),
    ("fitted anchors beat the paper's (YOLOv3)", "yolov3", "yolov3-paper-anchors", "-"),
    ("fitted anchors beat the paper's (SSD)", "ssd", "ssd-paper-anchors", "-"),
)  # fmt: skip


def _evals(out_dir: Path, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """detector -> its COCOeval (after evaluate()) from the saved detections, trained rows only."""
    gt = out_dir / "annotations.json"
    evals: dict[str, Any] = {}
    for r in rows:
        name, rel = r.get("detector"), r.get("detections")
        if name in evals or r.get("weights") == "random" or not rel or not gt.is_file():
            continue
        path = (out_dir / rel).resolve()
        if out_dir.resolve() not in path.parents or not path.is_file():
            continue
        with contextlib.redirect_stdout(io.StringIO()):
            evals[name] = evaluate_coco(gt, path, keep_eval=True)["coco_eval"]
    return evals


def measure_claims(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> list[dict]:
    """One dict per claim whose two detectors have trained rows in the run."""
    evals = _evals(Path(out_dir), rows)
    out = []
    for claim, a, b, paper in CLAIMS:
        if a in evals and b in evals:
            out.append({"claim": claim, "a": a, "b": b, "paper": paper,
                        **paired_difference_ci(evals[a], evals[b])})  # fmt: skip
    return out


def _ci(value: float, ci: Sequence[float] | None) -> str:
    return f"{value:+.3f}" + (f" [{ci[0]:+.3f}, {ci[1]:+.3f}]" if ci else "")


def claim_blocks(out_dir: str | Path, rows: Sequence[Mapping[str, Any]]) -> list[Block]:
    """The claims table and, when ``oracle.json`` is in the run folder, the oracle table."""
    out_dir = Path(out_dir)
    blocks: list[Block] = []
    measured = measure_claims(out_dir, rows)
    if measured:
        blocks.append(("h", 2, "The paper's claims, measured on this run"))
        cells = [
            [m["claim"], f"{m['a']} vs {m['b']}", m["paper"], _ci(m["dAP"], m["dAP_ci95"]),
             _ci(m["dAP50"], m["dAP50_ci95"]), "yes" if m["dAP"] > 0 else "no",
             "yes" if m["significant"] else "no"]
            for m in measured
        ]  # fmt: skip
        headers = ["claim", "a vs b", "paper AP b -> a", "dAP [95% CI]", "dAP50 [95% CI]",
                   "direction holds", "significant (AP50)"]  # fmt: skip
        blocks.append(("table", headers, cells))
        blocks.append(
            ("p", "Differences a - b on the same validation images; intervals from 1,000 paired "
             "bootstrap resamples (seed 0). Significant: the AP50 interval excludes 0. The "
             "paper's numbers (COCO, Hourglass-104, 250k iterations) are for orientation only.")
        )  # fmt: skip
    try:
        oracle = json.loads((out_dir / "oracle.json").read_text())
    except (OSError, ValueError):
        return blocks
    blocks.append(("h", 2, "CornerNet oracle analysis (paper Table 6)"))
    blocks.append(("p", str(oracle.get("title", ""))))
    cells = [
        [r["oracles"], f"{r['AP']:.3f}", f"{r['AP50']:.3f}", f"{r['AP75']:.3f}",
         _ci(r["dAP"], r.get("dAP_ci95")) if "dAP" in r else "-"]
        for r in oracle.get("rows", [])
    ]  # fmt: skip
    blocks.append(("table", ["ground truth for", "AP", "AP50", "AP75", "dAP vs none"], cells))
    blocks.append(
        ("p", "Paper (COCO minival): 38.4 AP; with ground-truth heatmaps 73.1; with "
         "ground-truth heatmaps and offsets 86.1. The embeddings oracle is ours: it separates "
         "grouping errors (corners of two objects paired) from corner errors.")
    )  # fmt: skip
    return blocks
