"""The suite behind ``python -m bench run`` (:mod:`bench.commands.run`, which describes the
output folder, the weights and the profiles), driven by a :class:`bench.spec.RunSpec`:
:func:`select_variants` (the rows), :func:`prepare_data`, :func:`resolve_weights` (zoo files
checked against the code that will load them), :class:`EvalSet` (the validation images and
their ground truth), :func:`train_variants` (``--train``), :func:`open_store` (the resumable
:class:`bench.results.store.ResultStore`) and :func:`run_suite`, which measures every
variant (:func:`bench.measure.detector.measure_variant`) and writes the report.

Several processes (``torchrun --nproc-per-node W -m bench run ...``): every rank evaluates
its share of the validation batches and rank 0 gathers the detections and scores them once,
so AP and the detections file equal a single-process run's (:mod:`bench.measure.detector`).
Rank 0 alone generates missing data, writes every file and times latency while the others
wait; ``--train`` trains on all ranks (:mod:`bench.train.loop`).
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

from bench.data.coco import find_split
from bench.data.synthetic import PRESETS, ensure_synthetic, read_fingerprint
from bench.distributed import barrier, broadcast_from_main, on_main
from bench.errors import UsageError
from bench.measure.detector import EvalSet, measure_variant
from bench.results.env import collect_env
from bench.results.report import write_report
from bench.results.report_budget import BUDGETS_NAME
from bench.results.store import ResultStore, write_json_atomic, write_text_atomic
from bench.spec import ABLATIONS, ANCHOR_ABLATIONS, RunSpec, Variant, parse_detectors
from bench.train.checkpoints import anchor_record, export_zoo, load_checkpoint, zoo_path
from bench.train.loop import TrainConfig, train_detector
from detectors import DETECTORS

__all__ = [
    "PROFILES",
    "Profile",
    "SuiteOutcome",
    "Weights",
    "anchor_preset",
    "default_input_size",
    "prepare_data",
    "resolve_weights",
    "run_suite",
    "select_variants",
]


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


@dataclass
class Weights:
    """Where a variant's weights come from: ``kind`` "zoo", "trained" or "random"."""

    kind: str
    path: Path | None = None
    note: str = ""
    info: dict[str, Any] = field(default_factory=dict)  # seconds_per_iter, images_seen, ...


def select_variants(
    text: str | None,
    builders: Mapping[str, Callable],
    ablations: bool,
    has_weights: Callable[[str], bool] | None = None,
) -> list[Variant]:
    """Detectors named by ``--detectors`` (:func:`bench.spec.parse_detectors`; default: every
    one of ``builders``) plus, with ``ablations``, the ABLATIONS of their bases and the
    paper-anchor rows (``bench.spec.ANCHOR_ABLATIONS``) of their bases for which
    ``has_weights(name)`` is true (trained weights exist: a paper-anchor row with random
    weights would compare anchors with no training)."""
    variants = parse_detectors(text, builders)
    if ablations:
        names, chosen = [v.base for v in variants if v.name == v.base], {v.name for v in variants}
        extra = [*ABLATIONS]
        if has_weights is not None:
            extra += [a for a in ANCHOR_ABLATIONS if has_weights(a[0])]
        variants += [
            Variant(name, base, dict(kw))
            for name, base, kw in extra
            if base in names and name not in chosen
        ]
    return variants


def prepare_data(spec: str, profile: Profile) -> tuple[str, Path]:
    """``--data`` -> (kind, dataset root), generating the synthetic set when needed."""
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
        root = Path(path or default)  # a folder the user named is never replaced
        return kind, ensure_synthetic(root, card=False, overwrite=not path, **preset)
    if kind == "coco" and path:
        find_split(path, "val")  # UsageError naming the paths tried
        return kind, Path(path).resolve()
    raise UsageError(f"--data {spec!r}: expected synthetic, synthetic:PATH or coco:PATH")


def anchor_preset(kind: str, root: Path) -> tuple[str, str]:
    """The detectors' anchor preset for a data set, and why when ``--data`` does not say it:
    ``synthetic`` for a folder this suite's generator wrote (its ``synthetic.json``), also
    when given as ``coco:PATH``; ``paper`` for any other COCO-layout folder."""
    if kind == "synthetic":
        return "synthetic", ""
    if read_fingerprint(root) is not None:
        return "synthetic", (
            f"{root} holds a synthetic.json: a synthetic set read as COCO, so the detectors use "
            "the synthetic preset (anchors, zoo files) as with --data synthetic:PATH"
        )
    return "paper", ""


