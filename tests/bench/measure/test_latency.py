"""bench.measure.latency: the per-stage protocol, preprocessing, the suites and the CLI."""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pytest
import torch
from torch import nn

from bench.cli import main
from bench.commands import latency as latency_cmd
from bench.data.transforms import invert_boxes
from bench.errors import UsageError
from bench.measure import latency
from bench.spec import LatencySpec, TimingSpec
from bench.train.loop import IMAGE_MEAN, IMAGE_STD
from detectors.base import Detections, Detector, check_images

SUMMARY_KEYS = {"p50", "p90", "p99", "mean", "n"}


class SleepyDetector(Detector):
    """Forward sleeps ``forward_ms``; decode returns one box covering the input. Records the
    input shapes, dtypes and build arguments it sees."""

    name = "sleepy"

    def __init__(self, num_classes: int, forward_ms: float = 0.0, **build) -> None:
        super().__init__(num_classes, nn.Conv2d(3, 2, 1))
        self.forward_ms, self.build, self.inputs = forward_ms, build, []

    def forward(self, images: torch.Tensor) -> dict:
        check_images(images)
        self.inputs.append((tuple(images.shape), images.dtype))
        time.sleep(self.forward_ms / 1e3)
        return {"feat": self.backbone(images)}

    def decode(self, outputs: dict, image_sizes: list) -> list[Detections]:
        assert outputs["feat"].dtype == torch.float32  # decoding runs in float32
        return [
            Detections(torch.tensor([[0.0, 0.0, w, h]]), torch.ones(1), torch.zeros(1).long())
            for h, w in image_sizes
        ]


def raw(h: int = 40, w: int = 80, value: int = 128) -> torch.Tensor:
    return torch.full((3, h, w), value, dtype=torch.uint8)


def test_summary_per_stage_with_p50_p90_p99_mean():
    model = SleepyDetector(3, forward_ms=2.0)
    stats = latency.measure_latency(
        model, [raw(), raw(30, 30)], input_size=32, device="cpu", warmup=1, iters=6
    )
    assert set(stats) == {"preprocess", "forward", "decode", "end_to_end"}
    for stage in stats.values():
        assert set(stage) == SUMMARY_KEYS and stage["n"] == 6
        assert 0 < stage["p50"] <= stage["p90"] <= stage["p99"]
    assert stats["forward"]["p50"] >= 2.0  # the sleep is inside the forward stage
    assert stats["end_to_end"]["p50"] >= stats["forward"]["p50"]  # each total >= its forward
    assert stats["end_to_end"]["mean"] >= sum(stats[s]["mean"] for s in latency.STAGES) * 0.999
    assert len(model.inputs) == 7 and set(model.inputs) == {((1, 3, 32, 32), torch.float32)}
    flat = latency.flatten_latency(stats)
    assert flat["latency_ms_p50"] == stats["end_to_end"]["p50"]
    assert flat["latency_forward_ms_p50"] == stats["forward"]["p50"]
    assert flat["latency_iters"] == 6


def test_batch_and_dtype_reach_the_model():
    model = SleepyDetector(3).to(torch.bfloat16)
    latency.measure_latency(
        model, [raw()], input_size=32, device="cpu", dtype=torch.bfloat16, batch=3,
        warmup=0, iters=2,
    )  # fmt: skip
    assert model.inputs == [((3, 3, 32, 32), torch.bfloat16)] * 2


def test_preprocess_letterboxes_and_normalises():
    image = raw(40, 80, value=255)  # white, twice as wide as high
    x, meta = latency.preprocess(image, 64, "cpu", torch.float32)
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    white = (1.0 - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)
    grey = (0.5 - torch.tensor(IMAGE_MEAN)) / torch.tensor(IMAGE_STD)  # Letterbox's padding
    torch.testing.assert_close(x[:, 32, 10], white)
    torch.testing.assert_close(x[:, 2, 10], grey)  # 40x80 -> 32x64 placed at rows 16..48
    box = torch.tensor([[0.0, 16.0, 64.0, 48.0]])  # the image's extent in the input
    torch.testing.assert_close(invert_boxes(box, meta), torch.tensor([[0.0, 0.0, 80.0, 40.0]]))


def test_load_raw_images_decodes_files_to_uint8_chw(tmp_path):
    from PIL import Image

    array = np.random.default_rng(0).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    Image.fromarray(array).save(tmp_path / "a.png")
    (image,) = latency.load_raw_images([tmp_path / "a.png"])
    assert image.dtype == torch.uint8 and image.shape == (3, 5, 7)
    np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), array)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch": 0}, "batch"),
        ({"raw_images": []}, "at least one raw image"),
        ({"raw_images": [torch.zeros(40, 40, 3, dtype=torch.uint8)]}, r"\(3, H, W\)"),
    ],
    ids=["batch-0", "no-images", "channels-last"],
)
def test_bad_input_is_a_value_error(kwargs, match):
    args = {"raw_images": [raw()], "input_size": 32, "device": "cpu", "warmup": 0, "iters": 1}
    with pytest.raises(ValueError, match=match):
        latency.measure_latency(SleepyDetector(2), **{**args, **kwargs})


