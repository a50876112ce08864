"""The training data stream: image order, augmentation seeds, normalisation, rank slices.

The stream is a function of the seed only. Position ``p`` (step ``p // B`` of global batch
``B``) is image ``perm_e[p % N]`` of epoch ``e = p // N``, where ``perm_e`` is
``torch.randperm(N)`` from a generator seeded with ``(seed, e)``; its augmentation draws come
from torch's RNG seeded with ``(seed, p)`` (:class:`StreamDataset`). So the stream does not
depend on the detector, on ``num_workers``, on where a run was resumed, or on how many
processes share it.

Micro-batches and ranks. Each global batch of ``B`` positions is cut into ``K`` contiguous
micro-batches of near-equal size (:func:`split_even`), ``K = ceil(B / micro_batch)``, and
the ``K`` micro-batches are dealt to the ``W`` processes (``torchrun``) in ``W`` contiguous
runs, again by :func:`split_even` (:func:`micro_batches`). Example: ``B = 49``,
``micro_batch = 4``: ``K = 13`` micro-batches (ten of 4 images, three of 3); on ``W = 8``
ranks, ranks 0-4 run two of them, ranks 5-7 one. The cut depends on ``(B, micro_batch)``
only, so ``W`` processes run exactly the micro-batches one process would, and only who runs
which changes. Without ``micro_batch`` (None), ``K = W``: one forward of its whole slice per
rank (``B = 49``, ``W = 8``: 7 images on rank 0, 6 on the others), so the cut then depends
on ``W``. The union over ranks and micro-batches of one step is exactly the single-process
batch of that step. Ranks may run different numbers of micro-batches; every rank gets at
least one (:func:`micro_batch_count` refuses ``K < W`` and ``B < W``).

Normalisation: :data:`IMAGE_MEAN` / :data:`IMAGE_STD` (ImageNet RGB statistics, as
torchvision's detection models), applied on the device by :func:`normalize_images`; the one
place the harness's input normalisation is defined (evaluation and latency use it too).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from bench.data.transforms import (
    ColorJitter,
    Compose,
    Letterbox,
    RandomHorizontalFlip,
    RandomScaleCrop,
    collate_detection,
)

__all__ = [
    "IMAGE_MEAN",
    "IMAGE_STD",
    "StepBatches",
    "StreamDataset",
    "build_train_transforms",
    "micro_batch_count",
    "micro_batches",
    "micro_steps",
    "mix_seed",
    "normalize_images",
    "rank_positions",
    "split_even",
    "stream_indices",
    "stream_loader",
]

# ImageNet RGB statistics (torchvision's detection models use them).
IMAGE_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGE_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)


def normalize_images(images: torch.Tensor) -> torch.Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> ``(images - IMAGE_MEAN) / IMAGE_STD`` (a new tensor)."""
    mean = torch.tensor(IMAGE_MEAN, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, dtype=images.dtype, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def build_train_transforms(cfg: Any) -> Callable[..., tuple[torch.Tensor, dict]]:
    """Letterbox to ``cfg.input_size``, then the augmentations switched on in ``cfg``.

    ``cfg`` is a :class:`bench.train.loop.TrainConfig` (``input_size``, ``scale_crop``,
    ``scale_range``, ``flip``, ``color_jitter`` are read).
    """

    steps: list[Any] = [Letterbox(cfg.input_size)]
    if cfg.scale_crop:
        steps.append(RandomScaleCrop(cfg.scale_range, size=cfg.input_size))
    if cfg.flip:
        steps.append(RandomHorizontalFlip(0.5))
    if cfg.color_jitter:
        steps.append(ColorJitter())
    return Compose(steps)


def mix_seed(seed: int, value: int) -> int:
    """A 63-bit seed from (seed, value), so that nearby pairs give unrelated streams."""
    return (seed * 0x9E3779B97F4A7C15 + value * 0xBF58476D1CE4E5B9 + 1) % (1 << 63)


def stream_indices(seed: int, num_images: int, start: int, count: int) -> list[int]:
    """Dataset indices at stream positions ``start .. start + count - 1`` (see module doc)."""
    out: list[int] = []
    perm_epoch, perm = -1, None
    for p in range(start, start + count):
        epoch, offset = divmod(p, num_images)
        if epoch != perm_epoch:
            gen = torch.Generator().manual_seed(mix_seed(seed, epoch))
            perm_epoch, perm = epoch, torch.randperm(num_images, generator=gen).tolist()
        out.append(perm[offset])
    return out


class StreamDataset(torch.utils.data.Dataset):
    """Item ``p``: the augmented sample at stream position ``p`` of ``base``."""

    def __init__(self, base: torch.utils.data.Dataset, seed: int) -> None:
        self.base, self.seed = base, seed
        self._epoch, self._perm = -1, []

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, position: int):
        n = len(self.base)
        epoch, offset = divmod(position, n)
        if epoch != self._epoch:  # one permutation per epoch, as in stream_indices
            self._epoch, self._perm = epoch, stream_indices(self.seed, n, epoch * n, n)
        index = self._perm[offset]
        with torch.random.fork_rng(devices=[]):  # the caller's RNG is left untouched
            torch.manual_seed(mix_seed(self.seed, position + (1 << 40)))
            return self.base[index]


