"""bench.data.stream: how a global batch is cut into micro-batches and dealt to ranks."""

from __future__ import annotations

import pytest
import torch

from bench.data.stream import (
    StepBatches,
    micro_batch_count,
    micro_batches,
    micro_steps,
    normalize_images,
    rank_positions,
    split_even,
)

# (global batch, micro-batch, processes): even and uneven cuts, ranks with unequal shares
SPLITS = [(49, 4, 8), (49, None, 8), (5, 2, 2), (10, 2, 3), (7, 1, 7), (8, None, 1), (6, 4, 2)]


def test_split_even_is_contiguous_with_the_longer_parts_first():
    assert split_even(range(3, 10), 3) == [range(3, 6), range(6, 8), range(8, 10)]
    assert split_even(range(4), 2) == [range(0, 2), range(2, 4)]
    assert [len(r) for r in split_even(range(2), 3)] == [1, 1, 0]


def test_paper_batch_on_eight_processes():
    # micro-batches of 4: 13 of them (ten of 4 images, three of 3); ranks 0-4 run two
    assert micro_batch_count(49, 8, 4) == 13
    assert [micro_steps(49, 8, 4, r) for r in range(8)] == [2] * 5 + [1] * 3
    assert [len(p) for p in micro_batches(0, 49, 0, 8, 4)] == [4, 4]
    assert [len(p) for p in micro_batches(0, 49, 7, 8, 4)] == [3]
    # no micro-batch: one forward of the rank's slice, 7 images on rank 0 and 6 elsewhere
    assert [len(rank_positions(2, 49, r, 8)) for r in range(8)] == [7] + [6] * 7
    assert rank_positions(2, 49, 0, 8) == range(98, 105)


@pytest.mark.parametrize("batch,micro,world", SPLITS, ids=str)
def test_ranks_together_run_the_single_process_micro_batches(batch, micro, world):
    step = 3
    ranks = [micro_batches(step, batch, r, world, micro) for r in range(world)]
    dealt = [part for parts in ranks for part in parts]  # rank 0's first, in order
    # with a micro-batch the cut is the single-process one; without, one slice per rank
    alone = micro_batches(step, batch, 0, 1, micro if micro is not None else batch // world)
    if micro is not None or batch % world == 0:
        assert dealt == alone
    assert [p for part in dealt for p in part] == list(range(step * batch, (step + 1) * batch))
    assert all(len(parts) >= 1 for parts in ranks)
    assert sum(micro_steps(batch, world, micro, r) for r in range(world)) == len(dealt)
    for r, parts in enumerate(ranks):
        assert rank_positions(step, batch, r, world, micro) == range(parts[0].start, parts[-1].stop)


@pytest.mark.parametrize(
    "args,match",
    [
        ((1, 2, None), "smaller than the 2 processes"),
        ((4, 2, 4), "fewer than the 2 processes"),
        ((0, 1, None), "batch_size 0"),
        ((4, 0, None), "world_size 0"),
        ((4, 1, 0), "micro_batch 0"),
        ((4, 1, True), "micro_batch True"),
    ],
    ids=str,
)
def test_impossible_cuts_raise(args: tuple, match: str):
    with pytest.raises(ValueError, match=match):
        micro_batch_count(*args)
    with pytest.raises(ValueError, match=match):
        micro_steps(*args)


def test_rank_outside_the_group_raises():
    with pytest.raises(ValueError, match="rank 2"):
        micro_batches(0, 8, 2, 2)


def test_step_batches_yield_a_ranks_micro_batches_step_after_step():
    sampler = StepBatches(5, 1, 3, rank=0, world_size=2, micro_batch=2)
    assert sampler.per_step == 2 and len(sampler) == 4
    assert list(sampler) == [[5, 6], [7, 8], [10, 11], [12, 13]]
    other = StepBatches(5, 1, 3, rank=1, world_size=2, micro_batch=2)
    assert list(other) == [[9], [14]] and len(other) == 2
    assert list(StepBatches(4, 0, 2)) == [[0, 1, 2, 3], [4, 5, 6, 7]]  # one process, as before


def test_normalize_images_uses_imagenet_statistics():
    images = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1).expand(2, 3, 4, 4)
    assert torch.equal(normalize_images(images), torch.zeros(2, 3, 4, 4))
