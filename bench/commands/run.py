"""``python -m bench run``: the whole suite, resumable, one row per detector and batch size.

For every selected detector (and, with ``--ablations``, CornerNet without corner pooling and
without the Gaussian penalty reduction, and each anchor-based detector with its paper's
anchors where the weights folder has a zoo file for that row): load its zoo checkpoint (or
train it first with ``--train``, or fall back to random weights, loudly), evaluate COCO AP
on the validation images, count anchors and the matcher's positives/negatives, time each stage
(:mod:`bench.measure.latency`), save a sample image, and append the row to ``results.json`` /
``results.csv`` (:class:`bench.results.store.ResultStore`, atomic). At the end the report is
written (:mod:`bench.results.report`) and a summary table printed.

Output folder (``--out``, default ``reports/<date>-<device>-<profile>/``): ``run.json``,
``results.{json,csv}``, ``env.json``, ``annotations.json`` (the evaluated ground truth),
``detections/<detector>.json`` (COCO results), ``plots/``, ``report.md``, ``report.html``;
with ``--train`` also ``train/`` (checkpoints, loss curves) and ``zoo/`` (fp16 weights).
A rerun with the same options skips finished rows; a folder of another run is refused.

Weights: ``--weights DIR`` holds ``<detector>-<backbone>.pt`` zoo files
(:func:`bench.train.checkpoints.export_half`) and optionally ``manifest.json``
``{"files": {"<detector>-<backbone>": {"file", "seconds_per_iter", "images_seen",
"loss_curve"}}}``. Default: the repository's ``zoo/``; a detector without a (matching) file
there is evaluated with random weights and marked ``weights: "random"``. A ``--weights DIR``
given explicitly must hold every requested detector (exit 2 otherwise).

Profiles (``--profile``): ``smoke`` (the small synthetic set, 16 images, 5 timed iterations;
CI), ``quick`` (default: 300 validation images, 20 timed iterations, ablations on) and
``full`` (every validation image, 100 timed iterations, ablations on). On a GPU at least 100
images are timed.

Several processes (``torchrun --nproc-per-node W -m bench run ...``): every rank evaluates
its share of the validation batches and rank 0 gathers the detections and scores them once,
so AP and the detections file equal a single-process run's (:mod:`bench.measure.detector`).
Rank 0 alone generates missing data, writes every file and times latency while the others
wait; ``--train`` trains on all ranks (:mod:`bench.train.loop`).
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Callable, Mapping
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from bench import REPO_DIR
from bench.commands._output import writable_folder
from bench.commands._tables import add_wide_option
from bench.commands.report import print_summary
from bench.distributed import broadcast_from_main, init_from_env, local_device, on_main, shutdown
from bench.errors import UsageError
from bench.measure.suite import (
    PROFILES,
    anchor_preset,
    default_input_size,
    prepare_data,
    run_suite,
    select_variants,
)
from bench.spec import (
    DataSpec,
    RunSpec,
    TimingSpec,
    add_detectors_option,
    add_device_options,
    parse_int_list,
    resolve_device,
)
from bench.train.checkpoints import zoo_path
from detectors import DETECTORS
from detectors.backbones import HOURGLASS_PRESETS

__all__ = ["add_arguments", "run", "run_spec"]

# bench.cli prints this after Ctrl-C: each row is saved when it is finished (ResultStore)
INTERRUPTED = (
    "the rows finished so far are saved in the output folder (--out); rerun the same command "
    "with the same options to resume: finished rows are kept, the others are measured"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench run``."""
    add_detectors_option(parser)
    parser.add_argument("--profile", choices=list(PROFILES), default="quick")
    parser.add_argument(
        "--data", default="synthetic", help="synthetic, synthetic:PATH or coco:PATH"
    )
    parser.add_argument("--weights", default=None, help="zoo folder (default: the repo's zoo/)")
    add_device_options(parser)
    parser.add_argument("--input-size", type=int, default=None, help="network input (square)")
    parser.add_argument("--batch-size", default="1", help="latency batch sweep, e.g. 1,2,4")
    parser.add_argument("--backbone", choices=sorted(HOURGLASS_PRESETS), default="tiny")
    parser.add_argument("--train", action="store_true", help="train the zoo first (bench.train)")
    parser.add_argument(
        "--ablations", action=argparse.BooleanOptionalAction, default=None,
        help="CornerNet without corner pooling / Gaussian bumps (default: on in quick and full)",
    )  # fmt: skip
    parser.add_argument("--out", default=None, help="default reports/<date>-<device>-<profile>")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    add_wide_option(parser)


