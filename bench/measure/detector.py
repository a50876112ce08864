"""One detector's rows of ``python -m bench run``: build, COCO evaluation, sample, latency.

Evaluation is batched (:data:`EVAL_BATCH` images per forward, in the order of the evaluated
indices) and, under ``torchrun``, sharded by batch: rank ``r`` runs batches ``r, r + W, ...``
(:func:`bench.distributed.shard`), so every image is processed in the same batch as on one
process and gives the same outputs. Rank 0 gathers the per-image detections
(:func:`bench.distributed.gather_outcomes`), puts them back in batch order and runs
pycocotools once; its AP, detections file and matcher statistics are those of a
single-process run. From that evaluation it also derives the row's 95% bootstrap intervals
of AP and AP50 over the images (:mod:`bench.results.bootstrap`) and the TIDE error breakdown at AP50
(:mod:`bench.results.tide`). Latency is timed on rank 0 alone, after the evaluation, while the other
ranks wait at a barrier (on a GPU they hold no work on rank 0's device; on a CPU their
waiting processes may share its cores). Only rank 0 writes the sample plot and the rows.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from rich.markup import escape

from bench.anchors.coverage import anchor_coverage, load_boxes
from bench.data.coco import CocoDetection
from bench.data.stream import normalize_images
from bench.data.transforms import Letterbox, collate_detection, invert_boxes
from bench.distributed import broadcast_from_main, gather_outcomes, on_main, shard
from bench.errors import UsageError
from bench.measure.latency import (
    flatten_latency,
    load_raw_images,
    measure_latency,
)
from bench.results.bootstrap import bootstrap_ci
from bench.results.coco_eval import STAT_NAMES, detections_to_coco, evaluate_coco
from bench.results.plots import plot_sample
from bench.results.tide import tide_errors
from bench.spec import RunSpec, Variant
from bench.train.checkpoints import load_detector
from detectors.base import float32_outputs

if TYPE_CHECKING:
    from pycocotools.cocoeval import COCOeval

__all__ = [
    "EvalSet",
    "ASSIGN_IMAGES",
    "EVAL_BATCH",
    "error_analysis",
    "evaluate",
    "measure_variant",
    "predict",
]

EVAL_BATCH = 8  # images per forward during evaluation (not timed)
ASSIGN_IMAGES = 32  # images whose matcher assignment is averaged into the row


@dataclass
class EvalSet:
    """The validation images of a run: ``dataset[indices]``, their ground truth written to
    ``gt_path``; ``val_boxes(size)`` their letterboxed boxes (read once, for anchor coverage).

    ``indices`` are the first ``max_images`` images that decode; ``skipped`` ({file name:
    why}) the unreadable ones met on the way: they are not evaluated, not in the ground
    truth and not timed (rows and ``results.json`` name them as ``skipped_images``)."""

    dataset: CocoDetection
    indices: list[int]
    gt_path: Path
    root: Path
    skipped: dict[str, str] = field(default_factory=dict)
    _boxes: dict[int, list] = field(default_factory=dict)

    @classmethod
    def load(cls, spec: RunSpec) -> EvalSet:
        data = spec.data
        dataset = CocoDetection.from_root(data.root, data.split, Letterbox(data.input_size))
        found = on_main(lambda: dataset.readable(range(len(dataset)), data.max_images))
        indices, skipped = broadcast_from_main(found)  # every rank evaluates the same images
        if not indices:
            name, why = next(iter(skipped.items()))
            raise UsageError(
                f"no readable image in {dataset.image_dir} ({len(dataset)} listed in "
                f"{dataset.ann_file}; e.g. {name}: {why})"
            )
        return cls(dataset, indices, spec.out / "annotations.json", data.root, skipped)

    def file_names(self) -> list[str]:
        """The evaluated images' file names, in order."""
        return [self.dataset.coco.imgs[self.dataset.ids[i]]["file_name"] for i in self.indices]

    def fingerprint(self) -> str:
        """The evaluated ground truth's identity, kept in ``run.json``: the sha256 of the
        source annotation file and of the evaluated image names."""
        ann = hashlib.sha256(self.dataset.ann_file.read_bytes()).hexdigest()
        names = hashlib.sha256("\n".join(self.file_names()).encode()).hexdigest()
        return f"sha256:{ann} + {len(self.indices)} images sha256:{names[:16]}"

    def val_boxes(self, size: int) -> list:
        if size not in self._boxes:
            boxes = load_boxes(self.root, "val", size)  # in the JSON's image order
            order = {im["id"]: i for i, im in enumerate(self.dataset.coco.dataset["images"])}
            self._boxes[size] = [boxes[order[self.dataset.ids[i]]] for i in self.indices]
        return self._boxes[size]

    def described(self) -> dict[str, Any]:
        """The ``dataset`` entry of ``run.json``."""
        out = {
            "root": str(self.root), "split": "val", "images": len(self.indices),
            "annotations": str(self.gt_path), "source": str(self.dataset.ann_file),
        }  # fmt: skip
        if self.skipped:  # only then: folders written before this key resume
            out["skipped_images"] = sorted(self.skipped)
        return out


