"""Drawing primitives of the synthetic benchmark: shape polygons, textures, clutter.

Every function draws from the ``numpy.random.Generator`` it is given, in a fixed order, so an
image rendered by :func:`bench.data.synthetic.render_image` is byte-identical for a seed; any
change to the order or number of draws here changes the dataset (bump
``bench.data.synthetic.GENERATOR_VERSION``).

- :func:`shape_polygons`: outer and hole polygons of one of the nine categories, in local units.
- :func:`place_polygons`: rotate and stretch them to fill a pixel box exactly.
- :func:`ellipse_polygon`: an n-vertex ellipse.
- :func:`texture`, :func:`background`, :func:`draw_clutter`: zero-mean patterns, textured
  backgrounds and unlabelled distractors.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

__all__ = [
    "background",
    "draw_clutter",
    "ellipse_polygon",
    "place_polygons",
    "shape_polygons",
    "texture",
]


def ellipse_polygon(
    n: int, rx: float = 1.0, ry: float = 1.0, cx: float = 0.0, cy: float = 0.0
) -> np.ndarray:
    """(n, 2) vertices (x, y) of the ellipse with radii (rx, ry) centred on (cx, cy)."""
    t = np.linspace(0.0, 2.0 * np.pi, n, endpoint=False)
    return np.stack([cx + rx * np.cos(t), cy + ry * np.sin(t)], axis=1)


def shape_polygons(
    name: str, w: float, h: float, rng: np.random.Generator
) -> tuple[list[np.ndarray], list[np.ndarray], bool]:
    """Outer polygons, hole polygons ((P, 2) arrays of (x, y) in local units), whether to rotate.

    (w, h) is the target box in pixels, used to keep strokes and arms even in pixels.
    """
    short = min(w, h)
    n = int(np.clip((w + h) * 1.2, 16, 96))  # polygon vertices for round shapes
    square = np.array([[0, 0], [1, 0], [1, 1], [0, 1]], dtype=np.float64)
    if name == "rectangle":
        return [square], [], False
    if name == "frame":
        t = rng.uniform(0.15, 0.3) * short
        tx, ty = t / w, t / h
        return [square], [np.array([[tx, ty], [1 - tx, ty], [1 - tx, 1 - ty], [tx, 1 - ty]])], False
    if name == "ellipse":
        return [ellipse_polygon(n, 1.0, rng.uniform(0.3, 1.0))], [], True
    if name == "triangle":  # vertices a third of a turn apart, jittered: no slivers
        angles = np.arange(3) * (2 * np.pi / 3) + rng.uniform(-0.6, 0.6, 3)
        return [np.stack([np.cos(angles), np.sin(angles)], axis=1)], [], True
    if name == "parallelogram":
        r = rng.uniform(1.0, 3.0)
        rect = square * np.array([r, 1.0])
        angle = rng.uniform(20, 70) * np.pi / 180 * rng.choice([-1, 1])
        c, s = np.cos(angle), np.sin(angle)
        return [rect @ np.array([[c, s], [-s, c]])], [], False
    if name == "ring":
        k = rng.uniform(0.45, 0.7)
        return [ellipse_polygon(n)], [ellipse_polygon(n, k, k)], False
    if name == "crescent":
        k, d, phi = rng.uniform(0.75, 1.0), rng.uniform(0.35, 0.7), rng.uniform(0, 2 * np.pi)
        return (
            [ellipse_polygon(n)],
            [ellipse_polygon(n, k, k, d * np.cos(phi), d * np.sin(phi))],
            False,
        )
    if name == "star":
        t = np.linspace(0, 2 * np.pi, 10, endpoint=False)
        r = np.where(np.arange(10) % 2 == 0, 1.0, rng.uniform(0.38, 0.55))
        return [np.stack([r * np.cos(t), r * np.sin(t)], axis=1)], [], True
    if name == "cross":
        a = rng.uniform(0.25, 0.4) * short
        ax, ay = 0.5 - a / (2 * w), 0.5 - a / (2 * h)
        bx, by = 1 - ax, 1 - ay
        pts = [(ax, 0), (bx, 0), (bx, ay), (1, ay), (1, by), (bx, by)]
        pts += [(bx, 1), (ax, 1), (ax, by), (0, by), (0, ay), (ax, ay)]
        return [np.array(pts, dtype=np.float64)], [], False
    raise ValueError(f"unknown shape {name!r}")


def place_polygons(
    outer: list[np.ndarray],
    holes: list[np.ndarray],
    rotate: bool,
    box: Sequence[float],
    rng: np.random.Generator,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Rotate (optionally) and stretch the polygons so the outer ones fill ``box`` exactly.

    ``box`` is (x0, y0, w, h) in pixels; the results are (P, 2) pixel coordinates for PIL.
    """
    if rotate:
        a = rng.uniform(0, 2 * np.pi)
        rot = np.array([[np.cos(a), np.sin(a)], [-np.sin(a), np.cos(a)]])
        outer, holes = [p @ rot for p in outer], [p @ rot for p in holes]
    pts = np.concatenate(outer)
    lo, span = pts.min(0), np.maximum(pts.max(0) - pts.min(0), 1e-9)
    x0, y0, w, h = box
    # pixel (i, j) covers [i, i + 1): PIL fills pixels whose centres the polygon covers
    to_px = lambda p: (p - lo) / span * np.array([w, h]) + np.array([x0, y0]) - 0.5  # noqa: E731
    return [to_px(p) for p in outer], [to_px(p) for p in holes]


