"""bench.results.tide: each error type built by hand, perfect detections, and tidecv's numbers."""

from __future__ import annotations

import pytest

from bench.results.coco_eval import evaluate_coco
from bench.results.tide import ERROR_TYPES, average_precision, tide_errors

SQUARE, DISC = 1, 2


def scene(objects: list[tuple], dets: list[tuple]) -> tuple[dict, list[dict]]:
    """Ground truth on image 1 (and image 2 when named): objects ``(category, [x, y, w, h])``
    or ``(category, box, image)`` and ``(category, box, "crowd")``; detections ``(category,
    box, score)`` or ``(category, box, score, image)``."""
    anns = []
    for k, obj in enumerate(objects, start=1):
        cat, box, *rest = obj
        crowd = rest == ["crowd"]
        image = rest[0] if rest and not crowd else 1
        anns.append({"id": k, "image_id": image, "category_id": cat, "bbox": box,
                     "iscrowd": int(crowd)})  # fmt: skip
    gt = {
        "images": [{"id": 1}, {"id": 2}],
        "categories": [{"id": SQUARE, "name": "square"}, {"id": DISC, "name": "disc"}],
        "annotations": anns,
    }
    out = [
        {"category_id": d[0], "bbox": d[1], "score": d[2], "image_id": d[3] if len(d) > 3 else 1}
        for d in dets
    ]
    return gt, out


A = [0, 0, 40, 40]  # object boxes, far apart (IoU 0)
B = [100, 100, 40, 40]
C = [0, 100, 40, 40]
A_IOU_03 = [0, 0, 40, 12]  # IoU 0.3 with A
A_IOU_07 = [0, 0, 40, 28]  # IoU 0.7 with A
NOWHERE = [150, 0, 30, 30]  # IoU 0 with every object

# name -> (objects, detections, expected dAP50 of that type)
CASES = {
    # A disc detected as a square (IoU 1): 0 -> 1 for the square, the disc stays 1.
    "cls": ([(SQUARE, A), (DISC, B)], [(DISC, B, 0.9), (DISC, A, 0.8)], 0.5),
    # The only square boxed at IoU 0.3: AP 0 -> 1.
    "loc": ([(SQUARE, A)], [(SQUARE, A_IOU_03, 0.9)], 1.0),
    # A disc detection at IoU 0.3 with a square ranks above the true disc: the disc's AP
    # 0.5 -> 1, the square's stays 1.
    "both": ([(SQUARE, A), (DISC, B)], [(SQUARE, A, 0.9), (DISC, B, 0.8), (DISC, A_IOU_03, 0.95)],
             0.25),
    # A second, lower square on A ranks above the square on C.
    "dupe": ([(SQUARE, A), (SQUARE, C)], [(SQUARE, A, 0.9), (SQUARE, A_IOU_07, 0.8),
                                           (SQUARE, C, 0.7)], 1 - (51 + 50 * 2 / 3) / 101),
    # A square on nothing ranks above the square on C.
    "bkg": ([(SQUARE, A), (SQUARE, C)], [(SQUARE, A, 0.9), (SQUARE, NOWHERE, 0.8),
                                          (SQUARE, C, 0.7)], 1 - (51 + 50 * 2 / 3) / 101),
    # Square C is never detected: recall stops at 1/2.
    "miss": ([(SQUARE, A), (SQUARE, C)], [(SQUARE, A, 0.9)], 1 - 51 / 101),
}  # fmt: skip


@pytest.mark.parametrize("kind", list(CASES))
def test_each_error_type_costs_only_its_own_dap(kind):
    objects, dets, expected = CASES[kind]
    result = tide_errors(*scene(objects, dets))
    assert result["dap"][kind] == pytest.approx(expected, abs=1e-12)
    assert result["ap50"] + result["dap"][kind] == pytest.approx(1.0, abs=1e-12)
    others = {k: v for k, v in result["dap"].items() if k != kind}
    assert others == dict.fromkeys(others, 0.0)
    assert result["counts"] == {k: int(k == kind) for k in ERROR_TYPES}


def test_perfect_detections_have_no_errors(coco_case):
    gt, _ = coco_case(6, images=20)
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
         "score": 0.5 + 0.001 * a["id"]}
        for a in gt["annotations"] if not a["iscrowd"]
    ]  # fmt: skip
    result = tide_errors(gt, dets)
    assert result == {
        "ap50": 1.0,
        "dap": dict.fromkeys(ERROR_TYPES, 0.0),
        "counts": dict.fromkeys(ERROR_TYPES, 0),
    }


def test_test_order_loc_before_cls_and_both():
    """IoU 0.3 with a square and 0.75 with a disc: TIDE tests Loc first."""
    disc_on_a = [0, 0, 40, 16]
    objects = [(SQUARE, A), (DISC, disc_on_a)]
    result = tide_errors(*scene(objects, [(SQUARE, A_IOU_03, 0.9), (DISC, disc_on_a, 0.8)]))
    assert result["counts"]["loc"] == 1 and result["counts"]["cls"] == 0


