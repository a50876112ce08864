"""Triton kernels with their torch references (no nn.Module, nothing from detectors/ or bench/)."""

from kernels.corner_pool import (
    corner_pool,
    corner_pool_reference,
    fused_corner_pool,
    fused_corner_pool_reference,
)
from kernels.corner_pool_baselines import corner_pool_cummax, corner_pool_loop
from kernels.heatmap import cornernet_decode, heatmap_peaks
from kernels.soft_nms import batched_soft_nms, soft_nms

__all__ = [
    "batched_soft_nms",
    "cornernet_decode",
    "corner_pool",
    "corner_pool_cummax",
    "corner_pool_loop",
    "corner_pool_reference",
    "fused_corner_pool",
    "fused_corner_pool_reference",
    "heatmap_peaks",
    "soft_nms",
]
