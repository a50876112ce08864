"""``python -m bench train``: train the selected detectors in turn (:mod:`bench.train.loop`).

On several processes (``torchrun --nproc-per-node W -m bench train ...``) every rank runs
this command: it joins the process group (:func:`bench.distributed.init_from_env`: NCCL on
CUDA, gloo on the CPU), rank 0 alone generates missing synthetic data, exports zoo files and
writes ``train_summary.json`` and the printed lines, and the group is left at the end.
``--batch-size`` is the global batch, whatever the number of processes.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import signal
import sys
from dataclasses import asdict
from pathlib import Path

from bench.commands._output import writable_folder
from bench.data.coco import find_split
from bench.data.synthetic import ensure_synthetic
from bench.distributed import barrier, broadcast_from_main, init_from_env, on_main, shutdown
from bench.errors import UsageError
from bench.results.env import collect_env
from bench.results.store import write_json_atomic
from bench.spec import (
    Variant,
    add_detectors_option,
    add_device_options,
    parse_detectors,
    resolve_device,
)
from bench.train.checkpoints import export_zoo, zoo_path
from bench.train.loop import AMP_DTYPES, TrainConfig, TrainingInterrupted, train_detector

__all__ = ["add_arguments", "run"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench train``."""
    d = TrainConfig()
    add_detectors_option(parser, help="comma-separated names, or all (default)")
    parser.add_argument(
        "--data", default="synthetic",
        help="synthetic (generated in data/synthetic if missing), synthetic:PATH or coco:PATH",
    )  # fmt: skip
    parser.add_argument("--out", type=Path, default=Path("runs/train"), help="output folder")
    parser.add_argument("--budget", type=int, default=d.images_seen, help="images seen")
    parser.add_argument(
        "--snapshots", default=",".join(map(str, d.snapshot_images)),
        help="images seen at which to keep a copy of the checkpoint (comma-separated; "
        "budget curves within one schedule)",
    )  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help="global batch")
    parser.add_argument(
        "--micro-batch", type=int, default=d.micro_batch,
        help="images per forward; gradients are accumulated up to the global batch "
        "(default: the process's whole share of it)",
    )  # fmt: skip
    parser.add_argument(
        "--sync-bn", action="store_true", help="SyncBatchNorm across processes (torchrun, CUDA)"
    )
    parser.add_argument("--lr", type=float, default=d.lr)
    parser.add_argument("--input-size", type=int, default=d.input_size)
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--workers", type=int, default=d.num_workers, help="DataLoader workers")
    parser.add_argument("--amp", choices=[*AMP_DTYPES, "none"], default=d.amp, help="CUDA only")
    add_device_options(parser, dtype=False)
    parser.add_argument("--backbone", default="tiny", help="hourglass preset")
    parser.add_argument("--preset", default="synthetic", help="anchor preset: synthetic or paper")
    parser.add_argument("--stop-after", type=int, default=None, help="steps this session")
    parser.add_argument("--export-zoo", type=Path, default=None, help="write fp16 zoo files here")
    parser.add_argument("--no-progress", action="store_true")


def _data_root(spec: str) -> Path:
    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        if path:  # an existing set (whatever its size) is used as it is
            try:
                find_split(path, "train")
                return Path(path)
            except UsageError:
                pass
        # a folder the user named is never replaced (bench data synthetic --overwrite does)
        return ensure_synthetic(Path(path or "data/synthetic"), overwrite=not path)
    if kind == "coco" and path:
        if Path(path).exists() and not Path(path).is_dir():
            raise UsageError(
                f"--data {spec}: {path} is a file; expected the dataset's folder (holding "
                "annotations/ and the image folders), e.g. coco:data/coco"
            )
        if not Path(path).is_dir():
            raise UsageError(f"--data {spec}: folder {path} does not exist")
        return Path(path)
    raise UsageError(f"--data {spec!r}: expected synthetic, synthetic:PATH or coco:PATH")


# TrainConfig's fields set from options: its ValueError speaks of the option the user typed
OPTIONS = {"images_seen": "--budget", "batch_size": "--batch-size", "lr": "--lr",
           "input_size": "--input-size", "seed": "--seed", "num_workers": "--workers",
           "amp": "--amp", "micro_batch": "--micro-batch", "sync_bn": "--sync-bn",
           "snapshot_images": "--snapshots"}  # fmt: skip


