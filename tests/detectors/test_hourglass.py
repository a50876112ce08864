"""Hourglass backbones: structure against the release's key list, strides, channels, errors."""

from __future__ import annotations

import os

import pytest
import torch

from detectors.backbones import HOURGLASS_PRESETS, build_hourglass, count_parameters
from detectors.backbones.hourglass import HourglassModule

BACKBONE_MODULES = ("pre", "kps", "cnvs", "inters", "inters_", "cnvs_")


def _release_rows(fixtures_dir: str) -> list[tuple[str, tuple[int, ...]]]:
    """(key without ``module.``, shape) of every row of the release's state-dict TSV."""
    rows = []
    with open(os.path.join(fixtures_dir, "cornernet_hg104_state_dict.tsv")) as f:
        next(f)
        for line in f:
            key, shape, _ = line.rstrip("\n").split("\t")
            dims = () if shape == "scalar" else tuple(int(s) for s in shape.split("x"))
            rows.append((key.removeprefix("module."), dims))
    return rows


def _is_parameter(key: str) -> bool:
    return not key.endswith(("running_mean", "running_var", "num_batches_tracked"))


def _numel(shape: tuple[int, ...]) -> int:
    return int(torch.Size(shape).numel())


def test_hg104_matches_release_backbone_keys(fixtures_dir: str) -> None:
    rows = [r for r in _release_rows(fixtures_dir) if r[0].split(".")[0] in BACKBONE_MODULES]
    with torch.device("meta"):
        backbone = build_hourglass("hg104")
    ours = {k: tuple(v.shape) for k, v in backbone.state_dict().items()}
    assert ours == dict(rows)
    expected = sum(_numel(shape) for key, shape in rows if _is_parameter(key))
    assert count_parameters(backbone) == expected


def test_hg52_is_one_release_stack(fixtures_dir: str) -> None:
    stack0 = ("pre.", "kps.0.", "cnvs.0.")
    rows = [r for r in _release_rows(fixtures_dir) if r[0].startswith(stack0)]
    with torch.device("meta"):
        backbone = build_hourglass("hg52")
    assert {k: tuple(v.shape) for k, v in backbone.state_dict().items()} == dict(rows)
    assert count_parameters(backbone) == sum(_numel(s) for k, s in rows if _is_parameter(k))


@pytest.mark.parametrize("preset", sorted(HOURGLASS_PRESETS), ids=str)
def test_feature_strides_and_channels(preset: str) -> None:
    """Every preset, shapes only on the meta device (hg104 at the release's 511 px)."""
    size = 511 if preset.startswith("hg") else 128
    with torch.device("meta"):
        backbone = build_hourglass(preset)
        out = backbone(torch.empty(2, 3, size, size))
    cfg = HOURGLASS_PRESETS[preset]
    dims = cfg.dims
    assert list(out.features) == ["s4", "s8", "s16", "s32"]
    assert backbone.out_channels == {"s4": dims[0], "s8": dims[1], "s16": dims[2], "s32": dims[3]}
    side = (size + 1) // 4
    for level, (name, feat) in enumerate(out.features.items()):
        assert feat.shape == (2, backbone.out_channels[name], side >> level, side >> level), name
    assert len(out.stacks) == cfg.nstack
    for cnv in out.stacks:
        assert cnv.shape == (2, cfg.cnv_dim, side, side)


def test_features_come_from_the_last_hourglass() -> None:
    """Each named map equals the output of the matching level of the last hourglass."""
    backbone = build_hourglass("small").eval()
    images = torch.randn(1, 3, 64, 128)
    seen: dict[int, torch.Tensor] = {}
    level_module = backbone.kps[-1]
    hooks = []
    for level in range(4):
        hooks.append(
            level_module.register_forward_hook(
                lambda _m, _i, out, level=level: seen.__setitem__(level, out)
            )
        )
        level_module = level_module.low2
    with torch.no_grad():
        out = backbone(images)
        stacks = backbone.forward_stacks(images)
        features = backbone.forward_features(images)
        stacks_first = backbone.cnvs[-1](out.features["s4"])
    for h in hooks:
        h.remove()
    for level, name in enumerate(("s4", "s8", "s16", "s32")):
        torch.testing.assert_close(out.features[name], seen[level], rtol=0, atol=0)
        torch.testing.assert_close(features[name], seen[level], rtol=0, atol=0)
    torch.testing.assert_close(stacks_first, out.stacks[-1])
    for a, b in zip(stacks, out.stacks):
        torch.testing.assert_close(a, b)
    assert out.features["s8"].shape[-2:] == (8, 16)


def test_bottom_level_is_a_feature_when_depth_is_three() -> None:
    """With n = 3 the stride-32 map is the output of the innermost residuals."""
    backbone = build_hourglass("tiny").eval()
    bottom = backbone.kps[-1].low2.low2.low2
    assert not isinstance(bottom, HourglassModule)
    seen = []
    hook = bottom.register_forward_hook(lambda _m, _i, out: seen.append(out))
    with torch.no_grad():
        feats = backbone.forward_features(torch.randn(1, 3, 64, 64))
    hook.remove()
    torch.testing.assert_close(feats["s32"], seen[0], rtol=0, atol=0)


def test_tiny_is_small_and_every_parameter_gets_a_gradient() -> None:
    """Two stacks of the tiny preset: links and all levels take part in the backward pass."""
    backbone = build_hourglass("tiny", nstack=2)
    assert 100_000 <= count_parameters(build_hourglass("tiny")) <= 500_000
    out = backbone(torch.randn(2, 3, 64, 64))
    loss = sum(f.mean() for f in out.features.values()) + sum(c.mean() for c in out.stacks)
    loss.backward()
    no_grad = [k for k, p in backbone.named_parameters() if p.grad is None or not p.grad.any()]
    assert no_grad == []


def test_count_parameters_trainable_only() -> None:
    backbone = build_hourglass("tiny")
    total = count_parameters(backbone)
    backbone.pre.requires_grad_(False)
    frozen = sum(p.numel() for p in backbone.pre.parameters())
    assert count_parameters(backbone, trainable_only=True) == total - frozen


def test_build_overrides_and_errors() -> None:
    with torch.device("meta"):
        backbone = build_hourglass("tiny", nstack=2)
        default = build_hourglass(None)
    assert len(backbone.kps) == 2 and len(backbone.inters) == 1
    assert default.n == 5 and len(default.kps) == 2
    with pytest.raises(ValueError, match="preset 'hg9'"):
        build_hourglass("hg9")
    with pytest.raises(ValueError, match="dims"):
        build_hourglass("tiny", dims=(32, 32, 48))
    with pytest.raises(ValueError, match="stem_dims"):
        build_hourglass("tiny", stem_dims=(16, 24))


def test_bad_images() -> None:
    backbone = build_hourglass("tiny")
    with pytest.raises(ValueError, match=r"\(1, 1, 64, 64\).*\(N, 3, H, W\)"):
        backbone(torch.randn(1, 1, 64, 64))
    with pytest.raises(ValueError, match="dtype"):
        backbone(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(1, 3, 100, 64\).*25x16.*divisible by 2\*\*3"):
        backbone(torch.randn(1, 3, 100, 64))
