"""CornerNet's prediction modules: corner pooling and the output heads.

Parameter names follow the release (``p1_conv1``, ``p2_conv1``, ``p_conv1``, ``p_bn1``,
``conv1``, ``bn1``, ``conv2``; heads ``0.conv`` and ``1``) so its checkpoint loads directly.
"""

from __future__ import annotations

import torch
from torch import nn

from detectors.backbones.hourglass import ConvBNReLU
from kernels import fused_corner_pool
from kernels.ops import fused_corner_pool_op

__all__ = ["CornerPoolModule", "make_head"]

_CORNERS = ("tl", "br")


class CornerPoolModule(nn.Module):
    """The corner-pooling module of one corner type (the release's ``tl_pool`` / ``br_pool``).

    ``a = p1_conv1(x)``, ``b = p2_conv1(x)`` (3x3 conv-BN-ReLU, dim -> pool_dim);
    ``pooled = fused_corner_pool(a, b, corner)``: top-pool(a) + left-pool(b) for "tl",
    bottom-pool(a) + right-pool(b) for "br" (or ``a + b`` with ``corner_pooling=False``);
    ``y = relu(p_bn1(p_conv1(pooled)) + bn1(conv1(x)))`` (3x3 and 1x1 conv-BN, pool_dim /
    dim -> dim); output ``conv2(y)`` (3x3 conv-BN-ReLU). (N, dim, H, W) -> (N, dim, H, W).

    Args:
        dim: input and output width (the release's cnv_dim, 256).
        corner: "tl" or "br".
        pool_dim: width of the two pooled branches (the release's 128).
        corner_pooling: False sums the branches unpooled (same parameters; the ablation).
        backend: passed to :func:`kernels.fused_corner_pool` ("auto", "triton", "torch", ...).
    """

    def __init__(
        self,
        dim: int,
        corner: str,
        pool_dim: int = 128,
        corner_pooling: bool = True,
        backend: str = "auto",
    ) -> None:
        super().__init__()
        if corner not in _CORNERS:
            raise ValueError(f"corner={corner!r}: expected one of {_CORNERS}")
        self.corner = corner
        self.corner_pooling = corner_pooling
        self.backend = backend
        self.p1_conv1 = ConvBNReLU(3, dim, pool_dim)
        self.p2_conv1 = ConvBNReLU(3, dim, pool_dim)
        self.p_conv1 = nn.Conv2d(pool_dim, dim, 3, padding=1, bias=False)
        self.p_bn1 = nn.BatchNorm2d(dim)
        self.conv1 = nn.Conv2d(dim, dim, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(dim)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = ConvBNReLU(3, dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.p1_conv1(x)  # (N, pool_dim, H, W): pooled vertically (top / bottom)
        b = self.p2_conv1(x)  # (N, pool_dim, H, W): pooled horizontally (left / right)
        if self.corner_pooling and torch.compiler.is_compiling():
            # export / compile: the opaque custom op (static shapes, no Python to trace); eager
            # keeps the function, whose Triton backward the op's torch-ops backward lacks
            pooled = fused_corner_pool_op(a, b, self.corner, backend=self.backend)
        elif self.corner_pooling:
            pooled = fused_corner_pool(a, b, self.corner, backend=self.backend)
        else:
            pooled = a + b
        y = self.relu1(self.p_bn1(self.p_conv1(pooled)) + self.bn1(self.conv1(x)))
        return self.conv2(y)

    def extra_repr(self) -> str:
        return f"corner={self.corner!r}, corner_pooling={self.corner_pooling}"


def make_head(
    in_dim: int, hidden_dim: int, out_dim: int, bias: float | None = None
) -> nn.Sequential:
    """3x3 conv (with bias, no BN) + ReLU, then a 1x1 conv: (N, in_dim, H, W) -> (N, out_dim, H, W).

    The release's ``make_kp_layer``; ``bias`` fills the last conv's bias (-2.19 for heatmaps).
    """
    head = nn.Sequential(
        ConvBNReLU(3, in_dim, hidden_dim, with_bn=False), nn.Conv2d(hidden_dim, out_dim, 1)
    )
    if bias is not None:
        with torch.no_grad():
            head[1].bias.fill_(bias)
    return head
