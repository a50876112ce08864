"""Training checkpoints and model-zoo files: atomic saves, data fingerprints, fp16 export.

A training checkpoint (``<out>/<detector>/last.pt``, written by :mod:`bench.train.loop`) is a dict:

- ``model``, ``optimizer``, ``scheduler``, ``scaler`` (``None`` unless fp16 autocast): state
  dicts; ``step`` (optimiser steps done), ``images_seen`` (``step * batch_size``),
  ``total_steps``, ``finished``;
- ``rng``: torch's CPU (and CUDA) generator states;
- ``config`` (``dataclasses.asdict(TrainConfig)``), ``detector`` (:func:`detector_record`),
  ``command`` (``sys.argv``), ``seed``, ``data_fingerprint`` (:func:`data_fingerprint`),
  ``git`` (sha, ``-dirty`` appended when tracked files differ from HEAD);
- ``loss_curve`` (the rows of ``loss_curve.csv`` so far), ``log_window`` (the loss sums not
  yet logged), ``elapsed`` (training seconds so far, over all sessions).

A zoo file (:func:`export_half`) keeps only ``model`` (floating tensors in fp16, about a
quarter of a checkpoint with Adam's two moments), ``detector`` and ``manifest`` (config, seed,
step, images seen, final loss, data fingerprint, git, command). :func:`load_detector` rebuilds
the detector from either kind of file, in float32 and eval mode.

Files are written to a temporary file beside the destination, fsynced and renamed over it, so
an interrupted save leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from bench.errors import UsageError
from bench.results.store import write_atomic, write_json_atomic
from detectors import DETECTORS

__all__ = [
    "anchor_record",
    "check_resume",
    "data_fingerprint",
    "detector_record",
    "export_half",
    "load_checkpoint",
    "load_detector",
    "restore_training",
    "save_atomic",
    "training_checkpoint",
    "export_zoo",
    "zoo_path",
]

Builder = Callable[..., torch.nn.Module]


def save_atomic(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save(obj)`` to ``path`` through :func:`bench.results.store.write_atomic`."""
    return write_atomic(path, lambda fh: torch.save(obj, fh), binary=True)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint or zoo file onto the CPU; ``UsageError`` naming the file if it is bad.

    Loaded with ``weights_only=True``: tensors and plain containers only, no code.
    """
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a corrupt or foreign file
        raise UsageError(f"checkpoint {path} is not a readable torch file: {exc}") from exc
    if not isinstance(obj, dict) or "model" not in obj or "detector" not in obj:
        raise UsageError(
            f"checkpoint {path} is not a cornerbench checkpoint: expected a dict with "
            "'model' and 'detector'"
        )
    return obj


def data_fingerprint(ann_file: str | os.PathLike, num_images: int) -> str:
    """``"sha256:<hex of the annotation JSON's bytes>:<num_images> images"``.

    Two datasets with the same annotation file but a different number of usable images (a
    missing image folder entry, ``remove_empty``) get different fingerprints.
    """
    digest = hashlib.sha256()
    with open(ann_file, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return f"sha256:{digest.hexdigest()}:{int(num_images)} images"


def detector_record(
    name: str,
    *,
    backbone: str,
    preset: str,
    kwargs: Mapping[str, Any] | None,
    num_classes: int,
    label_to_cat_id: list[int],
) -> dict[str, Any]:
    """What is needed to rebuild a detector and map its labels back to dataset categories."""
    return {
        "name": str(name),
        "backbone": str(backbone),
        "preset": str(preset),
        "kwargs": dict(kwargs or {}),
        "num_classes": int(num_classes),
        "label_to_cat_id": [int(c) for c in label_to_cat_id],
    }


def training_checkpoint(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    *,
    state: Mapping[str, Any],
    provenance: Mapping[str, Any],
    device: torch.device,
) -> dict[str, Any]:
    """The last.pt dict (module docstring): states, ``state`` (step, elapsed, loss_curve,
    log_window, finished, images_seen, total_steps), torch's RNG states and ``provenance``
    (config, detector, command, seed, data_fingerprint, git)."""
    cuda = device.type == "cuda"
    return {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None else None,
        **state,
        "rng": {
            "torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if cuda else [],
        },
        **provenance,
        "device": str(device),
    }


def restore_training(
    ckpt: Mapping[str, Any],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler: Any,
    device: torch.device,
) -> None:
    """Load the states of a last.pt dict into the live objects and torch's RNG."""
    model.load_state_dict(ckpt["model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scheduler.load_state_dict(ckpt["scheduler"])
    if scaler is not None and ckpt.get("scaler"):
        scaler.load_state_dict(ckpt["scaler"])
    torch.set_rng_state(ckpt["rng"]["torch"])
    if device.type == "cuda" and ckpt["rng"].get("cuda"):
        torch.cuda.set_rng_state_all(ckpt["rng"]["cuda"])


def check_resume(
    ckpt: Mapping[str, Any],
    path: str | os.PathLike,
    provenance: Mapping[str, Any],
    ignore: tuple[str, ...] = (),
) -> None:
    """``UsageError`` unless ``ckpt`` continues the run described by ``provenance``: the same
    data fingerprint, detector record and config (keys in ``ignore`` may differ)."""
    fingerprint = provenance["data_fingerprint"]
    if ckpt.get("data_fingerprint") != fingerprint:
        raise UsageError(
            f"{path} was trained on data {ckpt.get('data_fingerprint')!r}, but this run's data "
            f"is {fingerprint!r}; use another --out or the same dataset"
        )
    if ckpt.get("detector") != provenance["detector"]:
        raise UsageError(
            f"{path} holds detector {ckpt.get('detector')}, not {provenance['detector']}"
        )
    stored, now = ckpt.get("config") or {}, provenance["config"]
    diff = [k for k in now if k not in ignore and stored.get(k) != now[k]]
    if diff:
        raise UsageError(
            f"{path} was trained with another configuration (differs in {', '.join(diff)}); "
            "use another --out or the same settings"
        )


def zoo_path(folder: str | os.PathLike, name: str, backbone: str) -> Path:
    """The zoo file of detector ``name`` on ``backbone``: ``folder/<name>-<backbone>.pt``."""
    return Path(folder) / f"{name}-{backbone}.pt"


def export_half(checkpoint: str | os.PathLike | Mapping[str, Any], path: str | os.PathLike) -> Path:
    """Write the weights of a training ``checkpoint`` (a path or a loaded dict) as fp16.

    The file holds ``{"model": state dict (floating tensors fp16, others unchanged),
    "detector": ..., "manifest": ...}`` (see the module docstring). Returns ``path``.
    """
    ckpt = load_checkpoint(checkpoint) if isinstance(checkpoint, (str, os.PathLike)) else checkpoint
    missing = [k for k in ("model", "detector", "config") if k not in ckpt]
    if missing:
        raise ValueError(f"export_half: the checkpoint lacks {missing}; expected a last.pt dict")
    model = {
        k: v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu()
        for k, v in ckpt["model"].items()
    }
    curve = ckpt.get("loss_curve") or []
    manifest = {
        "config": ckpt["config"],
        "seed": ckpt.get("seed"),
        "step": ckpt.get("step"),
        "images_seen": ckpt.get("images_seen"),
        "finished": ckpt.get("finished"),
        "final_loss": curve[-1]["loss"] if curve else None,
        "data_fingerprint": ckpt.get("data_fingerprint"),
        "git": ckpt.get("git"),
        "command": ckpt.get("command"),
        "dtype": "float16",
        "anchors": ckpt.get("anchors"),
    }
    return save_atomic({"model": model, "detector": ckpt["detector"], "manifest": manifest}, path)


def export_zoo(entries: list[tuple[str, Mapping[str, Any]]], folder: str | os.PathLike) -> Path:
    """Export finished training runs as zoo files in ``folder`` and update its manifest.

    ``entries``: (zoo name, train summary) pairs, a summary being what
    :func:`bench.train.loop.train_detector` returns (``checkpoint``, ``backbone``, ``loss_curve``,
    ``images_seen``, ``seconds_per_iter``, ``train_seconds``, ``final_loss``). Each becomes
    ``<name>-<backbone>.pt`` (fp16, :func:`export_half`) and ``<name>-<backbone>.loss_curve.csv``;
    ``manifest.json`` ``{"files": {stem: {"file", "loss_curve", "images_seen",
    "seconds_per_iter", "train_seconds", "final_loss"}}}`` keeps the entries of files exported
    before (so detectors can be exported one at a time). Returns the manifest's path.
    """

    folder = Path(folder)
    manifest_path = folder / "manifest.json"
    try:
        files = json.loads(manifest_path.read_text())["files"]
    except (OSError, ValueError, KeyError, TypeError):
        files = {}
    for name, s in entries:
        path = export_half(s["checkpoint"], zoo_path(folder, name, s["backbone"]))
        entry: dict[str, Any] = {"file": path.name}
        if s.get("loss_curve") and Path(s["loss_curve"]).is_file():
            curve = path.with_suffix(".loss_curve.csv")
            shutil.copyfile(s["loss_curve"], curve)
            entry["loss_curve"] = curve.name
        for key in ("images_seen", "seconds_per_iter", "train_seconds", "final_loss"):
            entry[key] = s.get(key)
        files[path.stem] = entry
    return write_json_atomic(manifest_path, {"files": dict(sorted(files.items()))})


def load_detector(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    builder: Builder | None = None,
) -> torch.nn.Module:
    """Rebuild the detector saved in ``path`` (zoo file or last.pt), float32, in eval mode.

    ``builder(num_classes, backbone=..., preset=..., **kwargs)`` defaults to the registry's
    builder for the recorded name. The recorded ``label_to_cat_id`` is in the file's
    ``detector`` entry (``load_checkpoint(path)["detector"]``).
    """
    ckpt = load_checkpoint(path)
    rec = ckpt["detector"]
    if builder is None:
        if rec["name"] not in DETECTORS:
            raise UsageError(
                f"checkpoint {path} holds detector {rec['name']!r}, which is not in the "
                f"registry ({', '.join(DETECTORS)})"
            )
        builder = DETECTORS[rec["name"]]
    model = builder(
        rec["num_classes"], backbone=rec["backbone"], preset=rec["preset"], **rec["kwargs"]
    )
    state = {k: v.float() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise UsageError(
            f"checkpoint {path}: weights do not fit detector {rec['name']!r} "
            f"(backbone {rec['backbone']!r}): {exc}"
        ) from exc
    return model.to(device).eval()


def anchor_record(model: torch.nn.Module) -> dict[str, Any] | None:
    """The anchor settings (sizes, ratios, scales, priors) a model places, as JSON-able lists;
    None for anchor-free detectors. Stored with the weights: a zoo file is only valid for the
    anchors it was trained with (bench.measure.suite.resolve_weights compares them)."""
    values = getattr(getattr(model, "config", None), "anchor_values", None)
    return json.loads(json.dumps(values())) if callable(values) else None
