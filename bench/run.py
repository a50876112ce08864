"""``python -m bench run``: the whole suite, resumable, one row per detector and batch size.

For every selected detector (and, with ``--ablations``, CornerNet without corner pooling and
without the Gaussian penalty reduction, and each anchor-based detector with its paper's
anchors where the weights folder has a zoo file for that row): load its zoo checkpoint (or
train it first with ``--train``, or fall back to random weights, loudly), evaluate COCO AP
on the validation images, count anchors and the matcher's positives/negatives, time each stage
(:mod:`bench.latency`), save a sample image, and append the row to ``results.json`` /
``results.csv`` (:class:`bench.results.ResultStore`, atomic). At the end the report is
written (:mod:`bench.report`) and a summary table printed.

Output folder (``--out``, default ``reports/<date>-<device>-<profile>/``): ``run.json``,
``results.{json,csv}``, ``env.json``, ``annotations.json`` (the evaluated ground truth),
``detections/<detector>.json`` (COCO results), ``plots/``, ``report.md``, ``report.html``;
with ``--train`` also ``train/`` (checkpoints, loss curves) and ``zoo/`` (fp16 weights).
A rerun with the same options skips finished rows; a folder of another run is refused.

Weights: ``--weights DIR`` holds ``<detector>-<backbone>.pt`` zoo files
(:func:`bench.checkpoints.export_half`) and optionally ``manifest.json``
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
so AP and the detections file equal a single-process run's (:mod:`bench.run_measure`).
Rank 0 alone generates missing data, writes every file and times latency while the others
wait; ``--train`` trains on all ranks (:mod:`bench.train`).
"""

from __future__ import annotations

import argparse
import datetime
import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from bench.distributed import (
    barrier,
    broadcast_from_main,
    init_from_env,
    local_device,
    on_main,
    shutdown,
)
from bench.errors import UsageError
from bench.latency import DTYPES, available_builders, parse_int_list, resolve_device
from bench.report_budget import BUDGETS_NAME
from bench.results import ResultStore, write_json_atomic, write_text_atomic
from bench.run_measure import measure_variant

__all__ = [
    "ABLATIONS",
    "PROFILES",
    "Profile",
    "Variant",
    "add_arguments",
    "named_variants",
    "run",
    "select_variants",
]

REPO_DIR = Path(__file__).resolve().parent.parent
#: (row name, registry base detector, build kwargs): rows added to their base's with ablations
ABLATIONS: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("cornernet-no-corner-pool", "cornernet", {"corner_pooling": False}),
    ("cornernet-no-gaussian", "cornernet", {"gaussian_bump": False}),
)


def named_variants() -> dict[str, tuple[str, dict[str, Any]]]:
    """Ablation name -> (base, build kwargs): ABLATIONS and ``bench.anchor_fit``'s
    ANCHOR_ABLATIONS (resolvable by ``--detectors``, not added by default)."""
    from bench.anchor_fit import ANCHOR_ABLATIONS

    return {name: (base, dict(kw)) for name, base, kw in (*ABLATIONS, *ANCHOR_ABLATIONS)}


@dataclass(frozen=True)
class Profile:
    """How much of everything a run does."""

    synthetic: str  # bench.data.synthetic.PRESETS entry generated for --data synthetic
    max_images: int | None  # validation images evaluated (None: all)
    warmup: int  # untimed latency iterations
    iters: int  # timed latency iterations (a GPU gets at least 100)
    ablations: bool  # CornerNet ablation rows by default
    train_images: int | None  # --train budget in images (None: TrainConfig's)
    latency_images: int = 4  # distinct raw images cycled through while timing


PROFILES: dict[str, Profile] = {
    "smoke": Profile("smoke", 16, 1, 5, False, 16),
    "quick": Profile("default", 300, 3, 20, True, None),  # >= 300 images: one does not move AP
    "full": Profile("default", None, 10, 100, True, None),
}


@dataclass(frozen=True)
class Variant:
    """One row family: ``name`` in the results, registry ``base`` detector, build kwargs."""

    name: str
    base: str
    kwargs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Weights:
    kind: str  # "zoo", "trained" or "random"
    path: Path | None = None
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # seconds_per_iter, images_seen, ...


