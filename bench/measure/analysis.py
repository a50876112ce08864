"""The analyses behind the comparison's numbers (the command is :mod:`bench.commands.analyze`):

- :func:`oracle_table`: CornerNet's error analysis (paper Table 6): AP with the predicted
  heatmaps, then offsets, then embeddings replaced by ground truth, cumulatively
  (:mod:`detectors.cornernet.oracle`), on the validation images.
- :func:`budget_table`: AP at several training budgets from one schedule (the snapshots that
  ``bench train --snapshots`` keeps, and ``last.pt``), each with the training seconds it took,
  so that detectors can be compared at equal images seen and at equal wall-clock time.
- :func:`evaluate_images`: the evaluation loop both share with ``bench run``.
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch

from bench.data.coco import CocoDetection, find_split
from bench.data.transforms import Letterbox
from bench.errors import UsageError
from bench.measure.detector import predict
from bench.results.bootstrap import paired_difference_ci
from bench.results.coco_eval import detections_to_coco, evaluate_coco
from bench.train.checkpoints import load_checkpoint, load_detector
from detectors.cornernet.oracle import oracle_outputs

__all__ = ["budget_table", "evaluate_images", "oracle_table"]

BATCH = 16
_PER_IMAGE = ("ids", "boxes", "scores", "labels")


def _val(root: Path, input_size: int, max_images: int | None) -> tuple[CocoDetection, list, Path]:
    dataset = CocoDetection.from_root(root, "val", Letterbox(input_size))
    _, ann_file = find_split(root, "val")
    indices, _ = dataset.readable(range(len(dataset)), max_images)  # unreadable: left out
    return dataset, indices, Path(ann_file)


@torch.no_grad()
def evaluate_images(
    model: torch.nn.Module, root: Path, *, input_size: int = 128, max_images: int | None = 300,
    transform=None,
) -> dict[str, Any]:  # fmt: skip
    """COCO evaluation of ``model`` on the first ``max_images`` validation images of ``root``.

    ``transform(outputs, images, targets) -> outputs`` runs between forward and decode (the
    oracle analysis uses it). Returns :func:`bench.results.coco_eval.evaluate_coco`'s dict plus
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
