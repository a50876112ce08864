"""CornerNet configuration: a frozen dataclass whose defaults are the ECCV 2018 release."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from detectors.backbones.hourglass import HOURGLASS_PRESETS

__all__ = ["CornerNetConfig"]


@dataclass(frozen=True)
class CornerNetConfig:
    """Architecture and loss settings of CornerNet; defaults reproduce the release.

    ``corner_pooling=False`` is the paper's ablation without corner pooling (Table 1): each
    corner-pooling module keeps all its layers, and its two 3x3 conv-BN-ReLU branches are summed
    without pooling before the module's 3x3 conv. The pooling has no parameters, so the
    parameter count is unchanged and the module becomes a plain stack of 3x3 convolutions
    (local receptive field instead of a whole row / column).
    """

    num_classes: int = 80  # COCO's 80 categories (release config CornerNet.json: categories)
    n: int = 5  # hourglass depth (release models/CornerNet.py: n = 5)
    nstack: int = 2  # two stacked hourglasses: Hourglass-104 (paper section 4.1)
    dims: tuple[int, ...] = (256, 256, 384, 384, 384, 512)  # release models/CornerNet.py
    modules: tuple[int, ...] = (2, 2, 2, 2, 2, 4)  # residuals per level (release)
    cnv_dim: int = 256  # width of the per-stack 3x3 conv and head inputs (release kp cnv_dim)
    pool_dim: int = 128  # width of the corner-pooling branches (release pool: 128)
    stem_dims: tuple[int, int] = (128, 256)  # 7x7 conv to 128, residual to 256 (release kp.pre)
    corner_pooling: bool = True  # False: the paper's ablation without corner pooling
    pull_weight: float = 0.1  # alpha, pull loss weight (paper section 4.1; release config)
    push_weight: float = 0.1  # beta, push loss weight (paper section 4.1; release config)
    regr_weight: float = 1.0  # gamma, offset loss weight (paper section 4.1; release config)
    gaussian_iou: float = 0.3  # min IoU for the Gaussian radius (paper 3.2; release config)
    heat_bias: float = -2.19  # heatmap head bias init, about logit(0.1) (release kp.__init__)

    def __post_init__(self) -> None:
        # Accept lists (e.g. from JSON) but store tuples so the config stays hashable.
        for name in ("dims", "modules", "stem_dims"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        for name in ("num_classes", "n", "nstack", "cnv_dim", "pool_dim"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"CornerNetConfig.{name}={value!r}: expected a positive int")
        for name in ("dims", "modules"):
            value = getattr(self, name)
            if len(value) != self.n + 1:
                raise ValueError(
                    f"CornerNetConfig.{name}={value!r}: expected n + 1 = {self.n + 1} entries"
                )
        if len(self.stem_dims) != 2 or self.stem_dims[1] != self.dims[0]:
            raise ValueError(
                f"CornerNetConfig.stem_dims={self.stem_dims!r}: expected two widths, the second "
                f"equal to dims[0]={self.dims[0]}"
            )
        for name in ("pull_weight", "push_weight", "regr_weight"):
            if getattr(self, name) < 0:
                raise ValueError(f"CornerNetConfig.{name}={getattr(self, name)!r}: expected >= 0")
        if not 0.0 < self.gaussian_iou < 1.0:
            raise ValueError(f"CornerNetConfig.gaussian_iou={self.gaussian_iou!r}: expected (0, 1)")

    @classmethod
    def from_preset(cls, preset: str, **overrides: object) -> CornerNetConfig:
        """A config on a :data:`HOURGLASS_PRESETS` backbone; ``pool_dim`` = cnv_dim // 2.

        The rule gives the release's 128 for "hg104"; ``overrides`` replace any field.
        """
        if preset not in HOURGLASS_PRESETS:
            raise ValueError(
                f"hourglass preset {preset!r}: expected one of {sorted(HOURGLASS_PRESETS)}"
            )
        hourglass = HOURGLASS_PRESETS[preset]
        args = hourglass.kwargs()
        args["pool_dim"] = max(1, hourglass.cnv_dim // 2)
        args.update(overrides)
        return cls(**args)  # type: ignore[arg-type]

    def replace(self, **changes: object) -> CornerNetConfig:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)  # type: ignore[arg-type]

    def backbone_kwargs(self) -> dict[str, object]:
        """Keyword arguments of :class:`~detectors.backbones.HourglassBackbone`."""
        return {
            "n": self.n,
            "nstack": self.nstack,
            "dims": self.dims,
            "modules": self.modules,
            "cnv_dim": self.cnv_dim,
            "stem_dims": self.stem_dims,
        }
