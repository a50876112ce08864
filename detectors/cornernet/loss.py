"""CornerNet training losses, numerically matching the ECCV 2018 release.

With ``p = clamp(sigmoid(logit), 1e-4, 1 - 1e-4)`` and Gaussian-reduced targets ``y``:

* focal (variant focal loss, alpha 2, beta 4), per stack, over all N*C*H*W elements::

      L_det = -1/N_pos * ( sum_{y=1} (1-p)^2 log p + sum_{y<1} (1-y)^4 p^2 log(1-p) )

  (not divided when N_pos = 0); summed over the stacks given.
* pull / push (associative embedding, Delta = 1), per image with n objects, tags
  ``e_tk``, ``e_bk`` and means ``e_k``::

      pull = sum_k ((e_tk - e_k)^2 + (e_bk - e_k)^2) / (n + 1e-4)
      push = sum_{k,j} (relu(1 - |e_k - e_j|) - 1/(n + 1e-4)) / (n (n - 1) + 1e-4)

  summed over the images; the ``k = j`` terms cancel the ``1/n`` correction, so for
  n >= 2 this is the mean of ``relu(1 - |e_k - e_j|)`` over ordered pairs k != j.
* regr: smooth L1 (beta 1) of the gathered offsets, summed, / (number of objects + 1e-4).

:func:`cornernet_loss` gathers the predicted tags and offsets at the target indices
(:func:`gather_at`), sums each part over the stacks and divides the weighted total by the
number of stacks, as the release's ``AELoss``. Nothing here modifies its inputs (the
release's ``_sigmoid`` overwrites the logits in place). Losses are computed in float32
even for half-precision inputs (``log(1 - p)`` with ``p = 1 - 1e-4`` is ``-inf`` in fp16).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["CornerNetLoss", "ae_loss", "cornernet_loss", "focal_loss", "gather_at", "regr_loss"]

OUTPUT_KEYS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr")
TARGET_KEYS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr", "mask")


def focal_loss(pred_logits: Sequence[Tensor] | Tensor, gt: Tensor) -> Tensor:
    """Variant focal loss of CornerNet (alpha 2, beta 4), summed over the stacks given.

    Args:
        pred_logits: one ``(N, C, H, W)`` logit tensor or a sequence of them (one per stack).
        gt: ``(N, C, H, W)`` targets: 1 at corners, Gaussian-reduced values in [0, 1)
            elsewhere (values above 1 count as neither positive nor negative, as the release).

    Returns:
        Scalar float32: per stack ``-(pos + neg) / num_pos`` (``-neg`` when ``num_pos`` is 0),
        summed over the stacks.
    """
    preds = [pred_logits] if isinstance(pred_logits, Tensor) else list(pred_logits)
    if not preds:
        raise ValueError("pred_logits: expected at least one (N, C, H, W) tensor, got none")
    for i, pred in enumerate(preds):
        if pred.shape != gt.shape or pred.dim() != 4:
            raise ValueError(
                f"pred_logits[{i}]: expected shape {tuple(gt.shape)} (N, C, H, W) matching gt, "
                f"got {tuple(pred.shape)}"
            )
    gt = gt.float()
    pos = gt.eq(1)
    neg = gt.lt(1)
    neg_weight = torch.pow(1 - gt, 4) * neg
    # num_pos is an integer: clamping at 1 is exact and, with pos_loss = 0 when there are no
    # positives, reproduces the release's "no division" branch without a host sync.
    num_pos = pos.sum().clamp(min=1).float()
    loss = gt.new_zeros(())
    for pred in preds:
        p = torch.sigmoid(pred.float()).clamp(min=1e-4, max=1 - 1e-4)
        pos_loss = (torch.log(p) * torch.pow(1 - p, 2) * pos).sum()
        neg_loss = (torch.log(1 - p) * torch.pow(p, 2) * neg_weight).sum()
        loss = loss - (pos_loss + neg_loss) / num_pos
    return loss


def _flat_tags(name: str, tag: Tensor, batch: int, slots: int) -> Tensor:
    """(B, M, 1) or (B, M) -> (B, M) float32 (an explicit reshape, never squeeze())."""
    if tag.shape not in ((batch, slots), (batch, slots, 1)):
        raise ValueError(
            f"{name}: expected shape ({batch}, {slots}) or ({batch}, {slots}, 1) matching mask, "
            f"got {tuple(tag.shape)}"
        )
    return tag.float().reshape(batch, slots)


def ae_loss(tag0: Tensor, tag1: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Associative-embedding pull and push losses (Delta = 1), summed over the images.

    Matches the release's ``_ae_loss`` for a uint8 mask and B >= 2, including its 1e-4
    terms, with two flaws of the release fixed (nothing else changes):

    * the mask may be bool or any integer dtype (nonzero = object); the release's push term
      is silently 0 for a bool mask (``mask + mask == 2`` never holds for bools);
    * B = 1 works and gives the same value as that image inside a larger batch (the
      release's ``squeeze()`` also drops the batch axis).

    An image without objects contributes 0 to both. Kept from the release: an image with
    exactly one object adds a constant ``(1 - 1/(1 + 1e-4)) / 1e-4 ~= 0.9999`` to push
    (its only pair is the object with itself), with zero gradient.

    Args:
        tag0: ``(B, M, 1)`` or ``(B, M)`` top-left embeddings at the objects' corners.
        tag1: the bottom-right embeddings, same shape.
        mask: ``(B, M)`` which slots hold an object.

    Returns:
        ``(pull, push)`` scalars, float32.
    """
    if mask.dim() != 2 or mask.is_floating_point():
        raise ValueError(
            f"mask: expected a bool or integer tensor of shape (B, M), got shape "
            f"{tuple(mask.shape)} dtype {mask.dtype}"
        )
    batch, slots = mask.shape
    t0 = _flat_tags("tag0", tag0, batch, slots)
    t1 = _flat_tags("tag1", tag1, batch, slots)
    valid = mask != 0  # (B, M) bool
    num = valid.sum(dim=1, keepdim=True).float()  # (B, 1) objects per image
    mean = (t0 + t1) / 2  # (B, M)
    pull0 = torch.where(valid, torch.pow(t0 - mean, 2) / (num + 1e-4), 0).sum()
    pull1 = torch.where(valid, torch.pow(t1 - mean, 2) / (num + 1e-4), 0).sum()
    pull = pull0 + pull1

    pairs = valid.unsqueeze(1) & valid.unsqueeze(2)  # (B, M, M): both slots hold objects
    num = num.unsqueeze(2)  # (B, 1, 1)
    num2 = (num - 1) * num
    dist = F.relu(1 - torch.abs(mean.unsqueeze(1) - mean.unsqueeze(2)))  # (B, M, M)
    dist = (dist - 1 / (num + 1e-4)) / (num2 + 1e-4)
    push = torch.where(pairs, dist, 0).sum()
    return pull, push


