"""One synthetic image: the categories, the difficulty levels and :func:`render_image`.

Every image is rendered from the RNG it is given, so :mod:`bench.data.synthetic` (which
seeds one RNG per (seed, split, index)) writes byte-identical sets for a seed. The drawing
primitives (shape polygons, textures, clutter) are in :mod:`bench.data.shapes`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw
from pycocotools import mask as mask_utils

from bench.data.shapes import background, draw_clutter, place_polygons, shape_polygons, texture

__all__ = ["CATEGORIES", "DIFFICULTIES", "Difficulty", "render_image"]

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
