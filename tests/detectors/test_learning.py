"""Every registered detector learns: it memorises a handful of images, and it generalises on
the ``easy`` rendering within a short budget (bench.train.sanity). Slow (about a minute per
detector on one core) but in the README's test command: interface tests alone passed while
the first zoo's SSD and DSSD learned nothing."""

from __future__ import annotations

import pytest
import torch

from bench.train.sanity import learn_and_generalise, memorise
from detectors import DETECTORS, build_detector

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("name", list(DETECTORS), ids=str)
def test_memorises_four_images(name: str) -> None:
    assert memorise(lambda k: build_detector(name, k), n=4, steps=100) >= 0.8


class _ShuffledLabels(torch.nn.Module):
    """A broken detector: trained on labels that have nothing to do with the images."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.calls = 0

    def forward(self, images: torch.Tensor) -> dict:
        return self.inner(images)

    def loss(self, outputs: dict, targets: list[dict[str, torch.Tensor]]) -> dict:
        self.calls += 1
        g = torch.Generator().manual_seed(self.calls)
        wrong = [
            {"boxes": t["boxes"], "labels": torch.randint(0, 9, t["labels"].shape, generator=g)}
            for t in targets
        ]
        return self.inner.loss(outputs, wrong)

    def decode(self, outputs: dict, image_sizes: list[tuple[int, int]]) -> list:
        return self.inner.decode(outputs, image_sizes)


def test_the_memorisation_check_can_fail() -> None:
    ap = memorise(lambda k: _ShuffledLabels(build_detector("centernet", k)), n=4, steps=100)
    assert ap < 0.5


#: detectors too slow to learn for this short check, and why (docs/training-notes.md):
#: strict, so a change that makes one learn here turns into a failure to update, not a pass
NOT_LEARNING = {
    "ssd": "class scores still at chance after 300 steps (p(correct) 0.022 = fg / 9); SSD "
    "learns later (AP50 0.24 at 20k images of the standard data)",
    "dssd": "as SSD: class scores at chance after 300 steps",
}


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.xfail(reason=NOT_LEARNING[n], strict=True))
        if n in NOT_LEARNING
        else n
        for n in DETECTORS
    ],
    ids=str,
)
def test_generalises_on_the_easy_rendering(name: str) -> None:
    """2,400 distinct easy 64 px images, each seen once (300 steps of 8), then AP50 on 32
    unseen ones: measured 0.08 (RetinaNet) to 0.25 (CenterNet); SSD 0.025, DSSD 0.005."""
    _, val_ap50 = learn_and_generalise(
        lambda k: build_detector(name, k), n_train=2400, n_val=32, steps=300, size=64
    )
    assert val_ap50 > 0.05, val_ap50
