"""CornerNet's error analysis (paper section 4.5, Table 6): replace predicted heads by truth.

The paper replaces the predicted corner heatmaps by ground-truth ones (AP 38.4 -> 73.1 on
COCO) and then also the offsets (-> 86.1), concluding that "the main bottleneck of CornerNet
is detecting corners". :func:`oracle_outputs` does the same on one stack's raw outputs, and
adds a third oracle the paper leaves out, the embeddings (which pair two corners), so that
grouping errors can be told apart from corner errors:

- ``"heatmaps"``: ``tl_heat``/``br_heat`` logits become ``logit(gt)`` of the training
  targets (Gaussian bumps peaking at 1 on each corner cell, 0 elsewhere), clamped to
  ``[eps, 1 - eps]``; the decode's max-pool keeps exactly the corner cells.
- ``"offsets"``: ``tl_regr``/``br_regr`` at every object's corner cell become its true
  sub-cell offset (elsewhere unchanged).
- ``"embeddings"``: ``tl_tag``/``br_tag`` at object ``k``'s corner cells become ``k`` (the
  objects of an image get tags 1, 2, ..., so that corners of different objects differ by
  at least 1, more than the decode's ``ae_threshold`` 0.5); elsewhere unchanged.

With all three, the decode returns the ground-truth boxes (up to the clipping of boxes to
the image and two objects sharing a corner cell): the test that this module is right.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

__all__ = ["ORACLES", "oracle_outputs"]

ORACLES = ("heatmaps", "offsets", "embeddings")
_EPS = 1e-4


def oracle_outputs(outputs: dict, targets: dict, oracles: Iterable[str]) -> dict:
    """``outputs`` (CornerNetDetector.forward) with its last stack's heads replaced by truth.

    Args:
        outputs: ``{"stacks": [...], "input_size": (H, W)}``; the last stack is used.
        targets: :meth:`CornerNetDetector.targets` for these outputs: ``tl_heat``/``br_heat``
            (N, C, h, w), ``tl_regr``/``br_regr`` (N, M, 2), ``tl_tag``/``br_tag`` (N, M)
            flat cell indices, ``mask`` (N, M).
        oracles: names from :data:`ORACLES`.

    Returns a new outputs dict (the input is not modified) with a single stack.
    """
    oracles = set(oracles)
    unknown = oracles - set(ORACLES)
    if unknown:
        raise ValueError(f"oracles {sorted(unknown)}: expected names from {ORACLES}")
    heads = {
        k: v.clone(memory_format=torch.contiguous_format) for k, v in outputs["stacks"][-1].items()
    }
    n, _, h, w = heads["tl_heat"].shape
    mask = targets["mask"].bool()
    for corner in ("tl", "br"):
        if "heatmaps" in oracles:
            gt = targets[f"{corner}_heat"].to(heads[f"{corner}_heat"].dtype)
            heads[f"{corner}_heat"] = torch.logit(gt.clamp(_EPS, 1 - _EPS))
        index = targets[f"{corner}_tag"]  # (N, M) flat cell of each object's corner
        for i in range(n):
            cells = index[i][mask[i]]
            if "offsets" in oracles:
                regr = heads[f"{corner}_regr"][i].reshape(2, h * w)  # (2, h, w) -> (2, h*w)
                regr[:, cells] = targets[f"{corner}_regr"][i][mask[i]].T.to(regr.dtype)
            if "embeddings" in oracles:
                tag = heads[f"{corner}_tag"][i].reshape(h * w)  # (1, h, w) -> (h*w,)
                ids = torch.arange(1, cells.numel() + 1, device=tag.device, dtype=tag.dtype)
                tag[cells] = ids
    return {**outputs, "stacks": [heads]}