def select_variants(
    text: str | None,
    builders: Mapping[str, Callable],
    ablations: bool,
    has_weights: Callable[[str], bool] | None = None,
) -> list[Variant]:
    """Detectors named by ``--detectors`` (default: every available one; a name may be an
    ablation of :func:`named_variants`) plus, with ``ablations``, the ABLATIONS of their bases
    and the paper-anchor rows (``bench.anchor_fit.ANCHOR_ABLATIONS``) of their bases for which
    ``has_weights(name)`` is true (trained weights exist: a paper-anchor row with random
    weights would compare anchors with no training)."""
    from bench.anchor_fit import ANCHOR_ABLATIONS
    from detectors import DETECTORS

    named = named_variants()
    known = set(DETECTORS) | set(builders) | set(named)
    if text is None or text == "all":
        names = list(builders)
    else:
        names = list(dict.fromkeys(n.strip() for n in text.split(",") if n.strip()))
        bad = [n for n in names if n not in known] or ([] if names else ["(none given)"])
        if bad:
            raise UsageError(
                f"--detectors {text!r}: unknown detector {', '.join(bad)}; expected a "
                f"comma-separated list from {', '.join(sorted(known))}"
            )
        missing = [n for n in names if (named[n][0] if n in named else n) not in builders]
        if missing:
            raise UsageError(f"--detectors: {', '.join(missing)} not available in this install")
    variants = [Variant(n, *named[n]) if n in named else Variant(n, n) for n in names]
    if ablations:
        chosen = {v.name for v in variants}
        extra = [*ABLATIONS]
        if has_weights is not None:
            extra += [a for a in ANCHOR_ABLATIONS if has_weights(a[0])]
        variants += [
            Variant(name, base, dict(kw))
            for name, base, kw in extra
            if base in names and name not in chosen
        ]
    return variants


def _data(spec: str, profile: Profile) -> tuple[str, Path]:
    """``--data`` -> (kind, dataset root), generating the synthetic set when needed."""
    from bench.data.coco import find_split
    from bench.data.synthetic import PRESETS, ensure_synthetic

    kind, _, path = spec.partition(":")
    if kind == "synthetic":
        if path:
            try:
                find_split(path, "val")  # an existing set is used as it is
                return kind, Path(path).resolve()
            except UsageError:
                pass
        default = "data/synthetic" + ("-smoke" if profile.synthetic == "smoke" else "")
        preset = PRESETS[profile.synthetic]
        return kind, ensure_synthetic(Path(path or default), card=False, **preset)
    if kind == "coco" and path:
        find_split(path, "val")  # UsageError naming the paths tried
        return kind, Path(path).resolve()
    raise UsageError(f"--data {spec!r}: expected synthetic, synthetic:PATH or coco:PATH")


def _default_size(kind: str, root: Path) -> int:
    try:
        return int(json.loads((root / "synthetic.json").read_text())["params"]["image_size"])
    except (OSError, ValueError, KeyError, TypeError):
        return 128 if kind == "synthetic" else 512


def _zoo_manifest(folder: Path) -> dict[str, Any]:
    try:
        files = json.loads((folder / "manifest.json").read_text()).get("files", {})
        return files if isinstance(files, dict) else {}
    except (OSError, ValueError, AttributeError):
        return {}


def _misfit(rec: dict, v: Variant, backbone: str, preset: str, builders) -> str:
    """Why a zoo record's weights do not fit the detector the current code builds ("" if
    they do): other parameter names or shapes (a changed head), or other anchors than the
    ones the weights were trained with (same shapes: it would evaluate silently wrong)."""
    from bench.checkpoints import anchor_record

    build = (builders or {}).get(v.base)
    if build is None:
        from detectors import DETECTORS

        build = DETECTORS[v.base]
    model = build(rec["detector"]["num_classes"], backbone=backbone, preset=preset, **v.kwargs)
    want = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    got = {k: tuple(t.shape) for k, t in rec["model"].items()}
    if want != got:
        diff = sorted(set(want) ^ set(got)) or [k for k in want if want[k] != got[k]]
        return (
            f"its weights do not fit the current {v.base} ({len(diff)} parameters differ, "
            f"e.g. {diff[0]}): trained with an older version; retrain it"
        )
    anchors, trained = anchor_record(model), (rec.get("manifest") or {}).get("anchors")
    if anchors is not None and trained is None:
        return "its anchors are not recorded (trained before 2026-12-02): retrain it"
    if anchors is not None and anchors != trained:
        return f"trained with other anchors ({trained}) than the current preset's ({anchors})"
    return ""