def regr_loss(regr: Tensor, gt_regr: Tensor, mask: Tensor) -> Tensor:
    """Smooth L1 (beta 1) offset loss, summed over objects and x/y, / (num objects + 1e-4).

    Args:
        regr: ``(B, M, 2)`` predicted offsets gathered at the objects' corners.
        gt_regr: ``(B, M, 2)`` target offsets.
        mask: ``(B, M)`` bool or integer, which slots hold an object (the whole batch's
            count normalises, as the release).

    Returns:
        Scalar float32.
    """
    if regr.shape != gt_regr.shape or regr.dim() != 3 or mask.shape != regr.shape[:2]:
        raise ValueError(
            f"regr {tuple(regr.shape)}, gt_regr {tuple(gt_regr.shape)}, mask "
            f"{tuple(mask.shape)}: expected (B, M, 2), (B, M, 2) and (B, M)"
        )
    valid = (mask != 0).unsqueeze(2)  # (B, M, 1)
    num = valid.sum().float()
    per_elem = F.smooth_l1_loss(regr.float(), gt_regr.float(), reduction="none", beta=1.0)
    return torch.where(valid, per_elem, 0).sum() / (num + 1e-4)


def gather_at(feature: Tensor, index: Tensor) -> Tensor:
    """Feature vectors at flat spatial indices: ``out[n, m, c] = feature[n, c].flatten()[i]``
    with ``i = index[n, m] = y * W + x``.

    Args:
        feature: ``(N, C, H, W)``.
        index: ``(N, M)`` integer flat indices in ``[0, H * W)``.

    Returns:
        ``(N, M, C)``, differentiable with respect to ``feature``.
    """
    if feature.dim() != 4:
        raise ValueError(f"feature: expected shape (N, C, H, W), got {tuple(feature.shape)}")
    n, c, h, w = feature.shape
    if index.dim() != 2 or index.shape[0] != n or index.is_floating_point():
        raise ValueError(
            f"index: expected an integer tensor of shape ({n}, M), got shape "
            f"{tuple(index.shape)} dtype {index.dtype}"
        )
    if index.device != feature.device:
        raise ValueError(f"index on {index.device}: expected feature's device {feature.device}")
    # a host sync: skipped when compiling / exporting (torch.gather still bounds-checks)
    in_graph = torch.compiler.is_compiling()
    if not in_graph and index.numel() and (int(index.min()) < 0 or int(index.max()) >= h * w):
        raise ValueError(
            f"index: expected values in [0, {h * w}) for a {h}x{w} map, got range "
            f"[{int(index.min())}, {int(index.max())}]"
        )
    # (N, C, H, W) -> (N, C, H*W); gather (N, C, M) without permuting the whole map.
    flat = feature.reshape(n, c, h * w)
    picked = flat.gather(2, index.long().unsqueeze(1).expand(n, c, index.shape[1]))
    return picked.transpose(1, 2)  # (N, C, M) -> (N, M, C)


