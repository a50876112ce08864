"""``python -m bench anchors``: JSON and table output, pinned paper counts, bad input."""

from __future__ import annotations

import json
import re

import pytest

import detectors
from bench.cli import main

# (detector, input size, anchors per image at preset "paper"), from the papers
PAPER = [
    ("retinanet", 512, 49_104),
    ("ssd", 300, 8_732),
    ("yolov3", 416, 10_647),
    ("cornernet", 511, 0),
    ("centernet", 512, 0),
]


def _json(capsys: pytest.CaptureFixture[str], *argv: str) -> dict:
    assert main(["anchors", *argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


@pytest.mark.parametrize(("name", "size", "expected"), PAPER, ids=[p[0] for p in PAPER])
def test_paper_counts(capsys: pytest.CaptureFixture[str], name: str, size: int, expected: int):
    out = _json(capsys, "--detectors", name, "--size", str(size), str(size), "--preset", "paper")
    assert out == {name: expected}


def test_json_matches_the_models_and_defaults_to_every_available_detector(
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = _json(capsys, "--size", "128", "128")
    assert list(out) == list(detectors.DETECTORS)
    for name in ("retinanet", "faster_rcnn"):
        model = detectors.build_detector(name, 80)
        assert out[name] == model.anchors_per_image(128, 128) > 0
    # 100 px is padded to 128 by the detector; repeated names are counted once
    padded = _json(capsys, "--detectors", "retinanet,retinanet", "--size", "100", "100")
    assert padded == {"retinanet": out["retinanet"]}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--detectors", "retinanet,yolo9000", "--size", "64", "64"], "yolo9000.*faster_rcnn"),
        (["--detectors", ",", "--size", "64", "64"], "--detectors"),
        (["--size", "0", "64"], "--size 0 64"),
    ],
    ids=["unknown-detector", "empty-list", "zero-size"],
)
def test_bad_input_exits_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str):
    assert main(["anchors", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err), err


def test_bad_preset_is_an_argparse_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["anchors", "--size", "64", "64", "--preset", "coco"])
    assert exc.value.code == 2
    assert "coco" in capsys.readouterr().err
