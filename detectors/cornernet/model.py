"""CornerNet (Law and Deng, ECCV 2018): stacked hourglass, corner pooling, corner heads.

The network is the release's ``kp`` model: :class:`~detectors.backbones.HourglassBackbone`
(stem ``pre``, hourglasses ``kps``, per-stack convs ``cnvs``, links ``inters``, ``inters_``,
``cnvs_``) plus, per stack, the corner-pooling modules ``tl_cnvs`` / ``br_cnvs`` and six heads
``{tl,br}_{heats,tags,regrs}``. Attribute names equal the release's parameter names, so
``model.state_dict()`` keys are the release's keys without the ``module.`` prefix.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping, Sequence

import torch
from torch import nn

from detectors.backbones.hourglass import HourglassBackbone
from detectors.cornernet import checkpoint
from detectors.cornernet.config import CornerNetConfig
from detectors.cornernet.loss import cornernet_loss
from detectors.cornernet.modules import CornerPoolModule, make_head

__all__ = ["HEAD_KEYS", "CornerNet"]

# Keys of each per-stack output dict, in the release's output order.
HEAD_KEYS = ("tl_heat", "br_heat", "tl_tag", "br_tag", "tl_regr", "br_regr")


class CornerNet(HourglassBackbone):
    """CornerNet on a stacked hourglass.

    ``CornerNet()`` is the release (Hourglass-104, 80 classes, 201,035,212 parameters).
    Build from a :class:`CornerNetConfig` or from its fields as keyword arguments
    (keyword arguments override the config's fields).

    ``forward(images)`` with images (N, 3, H, W) returns a list with one dict per stack whose
    heads were computed: every stack in training mode (intermediate supervision), only the last
    in eval mode. Each dict has, at stride 4 (h = H/4, w = W/4):
    ``tl_heat``, ``br_heat`` (N, num_classes, h, w) logits; ``tl_tag``, ``br_tag`` (N, 1, h, w)
    embeddings; ``tl_regr``, ``br_regr`` (N, 2, h, w) sub-pixel offsets.
    """

    def __init__(self, cfg: CornerNetConfig | None = None, **kwargs: object) -> None:
        if cfg is None:
            cfg = CornerNetConfig(**kwargs)  # type: ignore[arg-type]
        elif kwargs:
            cfg = cfg.replace(**kwargs)
        super().__init__(**cfg.backbone_kwargs())  # type: ignore[arg-type]
        self.cfg = cfg
        nstack, cnv_dim, curr_dim = cfg.nstack, cfg.cnv_dim, cfg.dims[0]

        def pools(corner: str) -> nn.ModuleList:
            return nn.ModuleList(
                CornerPoolModule(cnv_dim, corner, cfg.pool_dim, cfg.corner_pooling)
                for _ in range(nstack)
            )

        def heads(out_dim: int, bias: float | None = None) -> nn.ModuleList:
            # The release's heads widen cnv_dim -> dims[0] before the 1x1 output conv.
            return nn.ModuleList(make_head(cnv_dim, curr_dim, out_dim, bias) for _ in range(nstack))

        self.tl_cnvs = pools("tl")
        self.br_cnvs = pools("br")
        self.tl_heats = heads(cfg.num_classes, cfg.heat_bias)
        self.br_heats = heads(cfg.num_classes, cfg.heat_bias)
        self.tl_tags = heads(1)
        self.br_tags = heads(1)
        self.tl_regrs = heads(2)
        self.br_regrs = heads(2)

    def forward(self, images: torch.Tensor) -> list[dict[str, torch.Tensor]]:  # type: ignore[override]
        """(N, 3, H, W) -> one dict of head outputs per computed stack (see the class doc)."""
        stacks = self.forward_stacks(images)
        first = 0 if self.training else self.nstack - 1
        return [self.heads(stacks[i], i) for i in range(first, self.nstack)]

    def heads(self, cnv: torch.Tensor, stack: int) -> dict[str, torch.Tensor]:
        """Corner pooling and the six heads of ``stack`` on its (N, cnv_dim, h, w) map."""
        tl = self.tl_cnvs[stack](cnv)
        br = self.br_cnvs[stack](cnv)
        return {
            "tl_heat": self.tl_heats[stack](tl),
            "br_heat": self.br_heats[stack](br),
            "tl_tag": self.tl_tags[stack](tl),
            "br_tag": self.br_tags[stack](br),
            "tl_regr": self.tl_regrs[stack](tl),
            "br_regr": self.br_regrs[stack](br),
        }

    def loss(
        self,
        outputs: Sequence[Mapping[str, torch.Tensor]] | Mapping[str, torch.Tensor],
        targets: Mapping[str, torch.Tensor],
    ) -> dict[str, torch.Tensor]:
        """:func:`~detectors.cornernet.loss.cornernet_loss` with this config's weights.

        ``outputs``: :meth:`forward`'s per-stack dicts; ``targets``: the dict of
        :func:`~detectors.cornernet.targets.build_batch_targets` for their map size. Returns
        ``loss`` and its weighted parts ``loss_focal``, ``loss_pull``, ``loss_push``,
        ``loss_regr``.
        """
        cfg = self.cfg
        return cornernet_loss(
            outputs,
            targets,
            pull_weight=cfg.pull_weight,
            push_weight=cfg.push_weight,
            regr_weight=cfg.regr_weight,
        )

    def official_state_dict(self) -> OrderedDict[str, torch.Tensor]:
        """The state dict under the release's names (``module.`` prefix, release order)."""
        return checkpoint.official_state_dict(self)

    def load_official_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Load the release's state dict strictly (see ``checkpoint.load_official_state_dict``)."""
        checkpoint.load_official_state_dict(self, state_dict)
