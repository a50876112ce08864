"""``python -m bench data``: exit codes and messages through ``bench.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main

SMALL = ["--num-train", "3", "--num-val", "2", "--image-size", "48", "--workers", "1"]


def test_synthetic_writes_then_refuses_then_overwrites(tmp_path: Path, capsys) -> None:
    out = tmp_path / "syn"
    assert main(["data", "synthetic", "--out", str(out), *SMALL, "--no-card"]) == 0
    assert "train: 3 images" in capsys.readouterr().out
    data = json.loads((out / "annotations" / "instances_val.json").read_text())
    assert len(data["images"]) == 2 and (out / "val" / "000001.png").is_file()

    assert main(["data", "synthetic", "--out", str(out), *SMALL, "--no-card"]) == 2
    err = capsys.readouterr().err
    assert str(out) in err and "--overwrite" in err

    args = ["data", "synthetic", "--out", str(out), *SMALL, "--seed", "5", "--overwrite"]
    assert main([*args, "--no-card"]) == 0
    assert json.loads((out / "synthetic.json").read_text())["params"]["seed"] == 5


@pytest.mark.parametrize(
    "flag,value", [("--num-train", "0"), ("--image-size", "8"), ("--seed", "-3")], ids=str
)
def test_bad_numbers_exit_2(tmp_path: Path, capsys, flag: str, value: str) -> None:
    out = tmp_path / "syn"
    assert main(["data", "synthetic", "--out", str(out), *SMALL, flag, value]) == 2
    assert flag in capsys.readouterr().err
    assert not out.exists()


def test_card_for_an_existing_dataset(tmp_path: Path, capsys) -> None:
    root = tmp_path / "syn"
    assert main(["data", "synthetic", "--out", str(root), *SMALL, "--no-card"]) == 0
    card = tmp_path / "card"
    assert main(["data", "card", str(root), "--out", str(card)]) == 0
    stats = json.loads((card / "card.json").read_text())["splits"]
    assert stats["train"]["images"] == 3 and stats["val"]["images"] == 2
    assert (card / "card_stats.png").is_file() and (card / "card_samples.png").is_file()
    assert main(["data", "card", str(tmp_path / "missing")]) == 2
    assert "missing" in capsys.readouterr().err