def resolve_weights(
    variants: list[Variant], folder: Path, *, explicit: bool, backbone: str, preset: str,
    cat_ids: list[int], kind: str = "zoo", builders: Mapping[str, Callable] | None = None,
) -> dict[str, Weights]:  # fmt: skip
    """Each variant's weights in ``folder``; UsageError listing the problems if ``explicit``."""
    from bench.checkpoints import load_checkpoint, zoo_path

    manifest, out, problems = _zoo_manifest(folder), {}, []
    for v in variants:
        stem = zoo_path(folder, v.name, backbone).stem
        entry = manifest.get(stem, {})
        path = folder / entry.get("file", f"{stem}.pt")
        note = ""
        if not path.is_file():
            note = f"no {path.name} in {folder}"
        else:
            try:
                rec = load_checkpoint(path)
            except UsageError as exc:
                note = str(exc)
            else:
                want = {"name": v.base, "backbone": backbone, "preset": preset, "kwargs": v.kwargs}
                got = {k: rec["detector"].get(k) for k in want}
                if got != want:
                    note = f"{path} holds {got}, expected {want}"
                elif rec["detector"].get("label_to_cat_id") != cat_ids:
                    note = f"{path} was trained on other categories than this dataset's"
                elif misfit := _misfit(rec, v, backbone, preset, builders):
                    note = f"{path}: {misfit}"
                else:
                    info = {"images_seen": (rec.get("manifest") or {}).get("images_seen")}
                    info.update(
                        {k: entry[k] for k in ("seconds_per_iter", "images_seen") if k in entry}
                    )
                    curve = folder / entry.get("loss_curve", f"{stem}.loss_curve.csv")
                    info["loss_curve"] = str(curve) if curve.is_file() else None
                    out[v.name] = Weights(kind, path, "", info)
                    continue
        problems.append(note)
        out[v.name] = Weights("random", None, note)
    if explicit and problems:
        raise UsageError(
            f"--weights {folder}: " + "; ".join(problems) + ". Expected fp16 zoo files "
            "<detector>-<backbone>.pt from `python -m bench train --export-zoo DIR` or --train"
        )
    return out


