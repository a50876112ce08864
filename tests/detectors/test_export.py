"""CenterNet and CornerNet forward + decode export with torch.export and run under
torch.compile on the CPU, with the eager results (tiny backbone, 64 px, batch 2)."""

from __future__ import annotations

import pytest
import torch

from detectors import build_detector
from detectors.export import EXPORTABLE, StaticInference

SIZE = (64, 64)


def _model(name: str) -> tuple[StaticInference, torch.Tensor]:
    torch.manual_seed(0)
    det = build_detector(name, num_classes=3, backbone="tiny").eval()
    images = torch.randn(2, 3, *SIZE, generator=torch.Generator().manual_seed(1))
    return StaticInference(det, SIZE).eval(), images


def _graph_targets(ep: torch.export.ExportedProgram) -> set[str]:
    """Every call_function target of the exported graph and its nested graphs (HOPs)."""
    return {
        str(node.target)
        for module in ep.graph_module.modules()
        if isinstance(module, torch.fx.GraphModule)
        for node in module.graph.nodes
        if node.op == "call_function"
    }


def _assert_equal(got: tuple, want: tuple) -> None:
    assert len(got) == len(want) == 4
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g, w)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_decode_padded_unpadded_is_decode(name: str) -> None:
    model, images = _model(name)
    det = model.detector
    with torch.no_grad():
        outputs = det(images)
        boxes, scores, labels, count = det.decode_padded(outputs, [SIZE] * 2)
        dets = det.decode(outputs, [SIZE] * 2)
    assert boxes.shape[:2] == scores.shape == labels.shape and count.shape == (2,)
    for i, d in enumerate(dets):
        n = int(count[i])
        assert len(d) == n > 0
        assert torch.equal(d.boxes, boxes[i, :n]) and torch.equal(d.scores, scores[i, :n])
        assert torch.equal(d.labels, labels[i, :n])
        assert bool((labels[i, n:] == -1).all()) and bool((scores[i, n:] == 0).all())


@pytest.mark.parametrize("name", EXPORTABLE)
def test_export_equals_eager(name: str) -> None:
    model, images = _model(name)
    with torch.no_grad():
        want = model(images)
    ep = torch.export.export(model, (images,))
    targets = _graph_targets(ep)
    kernels = {"centernet": {"heatmap_peaks"}, "cornernet": {"fused_corner_pool"}}[name]
    kernels |= {"cornernet_decode", "select_detections"} if name == "cornernet" else set()
    assert {f"cornerbench.{k}.default" for k in kernels} <= targets
    # no host synchronisation in the graph
    assert not targets & {"aten._local_scalar_dense.default", "aten.item.default"}
    with torch.no_grad():
        _assert_equal(ep.module()(images), want)


@pytest.mark.parametrize("name", EXPORTABLE)
def test_compile_equals_eager(name: str) -> None:
    model, images = _model(name)
    torch._dynamo.reset()
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad():
        want = model(images)
        _assert_equal(compiled(images), want)
