"""CornerNet: detecting objects as paired keypoints (Law and Deng, ECCV 2018)."""

from detectors.cornernet.checkpoint import (
    load_official_checkpoint,
    load_official_state_dict,
    official_state_dict,
)
from detectors.cornernet.config import CornerNetConfig
from detectors.cornernet.model import HEAD_KEYS, CornerNet
from detectors.cornernet.targets import gaussian_radius

__all__ = [
    "HEAD_KEYS",
    "CornerNet",
    "CornerNetConfig",
    "gaussian_radius",
    "load_official_checkpoint",
    "load_official_state_dict",
    "official_state_dict",
]
