"""``python -m bench analyze``: the analyses behind the comparison's numbers.

    python -m bench analyze cornernet --oracle heatmaps,offsets,embeddings [--weights FILE]
    python -m bench analyze budgets --runs runs/zoo [--detectors a,b]

- ``cornernet --oracle``: CornerNet's error analysis (paper Table 6): AP with the predicted
  heatmaps, then offsets, then embeddings replaced by ground truth, cumulatively
  (:mod:`detectors.cornernet.oracle`), on the validation images.
- ``budgets``: AP at several training budgets from one schedule (the snapshots that
  ``bench train --snapshots`` keeps, and ``last.pt``), each with the training seconds it took,
  so that detectors can be compared at equal images seen and at equal wall-clock time.

They write ``oracle.json``/``oracle.md`` or ``budgets.json``/``budgets.md`` into ``--out``
(atomically) and print the table. ``--out zoo`` for ``budgets`` puts the table beside the zoo
files, where ``bench run`` finds it and its report shows both budget views
(:mod:`bench.report_budget`).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.bootstrap import paired_difference_ci
from bench.checkpoints import load_checkpoint, load_detector
from bench.data.coco import CocoDetection, find_split
from bench.data.transforms import Letterbox
from bench.errors import UsageError
from bench.evaluate import detections_to_coco, evaluate_coco
from bench.report_budget import normalise_rows, run_key
from bench.results import write_json_atomic, write_text_atomic
from bench.run_measure import predict
from detectors.cornernet.oracle import ORACLES, oracle_outputs

__all__ = ["add_arguments", "budget_table", "evaluate_images", "oracle_table", "run"]

BATCH = 16
_PER_IMAGE = ("ids", "boxes", "scores", "labels")


def _val(root: Path, input_size: int, max_images: int | None) -> tuple[CocoDetection, list, Path]:
    dataset = CocoDetection.from_root(root, "val", Letterbox(input_size))
    _, ann_file = find_split(root, "val")
    n = len(dataset) if max_images is None else min(max_images, len(dataset))
    return dataset, list(range(n)), Path(ann_file)


@torch.no_grad()
def evaluate_images(
    model: torch.nn.Module, root: Path, *, input_size: int = 128, max_images: int | None = 300,
    transform=None,
) -> dict[str, Any]:  # fmt: skip
    """COCO evaluation of ``model`` on the first ``max_images`` validation images of ``root``.

    ``transform(outputs, images, targets) -> outputs`` runs between forward and decode (the
    oracle analysis uses it). Returns :func:`bench.evaluate.evaluate_coco`'s dict plus
    ``detections`` (the COCO results list) and ``img_ids``.
    """
    dataset, indices, ann_file = _val(root, input_size, max_images)
    model.eval()
    starts = range(0, len(indices), BATCH)
    batches = [(j, indices[s : s + BATCH]) for j, s in enumerate(starts)]
    parts = predict(
        model, dataset, batches, input_size=input_size, device=torch.device("cpu"),
        dtype=torch.float32, transform=transform, extras=False,
    )  # fmt: skip
    ids, boxes, scores, labels = ([x for p in parts for x in p[k]] for k in _PER_IMAGE)
    dets = detections_to_coco(ids, boxes, scores, labels, dataset.cat_ids)
    with contextlib.redirect_stdout(io.StringIO()):
        result = evaluate_coco(str(ann_file), dets, img_ids=ids, keep_eval=True)
    return {**result, "detections": dets, "img_ids": ids, "gt": str(ann_file)}


def oracle_table(
    weights: Path, root: Path, oracles: Sequence[str], *, max_images: int | None = 300
) -> list[dict[str, Any]]:
    """One row per cumulative oracle set: ``[]``, ``[o1]``, ``[o1, o2]``, ...

    Each row: ``oracles`` ("none" or "heatmaps+offsets"...), AP, AP50, AP75, and against the
    first row ``dAP``/``dAP50`` with paired-bootstrap 95% intervals; the evaluation under
    ``_result``.
    """
    model = load_detector(weights)
    if getattr(model, "name", None) != "cornernet":
        raise UsageError(f"--weights {weights}: holds {model.name!r}, expected a cornernet")

    def with_truth(chosen: list[str]):
        def transform(out, images, targets):
            tg = [{"boxes": t["boxes"], "labels": t["labels"]} for t in targets]
            return oracle_outputs(out, model.targets(out, tg), chosen)

        return transform

    rows = []
    for k in range(len(oracles) + 1):
        chosen = list(oracles[:k])
        r = evaluate_images(model, root, max_images=max_images, transform=with_truth(chosen))
        name = "+".join(chosen) or "none"
        rows.append({"oracles": name, **{m: r[m] for m in ("AP", "AP50", "AP75")}, "_result": r})
    base = rows[0]["_result"]["coco_eval"]
    for row in rows[1:]:  # paired bootstrap against the model's own heads
        d = paired_difference_ci(row["_result"]["coco_eval"], base)
        row.update(dAP=d["dAP"], dAP_ci95=d["dAP_ci95"], dAP50=d["dAP50"],
                   dAP50_ci95=d["dAP50_ci95"])  # fmt: skip
    return rows


def _snapshots(run_dir: Path) -> list[Path]:
    nested = [p.parent for p in run_dir.glob("*/last.pt")]  # ablations: runs/<name>/<base>/
    if not (run_dir / "last.pt").is_file() and len(nested) == 1:
        run_dir = nested[0]
    snaps = sorted((run_dir / "snapshots").glob("images_*.pt"))
    last = run_dir / "last.pt"
    return snaps + ([last] if last.is_file() else [])


def budget_table(
    runs: Path, root: Path, detectors: Iterable[str] | None = None, *, max_images: int | None = 300
) -> list[dict[str, Any]]:
    """AP at every snapshot of every run under ``runs`` (``runs/<name>/``), with its cost.

    Rows: ``detector``, ``schedule`` (the run's whole budget in images: a snapshot of an
    80k-image schedule is not a 40k-image run), ``seed``, ``images_seen``, ``train_seconds``
    (training time up to that step, from the checkpoint), ``finished``, AP, AP50, AP75.
    """
    names = list(detectors) if detectors else sorted(p.name for p in runs.iterdir() if p.is_dir())
    rows = []
    for name in names:
        run_dir = runs / name
        if not run_dir.is_dir():
            raise UsageError(f"--runs {runs}: no run folder {run_dir}")
        seen = set()
        for path in _snapshots(run_dir):
            ckpt = load_checkpoint(path)
            images = int(ckpt.get("images_seen") or 0)
            if images in seen:  # last.pt of a run that ended on a snapshot
                continue
            seen.add(images)
            r = evaluate_images(load_detector(path), root, max_images=max_images)
            rows.append(
                {"detector": name,
                 "schedule": int((ckpt.get("config") or {}).get("images_seen") or images),
                 "seed": int(ckpt.get("seed") or 0), "images_seen": images,
                 "train_seconds": float(ckpt.get("elapsed") or 0.0),
                 "finished": bool(ckpt.get("finished")),
                 **{m: r[m] for m in ("AP", "AP50", "AP75")}}
            )  # fmt: skip
    return rows


def _markdown(title: str, frame: pd.DataFrame) -> str:
    """A markdown table of ``frame`` (floats to 3 decimals) under a heading."""
    cells = [[f"{v:.3f}" if isinstance(v, float) else str(v) for v in row] for row in frame.values]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |"]
    lines.append("|" + "---|" * len(frame.columns))
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return f"# {title}\n\n" + "\n".join(lines) + "\n"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench analyze``."""
    parser.add_argument("what", choices=["cornernet", "budgets"], help="the analysis")
    parser.add_argument(
        "--oracle", default=",".join(ORACLES),
        help="cornernet: heads replaced by ground truth, cumulatively, in this order",
    )  # fmt: skip
    parser.add_argument("--weights", type=Path, default=Path("zoo/cornernet-tiny.pt"))
    parser.add_argument("--runs", type=Path, default=Path("runs/zoo"), help="budgets: train runs")
    parser.add_argument("--detectors", default=None, help="budgets: comma-separated run names")
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"), help="dataset root")
    parser.add_argument("--max-images", type=int, default=300, help="validation images")
    parser.add_argument("--out", type=Path, default=None, help="default reports/analysis-WHAT")