# ---------------------------------------------------------------- textures and clutter
def texture(
    rng: np.random.Generator, ys: np.ndarray, xs: np.ndarray, amp: float, kinds: int = 4
) -> np.ndarray:
    """(h, w, 1) float32 zero-mean pattern on pixel grids ``ys``, ``xs``: flat, gradient,
    stripes or checks; ``kinds`` < 4 draws from the first ``kinds`` of them only."""
    kind, phi = rng.integers(kinds), rng.uniform(0, np.pi)
    u = xs * np.float32(np.cos(phi)) + ys * np.float32(np.sin(phi))
    if kind == 0:
        t = np.zeros_like(u)
    elif kind == 1:
        t = (u - u.min()) * (2.0 / max(float(np.ptp(u)), 1.0)) - 1.0
    elif kind == 2:
        t = np.sin(u * np.float32(2 * np.pi / rng.uniform(3, 12)))
    else:
        c = rng.integers(2, 9)
        t = ((xs // c + ys // c) % 2) * 2.0 - 1.0
    return (t * np.float32(amp))[..., None]


def background(
    rng: np.random.Generator, size: int, blob_sd: float = 50.0, texture_amp: float = 25.0
) -> np.ndarray:
    """(S, S, 3) float32 base colour + low-frequency colour noise (standard deviation
    ``blob_sd``) + a texture of amplitude ``texture_amp``."""
    k = int(rng.integers(2, 7))
    blobs = np.clip(128 + rng.normal(0, blob_sd, (k, k, 3)), 0, 255).astype(np.uint8)
    low = np.asarray(Image.fromarray(blobs).resize((size, size), Image.BICUBIC), np.float32)
    ys, xs = np.mgrid[0:size, 0:size].astype(np.float32)
    base = rng.uniform(40, 215, 3).astype(np.float32)
    return base + (low - 128) + texture(rng, ys, xs, texture_amp)


def draw_clutter(
    draw: ImageDraw.ImageDraw, rng: np.random.Generator, size: int, count: int
) -> None:
    """Unlabelled distractors: jagged blobs, polylines and dots in random colours."""
    for _ in range(count):
        colour = (*(int(c) for c in rng.integers(0, 256, 3)), 255)
        kind = rng.integers(3)
        cx, cy = rng.uniform(0, size, 2)
        if kind == 0:
            r = rng.uniform(2, max(3, size / 8)) * rng.uniform(0.3, 1.0, int(rng.integers(7, 16)))
            t = np.sort(rng.uniform(0, 2 * np.pi, r.size))
            draw.polygon([(cx + a * np.cos(b), cy + a * np.sin(b)) for a, b in zip(r, t)], colour)
        elif kind == 1:
            pts = np.cumsum(rng.normal(0, size / 6, (int(rng.integers(2, 5)), 2)), 0) + (cx, cy)
            draw.line([tuple(p) for p in pts], colour, width=int(rng.integers(1, 3)))
        else:
            r = rng.uniform(1, 3)
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), colour)
