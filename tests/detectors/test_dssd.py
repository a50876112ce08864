"""DSSD specifics: DSSD513's default boxes, the deconvolution and prediction modules, and that
DSSD is SSD plus a neck (no second copy of SSD's loss or decoding)."""

from __future__ import annotations

import pytest
import torch

from detectors.dssd import DSSD, DeconvolutionModule, PredictionModule, build_dssd
from detectors.ssd import SSD, build_ssd

K = 3


@pytest.mark.parametrize("backbone", ["tiny", "hg104"])
def test_dssd513_default_boxes(backbone: str) -> None:
    with torch.device("meta"):
        model = build_dssd(80, backbone=backbone, preset="paper")
    assert model.feature_sizes(512, 512) == [(s, s) for s in (64, 32, 16, 8, 4, 2, 1)]
    assert model.anchor_generator.num_anchors_per_location() == [8] * 7  # ratios 1.6, 2, 3
    # 8 x (64^2 + 32^2 + ... + 1): CornerNet's "more than 40k" for DSSD
    assert model.anchors_per_image(512, 512) == 43_688


@pytest.mark.parametrize(
    ("deep", "skip"), [(1, 3), (3, 5), (5, 10), (10, 19), (19, 38), (1, 1), (2, 4)], ids=str
)
def test_deconvolution_module_reaches_the_ssd_map_size(deep: int, skip: int) -> None:
    module = DeconvolutionModule(6, 4, 5)
    out = module(torch.randn(2, 6, deep, deep), torch.randn(2, 4, skip, skip + 1))
    assert out.shape == (2, 5, skip, skip + 1)
    assert (out >= 0).all()  # ReLU after the product


def test_deconvolution_module_merges_by_product() -> None:
    module = DeconvolutionModule(4, 4, 4).eval()
    deep, skip = torch.randn(1, 4, 2, 2), torch.randn(1, 4, 4, 4)
    with torch.no_grad():
        torch.nn.init.zeros_(module.skip[-1].weight)  # SSD branch: last BN gamma 0, beta 2
        module.skip[-1].bias.fill_(2.0)
        expected = torch.relu(2.0 * module.deep(module.deconv(deep)))
        assert torch.allclose(module(deep, skip), expected)


def test_prediction_module_is_a_residual_block() -> None:
    module = PredictionModule(6, 4)
    x = torch.randn(2, 6, 3, 3)
    assert module(x).shape == (2, 8, 3, 3)  # 2 x channels, as the paper's 512 -> 1024
    with torch.no_grad():
        torch.nn.init.zeros_(module.branch[-1].weight)
        torch.nn.init.zeros_(module.branch[-1].bias)
        assert torch.allclose(module(x), module.skip(x))


def test_neck_feeds_the_head_at_every_ssd_map() -> None:
    model = build_dssd(K, deconv_channels=12).eval()
    with torch.no_grad():
        maps = model.feature_maps(torch.zeros(2, 3, 64, 64))
        levels = model.neck(maps)
    assert [x.shape for x in levels] == [(2, 24, *m.shape[-2:]) for m in maps]
    assert len(model.deconv) == len(maps) - 1 and len(model.predict) == len(maps)


def test_dssd_is_ssd_plus_a_neck() -> None:
    assert issubclass(DSSD, SSD)
    for stage in ("forward", "loss", "decode", "assignment_stats"):
        assert getattr(DSSD, stage) is getattr(SSD, stage)
    ssd, dssd = build_ssd(K), build_dssd(K)
    assert dssd.anchors_per_image(128, 128) == ssd.anchors_per_image(128, 128)
    # the deconvolution path and prediction modules count as head parameters
    assert dssd.backbone_parameters() == ssd.backbone_parameters()
    assert dssd.head_parameters() > ssd.head_parameters()
