"""The built-in synthetic benchmark: coloured shapes on cluttered backgrounds, in COCO format.

Built to exercise what the CornerNet paper argues about (box corners outside the object,
overlapping instances of one category, sizes from 6 px to most of the image, aspect ratios
1:5 to 5:1, clutter); see ``CONVENTIONS`` for the full description and annotation rules, which
are also written into the dataset card.

Every image is rendered from its own RNG, seeded by (seed, split, index), so the output is
byte-identical for a seed whatever the number of worker processes.

The drawing primitives (shape polygons, textures, clutter) are in :mod:`bench.data.shapes`.

Public: ``generate_synthetic``, ``ensure_synthetic``, ``validate_params``, ``CATEGORIES``,
``PRESETS``, ``FINGERPRINT_NAME``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import secrets
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from bench.data.shapes import background, draw_clutter, place_polygons, shape_polygons, texture
from bench.errors import UsageError

# (id, name, supercategory); ids spread over 1..90 like COCO's, so the id mapping is exercised.
CATEGORIES: tuple[tuple[int, str, str], ...] = (
    (2, "rectangle", "boxlike"),
    (5, "frame", "boxlike"),
    (11, "ellipse", "round"),
    (17, "triangle", "polygon"),
    (28, "parallelogram", "polygon"),
    (36, "ring", "round"),
    (49, "crescent", "round"),
    (64, "star", "polygon"),
    (88, "cross", "polygon"),
)


@dataclass(frozen=True)
class Difficulty:
    """How hard a rendering is: every knob the generator draws from.

    ``hard`` is the original rendering (generator version 1, byte-identical for a seed);
    ``standard`` (the default since version 2) keeps the nine categories, occlusion and
    clutter but drops what no detector could learn on a 2-core CPU budget at the tiny
    backbone (see docs/training-notes.md); ``easy`` is a debugging preset: flat colours on a
    flat background, no clutter, no overlap.
    """

    min_size: float  # smallest box size sqrt(w * h) in pixels
    max_aspect: float  # w/h log-uniform in [1 / max_aspect, max_aspect]
    max_fraction: float  # both sides of a box fit in this share of the image
    objects: tuple[int, int]  # objects per image: rng.integers(lo, hi)
    overlap: float  # probability an object is placed over an earlier one
    clutter: tuple[int, int]  # unlabelled distractors: rng.integers(lo, hi)
    lines: int  # lines drawn over the objects: rng.integers(0, lines)
    background_blobs: float  # standard deviation of the low-frequency background colour
    background_texture: float  # amplitude of the background texture
    textures: int  # object texture kinds drawn from: 4 = flat, gradient, stripes, checks
    texture_amp: float  # object texture amplitude: rng.uniform(0, texture_amp)
    noise: tuple[float, float]  # pixel noise standard deviation: rng.uniform(lo, hi)
    min_contrast: float  # mean |object - background| colour difference, else colour flipped
    min_visible: float  # objects with less of their mask visible are dropped


DIFFICULTIES: dict[str, Difficulty] = {
    "hard": Difficulty(
        min_size=6.0, max_aspect=5.0, max_fraction=0.9, objects=(2, 10), overlap=0.5,
        clutter=(2, 8), lines=3, background_blobs=50.0, background_texture=25.0, textures=4,
        texture_amp=40.0, noise=(2.0, 10.0), min_contrast=40.0, min_visible=0.3,
    ),
    "standard": Difficulty(
        min_size=12.0, max_aspect=3.0, max_fraction=0.8, objects=(1, 7), overlap=0.3,
        clutter=(0, 3), lines=1, background_blobs=30.0, background_texture=10.0, textures=2,
        texture_amp=20.0, noise=(1.0, 4.0), min_contrast=60.0, min_visible=0.5,
    ),
    "easy": Difficulty(
        min_size=16.0, max_aspect=3.0, max_fraction=0.8, objects=(1, 5), overlap=0.0,
        clutter=(0, 1), lines=1, background_blobs=0.0, background_texture=0.0, textures=1,
        texture_amp=0.0, noise=(0.0, 1.0), min_contrast=80.0, min_visible=0.5,
    ),
}  # fmt: skip
DEFAULT_DIFFICULTY = "standard"
PRESETS: dict[str, dict[str, int | str]] = {
    "default": {"num_train": 3000, "num_val": 500, "image_size": 128, "seed": 0},
    "smoke": {"num_train": 64, "num_val": 32, "image_size": 128, "seed": 0},
}
for _p in PRESETS.values():
    _p["difficulty"] = DEFAULT_DIFFICULTY
GENERATOR_VERSION = 2  # bump when the rendering changes, so ensure_synthetic regenerates
FINGERPRINT_NAME = "synthetic.json"
# the hard rendering's limits (generator version 1), kept as names for its tests
MIN_VISIBLE = DIFFICULTIES["hard"].min_visible
MIN_SIZE = DIFFICULTIES["hard"].min_size
MAX_ASPECT = DIFFICULTIES["hard"].max_aspect
_SPLITS = ("train", "val")
TITLE = "cornerbench synthetic shapes"
CONVENTIONS = """
- Nine categories with non-contiguous ids (2..88, as COCO's 1..90): box-like `rectangle` and
  `frame`, and shapes whose box corners lie outside the object: `ellipse`, `triangle`,
  `parallelogram`, `ring`, `crescent`, `star`, `cross`. Object colours are random.
- `bbox` [x, y, w, h] in pixels is tight around the object's full drawn mask, before later
  objects occlude it; `area` is the pixel count of that mask and `segmentation` its RLE, so
  bbox, area and segmentation describe the same pixels, as in COCO.
- `visible_fraction` (extra field) is the share of those pixels still visible. Objects with
  less than the difficulty's `min_visible` visible are dropped from the annotations (their
  visible remains stay in the image as clutter); the dropped count is in `synthetic.json`.
