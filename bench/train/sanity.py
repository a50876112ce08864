"""Learning sanity checks: can a detector memorise a handful of images, and learn from a few?

These are the checks CI runs per registered detector (``tests/detectors/test_learning.py``),
because a detector can pass every shape and interface test and still not learn (the first
model zoo's SSD and DSSD sat at the class prior; RetinaNet's towers started blind):

- :func:`memorise`: train on ``n`` fixed synthetic images without augmentation and return
  the training AP50. A correct detector on the tiny backbone fits a handful of images.
- :func:`learn_and_generalise`: train on a small ``easy`` set and return AP50 on unseen
  images of the same rendering, which memorisation alone does not test (SSD memorised 32
  images to AP50 0.95 and still scored 0.000 on new ones).

Images come from :func:`bench.data.synthetic.render_image` in memory (no files), so the
checks are deterministic for a seed and need no dataset on disk.
"""

from __future__ import annotations

import contextlib
import functools
import io
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bench.data.stream import normalize_images
from bench.data.synthetic import CATEGORIES, render_image
from bench.results.coco_eval import detections_to_coco, evaluate_coco

__all__ = ["SanityData", "learn_and_generalise", "make_data", "memorise", "train_ap50"]


@dataclass(frozen=True)
class SanityData:
    """Images (N, 3, S, S) in [0, 1], their targets (0-based labels) and COCO ground truth."""

    images: torch.Tensor
    targets: list[dict[str, torch.Tensor]]
    coco: dict


@functools.lru_cache(maxsize=4)
def make_data(n: int, *, size: int = 96, seed: int = 0, difficulty: str = "easy") -> SanityData:
    """``n`` synthetic images of ``size`` px rendered in memory, seeded by (seed, index).

    Cached (the same sets serve every detector's check); treat the result as read-only.
    """
    images, targets, anns = [], [], []
    cat_ids = [c for c, _, _ in CATEGORIES]
    for i in range(n):
        image, objects, _ = render_image(np.random.default_rng([seed, 7, i]), size, difficulty)
        images.append(torch.from_numpy(image).permute(2, 0, 1).float() / 255.0)
        boxes = [[x, y, x + w, y + h] for x, y, w, h in (o["bbox"] for o in objects)]
        labels = [cat_ids.index(o["category_id"]) for o in objects]
        targets.append(
            {
                "boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
        )
        for o in objects:
            anns.append({**o, "id": len(anns) + 1, "image_id": i + 1})
    coco = {
        "images": [{"id": i + 1, "width": size, "height": size} for i in range(n)],
        "annotations": anns,
        "categories": [{"id": c, "name": name} for c, name, _ in CATEGORIES],
    }
    return SanityData(torch.stack(images), targets, coco)


def _fit(model: torch.nn.Module, data: SanityData, steps: int, batch: int, lr: float) -> None:
    """Adam at ``lr`` with a 10% linear warm-up, cycling through ``data`` in batches."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    warm = max(1, steps // 10)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / warm))
    n = data.images.shape[0]
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        idx = torch.randperm(n, generator=g)[:batch].tolist()
        images = normalize_images(data.images[idx])
        loss = model.loss(model(images), [data.targets[i] for i in idx])["loss"]
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


@torch.no_grad()
def train_ap50(model: torch.nn.Module, data: SanityData, batch: int = 8) -> float:
    """COCO AP50 of ``model`` (eval mode) on ``data`` (pycocotools)."""
    model.eval()
    size = int(data.images.shape[-1])
    dets = []
    for start in range(0, data.images.shape[0], batch):
        images = normalize_images(data.images[start : start + batch])
        out = model.decode(model(images), [(size, size)] * images.shape[0])
        ids = list(range(start + 1, start + 1 + images.shape[0]))
        dets += detections_to_coco(
            ids, [d.boxes for d in out], [d.scores for d in out], [d.labels for d in out],
            [c for c, _, _ in CATEGORIES],
        )  # fmt: skip
    if not dets:
        return 0.0
    with contextlib.redirect_stdout(io.StringIO()):
        return float(evaluate_coco(data.coco, dets)["AP50"])


def memorise(
    build: Callable[[int], torch.nn.Module], *, n: int = 4, steps: int = 200, lr: float = 2e-3,
    size: int = 96, seed: int = 0,
) -> float:  # fmt: skip
    """Train ``build(num_classes)`` on ``n`` fixed images for ``steps``; training AP50."""
    data = make_data(n, size=size, seed=seed)
    torch.manual_seed(seed)
    model = build(len(CATEGORIES))
    _fit(model, data, steps, batch=n, lr=lr)
    return train_ap50(model, data)


def learn_and_generalise(
    build: Callable[[int], torch.nn.Module], *, n_train: int = 64, n_val: int = 16,
    steps: int = 300, batch: int = 8, lr: float = 2e-3, size: int = 96, seed: int = 0,
) -> tuple[float, float]:  # fmt: skip
    """Train on ``n_train`` easy images; (training AP50, AP50 on ``n_val`` unseen ones)."""
    train = make_data(n_train, size=size, seed=seed)
    val = make_data(n_val, size=size, seed=seed + 1)
    torch.manual_seed(seed)
    model = build(len(CATEGORIES))
    _fit(model, train, steps, batch=batch, lr=lr)
    return train_ap50(model, train), train_ap50(model, val)
