"""The report of a run folder (the command is :mod:`bench.commands.report`).

A pure function of the saved results: ``results.json`` (rows, dataset, env), the evaluated
ground truth (``dataset.annotations``, else ``DIR/annotations.json``), the detection files
``detections/<detector>.json``, the loss curves named by the rows and the sample images
``plots/sample_<detector>.png`` saved by the run (they need the model). Rerunning it gives
the same ``report.md``.

Written: ``plots/`` (:mod:`bench.results.plots`: AP against latency with the Pareto front, anchors
against AP, per-stage latency, precision-recall curves recomputed with pycocotools from the
saved detections, training curves when loss curves exist, the TIDE error bars), ``report.md``
(images linked; with the AP/AP50 bootstrap intervals, the pairs of detectors not significantly
different and the TIDE table of :mod:`bench.results.report_eval`) and ``report.html``
(self-contained: images embedded as base64). A row's ``sample`` is shown only when it is a
PNG or JPEG image (by its first bytes) inside the run folder: any other file it names (``../``,
an absolute path elsewhere, a text file) is left out with a warning naming the row and the
path, in the report and on stderr. Rows of different devices go to
separate tables, never one. Rows evaluated with random weights are flagged in a warning and in
the table's ``weights`` column.
"""

from __future__ import annotations

import base64
import contextlib
import html
import io
import json
import os
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from pycocotools.cocoeval import COCOeval

from bench.errors import UsageError
from bench.results import plots
from bench.results.coco_eval import load_coco_gt
from bench.results.report_budget import budget_blocks
from bench.results.report_claims import claim_blocks
from bench.results.report_eval import ap50_marks, significance_block, tide_blocks
from bench.results.store import write_text_atomic

__all__ = [
    "build_blocks",
    "load_results",
    "precision_recall",
    "render_html",
    "render_markdown",
    "write_report",
]

Block = tuple[Any, ...]
IMAGE_MAGIC = {b"\x89PNG\r\n\x1a\n": "image/png", b"\xff\xd8\xff": "image/jpeg"}
# (header, row field, format)
COLUMNS: tuple[tuple[str, str, str], ...] = (
    ("detector", "detector", "s"), ("weights", "weights", "w"), ("batch", "batch", "d"),
    ("params", "params", "M"), ("anchors/img", "anchors_per_image", ","),
    ("pos/img", "positives_per_image", ".1f"), ("neg/img", "negatives_per_image", ",.0f"),
    ("cov@.5", "coverage50", ".2f"), ("cov@.7", "coverage70", ".2f"),
    ("AP", "AP", "ap"), ("AP 95% CI", "AP_ci95", "ci"), ("AP50", "AP50", "ap"),
    ("AP50 95% CI", "AP50_ci95", "ci"), ("AP50 vs best", "ap50_vs_best", "s"),
    ("AP75", "AP75", "ap"), ("APs", "APs", "ap"),
    ("APm", "APm", "ap"), ("APl", "APl", "ap"), ("AR100", "AR100", "ap"),
    ("p50 ms", "latency_ms_p50", ".1f"), ("p90 ms", "latency_ms_p90", ".1f"),
    ("p99 ms", "latency_ms_p99", ".1f"), ("pre ms", "latency_preprocess_ms_p50", ".1f"),
    ("fwd ms", "latency_forward_ms_p50", ".1f"), ("dec ms", "latency_decode_ms_p50", ".1f"),
    ("train s/it", "train_seconds_per_iter", ".3f"), ("imgs seen", "train_images_seen", ","),
)  # fmt: skip


def fmt(value: Any, spec: str) -> str:
    """One table cell: ``ap`` gives n/a for COCO's -1; ``ci`` [low, high]; ``M`` millions;
    ``w`` RANDOM loudly."""
    if value is None:
        return "-"
    if spec == "s":
        return str(value)
    if spec == "w":
        return "RANDOM" if value == "random" else str(value)
    if spec == "ap":
        return "n/a" if value < 0 else f"{value:.3f}"
    if spec == "ci":
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    if spec == "M":
        return f"{value / 1e6:.2f}M"
    return format(value, spec)