- `iscrowd` is 0 everywhere.
- Images are 8-bit RGB PNG named `NNNNNN.png`; image ids are 1..N in file order.
- Box sizes sqrt(w*h) are drawn log-uniform from `min_size` px to `max_fraction` of the image,
  aspect ratios w/h log-uniform in [1/`max_aspect`, `max_aspect`]; annotations are measured on
  the drawn mask, so their ranges differ slightly (a crescent is smaller than its circle).
  Objects from 1..3 categories per image, a share `overlap` of them placed over an earlier
  object; unlabelled clutter (blobs, polylines, dots), lines over objects and pixel noise as
  the difficulty sets them.
"""


def conventions(difficulty: str) -> str:
    """The dataset card's conventions for a :data:`DIFFICULTIES` level, its knobs listed."""
    d = DIFFICULTIES[difficulty]
    knobs = ", ".join(f"`{k}`={v}" for k, v in vars(d).items())
    which = {
        "standard": "the default since generator version 2",
        "hard": "the original (version 1) rendering, byte-identical",
        "easy": "a debugging preset: flat colours on a flat background, no clutter",
    }.get(difficulty, "")
    return f"{CONVENTIONS}- Difficulty **{difficulty}** ({which}): {knobs}.\n"


def validate_params(
    num_train: int, num_val: int, image_size: int, seed: int, difficulty: str = DEFAULT_DIFFICULTY
) -> None:
    """Raise ``UsageError`` naming the first bad generation parameter."""
    if difficulty not in DIFFICULTIES:
        raise UsageError(
            f"--difficulty {difficulty!r}: expected one of {', '.join(sorted(DIFFICULTIES))}"
        )
    checks = (
        ("--num-train", num_train, 1, 10_000_000),
        ("--num-val", num_val, 1, 10_000_000),
        ("--image-size", image_size, 32, 4096),
        ("--seed", seed, 0, 2**63 - 1),
    )
    for flag, value, lo, hi in checks:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise UsageError(f"{flag} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise UsageError(f"{flag} must be between {lo} and {hi}, got {value}")


# ---------------------------------------------------------------- rendering
def _sample_box(rng: np.random.Generator, size: int, others: list, d: Difficulty) -> list[float]:
    aspect = float(np.exp(rng.uniform(-np.log(d.max_aspect), np.log(d.max_aspect))))
    stretch = np.sqrt(max(aspect, 1 / aspect))
    s_max = d.max_fraction * size / stretch  # both sides fit in max_fraction of the image
    s_min = max(d.min_size, 3.0 * stretch)  # shorter side >= 3 px
    s = float(np.exp(rng.uniform(np.log(s_min), np.log(max(s_max, s_min)))))
    w, h = min(s * np.sqrt(aspect), size - 1.0), min(s / np.sqrt(aspect), size - 1.0)
    if others and rng.random() < d.overlap:  # overlap an earlier object
        ox, oy, ow, oh = others[int(rng.integers(len(others)))]
        x = ox + ow / 2 + rng.uniform(-0.6, 0.6) * (ow + w) / 2 - w / 2
        y = oy + oh / 2 + rng.uniform(-0.6, 0.6) * (oh + h) / 2 - h / 2
    else:
        x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
        # overlap 0 (easy): up to 20 more draws for a place clear of the earlier boxes
        for _ in range(20 if d.overlap == 0 else 0):
            if not any(x < ox + ow and ox < x + w and y < oy + oh and oy < y + h
                       for ox, oy, ow, oh in others):  # fmt: skip
                break
            x, y = rng.uniform(0, size - w), rng.uniform(0, size - h)
    return [float(np.clip(x, 0, size - w)), float(np.clip(y, 0, size - h)), w, h]


def render_image(
    rng: np.random.Generator, size: int, difficulty: str = "hard"
) -> tuple[np.ndarray, list[dict], int]:
    """Render one image at a :data:`DIFFICULTIES` level (``hard``: generator version 1).

    Returns the (S, S, 3) uint8 image, its annotations (``category_id``, ``bbox``, ``area``,
    ``segmentation``, ``visible_fraction``; no ids yet) and the number of objects dropped for
    being less than the difficulty's ``min_visible`` visible.
    """
    d = DIFFICULTIES[difficulty]
    canvas = background(rng, size, d.background_blobs, d.background_texture)
    clutter = Image.new("RGBA", (size, size))  # alpha marks the clutter's pixels
    draw_clutter(ImageDraw.Draw(clutter), rng, size, int(rng.integers(*d.clutter)))
    rgba = np.asarray(clutter, np.float32)
    canvas[rgba[..., 3] > 0] = rgba[..., :3][rgba[..., 3] > 0]
    n = int(rng.integers(*d.objects))
    cats = rng.choice(len(CATEGORIES), size=int(rng.integers(1, 4)), replace=False)
    cats = rng.choice(cats, size=n)
    boxes: list[list[float]] = []
    for _ in range(n):
        boxes.append(_sample_box(rng, size, boxes, d))
    order = np.arange(n)
    if rng.random() < 0.5:  # usually draw large objects first, so fewer are buried
        order = np.argsort([-b[2] * b[3] for b in boxes], kind="stable")
    owner = np.full((size, size), -1, np.int16)
    objects = []  # (category index, full mask, slice of its box)
    for i, j in enumerate(order):
        outer, holes, rot = shape_polygons(CATEGORIES[cats[j]][1], boxes[j][2], boxes[j][3], rng)
        outer, holes = place_polygons(outer, holes, rot, boxes[j], rng)
        m_img = Image.new("L", (size, size))
        draw = ImageDraw.Draw(m_img)
        for polygon, fill in [(p, 255) for p in outer] + [(p, 0) for p in holes]:
            draw.polygon([tuple(q) for q in polygon], fill=fill)
        x, y, w, h = boxes[j]  # all work below is on the box (plus a pixel), not the image
        y0, y1 = max(int(y) - 1, 0), min(int(y + h) + 2, size)
        box = np.s_[y0:y1, max(int(x) - 1, 0) : min(int(x + w) + 2, size)]
        full = np.asarray(m_img) > 0
        m = full[box]
        colour = rng.uniform(0, 255, 3).astype(np.float32)
        if m.any() and np.abs(canvas[box][m].mean(0) - colour).mean() < d.min_contrast:
            colour = (colour + 128) % 256  # keep contrast
        ys, xs = np.mgrid[box].astype(np.float32)
        amp = rng.uniform(0, d.texture_amp)
        canvas[box][m] = (colour + texture(rng, ys, xs, amp, d.textures))[m]
        owner[box][m] = i
        objects.append((int(cats[j]), full, box))
    lines = Image.new("L", (size, size))  # a few lines over the objects
    for _ in range(int(rng.integers(0, d.lines))):
        ImageDraw.Draw(lines).line([tuple(p) for p in rng.uniform(0, size, (2, 2))], fill=255)
    lm = np.asarray(lines) > 0
    canvas[lm] = rng.uniform(0, 255, 3).astype(np.float32)
    owner[lm] = -1
    noise = rng.standard_normal(canvas.shape, dtype=np.float32)  # drawn before its scale (v1)
    canvas += noise * np.float32(rng.uniform(*d.noise))
    image = np.clip(canvas + 0.5, 0, 255).astype(np.uint8)

    anns, dropped = [], 0
    for i, (cat, full, box) in enumerate(objects):
        m = full[box]
        area = int(m.sum())
        if area == 0 or (owner[box][m] == i).sum() < d.min_visible * area:
            dropped += 1
            continue
        rows, cols = np.flatnonzero(full.any(1)), np.flatnonzero(full.any(0))
        rle = mask_utils.encode(np.asfortranarray(full, dtype=np.uint8))
        x0, y0, x1, y1 = int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
        rle = {"size": [size, size], "counts": rle["counts"].decode("ascii")}
        visible = round(float((owner[box][m] == i).mean()), 3)
        anns.append(
            dict(category_id=CATEGORIES[cat][0], bbox=[x0, y0, x1 - x0, y1 - y0], area=area)
            | dict(segmentation=rle, iscrowd=0, visible_fraction=visible)
        )
    return image, anns, dropped


def _render_to_file(job: tuple[str, int, int, int, int, str]) -> tuple[list[dict], int]:
    """Worker: render image ``index`` of a split, write it as PNG, return its annotations."""
    folder, split_code, index, size, seed, difficulty = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_code, index]))
    image, anns, dropped = render_image(rng, size, difficulty)
    Image.fromarray(image).save(os.path.join(folder, f"{index:06d}.png"), compress_level=1)
    return anns, dropped


