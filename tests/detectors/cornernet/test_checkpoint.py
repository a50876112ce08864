"""Release checkpoint names: export against the recorded key list, strict loading, file reading."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

from detectors.cornernet import (
    CornerNet,
    CornerNetConfig,
    load_official_checkpoint,
    load_official_state_dict,
)


def _tiny(**overrides: object) -> CornerNet:
    args: dict[str, object] = {"num_classes": 3, "nstack": 2, **overrides}
    return CornerNet(CornerNetConfig.from_preset("tiny", **args))


def _randomised(model: CornerNet) -> CornerNet:
    """Fill every parameter and buffer with distinct values, so a lost entry shows."""
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                t.fill_(7)
            elif name.endswith("running_var"):
                t.uniform_(0.5, 2.0)
            else:
                t.normal_()
    return model


def test_release_export_equals_recorded_keys(fixtures_dir: str) -> None:
    with open(os.path.join(fixtures_dir, "cornernet_hg104_state_dict.tsv")) as f:
        header, *rows = (line.rstrip("\n").split("\t") for line in f)
    assert header == ["key", "shape", "dtype"]
    with torch.device("meta"):
        exported = CornerNet().official_state_dict()
    ours = [
        [key, "x".join(map(str, t.shape)) if t.dim() else "scalar", str(t.dtype).split(".")[1]]
        for key, t in exported.items()
    ]
    assert ours == rows  # same keys, same order, same shapes and dtypes
    assert len(ours) == 1128


def test_round_trip() -> None:
    source = _randomised(_tiny())
    exported = source.official_state_dict()
    assert all(key.startswith("module.") for key in exported)
    target = _tiny()
    target.load_official_state_dict(exported)
    theirs = target.state_dict()
    for key, value in source.state_dict().items():
        torch.testing.assert_close(theirs[key], value, rtol=0, atol=0, msg=key)


def test_strict_loading_lists_every_difference() -> None:
    model = _tiny()
    state = model.official_state_dict()
    del state["module.tl_heats.1.1.bias"]
    del state["module.kps.0.up1.0.bn1.weight"]
    state["module.tl_heats.9.1.bias"] = torch.zeros(3)
    state["module.br_regrs.0.1.weight"] = torch.zeros(4, 32, 1, 1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError) as info:
        model.load_official_state_dict(state)
    message = str(info.value)
    assert re.search(r"missing keys \(2\):", message)
    assert "tl_heats.1.1.bias" in message and "kps.0.up1.0.bn1.weight" in message
    assert re.search(r"unexpected keys \(1\):\n  tl_heats\.9\.1\.bias", message)
    assert "br_regrs.0.1.weight: checkpoint 4x32x1x1 vs model 2x32x1x1" in message
    for key, value in model.state_dict().items():  # nothing was loaded
        torch.testing.assert_close(value, before[key], rtol=0, atol=0)


def test_wrong_number_of_classes_is_a_shape_mismatch() -> None:
    state = _tiny().official_state_dict()
    with pytest.raises(ValueError, match=r"shape mismatches \(8\):") as info:
        load_official_state_dict(_tiny(num_classes=4), state)
    assert "tl_heats.0.1.weight: checkpoint 3x32x1x1 vs model 4x32x1x1" in str(info.value)


def test_non_tensor_values_are_rejected() -> None:
    state = dict(_tiny().official_state_dict())
    state["module.pre.0.conv.weight"] = [1.0, 2.0]
    with pytest.raises(ValueError, match=r"not tensors \(1\):\n  module\.pre\.0\.conv\.weight"):
        load_official_state_dict(_tiny(), state)
    with pytest.raises(ValueError, match="expected a mapping"):
        load_official_state_dict(_tiny(), [("a", torch.zeros(1))])  # type: ignore[arg-type]


def test_pytorch_04_files_without_num_batches_tracked_load() -> None:
    source = _randomised(_tiny())
    state = {
        k: v for k, v in source.official_state_dict().items() if "num_batches_tracked" not in k
    }
    target = _tiny()
    target.load_official_state_dict(state)
    torch.testing.assert_close(target.pre[0].bn.running_mean, source.pre[0].bn.running_mean)
    assert int(target.pre[0].bn.num_batches_tracked) == 0  # kept, not taken from the file


def test_keys_without_prefix_load() -> None:
    source = _randomised(_tiny())
    target = _tiny()
    target.load_official_state_dict(source.state_dict())
    torch.testing.assert_close(target.cnvs_[0][0].weight, source.cnvs_[0][0].weight)


@pytest.mark.parametrize("zipfile", [True, False], ids=["zip", "legacy"])
def test_load_official_checkpoint(tmp_path: Path, zipfile: bool) -> None:
    """Both the current format and the pre-1.6 one the 2018 release was written in."""
    source = _randomised(_tiny())
    path = tmp_path / "CornerNet_tiny.pkl"
    torch.save(source.official_state_dict(), path, _use_new_zipfile_serialization=zipfile)
    state = load_official_checkpoint(path)
    assert list(state) == list(source.official_state_dict())
    target = _tiny()
    target.load_official_state_dict(state)
    torch.testing.assert_close(target.tl_cnvs[1].p_conv1.weight, source.tl_cnvs[1].p_conv1.weight)


def test_load_official_checkpoint_errors(tmp_path: Path) -> None:
    missing = tmp_path / "absent.pkl"
    with pytest.raises(FileNotFoundError, match="absent.pkl"):
        load_official_checkpoint(missing)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint")
    with pytest.raises(ValueError, match=r"notes\.pth.*could not be read"):
        load_official_checkpoint(text)
    listing = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listing)
    with pytest.raises(ValueError, match=r"list\.pth.*holds a list"):
        load_official_checkpoint(listing)
    nested = tmp_path / "nested.pth"
    torch.save({"epoch": 3, "state_dict": {"w": torch.zeros(1)}}, nested)
    with pytest.raises(ValueError, match=r"nested\.pth.*not a plain state dict.*'epoch'"):
        load_official_checkpoint(nested)
    pickled = tmp_path / "object.pth"
    torch.save({"w": Path("x")}, pickled)
    with pytest.raises(ValueError, match=r"object\.pth.*weights_only=True"):
        load_official_checkpoint(pickled)
