"""CornerNet model: release parameter count, equivalence with the original, output structure."""

from __future__ import annotations

import json
import os
from typing import Any

import pytest
import torch

import kernels
from detectors.backbones import count_parameters
from detectors.cornernet import HEAD_KEYS, CornerNet, CornerNetConfig
from detectors.cornernet.modules import CornerPoolModule


@pytest.fixture(scope="module")
def tiny(fixtures_dir: str) -> dict[str, Any]:
    """The recorded two-stack tiny CornerNet of the original (see tests/fixtures/README.md)."""
    return torch.load(os.path.join(fixtures_dir, "tiny_cornernet.pt"), weights_only=True)


def _tiny_model(tiny: dict[str, Any]) -> CornerNet:
    """Our CornerNet built from the fixture's config, with the fixture's weights loaded."""
    c = tiny["config"]
    cfg = CornerNetConfig(
        num_classes=c["out_dim"],
        n=c["n"],
        nstack=c["nstack"],
        dims=c["dims"],
        modules=c["modules"],
        cnv_dim=c["cnv_dim"],
        pool_dim=c["pool_dim"],
        stem_dims=c["pre_dims"],
    )
    model = CornerNet(cfg)
    model.load_official_state_dict(tiny["state_dict"])
    return model


def test_release_parameter_count(fixtures_dir: str) -> None:
    with open(os.path.join(fixtures_dir, "cornernet_hg104_summary.json")) as f:
        summary = json.load(f)
    with torch.device("meta"):
        model = CornerNet()
        ablation = CornerNet(corner_pooling=False)
    assert count_parameters(model) == summary["parameters"] == 201_035_212
    assert len(model.state_dict()) == summary["state_dict_entries"]
    assert count_parameters(ablation) == count_parameters(model)


def test_tiny_eval_heads_match_original(tiny: dict[str, Any]) -> None:
    model = _tiny_model(tiny).eval()
    with torch.no_grad():
        outputs = model(tiny["image"])
    assert len(outputs) == 1
    assert list(outputs[0]) == list(HEAD_KEYS)
    for key in HEAD_KEYS:
        torch.testing.assert_close(outputs[0][key], tiny["eval_heads"][key], msg=key)


def test_tiny_train_loss_matches_original(tiny: dict[str, Any]) -> None:
    """Train mode (batch statistics), both stacks, through the project's loss."""
    from detectors.cornernet.loss import cornernet_loss

    model = _tiny_model(tiny).train()
    inputs = tiny["train_inputs"]
    targets = {
        "tl_heat": inputs["gt_tl_heat"],
        "br_heat": inputs["gt_br_heat"],
        "tl_tag": inputs["tl_inds"],
        "br_tag": inputs["br_inds"],
        "tl_regr": inputs["gt_tl_regr"],
        "br_regr": inputs["gt_br_regr"],
        "mask": inputs["mask"],
    }
    weights = tiny["loss_weights"]
    with torch.no_grad():
        outputs = model(tiny["image"])
        losses = cornernet_loss(
            outputs,
            targets,
            pull_weight=weights["pull"],
            push_weight=weights["push"],
            regr_weight=weights["regr"],
        )
    assert len(outputs) == 2
    torch.testing.assert_close(losses["loss"].reshape(1), tiny["train_loss"], atol=1e-5, rtol=1e-5)


@pytest.mark.skipif(
    not hasattr(kernels, "cornernet_decode"), reason="kernels.cornernet_decode not written yet"
)
def test_tiny_detections_match_original(tiny: dict[str, Any]) -> None:
    model = _tiny_model(tiny).eval()
    with torch.no_grad():
        heads = model(tiny["image"])[-1]
    dets = kernels.cornernet_decode(*(heads[k] for k in HEAD_KEYS), **tiny["decode_kwargs"])
    expected = tiny["eval_detections"]
    assert dets.shape == expected.shape
    for ours, ref in zip(dets, expected):
        ours, ref = ours[ours[:, 4] > -1], ref[ref[:, 4] > -1]
        assert ours.shape == ref.shape
        ours = ours[ours[:, 4].argsort(descending=True, stable=True)]
        ref = ref[ref[:, 4].argsort(descending=True, stable=True)]
        torch.testing.assert_close(ours, ref)


@pytest.fixture(scope="module")
def small_model() -> CornerNet:
    torch.manual_seed(0)
    return CornerNet(CornerNetConfig.from_preset("tiny", num_classes=3, nstack=2))


