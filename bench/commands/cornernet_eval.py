"""``python -m bench cornernet-eval``: a release CornerNet checkpoint, tested as the release does.

For a user who owns ``CornerNet_500000.pkl`` and COCO 2017::

    python -m bench cornernet-eval --checkpoint CornerNet_500000.pkl --data coco:/data/coco \\
        --device cuda [--flip] [--multi-scale] [--max-images N] [--out DIR]

The checkpoint is read with :func:`detectors.cornernet.load_official_checkpoint` and loaded
strictly into the registry's CornerNet (``--backbone hg104``: the release; any preset whose
shapes match the file), with as many classes as the dataset has categories, in the order of
their sorted ids (COCO's 1..90 for 80 classes: the release's order). Each validation image is
then run through :meth:`CornerNetDetector.detect`, the release's test pipeline
(:mod:`detectors.cornernet.inference`): the image at its own size, centred in a
``size | 127`` input, normalised with the release's COCO statistics, K 100 corners, 3 x 3
NMS, ae threshold 0.5, 1000 pairs, per-class Gaussian soft-NMS (sigma 0.5), top 100; flip
testing and the multi-scale scales (0.5 to 1.5) on request. Boxes come back in the image's
pixels and are scored with pycocotools (:func:`bench.results.coco_eval.evaluate_coco`).

``--out`` (default ``reports/cornernet-eval/<dataset>-<date>/``) receives ``detections.json``
(COCO results), ``results.json`` (the 12 statistics, per-class AP, options, environment) and,
while running, ``partial.json``: the detections of the images done so far, saved every 100
images, so that a rerun with the same options resumes where the last one stopped.
"""

from __future__ import annotations

import argparse
import datetime
import json
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.progress import track

from bench.commands._output import writable_folder
from bench.commands.eval import print_result
from bench.data.coco import CocoDetection
from bench.errors import UsageError
from bench.results.coco_eval import detections_to_coco, evaluate_coco
from bench.results.env import collect_env
from bench.results.store import write_json_atomic
from bench.spec import add_device_options, resolve_device
from detectors import build_detector
from detectors.cornernet import load_official_checkpoint
from detectors.cornernet.inference import MULTI_SCALES, CornerNetTestConfig

__all__ = ["add_arguments", "run"]

SAVE_EVERY = 100  # images between two partial saves


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench cornernet-eval``."""
    parser.add_argument("--checkpoint", required=True, help="release state dict (.pkl / .pth)")
    parser.add_argument("--data", required=True, help="coco:PATH (COCO 2017) or synthetic:PATH")
    parser.add_argument("--split", default="val", help="val (default) or train")
    parser.add_argument("--backbone", default="hg104", help="hourglass preset of the checkpoint")
    add_device_options(parser, dtype=False)
    parser.add_argument("--flip", action="store_true", help="flip testing (the release's default)")
    parser.add_argument("--multi-scale", action="store_true", help="scales 0.5, 0.75, 1, 1.25, 1.5")
    parser.add_argument("--max-images", type=int, default=None, help="first N images only")
    parser.add_argument("--out", type=Path, default=None, help="output folder")
    parser.add_argument("--json", action="store_true", help="print the statistics as JSON")


def _dataset_root(spec: str) -> Path:
    kind, _, path = spec.partition(":")
    if kind not in ("coco", "synthetic") or not path:
        raise UsageError(f"--data {spec!r}: expected coco:PATH or synthetic:PATH")
    if not Path(path).is_dir():
        raise UsageError(f"--data {spec}: folder {path} does not exist")
    return Path(path)


def _build(args: argparse.Namespace, num_classes: int, device: torch.device):

    state = load_official_checkpoint(args.checkpoint)
    detector = build_detector("cornernet", num_classes, backbone=args.backbone, preset="paper")
    try:
        detector.model.load_official_state_dict(state)
    except (KeyError, RuntimeError, ValueError) as exc:
        raise UsageError(
            f"checkpoint {args.checkpoint} does not fit CornerNet with backbone "
            f"{args.backbone!r} and {num_classes} classes (the dataset's): {exc}"
        ) from exc
    return detector.to(device).eval()


def _load_partial(path: Path, options: dict[str, Any]) -> dict[str, list]:
    """Detections saved by an earlier run with the same options ({image_id: rows})."""
    if not path.is_file():
        return {}
    saved = json.loads(path.read_text())
    if saved.get("options") != options:
        raise UsageError(
            f"{path} holds a run with other options ({saved.get('options')}); use another --out"
        )
    return saved["images"]


def run(args: argparse.Namespace) -> int:
    """``python -m bench cornernet-eval``: returns the exit code."""

    root = _dataset_root(args.data)
    if args.max_images is not None and args.max_images < 1:
        raise UsageError(f"--max-images {args.max_images}: expected an int >= 1")
    device = resolve_device(args.device)
    dataset = CocoDetection.from_root(root, args.split)
    detector = _build(args, dataset.num_classes, device)
    test_cfg = CornerNetTestConfig(
        flip=args.flip, scales=MULTI_SCALES if args.multi_scale else (1.0,)
    )
    indices = list(range(len(dataset)))[: args.max_images]
    date = datetime.date.today().isoformat()
    out = writable_folder(args.out or f"reports/cornernet-eval/{root.name}-{args.split}-{date}",
                          "--out")  # fmt: skip
    options = {"checkpoint": str(Path(args.checkpoint).resolve()), "data": str(root.resolve()),
               "split": args.split, "backbone": args.backbone, "flip": args.flip,
               "multi_scale": args.multi_scale, "images": len(indices)}  # fmt: skip
    partial_path = out / "partial.json"
    done = _load_partial(partial_path, options)
    todo = [i for i in indices if str(dataset.ids[i]) not in done]
    for n, i in enumerate(track(todo, description="cornernet-eval", console=Console(stderr=True))):
        image, target = dataset[i]
        det = detector.detect([image], test_cfg)[0]
        done[str(target["image_id"])] = [
            det.boxes.float().cpu().tolist(), det.scores.float().cpu().tolist(),
            det.labels.cpu().tolist(),
        ]  # fmt: skip
        if (n + 1) % SAVE_EVERY == 0:
            write_json_atomic(partial_path, {"options": options, "images": done})
    write_json_atomic(partial_path, {"options": options, "images": done})
    ids = [dataset.ids[i] for i in indices]
    rows = [done[str(i)] for i in ids]
    coco = detections_to_coco(
        ids, [torch.tensor(r[0]).reshape(-1, 4) for r in rows],
        [torch.tensor(r[1]) for r in rows], [torch.tensor(r[2], dtype=torch.long) for r in rows],
        dataset.cat_ids,
    )  # fmt: skip
    result = evaluate_coco(
        dataset.ann_file, coco, img_ids=ids, results_path=out / "detections.json"
    )
    summary = {k: v for k, v in result.items() if k != "summary"}
    write_json_atomic(out / "results.json", {"options": options, "test_config": vars(test_cfg),
                                             "env": collect_env(), "results": summary})  # fmt: skip
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print_result(result, f"CornerNet {args.backbone} on {root.name} ({len(ids)} images)")
        print(f"wrote {out}")
    return 0
