"""A detection dataset over any COCO-layout folder, read through pycocotools.

Two layouts are recognised by ``CocoDetection.from_root(root, split)``:

- the synthetic benchmark: ``root/{split}/`` and ``root/annotations/instances_{split}.json``;
- COCO 2017: ``root/{split}2017/`` and ``root/annotations/instances_{split}2017.json``.

Each item is ``(image, target)``: ``image`` a float32 (3, H, W) tensor in [0, 1] and ``target``
a dict with ``boxes`` (M, 4) float32 xyxy in pixels, ``labels`` (M,) int64 contiguous in
0..K-1 (sorted category ids map to 0..K-1; ``label_to_cat_id`` maps back), ``image_id`` (int),
``orig_size`` (h, w) of the file, ``file_name`` and ``dropped`` (boxes removed as degenerate).
Crowd annotations (``iscrowd`` 1) are left out of ``boxes``; boxes are clipped to the image and
those narrower or shorter than 1 px after clipping are dropped and counted in ``dropped``.

Bad dataset files (missing, unparseable, not COCO, no images or no categories) raise
``UsageError`` naming the file at construction. An unreadable image met while iterating is
skipped with a warning naming it, counted in ``dataset.skipped`` (per process: DataLoader
workers count their own), and the next readable image is returned instead (training). An
evaluation must not count one image twice: it picks its images with ``readable(indices)``
first, which decodes each file once and leaves out (and names) the unreadable ones.
"""

from __future__ import annotations

import contextlib
import io
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from pycocotools.coco import COCO

from bench.errors import UsageError

# (image folder, annotation file) patterns, tried in order
LAYOUTS: tuple[tuple[str, str], ...] = (
    ("{split}", "annotations/instances_{split}.json"),
    ("{split}2017", "annotations/instances_{split}2017.json"),
)
Transform = Callable[[torch.Tensor, dict], tuple[torch.Tensor, dict]]
BAD_IMAGE = (OSError, ValueError, SyntaxError)  # what PIL raises for a bad image file


def _decode(path: Path) -> np.ndarray:
    """An image file as an (H, W, 3) uint8 RGB array; raises one of ``BAD_IMAGE``."""
    with Image.open(path) as im:
        return np.array(im.convert("RGB"))