def _as_options(message: str, args: argparse.Namespace) -> str:
    """TrainConfig's ValueError with its field names replaced by the options that set them:
    ``TrainConfig.images_seen must be an int >= 1, got 0`` -> ``--budget must be ...``."""
    if message.startswith("TrainConfig: lr must be > 0"):  # its message holds the whole config
        return f"--lr must be a finite number > 0, got {args.lr!r}"
    for field, option in OPTIONS.items():
        message = re.sub(rf"\bTrainConfig\.{field}\b", option, message)
    return message


def _snapshots(text: str) -> tuple[int, ...]:
    """``--snapshots 10000,20000`` -> (10000, 20000); UsageError naming a bad entry."""
    out = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        if not part.isdigit() or int(part) < 1:
            raise UsageError(f"--snapshots {text!r}: {part!r} is not a positive number of images")
        out.append(int(part))
    return tuple(sorted(set(out)))


def run(args: argparse.Namespace) -> int:
    """``python -m bench train``: train each detector in turn; returns the exit code."""
    variants = parse_detectors(args.detectors)
    try:
        cfg = dataclasses.replace(
            TrainConfig(), images_seen=args.budget, batch_size=args.batch_size, lr=args.lr,
            input_size=args.input_size, seed=args.seed, num_workers=args.workers, amp=args.amp,
            micro_batch=args.micro_batch, sync_bn=args.sync_bn,
            snapshot_images=_snapshots(args.snapshots),
        )  # fmt: skip
    except ValueError as exc:
        raise UsageError(_as_options(str(exc), args)) from exc
    writable_folder(args.out, "--out")  # before any training, not at the first checkpoint
    if args.export_zoo is not None:
        writable_folder(args.export_zoo, "--export-zoo")
    device = resolve_device(args.device)
    ctx = init_from_env(device.type)
    try:
        root = broadcast_from_main(on_main(lambda: _data_root(args.data)))
        summaries = [_train_one(v, root, cfg, device, args, ctx.is_main) for v in variants]
        if ctx.is_main:
            write_json_atomic(
                Path(args.out) / "train_summary.json",
                {"config": asdict(cfg), "env": collect_env(), "detectors": summaries},
            )
    except TrainingInterrupted as stop:  # SIGINT / SIGTERM: saved after a complete step
        if ctx.is_main:
            print(
                f"{signal.Signals(stop.signum).name}: stopped after step {stop.step}, saved in "
                f"{stop.checkpoint}; rerun the same command to resume",
                file=sys.stderr,
            )
        return 128 + int(stop.signum)  # 130 for SIGINT, 143 for SIGTERM, as a shell reports
    finally:
        shutdown()
    return 0


def _train_one(v: Variant, root: Path, cfg: TrainConfig, device: str, args, main: bool) -> dict:
    """Train ``name``, export its zoo file (rank 0) and print its line (rank 0).

    An ablation variant (``cornernet-no-corner-pool``, ``retinanet-paper-anchors``, ...) trains
    its base detector with its keyword arguments in ``out/<variant>/<base>/`` and is exported
    under the variant's name.
    """
    name, base, kwargs = v.name, v.base, (v.kwargs if v.name != v.base else None)
    s = train_detector(
        base, data_root=root,
        out_dir=Path(args.out) / name if kwargs is not None else args.out, cfg=cfg, device=device,
        backbone=args.backbone, preset=args.preset, detector_kwargs=kwargs,
        progress=not args.no_progress, stop_after=args.stop_after,
    )  # fmt: skip
    if args.export_zoo is not None and s["finished"]:
        if main:  # the fp16 file, its loss curve and its manifest entry
            export_zoo([(name, s)], args.export_zoo)
        barrier()
        s["zoo"] = str(zoo_path(args.export_zoo, name, s["backbone"]))
    if main:
        status = "skipped (finished before)" if s["skipped"] else f"{s['steps']}/{s['total_steps']}"
        spi = s["seconds_per_iter"]
        print(
            f"{name}: steps {status}, final loss {s['final_loss']}, "
            + (f"{spi:.3f} s/iter" if spi is not None else "")
        )
    return s