def test_forward_structure_train_vs_eval(small_model: CornerNet) -> None:
    images = torch.randn(2, 3, 64, 96)
    channels = {"heat": 3, "tag": 1, "regr": 2}
    for training, stacks in ((True, 2), (False, 1)):
        small_model.train(training)
        with torch.no_grad():
            outputs = small_model(images)
        assert isinstance(outputs, list) and len(outputs) == stacks
        for out in outputs:
            assert list(out) == list(HEAD_KEYS)
            for key, value in out.items():
                assert value.shape == (2, channels[key.split("_")[1]], 16, 24), key
                assert value.dtype == torch.float32
    small_model.eval()


def test_heads_initialisation(small_model: CornerNet) -> None:
    cfg = small_model.cfg
    for heads in (small_model.tl_heats, small_model.br_heats):
        assert len(heads) == cfg.nstack
        for head in heads:
            assert torch.all(head[1].bias == cfg.heat_bias)
    assert cfg.heat_bias == pytest.approx(-2.19)
    assert not torch.all(small_model.tl_tags[0][1].bias == cfg.heat_bias)


def test_eval_uses_the_last_stack(small_model: CornerNet) -> None:
    """Eval mode returns the heads of the last stack; the first stack's heads differ."""
    small_model.eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        (out,) = small_model(images)
        stacks = small_model.forward_stacks(images)
        last = small_model.heads(stacks[1], 1)
        first = small_model.heads(stacks[0], 0)
    for key in HEAD_KEYS:
        torch.testing.assert_close(out[key], last[key])
    assert not torch.allclose(out["tl_tag"], first["tl_tag"])


def test_without_corner_pooling_builds_runs_and_differs(small_model: CornerNet) -> None:
    ablation = CornerNet(small_model.cfg.replace(corner_pooling=False)).eval()
    assert count_parameters(ablation) == count_parameters(small_model)
    ablation.load_state_dict(small_model.state_dict())
    small_model.eval()
    images = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        pooled = small_model(images)[0]
        plain = ablation(images)[0]
    assert plain["tl_heat"].shape == pooled["tl_heat"].shape
    assert torch.isfinite(plain["tl_heat"]).all()
    assert not torch.allclose(plain["tl_heat"], pooled["tl_heat"])
    # Without pooling the module is its conv stack on the plain sum of the branches.
    module = ablation.tl_cnvs[0]
    x = torch.randn(1, small_model.cfg.cnv_dim, 8, 8)
    with torch.no_grad():
        a, b = module.p1_conv1(x), module.p2_conv1(x)
        y = torch.relu(module.p_bn1(module.p_conv1(a + b)) + module.bn1(module.conv1(x)))
        torch.testing.assert_close(module(x), module.conv2(y))


def test_corner_pool_module_rejects_unknown_corner() -> None:
    with pytest.raises(ValueError, match="corner='tr'"):
        CornerPoolModule(8, "tr")


def test_config_defaults_are_the_release() -> None:
    cfg = CornerNetConfig()
    assert (cfg.num_classes, cfg.n, cfg.nstack, cfg.cnv_dim, cfg.pool_dim) == (80, 5, 2, 256, 128)
    assert cfg.dims == (256, 256, 384, 384, 384, 512)
    assert cfg.modules == (2, 2, 2, 2, 2, 4)
    assert cfg.stem_dims == (128, 256)
    assert (cfg.pull_weight, cfg.push_weight, cfg.regr_weight) == (0.1, 0.1, 1.0)
    assert cfg.gaussian_iou == 0.3 and cfg.corner_pooling
    assert CornerNetConfig.from_preset("hg104") == cfg
    assert CornerNetConfig(dims=[256, 256, 384, 384, 384, 512]) == cfg  # lists become tuples


def test_config_overrides_and_errors() -> None:
    with torch.device("meta"):
        model = CornerNet(CornerNetConfig.from_preset("tiny"), num_classes=5)
    assert model.cfg.num_classes == 5 and model.tl_heats[0][1].out_channels == 5
    assert model.cfg.pool_dim == model.cfg.cnv_dim // 2
    with pytest.raises(ValueError, match="num_classes=0"):
        CornerNetConfig(num_classes=0)
    with pytest.raises(ValueError, match=r"dims=\(256, 256\).*6 entries"):
        CornerNetConfig(dims=(256, 256))
    with pytest.raises(ValueError, match="stem_dims"):
        CornerNetConfig(stem_dims=(128, 128))
    with pytest.raises(ValueError, match="gaussian_iou"):
        CornerNetConfig(gaussian_iou=1.5)
    with pytest.raises(ValueError, match="preset 'hg1'"):
        CornerNetConfig.from_preset("hg1")