def _build(v: Variant, w, spec: RunSpec, num_classes: int, builders) -> torch.nn.Module:
    if w.path is not None:
        model = load_detector(w.path, "cpu", builder=builders[v.base])
    else:
        torch.manual_seed(0)
        model = builders[v.base](
            num_classes, backbone=spec.backbone, preset=spec.data.preset, **v.kwargs
        )
    return model.to(device=spec.device, dtype=spec.torch_dtype).eval()


def predict(
    model, dataset, batches: Sequence[tuple[int, list[int]]], *, input_size: int, device,
    dtype, bar: Callable[[int], Any] | None = None, transform: Callable | None = None,
    extras: bool = True,
) -> list[dict[str, Any]]:  # fmt: skip
    """Inference on numbered batches ``(j, dataset indices)``; one dict per batch.

    ``transform(outputs, images, targets) -> outputs`` runs between forward and decode (the
    oracle analysis, :mod:`bench.measure.analysis`); ``extras=False`` skips ``assign`` and
    ``sample``.

    Each dict: ``batch`` (j), ``ids`` (COCO image ids), per image ``boxes`` (M, 4) xyxy in
    original pixels, ``scores`` (M,), ``labels`` (M,), all on the CPU; ``assign``: the
    detector's ``assignment_stats`` (per-image means) when ``j * EVAL_BATCH <
    ASSIGN_IMAGES``, else None; ``sample`` for batch 0: ``(image (3, S, S) in [0, 1],
    Detections, heatmaps)`` of its first image.
    """

    loader = torch.utils.data.DataLoader(
        dataset, batch_sampler=[idx for _, idx in batches], collate_fn=collate_detection,
        num_workers=0,
    )  # fmt: skip
    out_list = []
    with torch.inference_mode():
        for (j, idx), (images, targets) in zip(batches, loader):
            out = float32_outputs(model(normalize_images(images.to(device)).to(dtype)))
            raw, out = out, (out if transform is None else transform(out, images, targets))
            dets = model.decode(out, [(input_size, input_size)] * len(targets))
            part: dict[str, Any] = {"batch": j, "n": len(targets), "assign": None}
            part.update(ids=[], boxes=[], scores=[], labels=[])
            want = [dataset.ids[i] for i in idx]
            if [t["image_id"] for t in targets] != want:  # a file went bad: never count twice
                raise RuntimeError(f"images {want} could not all be read; evaluation stopped")
            for d, t in zip(dets, targets):
                part["ids"].append(t["image_id"])
                part["boxes"].append(invert_boxes(d.boxes.float().cpu(), t["meta"]))
                part["scores"].append(d.scores.float().cpu())
                part["labels"].append(d.labels.cpu())
            if extras and j * EVAL_BATCH < ASSIGN_IMAGES:
                tg = [{k: t[k].to(device) for k in ("boxes", "labels")} for t in targets]
                part["assign"] = {k: float(v) for k, v in model.assignment_stats(raw, tg).items()}
            if extras and j == 0:
                part["sample"] = (images[0], dets[0].to("cpu"), _heatmaps(out))
            out_list.append(part)
            if bar is not None:
                bar(len(targets))
    return out_list