def load_results(out_dir: str | os.PathLike) -> dict[str, Any]:
    """``results.json`` of a run folder; UsageError naming the file when absent or invalid."""
    path = Path(out_dir) / "results.json"
    if not path.is_file():
        raise UsageError(f"{out_dir}: no results.json; expected a folder written by bench run")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
        raise UsageError(f"{path}: expected an object with a 'rows' list")
    return doc


def _gt_path(out_dir: Path, doc: Mapping[str, Any]) -> Path | None:
    stored = (doc.get("dataset") or {}).get("annotations")
    for candidate in (stored, out_dir / "annotations.json"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def precision_recall(
    gt: str | os.PathLike, detections: str | os.PathLike, iou: float = 0.5
) -> tuple[np.ndarray, np.ndarray]:
    """COCOeval's precision at ``iou`` (area all, 100 detections), averaged over the classes
    that have objects: ``(recall (101,), precision (101,))``; zeros without detections."""

    coco_gt = load_coco_gt(gt)
    dets = json.loads(Path(detections).read_text(encoding="utf-8"))
    recall = np.linspace(0.0, 1.0, 101)
    if not dets:  # pycocotools' loadRes fails on an empty list
        return recall, np.zeros_like(recall)
    with contextlib.redirect_stdout(io.StringIO()):
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(dets), iouType="bbox")
        evaluator.params.imgIds = sorted(coco_gt.getImgIds())
        evaluator.evaluate()
        evaluator.accumulate()
    t = int(np.argmin(np.abs(evaluator.params.iouThrs - iou)))
    p = evaluator.eval["precision"][t, :, :, 0, -1]  # (R recall points, K classes)
    valid = (p > -1).all(axis=0)
    precision = p[:, valid].mean(axis=1) if valid.any() else np.zeros(p.shape[0])
    return np.asarray(evaluator.params.recThrs), precision


def _resolve(out_dir: Path, path: str | None) -> Path | None:
    if not path:
        return None
    p = Path(path) if Path(path).is_absolute() else out_dir / path
    return p if p.is_file() else None