def default_input_size(kind: str, root: Path) -> int:
    """The network input of a data set: a synthetic set's image size, else 128 / 512."""
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


def _misfit(rec: dict, v: Variant, backbone: str, preset: str, builders, classes: int) -> str:
    """Why a zoo record's weights do not fit the detector the current code builds for this
    dataset's ``classes`` ("" if they do): a class count other than the dataset's (the
    tensors are shaped for it), other parameter names or shapes (a changed head), or other
    anchors than the ones the weights were trained with (same shapes: it would evaluate
    silently wrong)."""
    recorded = rec["detector"].get("num_classes")
    if recorded != classes:
        return (
            f"it records {recorded} classes (its tensors are shaped for them), this dataset "
            f"has {classes}"
        )
    state = rec["model"]
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        return "its 'model' entry is not a state dict of tensors"
    build = (builders or {}).get(v.base)
    if build is None:
        build = DETECTORS[v.base]
    model = build(classes, backbone=backbone, preset=preset, **v.kwargs)
    want = {k: tuple(t.shape) for k, t in model.state_dict().items()}
    got = {k: tuple(t.shape) for k, t in state.items()}
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


def _non_finite(path: Path, state: dict) -> str:
    """A warning when ``state`` holds NaN or inf ("" when every tensor is finite)."""
    bad = [k for k, t in state.items() if t.is_floating_point() and not t.isfinite().all()]
    if not bad:
        return ""
    return (
        f"{path} holds non-finite weights (NaN or inf in {len(bad)} tensors, e.g. {bad[0]}): "
        "evaluated as they are, their AP means nothing; retrain it"
    )


def resolve_weights(
    variants: list[Variant], folder: Path, *, explicit: bool, backbone: str, preset: str,
    cat_ids: list[int], kind: str = "zoo", builders: Mapping[str, Callable] | None = None,
) -> dict[str, Weights]:  # fmt: skip
    """Each variant's weights in ``folder``; UsageError listing the problems if ``explicit``."""
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
                elif misfit := _misfit(rec, v, backbone, preset, builders, len(cat_ids)):
                    note = f"{path}: {misfit}"
                else:
                    info = {"images_seen": (rec.get("manifest") or {}).get("images_seen")}
                    info.update(
                        {k: entry[k] for k in ("seconds_per_iter", "images_seen") if k in entry}
                    )
                    curve = folder / entry.get("loss_curve", f"{stem}.loss_curve.csv")
                    info["loss_curve"] = str(curve) if curve.is_file() else None
                    out[v.name] = Weights(kind, path, _non_finite(path, rec["model"]), info)
                    continue
        problems.append(note)
        out[v.name] = Weights("random", None, note)
    if explicit and problems:
        raise UsageError(
            f"--weights {folder}: " + "; ".join(problems) + ". Expected fp16 zoo files "
            "<detector>-<backbone>.pt from `python -m bench train --export-zoo DIR` or --train"
        )
    return out


def train_variants(spec: RunSpec, builders: Mapping[str, Callable]) -> Path:
    """Train every variant of ``spec`` (resumable; on every rank) into ``out/train``; rank 0
    exports ``out/zoo``, which it returns."""
    cfg = TrainConfig(input_size=spec.data.input_size)
    if spec.train_images is not None:
        cfg = TrainConfig(input_size=spec.data.input_size, images_seen=spec.train_images)
    zoo, summaries = spec.out / "zoo", []
    for v in spec.variants:
        s = train_detector(
            v.base, data_root=spec.data.root, out_dir=spec.out / "train" / v.name, cfg=cfg,
            device=spec.device, backbone=spec.backbone, preset=spec.data.preset,
            detector_kwargs=v.kwargs, progress=spec.progress, builder=builders[v.base],
        )  # fmt: skip
        summaries.append((v, s))
    on_main(lambda: export_zoo([(v.name, s) for v, s in summaries], zoo))  # others wait
    return zoo


def open_store(spec: RunSpec, evalset: EvalSet) -> ResultStore:
    """The run's ResultStore (refusing another run's folder, or this run's once the data has
    changed: ``EvalSet.fingerprint`` in ``run.json``), ``env.json`` and the evaluated ground
    truth ``annotations.json`` (rank 0)."""
    store = ResultStore(spec.out, config=spec.config(), env=collect_env(),
                        dataset=evalset.described(), fingerprint=evalset.fingerprint())  # fmt: skip
    if not (spec.out / "env.json").exists():
        write_json_atomic(spec.out / "env.json", store.env)
    if not evalset.gt_path.exists():
        keep = {evalset.dataset.ids[i] for i in evalset.indices}
        data = evalset.dataset.coco.dataset
        gt = {k: v for k, v in data.items() if k not in ("images", "annotations")}
        gt["images"] = [im for im in data["images"] if im["id"] in keep]
        gt["annotations"] = [a for a in data["annotations"] if a["image_id"] in keep]
        write_json_atomic(evalset.gt_path, gt, indent=None)
    return store


