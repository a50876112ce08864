"""bench.results.coco_eval: COCO bbox evaluation, the results format, ``python -m bench eval``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bench.cli import main
from bench.results.coco_eval import STAT_NAMES, detections_to_coco, evaluate_coco

CATS = [{"id": 3, "name": "cat"}, {"id": 17, "name": "dog"}]  # non-contiguous ids on purpose
# (image id, category id, [x, y, w, h]); one small (< 32^2), medium and large object per class
OBJECTS = [
    (11, 3, [10.0, 10.0, 20.0, 20.0]),
    (11, 17, [50.0, 50.0, 50.0, 50.0]),
    (12, 3, [20.0, 30.0, 120.0, 110.0]),
    (12, 17, [150.0, 150.0, 16.0, 16.0]),
    (13, 3, [60.0, 60.0, 40.0, 40.0]),
    (13, 17, [5.0, 5.0, 150.0, 120.0]),
]


def make_gt(objects=OBJECTS) -> dict:
    return {
        "images": [
            {"id": i, "width": 200, "height": 200, "file_name": f"{i}.jpg"} for i in (11, 12, 13)
        ],
        "annotations": [
            {
                "id": k,
                "image_id": img,
                "category_id": cat,
                "bbox": box,
                "area": box[2] * box[3],
                "iscrowd": 0,
            }
            for k, (img, cat, box) in enumerate(objects, start=1)
        ],
        "categories": CATS,
    }


def gt_as_dets(objects=OBJECTS, shift: float = 0.0) -> list[dict]:
    """Ground truth fed back as detections; x shifted by ``shift`` times the width."""
    return [
        {"image_id": img, "category_id": cat, "bbox": [x + shift * w, y, w, h], "score": 1.0}
        for img, cat, (x, y, w, h) in objects
    ]


@pytest.fixture
def gt_path(tmp_path: Path) -> Path:
    path = tmp_path / "gt.json"
    path.write_text(json.dumps(make_gt()))
    return path


def write(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def test_ground_truth_as_detections_scores_one(gt_path):
    res = evaluate_coco(gt_path, gt_as_dets())
    for name in STAT_NAMES:  # one object per class and image, so even AR1 is 1
        assert res[name] == pytest.approx(1.0), name
    assert res["per_class"] == {"cat": pytest.approx(1.0), "dog": pytest.approx(1.0)}
    assert "Average Precision" in res["summary"]
    assert res["num_images"] == 3 and res["num_detections"] == 6


def test_jittered_boxes_score_lower(gt_path):
    # A 10% horizontal shift gives IoU 0.9 / 1.1 = 0.818: a match at the thresholds
    # 0.50 ... 0.80 (7 of 10), a miss at 0.85, 0.90, 0.95, so AP = 0.7 and AP50 = AP75 = 1.
    res = evaluate_coco(gt_path, gt_as_dets(shift=0.1))
    assert 0.0 < res["AP"] < 1.0
    assert res["AP"] == pytest.approx(0.7)
    assert res["AP50"] == pytest.approx(1.0) and res["AP75"] == pytest.approx(1.0)


def test_per_class_ap_and_subset(gt_path):
    cats_only = [o for o in OBJECTS if o[1] == 3]
    res = evaluate_coco(gt_path, gt_as_dets(cats_only))
    assert res["per_class"]["cat"] == pytest.approx(1.0)
    assert res["per_class"]["dog"] == 0.0
    assert res["AP"] == pytest.approx(0.5)
    # On image 11 only, with only image 11's detections, everything is found.
    only_11 = [o for o in OBJECTS if o[0] == 11]
    sub = evaluate_coco(gt_path, gt_as_dets(only_11), img_ids=[11])
    assert sub["AP"] == pytest.approx(1.0) and sub["num_images"] == 1
    assert evaluate_coco(gt_path, gt_as_dets(only_11))["AP"] < 1.0
    with pytest.raises(ValueError, match="99"):
        evaluate_coco(gt_path, [], img_ids=[99])


def test_empty_detections_give_zero(gt_path, tmp_path):
    res = evaluate_coco(gt_path, [], results_path=tmp_path / "dt.json")
    assert all(res[name] == 0.0 for name in STAT_NAMES)
    assert res["per_class"] == {"cat": 0.0, "dog": 0.0}
    assert json.loads((tmp_path / "dt.json").read_text()) == []
    # ... also from an empty results file
    assert evaluate_coco(gt_path, write(tmp_path / "empty.json", []))["AP"] == 0.0


def test_undefined_stat_is_minus_one(tmp_path):
    no_small = [o for o in OBJECTS if o[2][2] * o[2][3] >= 32**2]
    res = evaluate_coco(make_gt(no_small), gt_as_dets(no_small))
    assert res["APs"] == -1.0 and res["ARs"] == -1.0
    assert res["AP"] == pytest.approx(1.0)


@pytest.mark.parametrize("field,bad", [("image_id", 99), ("category_id", 5)], ids=str)
def test_unknown_ids_raise_naming_them_and_the_file(gt_path, tmp_path, field, bad):
    dets = gt_as_dets()
    dets[2][field] = bad
    with pytest.raises(ValueError, match=rf"<detections list>.*\[{bad}\]"):
        evaluate_coco(gt_path, dets)
    path = write(tmp_path / "bad_dt.json", dets)
    with pytest.raises(ValueError, match=rf"bad_dt\.json.*\[{bad}\]"):
        evaluate_coco(gt_path, path)


def test_cap_is_100_per_image_across_categories(gt_path, tmp_path):
    rng = np.random.default_rng(0)
    scores = rng.permutation(150) / 150.0  # distinct scores
    dets = [
        {
            "image_id": 11,
            "category_id": 3 if i % 2 else 17,
            "bbox": [1.0 * i, 0.0, 5.0, 5.0],
            "score": float(s),
        }
        for i, s in enumerate(scores)
    ]
    dets += gt_as_dets([o for o in OBJECTS if o[0] == 12])
    out = tmp_path / "capped.json"
    res = evaluate_coco(gt_path, dets, results_path=out)
    written = json.loads(out.read_text())
    on_11 = [d for d in written if d["image_id"] == 11]
    assert len(on_11) == 100  # 75 + 75 per category: COCOeval's own cap would keep all 150
    assert len(written) == 102 and res["num_detections"] == 102
    kept = sorted(d["score"] for d in on_11)
    assert kept == sorted(scores)[50:]
    assert not list(tmp_path.glob(".*.tmp"))


def test_detections_to_coco_round_trip(gt_path):
    # xyxy tensors with contiguous labels (cat -> 0, dog -> 1) back to COCO ids and xywh.
    ids, boxes, scores, labels = [], [], [], []
    for img in (11, 12, 13):
        objs = [o for o in OBJECTS if o[0] == img]
        ids.append(img)
        boxes.append(torch.tensor([[x, y, x + w, y + h] for _, _, (x, y, w, h) in objs]))
        scores.append(torch.tensor([0.9, 0.8]))
        labels.append(torch.tensor([0 if c == 3 else 1 for _, c, _ in objs]))
    dets = detections_to_coco(ids, boxes, scores, labels, [3, 17])
    assert dets[0] == {
        "image_id": 11,
        "category_id": 3,
        "bbox": [10.0, 10.0, 20.0, 20.0],
        "score": pytest.approx(0.9),
    }
    assert evaluate_coco(gt_path, dets)["AP"] == pytest.approx(1.0)


def test_detections_to_coco_top_k_and_validation():
    boxes = np.array([[0, 0, 1, 1], [0, 0, 2, 2], [0, 0, 3, 3]], dtype=np.float32)
    scores = np.array([0.1, 0.7, 0.4])
    labels = np.array([1, 0, 1])
    dets = detections_to_coco([5], [boxes], [scores], [labels], {0: 3, 1: 17}, max_per_image=2)
    assert [d["score"] for d in dets] == pytest.approx([0.7, 0.4])
    assert [d["category_id"] for d in dets] == [3, 17]
    assert dets[1]["bbox"] == [0.0, 0.0, 3.0, 3.0]
    with pytest.raises(ValueError, match=r"\(N, 4\)"):
        detections_to_coco([5], [boxes[:, :3]], [scores], [labels], [3, 17])
    with pytest.raises(ValueError, match=r"labels \[2\]"):
        detections_to_coco([5], [boxes], [scores], [labels + 1], [3, 17])
    with pytest.raises(ValueError, match="one entry per image"):
        detections_to_coco([5, 6], [boxes], [scores], [labels], [3, 17])


def test_cli_json_output(gt_path, tmp_path, capsys):
    dt = write(tmp_path / "dt.json", gt_as_dets(shift=0.1))
    assert main(["eval", "--gt", str(gt_path), "--dt", str(dt), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(STAT_NAMES) | {"per_class"} <= set(out)
    assert out["AP"] == pytest.approx(0.7) and set(out["per_class"]) == {"cat", "dog"}


def test_cli_table_output(gt_path, tmp_path, capsys):
    dt = write(tmp_path / "dt.json", gt_as_dets())
    assert main(["eval", "--gt", str(gt_path), "--dt", str(dt)]) == 0
    out = capsys.readouterr().out
    assert "AP50" in out and "ARl" in out and "dog" in out and "1.000" in out


@pytest.mark.parametrize(
    "case,message",
    [
        ("missing_gt", "nope.json"),
        ("gt_is_list", "gt_list.json"),
        ("dt_unparseable", "dt_broken.json"),
        ("dt_is_dict", "dt_dict.json"),
        ("unknown_category", "dt_unknown.json"),
    ],
    ids=str,
)
def test_cli_bad_input_exits_2(gt_path, tmp_path, capsys, case, message):
    good_dt = write(tmp_path / "dt.json", gt_as_dets())
    gt, dt = str(gt_path), str(good_dt)
    if case == "missing_gt":
        gt = str(tmp_path / "nope.json")
    elif case == "gt_is_list":
        gt = str(write(tmp_path / "gt_list.json", gt_as_dets()))
    elif case == "dt_unparseable":
        (tmp_path / "dt_broken.json").write_text("[{not json")
        dt = str(tmp_path / "dt_broken.json")
    elif case == "dt_is_dict":
        dt = str(write(tmp_path / "dt_dict.json", make_gt()))
    else:
        bad = gt_as_dets()
        bad[0]["category_id"] = 4
        dt = str(write(tmp_path / "dt_unknown.json", bad))
    assert main(["eval", "--gt", gt, "--dt", dt, "--json"]) == 2
    err = capsys.readouterr().err
    assert message in err and "error:" in err