def evaluate(model, dataset, indices, *, input_size, device, dtype, gt_path, det_path, bar=None):
    """COCO evaluation of ``model`` on ``dataset[indices]``, writing ``det_path`` (rank 0).

    Returns, on rank 0, (evaluate_coco's dict, per-image means of ``assignment_stats`` over
    the first ASSIGN_IMAGES images, a sample ``(image (3, S, S) in [0, 1], Detections,
    heatmaps)``); None on the other ranks (module doc: sharding).
    """
    batches = [list(indices[i : i + EVAL_BATCH]) for i in range(0, len(indices), EVAL_BATCH)]
    mine = shard(list(enumerate(batches)))
    gathered = gather_outcomes(
        lambda: predict(
            model, dataset, mine, input_size=input_size, device=device, dtype=dtype, bar=bar
        )
    )
    if gathered is None:
        return None
    return _score(sorted((p for ps in gathered for p in ps), key=lambda p: p["batch"]),
                  dataset, gt_path, det_path)  # fmt: skip


def _score(parts: list[dict[str, Any]], dataset, gt_path, det_path):
    """Rank 0: the gathered batches (in batch order) -> (COCO result, assignment, sample)."""

    ids, boxes, scores, labels = [], [], [], []
    assign: dict[str, float] = {}
    assigned = 0
    for p in parts:
        ids += p["ids"]
        boxes += p["boxes"]
        scores += p["scores"]
        labels += p["labels"]
        if p["assign"] is not None:
            for k, v in p["assign"].items():
                assign[k] = assign.get(k, 0.0) + v * p["n"]
            assigned += p["n"]
    coco = detections_to_coco(ids, boxes, scores, labels, dataset.cat_ids)
    result = evaluate_coco(gt_path, coco, results_path=det_path, keep_eval=True)
    result.update(error_analysis(result.pop("coco_eval")))
    sample = parts[0]["sample"] if parts else None
    return result, {k: v / max(assigned, 1) for k, v in assign.items()}, sample


def error_analysis(coco_eval: COCOeval) -> dict[str, Any]:
    """Row fields from a COCOeval after ``evaluate()`` (its images and capped detections):
    ``AP_ci95``, ``AP50_ci95`` (:func:`bench.results.bootstrap.bootstrap_ci`, [low, high] or None),
    ``tide`` / ``tide_counts`` ({type: dAP50} / {type: errors}) and ``tide_ap50``
    (:func:`bench.results.tide.tide_errors`)."""

    out: dict[str, Any] = dict(bootstrap_ci(coco_eval))
    dets = coco_eval.cocoDt.dataset["annotations"]
    tide = tide_errors(coco_eval.cocoGt, dets, img_ids=coco_eval.params.imgIds)
    out.update(tide=tide["dap"], tide_counts=tide["counts"], tide_ap50=tide["ap50"])
    return out


