"""Metric deltas between two run folders (the command is ``python -m bench compare DIR_A DIR_B``,
:mod:`bench.commands.compare`).

Rows are matched on (detector, backbone, input size, dtype, batch). Deltas are ``B - A``
(and ``B / A - 1`` for latency). Latency is only compared when both runs measured on the
same device (type and model name, from ``env``): figures from two devices never share a
table; the accuracy columns are compared whatever the device. COCO's -1 ("undefined") and
missing values give no delta. Rows present in one folder only are listed.

The two runs' data are compared too: ``dataset`` (source, root, images) of ``results.json``
and ``data_fingerprint`` of ``run.json``; :func:`dataset_mismatch` says how they differ (the
command warns on stderr: the AP of two data sets are not comparable).
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bench.results.report import load_results

__all__ = ["METRICS", "compare_results", "dataset_mismatch"]

MATCH: tuple[str, ...] = ("detector", "backbone", "input_size", "dtype", "batch")
DATA_KEYS: tuple[str, ...] = ("source", "root", "images")  # of results.json's "dataset"
# (header, row field)
METRICS: tuple[tuple[str, str], ...] = (
    ("AP", "AP"),
    ("AP50", "AP50"),
    ("AP75", "AP75"),
    ("AR100", "AR100"),
    ("anchors/img", "anchors_per_image"),
    ("params", "params"),
    ("p50 ms", "latency_ms_p50"),
    ("p90 ms", "latency_ms_p90"),
    ("p99 ms", "latency_ms_p99"),
    ("fwd ms", "latency_forward_ms_p50"),
    ("dec ms", "latency_decode_ms_p50"),
)


def _device(doc: Mapping[str, Any], row: Mapping[str, Any]) -> tuple[str, str]:
    env = doc.get("env") or {}
    kind = str(row.get("device"))
    return kind, str(env.get("gpu_name") if kind == "cuda" else env.get("cpu"))


def _value(row: Mapping[str, Any], field: str) -> float | None:
    v = row.get(field)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    if field.startswith("A") and v < 0:  # AP / AR: -1 is COCO's "undefined"
        return None
    return float(v)


def _data_identity(out_dir: str | os.PathLike, doc: Mapping[str, Any]) -> dict[str, Any]:
    """``dataset``'s source, root and images, and run.json's data_fingerprint (None if absent)."""
    data = doc.get("dataset") if isinstance(doc.get("dataset"), dict) else {}
    out = {k: data.get(k) for k in DATA_KEYS}
    try:
        run = json.loads((Path(out_dir) / "run.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        run = None
    out["data_fingerprint"] = run.get("data_fingerprint") if isinstance(run, dict) else None
    return out


def dataset_mismatch(result: Mapping[str, Any]) -> str | None:
    """None when the two runs' data agree (keys recorded by both), else one line naming both,
    e.g. ``A (runs/a) and B (runs/b) ran on different data: source a.json vs b.json``."""
    a, b = result["datasets"]["a"], result["datasets"]["b"]
    diff = [
        f"{k} {a[k]} vs {b[k]}"
        for k in (*DATA_KEYS, "data_fingerprint")
        if a[k] is not None and b[k] is not None and a[k] != b[k]
    ]
    if not diff:
        return None
    names = f"A ({result['dir_a']}) and B ({result['dir_b']})"
    return f"{names} ran on different data: {'; '.join(diff)}; their metrics are not comparable"


def compare_results(dir_a: str | os.PathLike, dir_b: str | os.PathLike) -> dict[str, Any]:
    """Compare two run folders.

    Returns ``{"matched": [{"key": {...}, "same_device": bool, "metrics": {field: {"a", "b",
    "delta", "relative"}}}], "only_a": [key dicts], "only_b": [key dicts], "dir_a", "dir_b",
    "datasets": {"a": {source, root, images, data_fingerprint}, "b": {...}}}``; latency fields
    are left out of ``metrics`` when the devices differ.
    """
    doc_a, doc_b = load_results(dir_a), load_results(dir_b)

    def index(doc):
        return {tuple(json.dumps(r.get(k)) for k in MATCH): r for r in doc["rows"]}

    rows_a, rows_b = index(doc_a), index(doc_b)
    matched = []
    for key, ra in rows_a.items():
        rb = rows_b.get(key)
        if rb is None:
            continue
        same = _device(doc_a, ra) == _device(doc_b, rb)
        metrics = {}
        for _, field in METRICS:
            if field.startswith("latency") and not same:
                continue
            a, b = _value(ra, field), _value(rb, field)
            delta = None if a is None or b is None else b - a
            rel = delta / a if delta is not None and a else None
            metrics[field] = {"a": a, "b": b, "delta": delta, "relative": rel}
        matched.append(
            {"key": {k: ra.get(k) for k in MATCH}, "same_device": same, "metrics": metrics}
        )

    def keys(rows, other):
        return [{k: r.get(k) for k in MATCH} for key, r in rows.items() if key not in other]

    datasets = {"a": _data_identity(dir_a, doc_a), "b": _data_identity(dir_b, doc_b)}
    return {
        "matched": matched,
        "only_a": keys(rows_a, rows_b),
        "only_b": keys(rows_b, rows_a),
        "dir_a": os.fspath(dir_a),
        "dir_b": os.fspath(dir_b),
        "datasets": datasets,
    }