# ---------------------------------------------------------------- writing a dataset
def _generate_split(
    root: Path, split: str, num: int, size: int, seed: int, workers: int, difficulty: str
) -> dict:
    """Render one split into ``root/split/`` and write its COCO JSON; returns its counts."""
    (root / split).mkdir()
    code = _SPLITS.index(split)
    jobs = [(str(root / split), code, i, size, seed, difficulty) for i in range(num)]
    if workers <= 1 or num < 4 * workers:
        results: list[tuple[list[dict], int]] = [_render_to_file(j) for j in jobs]
    else:
        # fork on Linux (fast; workers use only numpy and PIL), spawn elsewhere
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        with multiprocessing.get_context(method).Pool(workers) as pool:
            results = pool.map(_render_to_file, jobs, chunksize=max(1, num // (workers * 8)))
    images, annotations, dropped = [], [], 0
    for i, (anns, n_dropped) in enumerate(results):
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": size, "height": size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
        dropped += n_dropped
    info = {"description": TITLE, "version": str(GENERATOR_VERSION), "seed": seed}
    info["difficulty"] = difficulty
    coco = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": n, "supercategory": s} for c, n, s in CATEGORIES],
    }
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps(coco, separators=(",", ":")))
    return {"images": num, "annotations": len(annotations), "dropped_occluded": dropped}


