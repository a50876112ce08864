"""``bench.measure.analysis``: the evaluation loop it shares with ``bench run``, its transform
hook."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bench.data.synthetic import generate_synthetic
from bench.measure.analysis import evaluate_images
from detectors import build_detector


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data") / "syn"
    return generate_synthetic(root, num_train=4, num_val=6, image_size=64, card=False, workers=1)


def test_transform_sees_outputs_and_targets_and_changes_the_detections(data_root) -> None:
    torch.manual_seed(0)
    model = build_detector("centernet", 9)
    plain = evaluate_images(model, data_root, input_size=64, max_images=4)
    seen = []

    def identity(out, images, targets):
        seen.append((images.shape[0], len(targets)))
        return out

    same = evaluate_images(model, data_root, input_size=64, max_images=4, transform=identity)
    assert same["detections"] == plain["detections"] and seen == [(4, 4)]
    assert plain["img_ids"] == same["img_ids"] and len(plain["img_ids"]) == 4

    def blind(out, images, targets):  # no peaks anywhere: nothing detected
        return {**out, "heat": torch.full_like(out["heat"], -20.0)}

    none = evaluate_images(model, data_root, input_size=64, max_images=4, transform=blind)
    assert none["detections"] != plain["detections"]
    assert max(d["score"] for d in none["detections"]) < 1e-6
