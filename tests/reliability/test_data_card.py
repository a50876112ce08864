"""Issue 13 item 8: ``bench data card`` on an annotation file that is not COCO exits 2 naming
the file and what was expected (the checks of ``bench run``'s loader,
``bench.data.coco.load_coco_json``), instead of a ``TypeError`` and exit code 1; no card is
written from it.
"""

from __future__ import annotations

import json

import pytest

from bench.cli import main

IMAGE = {"id": 1, "file_name": "1.png", "width": 32, "height": 32}
CATEGORY = {"id": 1, "name": "square"}
BOX = {"id": 1, "image_id": 1, "category_id": 1, "bbox": [2, 2, 10, 10], "area": 100}
CASES = {
    "a-list": ([IMAGE], "expected a JSON object with lists 'images', 'annotations'"),
    "images-not-a-list": (
        {"images": {"1": IMAGE}, "annotations": [], "categories": [CATEGORY]},
        "expected a JSON object with lists 'images', 'annotations'",
    ),
    "category-without-name": (
        {"images": [IMAGE], "annotations": [], "categories": [{"id": 1}]},
        "every category 'id' and 'name'",
    ),
    "box-of-3": (
        {"images": [IMAGE], "annotations": [{**BOX, "bbox": [1, 2, 3]}], "categories": [CATEGORY]},
        "a 4-number 'bbox'",
    ),
    "box-of-text": (
        {
            "images": [IMAGE],
            "categories": [CATEGORY],
            "annotations": [{**BOX, "bbox": ["a", "b", "c", "d"]}],
        },
        "annotation id 1 needs a 4-number 'bbox'",  # refused at loading, naming the annotation
    ),
    "image-without-size": (
        {
            "images": [{"id": 1, "file_name": "1.png"}],
            "annotations": [BOX],
            "categories": [CATEGORY],
        },
        "every image with a positive 'width' and 'height'",
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_card_of_a_file_that_is_not_coco_is_exit_2_naming_it(case, tmp_path, capsys):
    content, expected = CASES[case]
    root = tmp_path / "set"
    (root / "val").mkdir(parents=True)
    ann = root / "annotations" / "instances_val.json"
    ann.parent.mkdir()
    ann.write_text(json.dumps(content))
    assert main(["data", "card", str(root), "--splits", "val"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: annotation file {ann}") and expected in err, err
    assert "Traceback" not in err
    assert not (root / "card.json").exists() and not (root / "README.md").exists()