def run_spec(
    args: argparse.Namespace, builders: Mapping[str, Callable], device, err: Console
) -> RunSpec:
    """The command line of ``bench run`` -> its :class:`RunSpec` (rank 0 generates missing
    synthetic data; every rank gets the same spec)."""
    profile = PROFILES[args.profile]
    ablations = profile.ablations if args.ablations is None else args.ablations
    if args.train and args.weights is not None:
        raise UsageError("--train exports its own weights (to OUT/zoo); drop --weights")
    weights_dir = Path(args.weights) if args.weights else REPO_DIR / "zoo"

    def trained(name: str) -> bool:  # a zoo file exists (--train trains only what is named)
        return not args.train and zoo_path(weights_dir, name, args.backbone).is_file()

    variants = select_variants(args.detectors, builders, ablations, trained)
    date = datetime.date.today().isoformat()
    out = broadcast_from_main(Path(args.out or f"reports/{date}-{device.type}-{args.profile}"))
    writable_folder(out, "--out")  # before the data, the training and the measuring
    first_use = " (generated on first use)" * args.data.startswith("syn")
    err.print(f"data: {args.data}{first_use}", markup=False)
    kind, root = broadcast_from_main(on_main(lambda: prepare_data(args.data, profile)))
    input_size = args.input_size or default_input_size(kind, root)
    if input_size < 32:
        raise UsageError(f"--input-size {input_size}: expected an int >= 32")
    preset, why = anchor_preset(kind, root)
    if why:
        err.print(f"data: {why}", markup=False)
    data = DataSpec(args.data, kind, root, input_size, preset, profile.max_images)
    iters = max(profile.iters, 100) if device.type == "cuda" else profile.iters
    batches = parse_int_list(args.batch_size, "--batch-size")
    timing = TimingSpec(profile.warmup, iters, batches, profile.latency_images)
    return RunSpec(
        variants=tuple(variants), profile=args.profile, data=data, device=device,
        dtype=args.dtype, backbone=args.backbone, timing=timing,
        out=out.resolve(), weights_dir=None if args.train else weights_dir,
        explicit_weights=args.weights is not None, train=args.train,
        train_images=profile.train_images, progress=not args.no_progress,
    )  # fmt: skip


def run(args: argparse.Namespace, *, builders: Mapping[str, Callable] | None = None) -> int:
    """Run the suite (see the module docstring); returns the exit code."""
    device = resolve_device(args.device)
    ctx = init_from_env(device.type)
    try:
        err = Console(stderr=True, quiet=not ctx.is_main)  # rank 0 speaks for every rank
        builders = dict(DETECTORS if builders is None else builders)
        spec = run_spec(args, builders, local_device(device, ctx), err)
        outcome = run_suite(spec, builders, err=err, main=ctx.is_main)
        if ctx.is_main:
            md, html = outcome.report
            print_summary(Console(), outcome.store.rows, wide=getattr(args, "wide", False), full=md)
            err.print(f"results: {outcome.store.json_path}\nreport: {md} and {html}", markup=False)
        if outcome.failed:
            err.print(
                "[bold red]FAILED[/] (no row; a rerun retries them): "
                + escape("; ".join(outcome.failed))
            )
        return 1 if outcome.failed else 0
    finally:
        shutdown()