@dataclass
class SuiteOutcome:
    """What :func:`run_suite` did: the store (rank 0; None elsewhere), the report files and
    the variants that failed (``"name (error)"``)."""

    store: ResultStore | None
    report: tuple[Path, Path] | None
    failed: list[str]


def run_suite(
    spec: RunSpec, builders: Mapping[str, Callable] | None = None, *,
    err: Console | None = None, main: bool = True,
) -> SuiteOutcome:  # fmt: skip
    """Evaluate, time and store every variant of ``spec`` (see the module docstring).

    ``builders`` (default: the registry) build each variant's base detector; ``err`` gets
    the progress and warnings (rank 0 speaks for every rank); ``main``: this is rank 0.
    """
    builders = dict(DETECTORS if builders is None else builders)
    err = err or Console(stderr=True, quiet=not main)
    evalset = EvalSet.load(spec)
    if evalset.skipped:
        err.print(
            f"[bold red]WARNING: {len(evalset.skipped)} UNREADABLE VALIDATION IMAGE(S) "
            f"SKIPPED[/] (not evaluated, left out of the ground truth; AP is over the "
            f"{len(evalset.indices)} others):"
        )
        for name, why in sorted(evalset.skipped.items()):
            err.print(f"  {escape(str(evalset.dataset.image_dir / name))}: {escape(why)}")
    cat_ids = evalset.dataset.cat_ids
    weights_dir = spec.weights_dir
    resolved = None
    if not spec.train:
        resolved = resolve_weights(
            list(spec.variants), weights_dir, explicit=spec.explicit_weights,
            backbone=spec.backbone, preset=spec.data.preset, cat_ids=cat_ids, builders=builders,
        )  # fmt: skip
    store = on_main(lambda: open_store(spec, evalset))
    if spec.train:
        weights_dir = train_variants(spec, builders)
        resolved = resolve_weights(
            list(spec.variants), weights_dir, explicit=True, backbone=spec.backbone,
            preset=spec.data.preset, cat_ids=cat_ids, kind="trained", builders=builders,
        )  # fmt: skip
    random_rows = [v.name for v in spec.variants if resolved[v.name].kind == "random"]
    if random_rows:
        err.print(
            f"[bold red]WARNING: RANDOM WEIGHTS[/] for {escape(', '.join(random_rows))}: no "
            f"matching checkpoint in {escape(str(weights_dir))} (their AP means nothing; see "
            "`python -m bench train`). Why, per detector:"
        )
        for name in random_rows:
            err.print(f"  {escape(name)}: {escape(resolved[name].note)}")
    for v in spec.variants:  # loaded, but with a warning (non-finite weights)
        if resolved[v.name].kind != "random" and resolved[v.name].note:
            err.print(f"[bold red]WARNING[/]: {escape(v.name)}: {escape(resolved[v.name].note)}")
    budgets = weights_dir / BUDGETS_NAME  # AP by training budget (bench analyze budgets)
    if main and budgets.is_file() and not spec.train:
        write_text_atomic(spec.out / BUDGETS_NAME, budgets.read_text())
    key = (spec.backbone, spec.data.input_size, spec.device.type, spec.dtype)
    done = [
        v.name
        for v in spec.variants
        if store and all(store.has((v.name, *key, b)) for b in spec.timing.batches)
    ]
    done = broadcast_from_main(done)
    progress = Progress(
        "{task.description}", BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        console=err, disable=not spec.progress or not main,
    )  # fmt: skip
    failed = []
    with progress:
        for v in spec.variants:
            if v.name in done:
                err.print(f"{v.name}: already in {spec.out}, skipped", markup=False)
                continue
            try:
                measure_variant(v, resolved[v.name], spec, evalset, builders, store, progress)
            except Exception as exc:  # one broken detector must not cost the others' rows
                console = err if main else Console(stderr=True)  # every rank's own traceback
                console.print(traceback.format_exc(), markup=False, highlight=False)
                failed.append(f"{v.name} ({type(exc).__name__}: {exc})")
            barrier()  # rank 0 timed and stored the rows
    report = write_report(spec.out) if main else None
    return SuiteOutcome(store, report, failed)
