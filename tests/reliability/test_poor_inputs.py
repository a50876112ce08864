"""Reliability issue, "Poor, fix too": inputs that were accepted silently or refused with a
message naming the wrong thing.

- ``bench train --data coco:FILE``: says FILE is a file (it said the folder does not exist).
- ``bench train --budget 0`` (and the other TrainConfig options): the message names the
  option (``--budget``), not the dataclass field (``TrainConfig.images_seen``).
- Ground truth: boxes with a negative width or height, or reaching outside their image, are
  counted and warned of (stderr) with the file and the annotation ids; a NaN in a bbox is
  refused naming the file and the annotation id; ``bench eval`` refuses what ``bench run``
  refuses (duplicate image ids, annotations of unknown images or categories): one check,
  ``bench.data.coco.load_coco_json``, for both.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from bench.cli import main
from bench.commands import train as train_cmd
from bench.data.coco import load_coco_json
from bench.errors import UsageError

REPO = Path(__file__).resolve().parents[2]


def _never(*args, **kwargs):
    raise AssertionError("the command started its work before checking its options")


@pytest.fixture
def no_work(monkeypatch):
    monkeypatch.setattr(train_cmd, "writable_folder", _never)
    monkeypatch.setattr(train_cmd, "init_from_env", _never)


def test_train_data_coco_file_says_it_is_a_file(tmp_path, capsys):
    ann = tmp_path / "instances_train2017.json"
    ann.write_text("{}")
    code = main(["train", "--data", f"coco:{ann}", "--budget", "8", "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "Traceback" not in err
    assert f"{ann} is a file" in err and "does not exist" not in err, err


def test_train_data_coco_missing_folder_still_says_so(tmp_path, capsys):
    missing = tmp_path / "nowhere"
    assert main(["train", "--data", f"coco:{missing}", "--out", str(tmp_path / "o")]) == 2
    assert f"folder {missing} does not exist" in capsys.readouterr().err


@pytest.mark.parametrize(
    "argv,expected",
    [
        (["--budget", "0"], "error: --budget must be an int >= 1, got 0"),
        (["--batch-size", "0"], "error: --batch-size must be an int >= 1, got 0"),
        (["--micro-batch", "0"], "error: --micro-batch must be an int >= 1 or None, got 0"),
        (["--workers", "-1"], "error: --workers must be >= 0, got -1"),
        (["--input-size", "0"], "error: --input-size must be an int >= 1, got 0"),
        (["--lr", "-1"], "error: --lr must be a finite number > 0, got -1.0"),
    ],
    ids=lambda v: v[0] if isinstance(v, list) else "",
)
def test_train_bad_option_names_the_option(argv, expected, no_work, tmp_path, capsys):
    assert main(["train", *argv, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.strip() == expected, err
    assert "TrainConfig" not in err


def _gt(path: Path, boxes: dict[int, list], **changes) -> Path:
    """A COCO ground truth: two 32 x 32 images, one category, ``{annotation id: bbox}``."""
    images = [{"id": i, "file_name": f"{i}.png", "width": 32, "height": 32} for i in (1, 2)]
    anns = [{"id": k, "image_id": 1, "category_id": 7, "bbox": b, "area": 1.0, "iscrowd": 0}
            for k, b in boxes.items()]  # fmt: skip
    doc = {"images": images, "annotations": anns, "categories": [{"id": 7, "name": "sq"}]}
    path.write_text(json.dumps({**doc, **changes}))  # json writes NaN as NaN, as json.load reads
    return path


def _dets(path: Path) -> Path:
    path.write_text(json.dumps([{"image_id": 1, "category_id": 7, "bbox": [2, 2, 8, 8],
                                 "score": 0.9}]))  # fmt: skip
    return path


BAD_BOXES = {1: [2, 2, 8, 8], 5: [10, 10, -4, 6], 6: [3, 3, 5, -1], 9: [28, 28, 20, 20]}


def test_loader_warns_of_negative_and_outside_boxes_with_their_ids(tmp_path):
    gt = _gt(tmp_path / "gt.json", BAD_BOXES)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        load_coco_json(gt)
    text = " ".join(str(w.message) for w in caught)
    assert str(gt) in text, text
    assert "2 of 4 boxes have a negative width or height (annotation ids 5, 6)" in text, text
    assert "1 of 4 boxes reach more than 1 px outside their image (annotation ids 9)" in text


def test_eval_warns_of_the_same_boxes_on_stderr(tmp_path):
    gt = _gt(tmp_path / "gt.json", BAD_BOXES)
    argv = ["eval", "--gt", str(gt), "--dt", str(_dets(tmp_path / "d.json"))]
    proc = subprocess.run(
        [sys.executable, "-m", "bench", *argv], cwd=REPO, capture_output=True, text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    assert str(gt) in proc.stderr and "annotation ids 5, 6" in proc.stderr, proc.stderr
    assert "annotation ids 9" in proc.stderr, proc.stderr


def test_nan_in_a_box_is_refused_naming_the_file_and_annotation(tmp_path, capsys):
    gt = _gt(tmp_path / "gt.json", {1: [2, 2, 8, 8], 4: [1, float("nan"), 3, 3]})
    with pytest.raises(UsageError, match=r"gt.json: annotation id 4 needs a 4-number 'bbox'"):
        load_coco_json(gt)
    assert main(["eval", "--gt", str(gt), "--dt", str(_dets(tmp_path / "d.json"))]) == 2
    err = capsys.readouterr().err
    assert str(gt) in err and "annotation id 4" in err and "nan" in err, err


def test_nan_in_a_box_in_bench_data_card_names_the_file(tmp_path, capsys):
    root = tmp_path / "set"
    (root / "val").mkdir(parents=True)
    (root / "annotations").mkdir()
    gt = _gt(root / "annotations" / "instances_val.json", {3: [1, 1, float("nan"), 3]})
    assert main(["data", "card", str(root), "--splits", "val"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(gt) in err and "annotation id 3" in err, err


IMAGES = [{"id": 1, "file_name": "1.png", "width": 32, "height": 32}]
EVAL_CASES = {
    "duplicate-image-ids": ({"images": IMAGES * 2}, "duplicate image ids: 1"),
    "unknown-image": ({}, "annotation id 2 needs a known 'image_id'.*image_id 99"),
    "unknown-category": ({}, "annotation id 3 needs a known .*category_id 8"),
}


@pytest.mark.parametrize("case", list(EVAL_CASES))
def test_eval_refuses_what_run_refuses(case, tmp_path, capsys):
    changes, match = EVAL_CASES[case]
    gt = _gt(tmp_path / "gt.json", {1: [2, 2, 8, 8]}, **changes)
    doc = json.loads(gt.read_text())
    if case == "unknown-image":
        doc["annotations"].append({**doc["annotations"][0], "id": 2, "image_id": 99})
    if case == "unknown-category":
        doc["annotations"].append({**doc["annotations"][0], "id": 3, "category_id": 8})
    gt.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match=match):  # bench run's loader
        load_coco_json(gt)
    assert main(["eval", "--gt", str(gt), "--dt", str(_dets(tmp_path / "d.json"))]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and str(gt) in err, err
    assert re.search(match, err), err
