"""CocoDetection: both layouts, the label <-> category id mapping, bad files, DataLoader use."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bench.data.coco import CocoDetection, find_split
from bench.data.synthetic import generate_synthetic
from bench.data.transforms import Compose, Letterbox, collate_detection
from bench.errors import UsageError


@pytest.fixture(scope="module")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("coco") / "syn"
    return generate_synthetic(
        root, num_train=6, num_val=3, image_size=64, seed=1, workers=1, card=False
    )


def _coco2017(root: Path, corrupt: bytes | None = None) -> Path:
    """A COCO-2017-layout val split: 3 images, category ids 3 and 17, a crowd box, a 0.5 px box.

    ``corrupt`` replaces the second image file's bytes.
    """
    (root / "val2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    images = []
    for i, (h, w) in enumerate([(20, 30), (24, 16), (10, 10)]):
        name = f"{i:012d}.jpg"
        Image.fromarray(np.full((h, w, 3), 40 * i, np.uint8)).save(root / "val2017" / name)
        images.append({"id": 100 + i, "file_name": name, "height": h, "width": w})
    if corrupt is not None:
        (root / "val2017" / images[1]["file_name"]).write_bytes(corrupt)
    anns = [
        {"id": 1, "image_id": 100, "category_id": 17, "bbox": [2, 3, 10, 5], "iscrowd": 0},
        {"id": 2, "image_id": 100, "category_id": 3, "bbox": [25, 1, 8, 4], "iscrowd": 0},
        {"id": 3, "image_id": 100, "category_id": 3, "bbox": [0, 0, 30, 20], "iscrowd": 1},
        {"id": 4, "image_id": 100, "category_id": 17, "bbox": [5, 5, 0.5, 9], "iscrowd": 0},
        {"id": 5, "image_id": 101, "category_id": 3, "bbox": [1, 1, 4, 4], "iscrowd": 0},
    ]
    cats = [{"id": 17, "name": "cat"}, {"id": 3, "name": "car"}]
    data = {"images": images, "annotations": anns, "categories": cats}
    (root / "annotations" / "instances_val2017.json").write_text(json.dumps(data))
    return root


def test_synthetic_layout_items(synthetic_root: Path) -> None:
    ds = CocoDetection.from_root(synthetic_root, "train")
    assert len(ds) == 6 and ds.num_classes == 9
    data = json.loads((synthetic_root / "annotations" / "instances_train.json").read_text())
    for index in range(len(ds)):
        image, target = ds[index]
        assert image.dtype == torch.float32 and image.shape == (3, 64, 64)
        assert image.min() >= 0.0 and image.max() <= 1.0
        assert target["orig_size"] == (64, 64) and isinstance(target["image_id"], int)
        anns = [a for a in data["annotations"] if a["image_id"] == target["image_id"]]
        xywh = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        expected = torch.cat([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], dim=1)
        assert target["boxes"].dtype == torch.float32 and target["labels"].dtype == torch.int64
        torch.testing.assert_close(target["boxes"], expected)
        cat_ids = [ds.label_to_cat_id(int(lab)) for lab in target["labels"]]
        assert cat_ids == [a["category_id"] for a in anns]
    # the pixels are the file's
    with Image.open(synthetic_root / "train" / "000000.png") as im:
        pixels = torch.from_numpy(np.array(im)).permute(2, 0, 1).float() / 255
    torch.testing.assert_close(ds[0][0], pixels)


def test_labels_round_trip_to_category_ids(synthetic_root: Path) -> None:
    ds = CocoDetection.from_root(synthetic_root, "val")
    assert ds.cat_ids == sorted(ds.cat_ids) and ds.cat_ids != list(range(1, 10))
    for cat_id in ds.cat_ids:
        assert ds.label_to_cat_id(ds.cat_id_to_label[cat_id]) == cat_id
    assert sorted(ds.cat_id_to_label.values()) == list(range(ds.num_classes))
    labels = torch.tensor([8, 0, 3])
    expected = torch.tensor([ds.cat_ids[8], ds.cat_ids[0], ds.cat_ids[3]])
    assert torch.equal(ds.label_to_cat_id(labels), expected)
    assert ds.class_names[0] == "rectangle" and ds.class_names[-1] == "cross"
    for bad in (-1, 9, torch.tensor([0, 9])):
        with pytest.raises(ValueError, match=r"\[0, 9\)"):
            ds.label_to_cat_id(bad)


def test_coco2017_layout_crowd_and_degenerate_boxes(tmp_path: Path) -> None:
    root = _coco2017(tmp_path / "coco")
    ds = CocoDetection.from_root(root, "val")
    assert ds.cat_ids == [3, 17] and ds.class_names == ["car", "cat"]
    image, target = ds[0]
    assert image.shape == (3, 20, 30) and target["orig_size"] == (20, 30)
    # crowd left out; [25, 1, 8, 4] clipped to the 30 px width; the 0.5 px box dropped
    expected = torch.tensor([[2.0, 3.0, 12.0, 8.0], [25.0, 1.0, 30.0, 5.0]])
    torch.testing.assert_close(target["boxes"], expected)
    assert target["labels"].tolist() == [1, 0] and target["dropped"] == 1
    assert ds[2][1]["boxes"].shape == (0, 4) and ds[2][1]["labels"].shape == (0,)
    assert len(CocoDetection.from_root(root, "val", remove_empty=True)) == 2
    with pytest.raises(UsageError, match="train2017"):
        find_split(root, "train")


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    "content,message",
    [
        (None, "does not exist"),
        ("{not json", "not readable JSON"),
        ("[1, 2]", "not COCO"),
        ('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "a"}]}', "empty"),
        (
            '{"images": [{"id": 1, "file_name": "a.png"}], "categories": [{"id": 1, "name": "a"}],'
            ' "annotations": [{"image_id": 1, "category_id": 2, "bbox": [0, 0, 1, 1]}]}',
            "known 'category_id'",
        ),
        ('{"images": [{"id": 1}], "annotations": [], "categories": []}', "file_name"),
    ],
    ids=["missing", "unparseable", "list", "no-images", "unknown-category", "image-keys"],
)
def test_bad_annotation_files_name_the_file(tmp_path: Path, content, message: str) -> None:
    ann = tmp_path / "annotations" / "instances_x.json"
    if content is not None:
        _write(ann, content)
    (tmp_path / "x").mkdir()
    with pytest.raises(UsageError, match=message) as info:
        CocoDetection(tmp_path / "x", ann)
    assert str(ann) in str(info.value)


def test_missing_folders_raise_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="nowhere"):
        CocoDetection.from_root(tmp_path / "nowhere", "val")
    root = _coco2017(tmp_path / "coco")
    with pytest.raises(UsageError, match="image folder .*missing"):
        CocoDetection(tmp_path / "missing", root / "annotations" / "instances_val2017.json")


@pytest.mark.parametrize("corrupt", [b"not an image", "truncated"], ids=["garbage", "truncated"])
def test_corrupt_image_is_skipped_with_a_warning(tmp_path: Path, corrupt) -> None:
    if corrupt == "truncated":
        buf = tmp_path / "full.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 255, (24, 16, 3), np.uint8)).save(buf)
        corrupt = buf.read_bytes()[:200]
    root = _coco2017(tmp_path / "coco", corrupt=corrupt)
    ds = CocoDetection.from_root(root, "val")
    with pytest.warns(UserWarning, match="000000000001.jpg"):
        image, target = ds[1]
    assert target["image_id"] == 102 and image.shape == (3, 10, 10)  # the next readable one
    assert ds.skipped == 1
    items = [ds[i] for i in range(len(ds))]  # a whole epoch: no crash, no second warning
    assert [t["image_id"] for _, t in items] == [100, 102, 102]
    assert ds.skipped == 1


def test_dataloader_with_workers(synthetic_root: Path) -> None:
    ds = CocoDetection.from_root(synthetic_root, "train", Compose([Letterbox(48)]))
    loader = torch.utils.data.DataLoader(
        ds, batch_size=4, num_workers=2, collate_fn=collate_detection
    )
    batches = list(loader)
    assert [b[0].shape for b in batches] == [(4, 3, 48, 48), (2, 3, 48, 48)]
    targets = [t for _, ts in batches for t in ts]
    assert sorted(t["image_id"] for t in targets) == list(range(1, 7))
    assert all(t["meta"]["scale"] == (0.75, 0.75) for t in targets)
