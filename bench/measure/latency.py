"""Per-stage latency of a detector (the command is :mod:`bench.commands.latency`).

Protocol (every figure in milliseconds, per call of a batch; batch 1 = per image):

- ``model.eval()`` under ``torch.inference_mode()``; ``warmup`` untimed iterations, then
  ``iters`` timed ones (:func:`bench.measure.timing.measure_stages`: ``time.perf_counter`` on
  the CPU,
  CUDA events with one synchronisation before and after the timed loop on a GPU).
- Stages of one iteration, on raw images (uint8 (3, H, W) as decoded from the file, cycled):
  ``preprocess``: copy to the device, scale to [0, 1], letterbox to the input size, normalise
  with the training mean/std (:func:`bench.data.stream.normalize_images`), cast to the dtype, stack;
  ``forward``: backbone and heads (the detector's own input padding included);
  ``decode``: the detector's decode and NMS on float32 outputs, boxes mapped back to the raw
  image (:func:`bench.data.transforms.invert_boxes`);
  ``end_to_end``: the whole iteration (the sum plus what lies between stages).
- :func:`summarize` gives ``p50``, ``p90``, ``p99``, ``mean`` and ``n`` per stage.
- Labelled variants of the forward stage: ``eager``; ``compile`` (``torch.compile(model)``,
  compiled during warm-up); ``cudagraphs`` (``torch.compile(model, backend="cudagraphs")``:
  CUDA graph replay without Inductor; CUDA only). Compiled variants get at least
  ``COMPILED_WARMUP`` warm-up calls. Under ``cudagraphs``, a detector with ``decode_graph``
  (CenterNet, CornerNet: the kernels are custom ops, :mod:`kernels.ops`) has its forward AND
  the static part of its decode captured in one graph, timed as ``forward``; ``decode`` is
  then what remains on the host (``decode_host``: CenterNet's unpadding, CornerNet's soft-NMS,
  whose output size is data-dependent) plus mapping boxes back.

``python -m bench latency --suite synthetic`` times the registry's detectors on the tiny
backbone at 128 px with 9 classes (the synthetic benchmark); ``--suite paper`` on the full
Hourglass-104 (``backbone="hg104"``) at 511 x 511 with 80 classes, beside the CornerNet paper's
244 ms per image on a Titan X. Every detector gets the same 511 px letterboxed input; those
whose backbone or pyramid needs a multiple of 32 zero-pad it to 512 inside ``forward`` (counted
in forward latency and in anchors), CornerNet uses 511 as its release does. Weights are random
(latency does not depend on them, except through how many boxes reach NMS). Raw images are
rendered by the synthetic generator (:func:`bench.data.synthetic.render_image`) in memory.
On a CPU the paper suite warns and runs few iterations.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from PIL import Image

from bench.data.stream import normalize_images
from bench.data.synthetic import render_image
from bench.data.transforms import Letterbox, invert_boxes
from bench.errors import UsageError
from bench.measure.timing import TOTAL, measure_stages, summarize
from bench.spec import LatencySpec
from detectors import DETECTORS
from detectors.base import float32_outputs

__all__ = [
    "END_TO_END",
    "PAPER_CORNERNET_MS",
    "STAGES",
    "VARIANTS",
    "flatten_latency",
    "load_raw_images",
    "make_forward",
    "measure_latency",
    "preprocess",
    "render_raw_images",
    "time_suite",
]

STAGES: tuple[str, ...] = ("preprocess", "forward", "decode")
END_TO_END = "end_to_end"
VARIANTS: tuple[str, ...] = ("eager", "compile", "cudagraphs")
# CornerNet paper, section 4.5: "244ms per image on a Titan X (PASCAL) GPU", Hourglass-104
PAPER_CORNERNET_MS = 244.0
# suite -> (backbone, input size, classes, raw image size)
SUITES: dict[str, tuple[str, int, int, int]] = {
    "synthetic": ("tiny", 128, 9, 128),  # the built-in benchmark: 9 categories, 128 px
    "paper": ("hg104", 511, 80, 640),  # COCO: 80 classes, the release's 511 px test input
}
# (warm-up, timed iterations) by device type; a GPU always gets at least 100 timed images
DEFAULT_ITERS: dict[tuple[str, str], tuple[int, int]] = {
    ("synthetic", "cpu"): (3, 20),
    ("paper", "cpu"): (1, 3),
    ("synthetic", "cuda"): (10, 100),
    ("paper", "cuda"): (10, 100),
}
# compiled variants compile (and may recompile) during their first calls
COMPILED_WARMUP = 10
Builder = Callable[..., torch.nn.Module]


def preprocess(
    raw: torch.Tensor, input_size: int, device: torch.device | str, dtype: torch.dtype
) -> tuple[torch.Tensor, dict[str, Any]]:
    """A raw image (3, H, W) uint8 (or float in [0, 1]) -> the network input (3, S, S).

    Letterboxed to ``input_size`` (S), normalised, cast to ``dtype`` on ``device``. Returns the
    input and the letterbox ``meta`` that :func:`bench.data.transforms.invert_boxes` needs.
    """

    if not isinstance(raw, torch.Tensor) or raw.dim() != 3 or raw.shape[0] != 3:
        what = tuple(raw.shape) if isinstance(raw, torch.Tensor) else type(raw).__name__
        raise ValueError(f"raw image must be a (3, H, W) tensor, got {what}")
    x = raw.to(device, non_blocking=True)
    x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
    x, target = Letterbox(input_size)(x, {})
    return normalize_images(x[None])[0].to(dtype), target["meta"]


def make_forward(model: torch.nn.Module, variant: str, device: torch.device) -> Callable:
    """The forward callable of a labelled variant (see the module docstring)."""
    if variant == "eager":
        return model
    if variant == "compile":
        return torch.compile(model)
    if variant == "cudagraphs":
        if device.type != "cuda":
            raise UsageError("variant cudagraphs needs --device cuda")
        if hasattr(model, "decode_graph"):
            return _ForwardDecode(model, "cudagraphs")
        return torch.compile(model, backend="cudagraphs")
    raise UsageError(f"latency variant {variant!r}: expected one of {', '.join(VARIANTS)}")


class _ForwardDecode:
    """``model.decode_graph(model(x), sizes)`` compiled as one graph; sizes = x's (H, W).

    ``measure_latency`` then decodes its output with ``model.decode_host``.
    """

    graph_decode = True

    def __init__(self, model: torch.nn.Module, backend: str) -> None:
        self.model = model
        self.fn = torch.compile(self._run, backend=backend)

    def _run(self, x: torch.Tensor) -> Any:
        sizes = [(int(x.shape[-2]), int(x.shape[-1]))] * x.shape[0]
        return self.model.decode_graph(self.model(x), sizes)

    def __call__(self, x: torch.Tensor) -> Any:
        return self.fn(x)


def measure_latency(
    model: torch.nn.Module,
    raw_images: Sequence[torch.Tensor],
    *,
    input_size: int,
    device: torch.device | str,
    dtype: torch.dtype = torch.float32,
    batch: int = 1,
    warmup: int,
    iters: int,
    forward: Callable | None = None,
) -> dict[str, dict[str, float]]:
    """Per-stage latency of ``model`` (already on ``device`` in ``dtype``) on ``raw_images``.

    Args:
        raw_images: (3, H, W) uint8 tensors (on the CPU), cycled through, ``batch`` per call.
        forward: the forward callable (default ``model``; see :func:`make_forward`).

    Returns:
        ``{"preprocess" | "forward" | "decode" | "end_to_end": {"p50", "p90", "p99", "mean",
        "n"}}`` in ms per call of ``batch`` images.
    """
    if not raw_images:
        raise ValueError("measure_latency needs at least one raw image, got none")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch must be an int >= 1, got {batch!r}")
    device = torch.device(device)
    fwd = model if forward is None else forward
    sizes = [(input_size, input_size)] * batch
    counter = itertools.count()
    n = len(raw_images)

    def step(timer) -> list[torch.Tensor]:
        first = next(counter) * batch
        chosen = [raw_images[(first + j) % n] for j in range(batch)]
        with timer.stage("preprocess"):
            prepared = [preprocess(im, input_size, device, dtype) for im in chosen]
            x = torch.stack([p[0] for p in prepared])  # (B, 3, S, S)
        with timer.stage("forward"):
            outputs = fwd(x)
        with timer.stage("decode"):
            if getattr(fwd, "graph_decode", False):  # decode_graph ran in the forward stage
                dets = model.decode_host(outputs)
            else:
                dets = model.decode(float32_outputs(outputs), sizes)
            boxes = [invert_boxes(d.boxes, p[1]) for d, p in zip(dets, prepared)]
        return boxes

    model.eval()
    with torch.inference_mode():
        times = measure_stages(step, warmup=warmup, iters=iters, device=device)
    out = {name: summarize(times[name]) for name in STAGES}
    out[END_TO_END] = summarize(times[TOTAL])
    return out


def flatten_latency(stats: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    """Result-row columns: ``latency_ms_{p50,p90,p99,mean}`` (end to end), per-stage
    ``latency_<stage>_ms_p50`` (medians), ``latency_iters`` and ``latency`` (everything)."""
    e2e = stats[END_TO_END]
    row: dict[str, Any] = {f"latency_ms_{k}": e2e[k] for k in ("p50", "p90", "p99", "mean")}
    for stage in STAGES:
        row[f"latency_{stage}_ms_p50"] = stats[stage]["p50"]
    row["latency_iters"] = int(e2e["n"])
    row["latency"] = {k: dict(v) for k, v in stats.items()}
    return row


def load_raw_images(paths: Sequence[str | os.PathLike]) -> list[torch.Tensor]:
    """Image files decoded to raw (3, H, W) uint8 RGB tensors (the input of ``preprocess``)."""

    images = []
    for path in paths:
        with Image.open(path) as im:
            array = np.array(im.convert("RGB"))  # (H, W, 3) uint8
        images.append(torch.from_numpy(array).permute(2, 0, 1).contiguous())
    return images


def render_raw_images(count: int, size: int, seed: int = 0) -> list[torch.Tensor]:
    """``count`` synthetic-benchmark images of ``size`` px, as raw (3, S, S) uint8 tensors."""

    images = []
    for i in range(count):
        rng = np.random.default_rng(np.random.SeedSequence([seed, 7, i]))
        array = render_image(rng, size)[0]  # (S, S, 3) uint8
        images.append(torch.from_numpy(array).permute(2, 0, 1).contiguous())
    return images


# ---- python -m bench latency --------------------------------------------------------------


def time_suite(
    spec: LatencySpec,
    builders: Mapping[str, Builder] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Time each detector of ``spec`` (random weights) on its suite; one row per (detector,
    batch, mode) with detector, backbone, input_size, device, dtype, batch, variant (the
    mode), params and :func:`flatten_latency`'s columns (``paper_ms`` for CornerNet on paper).
    ``builders``: default the registry's."""
    builders = DETECTORS if builders is None else builders
    backbone, default_size, num_classes, raw_size = SUITES[spec.suite]
    size = spec.input_size or default_size
    raw = render_raw_images(spec.timing.images, raw_size)
    device, warmup = spec.device, spec.timing.warmup
    rows = []
    for name in spec.names:
        torch.manual_seed(0)
        model = builders[name](num_classes, backbone=backbone, preset="synthetic")
        model = model.to(device=device, dtype=spec.torch_dtype).eval()
        params = sum(p.numel() for p in model.parameters())
        for mode, batch in itertools.product(spec.modes, spec.timing.batches):
            if progress is not None:
                progress(f"{name} ({mode}, batch {batch})")
            fwd = make_forward(model, mode, device)
            stats = measure_latency(
                model, raw, input_size=size, device=device, dtype=spec.torch_dtype, batch=batch,
                warmup=warmup if mode == "eager" else max(warmup, COMPILED_WARMUP),
                iters=spec.timing.iters, forward=fwd,
            )  # fmt: skip
            row = {"detector": name, "backbone": backbone, "input_size": size}
            row.update(device=device.type, dtype=spec.dtype, batch=batch, variant=mode)
            row.update(weights="random", params=params, **flatten_latency(stats))
            if spec.suite == "paper" and name == "cornernet":
                row["paper_ms"] = PAPER_CORNERNET_MS
            rows.append(row)
        del model
    return rows