def find_split(root: str | Path, split: str) -> tuple[Path, Path]:
    """``(image_dir, ann_file)`` of ``split`` ("train", "val", ...) under ``root``.

    Raises ``UsageError`` naming the paths tried when no layout matches.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"dataset root {root} does not exist or is not a folder")
    split = split.removesuffix("2017")
    tried = []
    for image_t, ann_t in LAYOUTS:
        image_dir, ann_file = root / image_t.format(split=split), root / ann_t.format(split=split)
        if image_dir.is_dir() and ann_file.is_file():
            return image_dir, ann_file
        tried.append(f"{image_dir}/ with {ann_file}")
    raise UsageError(f"no {split!r} split under {root}; expected " + " or ".join(tried))


def load_coco_json(ann_file: str | Path) -> dict:
    """Read and check a COCO instances JSON; ``UsageError`` naming the file when it is not one.

    Checks: a dict with lists ``images``, ``annotations``, ``categories``; at least one image
    and one category; unique ids; every annotation naming a known image and category and
    holding a 4-number ``bbox``.
    """
    ann_file = Path(ann_file)
    if not ann_file.is_file():
        raise UsageError(f"annotation file {ann_file} does not exist")
    try:
        data = json.loads(ann_file.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"annotation file {ann_file} is not readable JSON: {exc}") from exc
    keys = ("images", "annotations", "categories")
    if not isinstance(data, dict) or not all(isinstance(data.get(k), list) for k in keys):
        raise UsageError(
            f"annotation file {ann_file} is not COCO: expected a JSON object with lists "
            f"'images', 'annotations' and 'categories'"
        )
    try:
        image_ids = {int(im["id"]) for im in data["images"] if str(im["file_name"])}
        cat_ids = {int(c["id"]) for c in data["categories"] if str(c["name"])}
    except (KeyError, TypeError, ValueError) as exc:
        raise UsageError(
            f"annotation file {ann_file} is not COCO: every image needs 'id' and 'file_name', "
            f"every category 'id' and 'name' ({exc!r})"
        ) from exc
    if not image_ids:
        raise UsageError(f"annotation file {ann_file} lists no images: the dataset is empty")
    if not cat_ids:
        raise UsageError(f"annotation file {ann_file} lists no categories")
    check_annotations(data, f"annotation file {ann_file}", UsageError)
    return data


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def check_annotations(data: dict, source: str, error: type[Exception] = UsageError) -> None:
    """The checks of a COCO ground truth behind :func:`load_coco_json`, the loader of
    ``bench run``, ``bench train`` and ``bench eval`` (on lists of objects):

    ``error`` naming ``source`` for duplicate image or category ids, and for an annotation
    (named by its id) of an unknown image or category or without a 4-finite-number ``bbox``;
    a warning (stderr) counting the boxes with a negative width or height and those reaching
    more than 1 px outside their image (when it has a width and height), with their ids.
    """
    images = {}
    for im in data["images"]:
        if im["id"] in images:
            raise error(f"{source} has duplicate image ids: {im['id']!r}")
        images[im["id"]] = im
    cat_ids = [c["id"] for c in data["categories"]]
    if len(set(cat_ids)) != len(cat_ids):
        dup = next(c for c in cat_ids if cat_ids.count(c) > 1)
        raise error(f"{source} has duplicate category ids: {dup!r}")
    negative, outside, cats = [], [], set(cat_ids)
    for i, ann in enumerate(data["annotations"]):
        bbox = ann.get("bbox") if isinstance(ann, dict) else None
        if isinstance(ann, dict) and "id" in ann:
            name = f"annotation id {ann['id']!r}"
        else:
            name = f"annotations[{i}] {str(ann)[:100]}"
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_finite, bbox)):
            raise error(f"{source}: {name} needs a 4-number 'bbox' (finite numbers), got {bbox!r}")
        if ann.get("image_id") not in images or ann.get("category_id") not in cats:
            raise error(
                f"{source}: {name} needs a known 'image_id' and a known 'category_id', got "
                f"image_id {ann.get('image_id')!r}, category_id {ann.get('category_id')!r}"
            )
        x, y, w, h = bbox
        im = images[ann["image_id"]]
        width, height = im.get("width"), im.get("height")
        if w < 0 or h < 0:
            negative.append(ann.get("id"))
        elif (_finite(width) and _finite(height)) and (
            x < -1 or y < -1 or x + w > width + 1 or y + h > height + 1
        ):
            outside.append(ann.get("id"))
    problems = [
        f"{len(ids)} of {len(data['annotations'])} boxes {what} (annotation ids "
        f"{', '.join(map(str, ids[:5]))}{', ...' if len(ids) > 5 else ''})"
        for ids, what in (
            (negative, "have a negative width or height"),
            (outside, "reach more than 1 px outside their image"),
        )  # fmt: skip
        if ids
    ]
    if problems:
        warnings.warn(f"{source}: {'; '.join(problems)}", stacklevel=3)


class CocoDetection(torch.utils.data.Dataset):
    """COCO-format detection dataset (see the module docstring for items and errors).

    Args:
        image_dir: folder holding the images named by the JSON's ``file_name``.
        ann_file: COCO instances JSON.
        transforms: callable ``(image, target) -> (image, target)``, e.g.
            ``bench.data.transforms.Compose([...])``.
        remove_empty: leave out images without (non-crowd) annotations, as training often does.
    """

    def __init__(
        self,
        image_dir: str | Path,
        ann_file: str | Path,
        transforms: Transform | None = None,
        *,
        remove_empty: bool = False,
    ) -> None:
        self.image_dir = Path(image_dir)
        self.ann_file = Path(ann_file)
        if not self.image_dir.is_dir():
            raise UsageError(f"image folder {self.image_dir} does not exist or is not a folder")
        data = load_coco_json(self.ann_file)
        self.coco = COCO()
        self.coco.dataset = data
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            self.coco.createIndex()
        self.transforms = transforms
        self.cat_ids: list[int] = sorted(self.coco.cats)
        self.cat_id_to_label: dict[int, int] = {c: i for i, c in enumerate(self.cat_ids)}
        self.class_names: list[str] = [self.coco.cats[c]["name"] for c in self.cat_ids]
        ids = sorted(self.coco.imgs)
        if remove_empty:
            ids = [i for i in ids if any(not a.get("iscrowd", 0) for a in self.coco.imgToAnns[i])]
            if not ids:
                raise UsageError(f"annotation file {self.ann_file} has no annotated images")
        self.ids: list[int] = ids
        self.skipped_files: set[str] = set()

    @classmethod
    def from_root(
        cls, root: str | Path, split: str, transforms: Transform | None = None, **kwargs: Any
    ) -> CocoDetection:
        """Open ``split`` of a synthetic-layout or COCO-2017-layout dataset under ``root``."""
        image_dir, ann_file = find_split(root, split)
        return cls(image_dir, ann_file, transforms, **kwargs)

    @property
    def num_classes(self) -> int:
        """K, the number of categories."""
        return len(self.cat_ids)

    @property
    def skipped(self) -> int:
        """How many distinct unreadable images this process has skipped."""
        return len(self.skipped_files)

    def label_to_cat_id(self, label: int | torch.Tensor) -> int | torch.Tensor:
        """Contiguous label(s) in 0..K-1 -> COCO category id(s); tensors map elementwise."""
        if isinstance(label, torch.Tensor):
            table = torch.as_tensor(self.cat_ids, dtype=torch.int64, device=label.device)
            if label.numel() and (label.min() < 0 or label.max() >= len(self.cat_ids)):
                raise ValueError(f"labels must lie in [0, {len(self.cat_ids)}), got {label}")
            return table[label.long()]
        if not 0 <= int(label) < len(self.cat_ids):
            raise ValueError(f"label must lie in [0, {len(self.cat_ids)}), got {label}")
        return self.cat_ids[int(label)]

    def __len__(self) -> int:
        return len(self.ids)

    def _target(self, image_id: int, height: int, width: int) -> dict[str, Any]:
        anns = [a for a in self.coco.imgToAnns[image_id] if not a.get("iscrowd", 0)]
        xywh = np.asarray([a["bbox"] for a in anns], dtype=np.float64).reshape(-1, 4)
        boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1)
        boxes = boxes.clip(0, [width, height, width, height])
        keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
        labels = [self.cat_id_to_label[a["category_id"]] for a in anns]
        return {
            "boxes": torch.as_tensor(boxes[keep], dtype=torch.float32).reshape(-1, 4),
            "labels": torch.as_tensor(labels, dtype=torch.int64)[torch.from_numpy(keep)],
            "image_id": int(image_id),
            "orig_size": (height, width),
            "file_name": self.coco.imgs[image_id]["file_name"],
            "dropped": int((~keep).sum()),
        }

    def path(self, index: int) -> Path:
        """The image file of ``index``."""
        return self.image_dir / self.coco.imgs[self.ids[index]]["file_name"]

    def _problem(self, index: int) -> str:
        """Why the image of ``index`` cannot be read ("" when it can)."""
        try:
            _decode(self.path(index))
        except BAD_IMAGE as exc:
            return f"{type(exc).__name__}: {exc}"
        return ""

    def readable(
        self, indices: Sequence[int], limit: int | None = None
    ) -> tuple[list[int], dict[str, str]]:
        """The first ``limit`` (None: all) of ``indices`` whose image decodes, in order, and
        ``{file_name: why}`` of the unreadable ones met before the limit was reached.

        Decodes each file once (a thread pool); an evaluation uses it so that a bad image is
        left out rather than replaced by the next one (see the module docstring).
        """
        kept: list[int] = []
        bad: dict[str, str] = {}
        start, indices = 0, list(indices)
        with ThreadPoolExecutor(min(8, os.cpu_count() or 1)) as pool:
            while start < len(indices) and (limit is None or len(kept) < limit):
                stop = len(indices) if limit is None else start + limit - len(kept)
                chunk = indices[start:stop]
                for i, why in zip(chunk, pool.map(self._problem, chunk)):
                    if why:
                        bad[self.coco.imgs[self.ids[i]]["file_name"]] = why
                    else:
                        kept.append(i)
                start += len(chunk)
        return kept, bad

    def _load(self, index: int) -> tuple[torch.Tensor, dict[str, Any]] | None:
        """Image and target of ``index``, or None (after a warning) when the file is bad."""
        info = self.coco.imgs[self.ids[index]]
        path = self.image_dir / info["file_name"]
        try:
            array = _decode(path)
        except BAD_IMAGE as exc:
            if str(path) not in self.skipped_files:
                warnings.warn(f"skipping unreadable image {path}: {exc}", stacklevel=3)
                self.skipped_files.add(str(path))
            return None
        # (H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]
        image = torch.from_numpy(array).permute(2, 0, 1).contiguous().float().div_(255)
        return image, self._target(info["id"], array.shape[0], array.shape[1])

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a dataset of {n} images")
        for step in range(n):  # a bad image is replaced by the next readable one
            item = self._load((index + step) % n)
            if item is not None:
                image, target = item
                if self.transforms is not None:
                    image, target = self.transforms(image, target)
                return image, target
        raise UsageError(f"no readable image in {self.image_dir} ({n} listed in {self.ann_file})")