def _read_fingerprint(root: Path) -> dict | None:
    try:
        data = json.loads((root / FINGERPRINT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == __name__ else None


def generate_synthetic(
    out: str | Path,
    *,
    num_train: int = PRESETS["default"]["num_train"],
    num_val: int = PRESETS["default"]["num_val"],
    image_size: int = PRESETS["default"]["image_size"],
    seed: int = PRESETS["default"]["seed"],
    difficulty: str = DEFAULT_DIFFICULTY,
    workers: int | None = None,
    overwrite: bool = False,
    card: bool = True,
) -> Path:
    """Write the synthetic dataset to ``out`` and return its (absolute) path.

    Layout: ``out/{train,val}/NNNNNN.png``, ``out/annotations/instances_{train,val}.json``,
    ``out/synthetic.json`` (parameters and counts) and, with ``card``, the dataset card
    (``README.md``, ``card.json``, ``card_stats.png``, ``card_samples.png``).

    Everything is written into ``out.tmp-XXXX`` beside ``out`` and renamed at the end, so an
    interrupted run never leaves a folder that looks complete. An existing non-empty ``out``
    is a ``UsageError`` unless ``overwrite``, and is only ever replaced when it holds a
    ``synthetic.json`` of this generator. ``workers`` defaults to the CPU count (at most 8).
    """
    validate_params(num_train, num_val, image_size, seed, difficulty)
    workers = min(os.cpu_count() or 1, 8) if workers is None else int(workers)
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"output folder {out} exists and is not empty; pass --overwrite to replace it "
                "or choose another --out"
            )
        if _read_fingerprint(out) is None:
            raise UsageError(
                f"output folder {out} is not empty and holds no {FINGERPRINT_NAME}: it is not a "
                "cornerbench synthetic dataset, so it is not replaced; choose another --out"
            )
    token, final = secrets.token_hex(4), out.resolve()  # resolved: "." has no name
    tmp = final.with_name(f"{final.name}.tmp-{token}")
    tmp.mkdir(parents=True)
    try:
        (tmp / "annotations").mkdir()
        params = {"num_train": num_train, "num_val": num_val, "image_size": image_size}
        params |= {"seed": seed, "difficulty": difficulty}
        info = {"generator": __name__, "version": GENERATOR_VERSION, "params": params}
        info["counts"] = {
            split: _generate_split(tmp, split, num, image_size, seed, workers, difficulty)
            for split, num in zip(_SPLITS, (num_train, num_val))
        }
        if card:
            from bench.data.card import write_card  # matplotlib: imported only when needed

            splits = {s: (tmp / s, tmp / "annotations" / f"instances_{s}.json") for s in _SPLITS}
            write_card(
                tmp, splits, title=TITLE, generator=info, conventions=conventions(difficulty)
            )
        # the fingerprint is written last: a folder with it is complete
        (tmp / FINGERPRINT_NAME).write_text(json.dumps(info, indent=2) + "\n")
        if final.exists():
            old = final.with_name(f"{final.name}.old-{token}")
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def ensure_synthetic(
    root: str | Path, *, workers: int | None = None, card: bool = True, **params: int
) -> Path:
    """Return ``root`` (absolute), generating the synthetic set there unless it is complete.

    ``params`` (``num_train``, ``num_val``, ``image_size``, ``seed``, ``difficulty``) override
    ``PRESETS["default"]``; ``ensure_synthetic(root, **PRESETS["smoke"])`` gives the small set.
    Complete means: ``root/synthetic.json`` names this generator version and these parameters,
    and both annotation files and image folders (with the right image counts) exist. A stale
    set made by this generator is replaced; a non-empty folder that is not one raises
    ``UsageError``.
    """
    unknown = set(params) - set(PRESETS["default"])
    if unknown:
        raise UsageError(f"unknown synthetic parameters {sorted(unknown)}")
    params = {**PRESETS["default"], **params}
    validate_params(**params)
    root = Path(root).resolve()
    info = _read_fingerprint(root)
    if info and info.get("version") == GENERATOR_VERSION and info.get("params") == params:
        complete = all(
            (root / "annotations" / f"instances_{split}.json").is_file()
            and (root / split).is_dir()
            and sum(1 for _ in os.scandir(root / split)) == params[f"num_{split}"]
            for split in _SPLITS
        )
        if complete:
            return root
    return generate_synthetic(root, **params, workers=workers, overwrite=True, card=card)