def test_paper_suite_builds_hg104_at_511_with_80_classes():
    built = []

    def build(num_classes, backbone="tiny", preset="synthetic", **kwargs):
        model = SleepyDetector(num_classes, backbone=backbone, preset=preset)
        built.append(model)
        return model

    spec = LatencySpec(("cornernet", "other"), "paper", torch.device("cpu"), "fp32",
                       TimingSpec(warmup=0, iters=1))  # fmt: skip
    rows = latency.time_suite(spec, builders={"cornernet": build, "other": build})
    assert [m.num_classes for m in built] == [80, 80]
    assert [m.build["backbone"] for m in built] == ["hg104", "hg104"]
    assert built[0].inputs == [((1, 3, 511, 511), torch.float32)]
    assert [r["input_size"] for r in rows] == [511, 511]
    assert rows[0]["paper_ms"] == latency.PAPER_CORNERNET_MS and "paper_ms" not in rows[1]


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    latency_cmd.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_cli_prints_json_rows_and_a_table(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")  # rich: room for the whole table
    builders = {"sleepy": lambda k, **kw: SleepyDetector(k, **kw)}
    args = parse("--iters", "2", "--warmup", "0", "--batch-size", "1,2", "--json")
    assert latency_cmd.run(args, builders=builders) == 0
    rows = json.loads(capsys.readouterr().out)
    assert [(r["detector"], r["batch"], r["variant"]) for r in rows] == [
        ("sleepy", 1, "eager"), ("sleepy", 2, "eager"),
    ]  # fmt: skip
    assert rows[0]["backbone"] == "tiny" and rows[0]["input_size"] == 128
    assert set(rows[0]["latency"]["decode"]) == SUMMARY_KEYS
    assert latency_cmd.run(parse("--iters", "1", "--warmup", "0"), builders=builders) == 0
    assert "sleepy" in capsys.readouterr().out


def test_cli_saves_rows_with_their_environment(tmp_path):
    builders = {"sleepy": lambda k, **kw: SleepyDetector(k, **kw)}
    out = tmp_path / "lat"
    args = parse("--iters", "2", "--warmup", "0", "--out", str(out), "--json")
    assert latency_cmd.run(args, builders=builders) == 0
    doc = json.loads((out / "latency.json").read_text())
    assert doc["suite"] == "synthetic" and [r["detector"] for r in doc["rows"]] == ["sleepy"]
    assert doc["env"]["torch_version"] and (out / "env.json").is_file()
    assert "latency_ms_p50" in (out / "latency.csv").read_text().splitlines()[0]


def test_cli_errors():
    builders = {"sleepy": lambda k, **kw: SleepyDetector(k, **kw)}
    with pytest.raises(UsageError, match="CUDA graphs"):
        latency_cmd.run(parse("--cuda-graphs", "--device", "cpu"), builders=builders)
    with pytest.raises(UsageError, match="--batch-size"):
        latency_cmd.run(parse("--batch-size", "0"), builders=builders)
    with pytest.raises(UsageError, match="nope"):
        latency_cmd.run(parse("--detectors", "nope"), builders=builders)
    assert main(["latency", "--detectors", "nope", "--device", "cpu"]) == 2


@pytest.mark.gpu
def test_cuda_stages_are_timed_with_events():
    model = SleepyDetector(3).to("cuda", torch.float16)
    stats = latency.measure_latency(
        model, [raw()], input_size=32, device="cuda", dtype=torch.float16, warmup=2, iters=5
    )
    assert all(s["n"] == 5 and s["p50"] > 0 for s in stats.values())
    assert model.inputs[-1] == ((1, 3, 32, 32), torch.float16)


def test_cuda_graphs_without_a_gpu_exits_2(capsys):
    assert main(["latency", "--cuda-graphs", "--device", "cpu", "--detectors", "centernet"]) == 2
    assert "CUDA graphs are GPU only" in capsys.readouterr().err


def _forward_decode_matches_decode(name: str, device: str, backend: str) -> None:
    """_ForwardDecode (forward + decode_graph in one compiled graph) then decode_host gives
    decode's detections, and measure_latency times it with decode_host in the decode stage."""
    from detectors import build_detector

    torch.manual_seed(0)
    model = build_detector(name, num_classes=3, backbone="tiny").to(device).eval()
    fwd = latency._ForwardDecode(model, backend)
    with torch.inference_mode():  # x an inference tensor, as preprocess gives: one compile
        x = torch.randn(1, 3, 64, 64, device=device)
        got = model.decode_host(fwd(x))
        want = model.decode(model(x), [(64, 64)])
    assert len(got) == len(want) == 1 and len(got[0]) == len(want[0]) > 0
    for field in ("boxes", "scores", "labels"):
        torch.testing.assert_close(getattr(got[0], field), getattr(want[0], field))
    stats = latency.measure_latency(
        model, [raw()], input_size=64, device=device, warmup=1, iters=1, forward=fwd
    )
    assert stats["decode"]["n"] == 1


def test_forward_decode_graph_on_cpu():
    _forward_decode_matches_decode("cornernet", "cpu", "eager")


@pytest.mark.gpu
@pytest.mark.parametrize("name", ["centernet", "cornernet"])
def test_forward_decode_cuda_graph(name):
    _forward_decode_matches_decode(name, "cuda", "cudagraphs")