def run(args: argparse.Namespace) -> int:
    """``python -m bench analyze``; returns the exit code."""
    out = args.out or Path("reports") / f"analysis-{args.what}"
    stem = "oracle" if args.what == "cornernet" else "budgets"
    if args.what == "cornernet":
        oracles = [o.strip() for o in args.oracle.split(",") if o.strip()]
        bad = [o for o in oracles if o not in ORACLES]
        if bad or not oracles:
            raise UsageError(f"--oracle {args.oracle!r}: expected names from {', '.join(ORACLES)}")
        if not args.weights.is_file():
            raise UsageError(f"--weights {args.weights}: no such file")
        rows = oracle_table(args.weights, args.data, oracles, max_images=args.max_images)
        title = f"CornerNet oracle analysis ({args.weights}, {args.max_images} val images)"
    else:
        detectors = args.detectors.split(",") if args.detectors else None
        rows = budget_table(args.runs, args.data, detectors, max_images=args.max_images)
        title = f"AP by training budget ({args.runs}, {args.max_images} val images)"
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    previous = out / f"{stem}.json"
    if args.what == "budgets" and previous.is_file():  # keep the other runs' rows
        redone = {run_key(r) for r in public}
        kept = normalise_rows(json.loads(previous.read_text()).get("rows", []))
        public = [r for r in kept if run_key(r) not in redone] + public
    frame = pd.DataFrame(public)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / f"{stem}.json", {"title": title, "rows": public})
    write_text_atomic(out / f"{stem}.md", _markdown(title, frame))
    print(_markdown(title, frame))
    return 0