def split_even(items: range, parts: int) -> list[range]:
    """``items`` cut into ``parts`` contiguous ranges, the first ``len % parts`` one longer."""
    base, extra = divmod(len(items), parts)
    out, lo = [], items.start
    for i in range(parts):
        hi = lo + base + (i < extra)
        out.append(range(lo, hi))
        lo = hi
    return out


def micro_batch_count(batch_size: int, world_size: int = 1, micro_batch: int | None = None) -> int:
    """Micro-batches ``K`` of one global batch, over all ranks (module doc).

    ``ceil(B / micro_batch)``, or ``W`` when ``micro_batch`` is None. ValueError when an
    argument is not a positive int (None allowed for ``micro_batch``), or when a rank would
    get no micro-batch (``B < W`` or ``K < W``).
    """
    for name, value in (("batch_size", batch_size), ("world_size", world_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} {value!r}: expected an int >= 1")
    if micro_batch is not None and (
        not isinstance(micro_batch, int) or isinstance(micro_batch, bool) or micro_batch < 1
    ):
        raise ValueError(f"micro_batch {micro_batch!r}: expected an int >= 1 or None")
    if batch_size < world_size:
        raise ValueError(
            f"global batch {batch_size} is smaller than the {world_size} processes: every "
            "process needs at least one image per step"
        )
    count = world_size if micro_batch is None else -(-batch_size // micro_batch)
    if count < world_size:
        raise ValueError(
            f"global batch {batch_size} in micro-batches of {micro_batch} makes {count} per "
            f"step, fewer than the {world_size} processes: use a micro-batch <= "
            f"{batch_size // world_size}"
        )
    return count


def _rank_chunks(batch_size: int, rank: int, world_size: int, micro_batch: int | None) -> range:
    """Indices (into the ``K`` micro-batches of a step) of rank ``rank``'s micro-batches."""
    count = micro_batch_count(batch_size, world_size, micro_batch)
    if not isinstance(rank, int) or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank!r}: expected 0 <= rank < world_size = {world_size}")
    return split_even(range(count), world_size)[rank]


def micro_batches(
    step: int, batch_size: int, rank: int = 0, world_size: int = 1,
    micro_batch: int | None = None,
) -> list[range]:  # fmt: skip
    """Stream positions of rank ``rank``'s micro-batches of global step ``step``, in order.

    The step's ``B`` positions are cut into ``K`` (:func:`micro_batch_count`) contiguous
    micro-batches by :func:`split_even`; rank ``r`` takes the ``r``-th of ``W`` contiguous
    runs of them. ``K`` and the cut do not depend on ``W`` unless ``micro_batch`` is None.
    """
    whole = range(step * batch_size, (step + 1) * batch_size)
    parts = split_even(whole, micro_batch_count(batch_size, world_size, micro_batch))
    return [parts[i] for i in _rank_chunks(batch_size, rank, world_size, micro_batch)]


def micro_steps(
    batch_size: int, world_size: int = 1, micro_batch: int | None = None, rank: int = 0
) -> int:
    """Forward passes of rank ``rank`` per optimiser step (the same for every step)."""
    return len(_rank_chunks(batch_size, rank, world_size, micro_batch))


def rank_positions(
    step: int, batch_size: int, rank: int = 0, world_size: int = 1,
    micro_batch: int | None = None,
) -> range:  # fmt: skip
    """All stream positions of rank ``rank`` in global step ``step`` (one contiguous range)."""
    parts = micro_batches(step, batch_size, rank, world_size, micro_batch)
    return range(parts[0].start, parts[-1].stop)


class StepBatches:
    """Batch sampler: rank ``rank``'s micro-batches of steps ``start .. end - 1``.

    Yields :attr:`per_step` lists of stream positions per step (:func:`micro_batches`).
    """

    def __init__(
        self, batch_size: int, start: int, end: int, *, rank: int = 0, world_size: int = 1,
        micro_batch: int | None = None,
    ) -> None:  # fmt: skip
        self.batch_size, self.start, self.end = batch_size, start, end
        self.rank, self.world_size, self.micro_batch = rank, world_size, micro_batch
        self.per_step = micro_steps(batch_size, world_size, micro_batch, rank)

    def __len__(self) -> int:
        return max(0, self.end - self.start) * self.per_step

    def __iter__(self) -> Iterator[list[int]]:
        for s in range(self.start, self.end):
            args = (s, self.batch_size, self.rank, self.world_size, self.micro_batch)
            for part in micro_batches(*args):
                yield list(part)


def stream_loader(
    dataset: torch.utils.data.Dataset, seed: int, batch_size: int, start: int, end: int, *,
    rank: int = 0, world_size: int = 1, micro_batch: int | None = None, num_workers: int = 0,
    pin_memory: bool = False,
) -> torch.utils.data.DataLoader:  # fmt: skip
    """Rank ``rank``'s micro-batches of steps ``start .. end - 1`` of ``dataset``'s stream.

    Yields ``(images (n, 3, S, S), targets)`` (:func:`bench.data.transforms.collate_detection`),
    :func:`micro_steps` of them per step, in stream order.
    """

    sampler = StepBatches(
        batch_size, start, end, rank=rank, world_size=world_size, micro_batch=micro_batch
    )
    return torch.utils.data.DataLoader(
        StreamDataset(dataset, seed),
        batch_sampler=sampler,
        num_workers=num_workers,
        collate_fn=collate_detection,
        pin_memory=pin_memory,
        # an explicit generator: creating the iterator must not draw from the global RNG
        generator=torch.Generator().manual_seed(seed),
    )