def measure_variant(
    v: Variant, w, spec: RunSpec, evalset: EvalSet, builders, store, progress
) -> None:
    """Evaluate, time and store (rank 0: ``store``) every batch row of variant ``v`` with
    weights ``w`` (:class:`bench.measure.suite.Weights`) on ``evalset``."""
    device, dtype, out, size = spec.device, spec.torch_dtype, spec.out, spec.data.input_size
    built: dict[str, torch.nn.Module] = {}  # every rank builds; one failure stops them all
    num_classes = evalset.dataset.num_classes
    gather_outcomes(lambda: built.update(model=_build(v, w, spec, num_classes, builders)))
    model = built["model"]
    det_rel = f"detections/{v.name}.json"
    t0 = time.perf_counter()
    task = progress.add_task(f"{escape(v.name)}: evaluating", total=len(evalset.indices))
    evaluated = evaluate(
        model, evalset.dataset, evalset.indices, input_size=size, device=device,
        dtype=dtype, gt_path=evalset.gt_path, det_path=out / det_rel,
        bar=lambda n: progress.advance(task, n),
    )  # fmt: skip
    if evaluated is None:  # not rank 0: its share is done
        return
    result, assign, (image, dets, heat) = evaluated
    eval_seconds = time.perf_counter() - t0
    sample_rel = f"plots/sample_{v.name}.png"
    plot_sample(
        out / sample_rel, image, dets, evalset.dataset.class_names, heatmaps=heat,
        title=f"{v.name} ({w.kind} weights)",
    )  # fmt: skip
    coverage = (  # anchor-free detectors place no anchors
        anchor_coverage(model, evalset.val_boxes(size), size)
        if hasattr(model, "anchor_grid")
        else {}
    )
    base = {"detector": v.name, "model": v.base, "build_kwargs": v.kwargs}
    base.update(backbone=spec.backbone, input_size=size, device=device.type, dtype=spec.dtype)
    base.update(weights=w.kind, weights_file=str(w.path) if w.path else None, weights_note=w.note)
    base.update(
        params=sum(p.numel() for p in model.parameters()),
        backbone_params=model.backbone_parameters(),
        head_params=model.head_parameters(),
        anchors_per_image=int(model.anchors_per_image(size, size)),
        positives_per_image=assign.get("positives"),
        negatives_per_image=assign.get("negatives"),
        ignored_per_image=assign.get("ignored"),
        assignment=assign,
        coverage50=coverage.get("coverage50"),
        coverage70=coverage.get("coverage70"),
        coverage_by_size=coverage.get("by_size"),
        **{k: result[k] for k in STAT_NAMES},
        **{k: result[k] for k in ("AP_ci95", "AP50_ci95", "tide", "tide_counts", "tide_ap50")},
        per_class=result["per_class"],
        num_images=result["num_images"],
        skipped_images=sorted(evalset.skipped),
        num_detections=result["num_detections"],
        detections=det_rel,
        sample=sample_rel,
        eval_seconds=eval_seconds,
        train_seconds_per_iter=w.info.get("seconds_per_iter"),
        train_images_seen=w.info.get("images_seen"),
        loss_curve=w.info.get("loss_curve"),
    )
    # the first readable evaluated images (EvalSet left the unreadable ones out)
    raw = load_raw_images([evalset.dataset.path(i) for i in evalset.indices[: spec.timing.images]])
    for batch in spec.timing.batches:
        progress.update(task, description=f"{escape(v.name)}: timing batch {batch}")
        stats = measure_latency(
            model, raw, input_size=size, device=device, dtype=dtype, batch=batch,
            warmup=spec.timing.warmup, iters=spec.timing.iters,
        )  # fmt: skip
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else None  # busy machine?
        store.add_row({**base, "batch": batch, **flatten_latency(stats), "load_avg_1m": load})
    progress.update(task, description=f"{escape(v.name)}: done")


def _heatmaps(outputs: Any) -> dict[str, torch.Tensor]:
    """CornerNet's corner heatmaps of the first image, max over classes: {"tl", "br"}: (h, w)."""
    stacks = outputs.get("stacks") if isinstance(outputs, dict) else None
    heads = stacks[-1] if stacks else {}
    return {
        k[:2]: heads[k][0].sigmoid().amax(0).cpu() for k in ("tl_heat", "br_heat") if k in heads
    }
