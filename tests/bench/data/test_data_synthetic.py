"""The synthetic benchmark generator: COCO validity, determinism, statistics, card, safety."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO

import bench.data.synthetic as synthetic
from bench.data.synthetic import (
    CATEGORIES,
    FINGERPRINT_NAME,
    ensure_synthetic,
    generate_synthetic,
    render_image,
)
from bench.errors import UsageError

TINY = {"num_train": 8, "num_val": 4, "image_size": 64, "seed": 3}
# sha256 over 4 images of 96 px (seeds [5, i]) rendered by generator version 1 (commit
# 9cc550a, before difficulties existed): the "hard" difficulty must stay that rendering
V1_RENDER_SHA256 = "6609e2c844d48e71dd735875b15f4f94a7bb80a213c29c9ec550886f7d7f4d36"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """8 train + 4 val images of 64 px, with the dataset card."""
    return generate_synthetic(tmp_path_factory.mktemp("syn") / "tiny", **TINY, workers=1)


def _load(path: Path) -> COCO:
    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


def _tree(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


# pycocotools' mask.decode warns about numpy 2's copy keyword; not ours to fix
@pytest.mark.filterwarnings("ignore::DeprecationWarning")
@pytest.mark.parametrize("split,count", [("train", 8), ("val", 4)])
def test_pycocotools_loads_a_valid_coco_dataset(tiny: Path, split: str, count: int) -> None:
    coco = _load(tiny / "annotations" / f"instances_{split}.json")
    assert len(coco.imgs) == count
    cat_ids = sorted(coco.cats)
    assert len(cat_ids) >= 6
    assert cat_ids != list(range(1, len(cat_ids) + 1))  # not contiguous: mapping is exercised
    assert [c for c, _, _ in CATEGORIES] == cat_ids
    anns = coco.dataset["annotations"]
    assert len(anns) >= count  # at least one object per image on average
    assert len({a["id"] for a in anns}) == len(anns)
    for ann in anns:
        x, y, w, h = ann["bbox"]
        assert ann["iscrowd"] == 0
        assert ann["area"] > 0 and w >= 1 and h >= 1
        assert x >= 0 and y >= 0 and x + w <= 64 and y + h <= 64
        assert ann["visible_fraction"] >= synthetic.MIN_VISIBLE
        # bbox and area describe the segmentation mask's pixels exactly
        mask = mask_utils.decode(ann["segmentation"])
        ys, xs = np.nonzero(mask)
        assert [xs.min(), ys.min(), xs.max() + 1 - xs.min(), ys.max() + 1 - ys.min()] == [
            x,
            y,
            w,
            h,
        ]
        assert int(mask.sum()) == ann["area"]
    for info in coco.imgs.values():
        with Image.open(tiny / split / info["file_name"]) as im:
            assert im.mode == "RGB" and im.size == (info["width"], info["height"]) == (64, 64)


def test_same_seed_gives_identical_bytes_whatever_the_workers(tmp_path: Path) -> None:
    a = generate_synthetic(tmp_path / "a", **TINY, workers=1, card=False)
    b = generate_synthetic(tmp_path / "b", **TINY, workers=2, card=False)  # pool path
    c = generate_synthetic(tmp_path / "c", **{**TINY, "seed": 4}, workers=1, card=False)
    tree_a, tree_b, tree_c = _tree(a), _tree(b), _tree(c)
    assert tree_a == tree_b
    assert tree_a.keys() == tree_c.keys()
    differing = [k for k in tree_a if tree_a[k] != tree_c[k]]
    assert "annotations/instances_train.json" in differing
    assert sum(k.endswith(".png") for k in differing) == 12  # every image differs


def _overlapping(b: np.ndarray) -> int:
    """How many of the (M, 4) [x, y, w, h] boxes overlap another one."""
    x1, y1 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(x1[:, None], x1) - np.maximum(b[:, None, 0], b[:, 0])
    ih = np.minimum(y1[:, None], y1) - np.maximum(b[:, None, 1], b[:, 1])
    inter = (iw > 0) & (ih > 0)
    np.fill_diagonal(inter, False)
    return int(inter.any(1).sum())


def test_statistics_cover_what_the_paper_argues_about() -> None:
    """Over 150 rendered images (no files): sizes, aspect ratios, repeats, overlap, occlusion."""
    boxes, cats, repeats, overlapping, dropped = [], set(), 0, 0, 0
    for i in range(150):
        _, anns, n_dropped = render_image(np.random.default_rng([11, i]), 128)
        dropped += n_dropped
        ids = [a["category_id"] for a in anns]
        repeats += len(ids) > len(set(ids))
        cats.update(ids)
        b = np.asarray([a["bbox"] for a in anns], dtype=float).reshape(-1, 4)
        overlapping += _overlapping(b)
        boxes.append(b)
    b = np.concatenate(boxes)
    size, aspect = np.sqrt(b[:, 2] * b[:, 3]), b[:, 2] / b[:, 3]
    assert size.min() <= 8 and size.max() >= 0.6 * 128
    assert aspect.min() <= 1 / 4 and aspect.max() >= 4
    assert cats == {c for c, _, _ in CATEGORIES}
    assert repeats >= 75  # several instances of one category in at least half of the images
    assert overlapping >= 0.3 * len(b)
    assert dropped > 0  # the occlusion rule is exercised


def test_dataset_card_files(tiny: Path) -> None:
    card = json.loads((tiny / "card.json").read_text())
    fingerprint = json.loads((tiny / FINGERPRINT_NAME).read_text())
    assert fingerprint["params"] == {**TINY, "difficulty": "standard"}
    for split in ("train", "val"):
        data = json.loads((tiny / "annotations" / f"instances_{split}.json").read_text())
        stats = card["splits"][split]
        assert stats["images"] == len(data["images"])
        assert sum(c["count"] for c in stats["per_category"]) == len(data["annotations"])
        assert fingerprint["counts"][split]["annotations"] == len(data["annotations"])
    readme = (tiny / "README.md").read_text()
    assert "too occluded" in readme and "crescent (49)" in readme
    assert "Difficulty **standard**" in readme
    for name in ("card_stats.png", "card_samples.png"):
        with Image.open(tiny / name) as im:
            assert im.format == "PNG" and im.size[0] > 200


def test_interrupted_generation_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    calls = []
    real = synthetic._render_to_file

    def flaky(job):
        calls.append(job)
        if len(calls) == 5:
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(synthetic, "_render_to_file", flaky)
    with pytest.raises(KeyboardInterrupt):
        generate_synthetic(tmp_path / "out", **TINY, workers=1, card=False)
    assert list(tmp_path.iterdir()) == []  # neither "out" nor its temporary folder


def test_existing_folder_is_refused_or_replaced_safely(tmp_path: Path) -> None:
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("precious")
    with pytest.raises(UsageError, match="mine.*--overwrite"):
        generate_synthetic(foreign, **TINY, card=False)
    with pytest.raises(UsageError, match="not a cornerbench synthetic dataset"):
        generate_synthetic(foreign, **TINY, overwrite=True, card=False)
    assert (foreign / "thesis.tex").read_text() == "precious"
    ours = generate_synthetic(tmp_path / "ours", **TINY, workers=1, card=False)
    generate_synthetic(ours, **{**TINY, "num_train": 2}, workers=1, overwrite=True, card=False)
    assert len(list((ours / "train").iterdir())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "ours"]


def test_ensure_synthetic_generates_once(tmp_path: Path, monkeypatch) -> None:
    root = tmp_path / "cache"
    small = {**TINY, "num_train": 3, "num_val": 2}
    assert ensure_synthetic(root, card=False, **small) == root.resolve()
    stamp = (root / FINGERPRINT_NAME).stat().st_mtime_ns

    def fail(*args, **kwargs):
        raise AssertionError("regenerated a complete dataset")

    with monkeypatch.context() as m:
        m.setattr(synthetic, "generate_synthetic", fail)
        assert ensure_synthetic(root, card=False, **small) == root.resolve()
    assert (root / FINGERPRINT_NAME).stat().st_mtime_ns == stamp
    (root / "val" / "000001.png").unlink()  # incomplete -> regenerated
    ensure_synthetic(root, card=False, **small)
    assert (root / "val" / "000001.png").is_file()
    ensure_synthetic(root, card=False, **{**small, "seed": 9})  # other params -> regenerated
    assert json.loads((root / FINGERPRINT_NAME).read_text())["params"]["seed"] == 9
    with pytest.raises(UsageError, match="unknown synthetic parameters"):
        ensure_synthetic(root, num_classes=3)


@pytest.mark.parametrize(
    "bad",
    [{"num_train": 0}, {"num_val": -1}, {"image_size": 16}, {"seed": -1}, {"num_train": 2.5}],
    ids=str,
)
def test_bad_numbers_raise_usage_error(tmp_path: Path, bad: dict) -> None:
    name = next(iter(bad)).replace("_", "-")
    with pytest.raises(UsageError, match=f"--{name}"):
        generate_synthetic(tmp_path / "x", **{**TINY, **bad})
    assert not (tmp_path / "x").exists()


def _render_hash(difficulty: str) -> str:
    h = hashlib.sha256()
    for i in range(4):
        image, anns, dropped = render_image(np.random.default_rng([5, i]), 96, difficulty)
        h.update(image.tobytes())
        h.update(json.dumps(anns, sort_keys=True).encode())
        h.update(str(dropped).encode())
    return h.hexdigest()


def test_hard_difficulty_is_the_version_1_rendering() -> None:
    assert _render_hash("hard") == V1_RENDER_SHA256
    assert _render_hash("standard") != V1_RENDER_SHA256


def _sizes(difficulty: str, n: int = 60) -> tuple[np.ndarray, np.ndarray, int]:
    boxes, overlapping = [], 0
    for i in range(n):
        _, anns, _ = render_image(np.random.default_rng([13, i]), 128, difficulty)
        b = np.asarray([a["bbox"] for a in anns], dtype=float).reshape(-1, 4)
        overlapping += _overlapping(b)
        boxes.append(b)
    b = np.concatenate(boxes)
    return np.sqrt(b[:, 2] * b[:, 3]), b[:, 2] / b[:, 3], overlapping


@pytest.mark.parametrize("difficulty", ["standard", "easy"], ids=str)
def test_easier_difficulties_respect_their_limits(difficulty: str) -> None:
    d = synthetic.DIFFICULTIES[difficulty]
    size, aspect, overlapping = _sizes(difficulty)
    # measured on the drawn mask: a shape may be a pixel or two smaller than its sampled box
    assert size.min() >= d.min_size * 0.75
    assert aspect.max() <= d.max_aspect * 1.3 and aspect.min() >= 1 / (d.max_aspect * 1.3)
    hard_size, _, _ = _sizes("hard")
    assert np.mean(hard_size < 12) > 0.1 > np.mean(size < 12)
    if d.overlap == 0:  # placement retries: rare overlaps where no free place was found
        assert overlapping <= 0.2 * len(size)


def test_unknown_difficulty_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--difficulty 'impossible'"):
        generate_synthetic(tmp_path / "x", **TINY, difficulty="impossible", workers=1)
