"""Triton kernels with their torch references (no nn.Module, nothing from detectors/ or bench/).

Each public op is exported with its reference (the specification and CPU path). The choice
of backend ("auto", "triton", "torch") follows one rule for all of them: kernels._backend.
Benchmark baselines stay in their modules: kernels.corner_pool_baselines (corner_pool_cummax,
corner_pool_loop) and kernels.decode.cornernet_decode_dense.
"""

from kernels.corner_pool import (
    corner_pool,
    corner_pool_backward,
    corner_pool_reference,
    fused_corner_pool,
    fused_corner_pool_reference,
)
from kernels.decode import cornernet_decode, cornernet_decode_reference
from kernels.heatmap import heatmap_peaks, heatmap_peaks_reference
from kernels.soft_nms import batched_soft_nms, soft_nms, soft_nms_per_class, soft_nms_reference

__all__ = [
    "batched_soft_nms",
    "corner_pool",
    "corner_pool_backward",
    "corner_pool_reference",
    "cornernet_decode",
    "cornernet_decode_reference",
    "fused_corner_pool",
    "fused_corner_pool_reference",
    "heatmap_peaks",
    "heatmap_peaks_reference",
    "soft_nms",
    "soft_nms_per_class",
    "soft_nms_reference",
]