def _check_inputs(stacks: Sequence[Mapping[str, Tensor]], targets: Mapping[str, Tensor]) -> None:
    missing = [k for k in TARGET_KEYS if k not in targets]
    if missing:
        raise ValueError(f"targets: missing keys {missing}; expected {list(TARGET_KEYS)}")
    heat_shape = targets["tl_heat"].shape
    if len(heat_shape) != 4 or targets["br_heat"].shape != heat_shape:
        raise ValueError(
            f"targets tl_heat {tuple(heat_shape)}, br_heat {tuple(targets['br_heat'].shape)}: "
            "expected the same (N, C, H, W)"
        )
    n, _, h, w = heat_shape
    for i, stack in enumerate(stacks):
        missing = [k for k in OUTPUT_KEYS if k not in stack]
        if missing:
            raise ValueError(f"outputs[{i}]: missing keys {missing}; expected {list(OUTPUT_KEYS)}")
        expected = {"tl_heat": heat_shape, "br_heat": heat_shape}
        expected.update({"tl_tag": (n, 1, h, w), "br_tag": (n, 1, h, w)})
        expected.update({"tl_regr": (n, 2, h, w), "br_regr": (n, 2, h, w)})
        for key, shape in expected.items():
            if tuple(stack[key].shape) != tuple(shape):
                raise ValueError(
                    f"outputs[{i}]['{key}']: expected shape {tuple(shape)}, "
                    f"got {tuple(stack[key].shape)}"
                )


def cornernet_loss(
    outputs: Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor],
    targets: Mapping[str, Tensor],
    *,
    pull_weight: float = 0.1,
    push_weight: float = 0.1,
    regr_weight: float = 1.0,
) -> dict[str, Tensor]:
    """The CornerNet training loss over all stacks, as the release's ``AELoss``.

    Args:
        outputs: one dict per stack (or a single dict for one stack) with raw head outputs
            ``tl_heat``, ``br_heat`` logits ``(N, C, H, W)``; ``tl_tag``, ``br_tag``
            ``(N, 1, H, W)``; ``tl_regr``, ``br_regr`` ``(N, 2, H, W)``.
        targets: from :func:`detectors.cornernet.targets.build_batch_targets`: ``tl_heat``,
            ``br_heat`` ``(N, C, H, W)``; ``tl_tag``, ``br_tag`` ``(N, M)`` flat indices;
            ``tl_regr``, ``br_regr`` ``(N, M, 2)``; ``mask`` ``(N, M)`` bool or uint8.
        pull_weight, push_weight, regr_weight: 0.1, 0.1, 1 in the paper and the release.

    Returns:
        ``loss``: ``(focal + pull_w * pull + push_w * push + regr_w * regr) / S``, each part
        summed over the S stacks (focal over both corner types, regr over both); and the
        parts ``loss_focal``, ``loss_pull``, ``loss_push``, ``loss_regr``, each WEIGHTED and
        divided by S, so that they add up to ``loss`` (up to float rounding).
    """
    stacks = [outputs] if isinstance(outputs, Mapping) else list(outputs)
    if not stacks:
        raise ValueError("outputs: expected at least one stack of head outputs, got none")
    _check_inputs(stacks, targets)
    mask = targets["mask"]
    tl_ind, br_ind = targets["tl_tag"], targets["br_tag"]

    focal = focal_loss([s["tl_heat"] for s in stacks], targets["tl_heat"])
    focal = focal + focal_loss([s["br_heat"] for s in stacks], targets["br_heat"])
    pull = focal.new_zeros(())
    push = focal.new_zeros(())
    regr = focal.new_zeros(())
    for s in stacks:
        p, q = ae_loss(gather_at(s["tl_tag"], tl_ind), gather_at(s["br_tag"], br_ind), mask)
        pull, push = pull + p, push + q
        regr = regr + regr_loss(gather_at(s["tl_regr"], tl_ind), targets["tl_regr"], mask)
        regr = regr + regr_loss(gather_at(s["br_regr"], br_ind), targets["br_regr"], mask)
    pull, push, regr = pull_weight * pull, push_weight * push, regr_weight * regr
    num_stacks = len(stacks)
    return {
        "loss": (focal + pull + push + regr) / num_stacks,
        "loss_focal": focal / num_stacks,
        "loss_pull": pull / num_stacks,
        "loss_push": push / num_stacks,
        "loss_regr": regr / num_stacks,
    }


class CornerNetLoss(nn.Module):
    """:func:`cornernet_loss` with its weights bound, as a module (no parameters)."""

    def __init__(
        self, pull_weight: float = 0.1, push_weight: float = 0.1, regr_weight: float = 1.0
    ) -> None:
        super().__init__()
        self.pull_weight = pull_weight
        self.push_weight = push_weight
        self.regr_weight = regr_weight

    def forward(
        self,
        outputs: Sequence[Mapping[str, Tensor]] | Mapping[str, Tensor],
        targets: Mapping[str, Tensor],
    ) -> dict[str, Tensor]:
        """See :func:`cornernet_loss`."""
        return cornernet_loss(
            outputs,
            targets,
            pull_weight=self.pull_weight,
            push_weight=self.push_weight,
            regr_weight=self.regr_weight,
        )