def test_cls_oracle_fixes_the_best_scoring_error_of_an_object_and_removes_the_rest():
    objects = [(SQUARE, A), (DISC, B)]
    dets = [(DISC, A, 0.8), (DISC, A_IOU_07, 0.7), (DISC, B, 0.6)]
    result = tide_errors(*scene(objects, dets))
    assert result["counts"]["cls"] == 2 and result["counts"]["miss"] == 0
    # base: square 0, disc 1/3; fixed: the 0.8 is the square, the 0.7 is gone: 1 and 1
    assert result["ap50"] == pytest.approx(average_precision([0.8, 0.7, 0.6], [0, 0, 1], 1) / 2)
    assert result["dap"]["cls"] == pytest.approx(1 - result["ap50"])


def test_crowd_regions_and_empty_images():
    objects = [(SQUARE, A), (SQUARE, B, "crowd")]
    dets = [(SQUARE, A, 0.9), (SQUARE, [110, 110, 20, 20], 0.95), (DISC, [110, 110, 20, 20], 0.8),
            (SQUARE, NOWHERE, 0.85, 2)]  # fmt: skip
    result = tide_errors(*scene(objects, dets))
    # The square inside the square crowd region is ignored; the disc there and the square
    # on the image without objects are background errors.
    assert result["counts"] == {**dict.fromkeys(ERROR_TYPES, 0), "bkg": 2}
    assert result["ap50"] == pytest.approx((average_precision([0.9, 0.85], [1, 0], 1) + 0) / 2)
    assert tide_errors(*scene(objects, []))["counts"]["miss"] == 1


def test_average_precision():
    assert average_precision([0.9, 0.8], [1, 1], 2) == 1.0
    assert average_precision([], [], 3) == 0.0 and average_precision([0.5], [0], 0) == 0.0
    assert average_precision([0.9, 0.8], [0, 1], 1) == pytest.approx(0.5)
    assert average_precision([0.9], [1], 2) == pytest.approx(51 / 101)  # recall 0 .. 0.5


# Recorded with the tidecv package 1.0.1 (TIDE's authors' code) on numpy 2.4: its
# TIDE().evaluate(gt, preds, mode=TIDE.BOX) run.ap and get_main_errors(), divided by 100,
# and its error counts, for coco_case(seed, images=20, crowd=False, ties=False).
TIDECV = {
    3: (0.2160149516975989,
        {"cls": 0.0331051869646, "loc": 0.0665219058691, "both": 0.0111809072745,
         "dupe": 0.00235393319552, "bkg": 0.0628822031278, "miss": 0.108016244438},
        {"cls": 5, "loc": 12, "both": 8, "dupe": 5, "bkg": 31, "miss": 19}),
    8: (0.15395186402362918,
        {"cls": 0.0380650691661, "loc": 0.125237160648, "both": 0.00297678136473,
         "dupe": 0.0223121386434, "bkg": 0.0399780395623, "miss": 0.0684036413078},
        {"cls": 8, "loc": 19, "both": 3, "dupe": 8, "bkg": 19, "miss": 18}),
    11: (0.1649131753906396,
         {"cls": 0.00889203652473, "loc": 0.0970534358597, "both": 0.0115878552792,
          "dupe": 0.00959038841112, "bkg": 0.0461205200751, "miss": 0.114860298661},
         {"cls": 5, "loc": 18, "both": 9, "dupe": 10, "bkg": 36, "miss": 26}),
}  # fmt: skip


@pytest.mark.parametrize("seed", list(TIDECV))
def test_matches_the_tidecv_package(coco_case, seed):
    gt, dets = coco_case(seed, images=20, crowd=False, ties=False)
    ap50, dap, counts = TIDECV[seed]
    result = tide_errors(gt, dets)
    assert result["ap50"] == pytest.approx(ap50, abs=1e-12)
    assert result["dap"] == pytest.approx(dap, abs=1e-11)
    assert result["counts"] == counts
    # With objects in every class, no crowd and no ties, TIDE's AP50 is COCO's here.
    every_class = coco_case(seed, images=20, crowd=False, ties=False, class_without_objects=False)
    assert tide_errors(*every_class)["ap50"] == pytest.approx(
        evaluate_coco(*every_class)["AP50"], abs=1e-12
    )


def test_img_ids_select_the_images():
    objects = [(SQUARE, A), (SQUARE, C, 2)]
    gt, dets = scene(objects, [(SQUARE, A, 0.9)])
    assert tide_errors(gt, dets, img_ids=[1])["ap50"] == 1.0
    assert tide_errors(gt, dets)["counts"]["miss"] == 1
    with pytest.raises(ValueError, match="bg_thresh"):
        tide_errors(gt, dets, bg_thresh=0.6)