def _train(variants, args, root: Path, out: Path, profile: Profile, device, builders) -> Path:
    """Train every variant (resumable; on every rank) into ``out/train``; rank 0 exports
    ``out/zoo``."""
    from bench.checkpoints import export_zoo
    from bench.train import TrainConfig, train_detector

    cfg = TrainConfig(input_size=args.input_size)
    if profile.train_images is not None:
        cfg = TrainConfig(input_size=args.input_size, images_seen=profile.train_images)
    zoo, summaries = out / "zoo", []
    for v in variants:
        s = train_detector(
            v.base, data_root=root, out_dir=out / "train" / v.name, cfg=cfg, device=device,
            backbone=args.backbone, preset=args.preset, detector_kwargs=v.kwargs,
            progress=not args.no_progress, builder=builders[v.base],
        )  # fmt: skip
        summaries.append((v, s))

    on_main(lambda: export_zoo([(v.name, s) for v, s in summaries], zoo))  # others wait
    return zoo


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m bench run``."""
    from detectors.backbones import HOURGLASS_PRESETS

    parser.add_argument("--detectors", default=None, help="comma-separated names (default all)")
    parser.add_argument("--profile", choices=list(PROFILES), default="quick")
    parser.add_argument(
        "--data", default="synthetic", help="synthetic, synthetic:PATH or coco:PATH"
    )
    parser.add_argument("--weights", default=None, help="zoo folder (default: the repo's zoo/)")
    parser.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: auto")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp32")
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


def run(args: argparse.Namespace, *, builders: Mapping[str, Callable] | None = None) -> int:
    """Run the suite (see the module docstring); returns the exit code."""
    device = resolve_device(args.device)
    ctx = init_from_env(device.type)
    try:
        return _run(args, local_device(device, ctx), ctx.is_main, builders)
    finally:
        shutdown()


def _open_store(out: Path, config: dict, dataset, indices, gt_path: Path, described: dict):
    """The run's ResultStore, ``env.json`` and ``annotations.json`` (rank 0)."""
    from bench.env import collect_env

    store = ResultStore(out, config=config, env=collect_env(), dataset=described)
    if not (out / "env.json").exists():
        write_json_atomic(out / "env.json", store.env)
    if not gt_path.exists():
        keep = {dataset.ids[i] for i in indices}
        data = dataset.coco.dataset
        gt = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        gt["images"] = [im for im in data["images"] if im["id"] in keep]
        gt["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        write_json_atomic(gt_path, gt, indent=None)
    return store


def _run(args, device: torch.device, main: bool, builders) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

    from bench.checkpoints import zoo_path
    from bench.data.coco import CocoDetection
    from bench.data.transforms import Letterbox
    from bench.report import summary_table, write_report

    err = Console(stderr=True, quiet=not main)  # rank 0 speaks for every rank
    args = argparse.Namespace(**vars(args))  # a copy: preset and input size are filled in
    if builders is None:
        from detectors import DETECTORS

        builders = available_builders()
        if len(builders) < len(DETECTORS):
            err.print(
                f"not installed, skipped: {', '.join(sorted(set(DETECTORS) - set(builders)))}"
            )
    builders = dict(builders)
    profile = PROFILES[args.profile]
    ablations = profile.ablations if args.ablations is None else args.ablations
    if args.train and args.weights is not None:
        raise UsageError("--train exports its own weights (to OUT/zoo); drop --weights")
    weights_dir = Path(args.weights) if args.weights else REPO_DIR / "zoo"

    def trained(name: str) -> bool:  # a zoo file exists (--train trains only what is named)
        return not args.train and zoo_path(weights_dir, name, args.backbone).is_file()

    variants = select_variants(args.detectors, builders, ablations, trained)
    err.print(f"data: {args.data}" + " (generated on first use)" * args.data.startswith("syn"))
    kind, root = broadcast_from_main(on_main(lambda: _data(args.data, profile)))
    args.preset = "synthetic" if kind == "synthetic" else "paper"
    args.input_size = args.input_size or _default_size(kind, root)
    if args.input_size < 32:
        raise UsageError(f"--input-size {args.input_size}: expected an int >= 32")
    batches = parse_int_list(args.batch_size, "--batch-size")
    dataset = CocoDetection.from_root(root, "val", Letterbox(args.input_size))
    indices = list(range(len(dataset)))[: profile.max_images]
    explicit = args.weights is not None
    resolved = None
    if not args.train:
        resolved = resolve_weights(
            variants, weights_dir, explicit=explicit, backbone=args.backbone,
            preset=args.preset, cat_ids=dataset.cat_ids, builders=builders,
        )  # fmt: skip
    date = datetime.date.today().isoformat()
    out = broadcast_from_main(Path(args.out or f"reports/{date}-{device.type}-{args.profile}"))
    out = out.resolve()
    config = {
        "detectors": [v.name for v in variants], "profile": args.profile, "data": args.data,
        "weights": "train" if args.train else str(weights_dir.resolve()),
        "device": device.type, "dtype": args.dtype, "input_size": args.input_size,
        "batches": batches, "backbone": args.backbone, "preset": args.preset,
    }  # fmt: skip
    gt_path = out / "annotations.json"
    described = {"root": str(root), "split": "val", "images": len(indices)}
    described.update(annotations=str(gt_path), source=str(dataset.ann_file))
    store = on_main(lambda: _open_store(out, config, dataset, indices, gt_path, described))
    if args.train:
        weights_dir = _train(variants, args, root, out, profile, device, builders)
        resolved = resolve_weights(
            variants, weights_dir, explicit=True, backbone=args.backbone,
            preset=args.preset, cat_ids=dataset.cat_ids, kind="trained", builders=builders,
        )  # fmt: skip
    random_rows = [v.name for v in variants if resolved[v.name].kind == "random"]
    if random_rows:
        err.print(
            f"[bold red]WARNING: RANDOM WEIGHTS[/] for {', '.join(random_rows)}: no matching "
            f"checkpoint in {escape(str(weights_dir))} (their AP means nothing; see "
            "`python -m bench train`). Why, per detector:"
        )
        for name in random_rows:
            err.print(f"  {name}: {escape(resolved[name].note)}")
    budgets = weights_dir / BUDGETS_NAME  # AP by training budget (bench analyze budgets)
    if main and budgets.is_file() and not args.train:
        write_text_atomic(out / BUDGETS_NAME, budgets.read_text())
    ctx = {"device": device, "out": out, "dataset": dataset, "indices": indices}
    ctx.update(gt_path=gt_path, builders=builders, profile=profile, batches=batches, root=root)
    key = (args.backbone, args.input_size, device.type, args.dtype)
    done = [
        v.name for v in variants if store and all(store.has((v.name, *key, b)) for b in batches)
    ]
    done = broadcast_from_main(done)
    progress = Progress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=args.no_progress or not main,
    )  # fmt: skip
    failed = []
    with progress:
        for v in variants:
            if v.name in done:
                err.print(f"{v.name}: already in {out}, skipped")
                continue
            try:
                measure_variant(v, resolved[v.name], args, ctx, store, progress)
            except Exception as exc:  # one broken detector must not cost the others' rows
                console = err if main else Console(stderr=True)  # every rank's own traceback
                console.print(traceback.format_exc(), markup=False, highlight=False)
                failed.append(f"{v.name} ({type(exc).__name__}: {exc})")
            barrier()  # rank 0 timed and stored the rows
    if main:
        md, html = write_report(out)
        Console().print(summary_table(store.rows))
        err.print(f"results: {store.json_path}\nreport: {md} and {html}")
    if failed:
        err.print(f"[bold red]FAILED[/] (no row; a rerun retries them): {'; '.join(failed)}")
    return 1 if failed else 0