def image_type(path: str | os.PathLike) -> str | None:
    """``image/png`` or ``image/jpeg`` by the file's first bytes; None for anything else."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError:
        return None
    return next((kind for magic, kind in IMAGE_MAGIC.items() if head.startswith(magic)), None)


def _sample_blocks(out_dir: Path, rows: list[dict], first: Mapping[str, dict]) -> list[Block]:
    """The sample images of ``first`` (one row per detector) that are PNG or JPEG files inside
    ``out_dir``; a warning block (and a Python warning) for each other file a row names."""
    shown: list[Block] = []
    left_out: list[Block] = []
    root = out_dir.resolve()
    for name, row in first.items():
        rel = row.get("sample")
        path = _resolve(out_dir, rel) if isinstance(rel, str) else None
        if path is None and (rel is None or isinstance(rel, str)):
            continue  # no sample saved (a row measured without one)
        if path is None:
            why = "it is not a path"
        elif not path.resolve().is_relative_to(root):
            why = f"it lies outside the run folder {out_dir}"
        elif image_type(path) is None:
            why = "it is not a PNG or JPEG image"
        else:
            caption = f"{name}: detections" + (" and corner heatmaps" * ("cornernet" in name))
            shown.append(("img", rel, caption))
            continue
        index = next(i for i, r in enumerate(rows) if r is row)
        text = f"results.json row {index} ({name}): sample {rel!r} left out of the report: {why}"
        warnings.warn(text, stacklevel=2)
        left_out.append(("warn", text))
    return [("h", 2, "Sample detections"), *shown, *left_out] if shown or left_out else []


def _plots(out_dir: Path, doc: Mapping[str, Any], rows: list[dict]) -> list[Block]:
    """Regenerate the plots; returns the blocks showing them."""

    pdir = out_dir / "plots"
    blocks: list[Block] = [("h", 2, "Plots")]
    for name, func, caption in (
        ("ap_vs_latency.png", plots.plot_ap_vs_latency, "AP against median end-to-end latency"),
        ("anchors_vs_ap.png", plots.plot_anchors_vs_ap, "Anchors per image against AP"),
        ("stage_latency.png", plots.plot_stage_latency, "Median latency per stage"),
    ):
        func(rows, pdir / name)
        blocks.append(("img", f"plots/{name}", caption))
    gt, curves = _gt_path(out_dir, doc), {}
    first: dict[str, dict] = {}
    for r in rows:
        first.setdefault(r["detector"], r)  # one row per detector (its first batch size)
    for name, row in first.items():
        det = _resolve(out_dir, row.get("detections"))
        if gt is not None and det is not None:
            curves[name] = precision_recall(gt, det)
    if curves:
        title = "Precision-recall at IoU 0.5 (all areas, 100 detections)"
        plots.plot_pr_curves(curves, pdir / "pr_curves.png", title)
        blocks.append(("img", "plots/pr_curves.png", title))
    losses = {}
    for name, row in first.items():
        curve = _resolve(out_dir, row.get("loss_curve"))
        if curve is not None:
            losses[name] = pd.read_csv(curve)
    if losses:
        plots.plot_training_curves(losses, pdir / "training_curves.png")
        blocks.append(("img", "plots/training_curves.png", "Training loss against images seen"))
    return blocks + _sample_blocks(out_dir, rows, first)


def build_blocks(out_dir: str | os.PathLike) -> list[Block]:
    """The report as blocks: ("h", level, text), ("p", text), ("warn", text),
    ("table", headers, rows) and ("img", path relative to out_dir, caption)."""
    out_dir = Path(out_dir)
    doc = load_results(out_dir)
    rows, env, data = doc["rows"], doc.get("env") or {}, doc.get("dataset") or {}
    blocks: list[Block] = [("h", 1, f"cornerbench report: {out_dir.name}")]
    blocks.append(
        ("p", f"Dataset: {data.get('images', '?')} validation images of "
         f"{data.get('source', '?')} (evaluated ground truth: {data.get('annotations', '?')}).")
    )  # fmt: skip
    blocks.append(
        ("p", f"Provenance: git {env.get('git_revision', '?')}, "
         f"torch {env.get('torch_version', '?')}, triton {env.get('triton_version', '?')}, "
         f"CUDA {env.get('cuda_version', '?')}, "
         f"{env.get('date_utc', '?')}, `{env.get('command', '?')}`.")
    )  # fmt: skip
    random_rows = sorted({r["detector"] for r in rows if r.get("weights") == "random"})
    if random_rows:
        blocks.append(
            ("warn", f"RANDOM WEIGHTS: {', '.join(random_rows)} had no matching checkpoint and "
             "were evaluated untrained; their AP is meaningless (latency and anchors are not).")
        )  # fmt: skip
    cores = env.get("cpu_count_usable") or env.get("cpu_count") or 0
    busy = [r["detector"] for r in rows if cores and (r.get("load_avg_1m") or 0) > cores]
    if busy:
        blocks.append(
            ("warn", f"BUSY CPU: the 1-minute load average exceeded the {cores} usable cores "
             f"while timing {', '.join(dict.fromkeys(busy))}; their latencies are inflated.")
        )  # fmt: skip
    blocks.append(("h", 2, "Comparison"))
    for device in sorted({r["device"] for r in rows}):
        group = [r for r in rows if r["device"] == device]
        name = env.get("gpu_name") if device == "cuda" else env.get("cpu")
        first = group[0]
        blocks.append(
            ("h", 3, f"{device} ({name}): backbone {first['backbone']}, input "
             f"{first['input_size']} px, {first['dtype']}")
        )  # fmt: skip
        marks = ap50_marks(group)
        group = [{**r, "ap50_vs_best": marks.get(r["detector"])} for r in group]
        cells = [[fmt(r.get(field), spec) for _, field, spec in COLUMNS] for r in group]
        blocks.append(("table", [h for h, _, _ in COLUMNS], cells))
        blocks += [b for b in (significance_block(group),) if b is not None]
    blocks.append(
        ("p", "AP: COCO AP at IoU 0.50:0.95 (n/a: no objects of that size). pos/neg/img: what each "
         "detector's own matcher assigns per image. cov@.5/.7: share of the evaluated boxes "
         "whose best anchor has IoU >= 0.5/0.7 (anchor-based only). 95% CI: percentile "
         "interval over 1,000 bootstrap resamples of the evaluated images (seed 0). AP50 vs "
         "best: n.s. when the AP50 interval overlaps the best detector's (difference not "
         "significant), lower when it lies below it. Latency: ms per call of `batch` images, "
         "after warm-up, CUDA events on a GPU and perf_counter on a CPU; pre = letterbox + "
         "normalise, fwd = backbone + heads, dec = decode + NMS; p50/p90/p99 end to end.")
    )  # fmt: skip
    per_class = {r["detector"]: r.get("per_class") or {} for r in rows}
    classes = sorted({c for pc in per_class.values() for c in pc})
    if classes:
        blocks.append(("h", 2, "Per-class AP"))
        cells = [[c] + [fmt(pc.get(c), "ap") for pc in per_class.values()] for c in classes]
        blocks.append(("table", ["class", *per_class], cells))
    extra = claim_blocks(out_dir, rows) + tide_blocks(rows, out_dir) + budget_blocks(out_dir)
    return blocks + extra + _plots(out_dir, doc, rows)


def render_markdown(blocks: Sequence[Block]) -> str:
    """Markdown for ``blocks`` (images linked by relative path)."""
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h":
            lines += ["#" * block[1] + " " + block[2], ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "warn":
            lines += [f"> **WARNING** {block[1]}", ""]
        elif kind == "table":
            esc = [[str(c).replace("|", "\\|") for c in row] for row in [block[1], *block[2]]]
            lines.append("| " + " | ".join(esc[0]) + " |")
            lines.append("|" + "---|" * len(esc[0]))
            lines += ["| " + " | ".join(row) + " |" for row in esc[1:]]
            lines.append("")
        elif kind == "img":
            lines += [f"![{block[2]}]({block[1]})", ""]
    return "\n".join(lines).rstrip() + "\n"


CSS = (
    "body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;font-size:13px}td,th{border:1px solid #ccc;padding:3px 6px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}"
    ".warn{background:#fdd;border:2px solid #c00;padding:.6em;font-weight:bold}"
    "img{max-width:100%}figure{margin:1em 0}"
)


def render_html(blocks: Sequence[Block], out_dir: str | os.PathLike) -> str:
    """A self-contained HTML page for ``blocks``: PNG and JPEG images embedded as base64 (any
    other file an image block names is not embedded: its caption says so)."""
    e = html.escape
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'>"]
    parts.append(f"<title>cornerbench report</title><style>{CSS}</style></head><body>")
    for block in blocks:
        kind = block[0]
        if kind == "h":
            parts.append(f"<h{block[1]}>{e(block[2])}</h{block[1]}>")
        elif kind == "p":
            parts.append(f"<p>{e(block[1])}</p>")
        elif kind == "warn":
            parts.append(f"<p class='warn'>WARNING: {e(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{e(str(h))}</th>" for h in block[1])
            body = "".join(
                "<tr>" + "".join(f"<td>{e(str(c))}</td>" for c in row) + "</tr>" for row in block[2]
            )
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
        elif kind == "img":
            path = Path(out_dir) / block[1]
            mime = image_type(path)
            if mime is None:
                parts.append(f"<p>{e(block[2])}: {e(str(block[1]))} is not a PNG or JPEG image</p>")
                continue
            data = base64.b64encode(path.read_bytes()).decode("ascii")
            parts.append(
                f"<figure><img alt='{e(block[2])}' src='data:{mime};base64,{data}'>"
                f"<figcaption>{e(block[2])}</figcaption></figure>"
            )
    parts.append("</body></html>\n")
    return "\n".join(parts)


def write_report(out_dir: str | os.PathLike) -> tuple[Path, Path]:
    """(Re)write ``plots/``, ``report.md`` and ``report.html`` in ``out_dir``; their paths."""
    out_dir = Path(out_dir)
    blocks = build_blocks(out_dir)
    md = write_text_atomic(out_dir / "report.md", render_markdown(blocks))
    page = write_text_atomic(out_dir / "report.html", render_html(blocks, out_dir))
    return md, page
