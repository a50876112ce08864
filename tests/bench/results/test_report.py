"""bench.results.report, bench.results.plots and bench.results.compare on run folders written
by hand (no models).

A folder holds a 3-image ground truth, detection files for a ``perfect`` detector (the ground
truth itself) and a ``shifted`` one (boxes moved by ``shift`` px, plus a false positive), rows
evaluated with bench.results.coco_eval, a loss curve and a sample image.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.measure.detector import error_analysis
from bench.results import plots, report
from bench.results.coco_eval import STAT_NAMES, evaluate_coco
from bench.results.compare import compare_results
from bench.results.store import ResultStore, write_json_atomic
from detectors.base import Detections

GT = {
    "images": [{"id": i, "file_name": f"{i}.png", "width": 64, "height": 64} for i in (1, 2, 3)],
    "categories": [{"id": 3, "name": "square"}, {"id": 7, "name": "disc"}],
    "annotations": [
        {"id": 1, "image_id": 1, "category_id": 3, "bbox": [4, 4, 30, 30], "area": 900},
        {"id": 2, "image_id": 1, "category_id": 7, "bbox": [36, 30, 20, 24], "area": 480},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [10, 20, 40, 30], "area": 1200},
        {"id": 4, "image_id": 3, "category_id": 7, "bbox": [20, 8, 24, 50], "area": 1200},
    ],
}


def detections(shift: float, score: float) -> list[dict]:
    dets = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "score": score - 0.01 * i,
         "bbox": [a["bbox"][0] + shift, a["bbox"][1], a["bbox"][2], a["bbox"][3]]}
        for i, a in enumerate(GT["annotations"])
    ]  # fmt: skip
    if shift:
        dets.append({"image_id": 2, "category_id": 7, "bbox": [0, 0, 9, 9], "score": 0.95})
    return dets


def make_run(
    folder: Path,
    *,
    device: str = "cpu",
    cpu: str = "Test CPU",
    shift: float = 6.0,
    latency: float = 10.0,
    names: tuple[str, ...] = ("perfect", "shifted"),
) -> Path:
    gt_path = write_json_atomic(folder / "annotations.json", GT)
    env = {"cpu": cpu, "gpu_name": "Test GPU", "git_revision": "abc", "cpu_count_usable": 2}
    store = ResultStore(folder, config={"test": 1}, env=env, dataset={"annotations": str(gt_path)})
    for k, name in enumerate(names):
        det = f"detections/{name}.json"
        dets = detections(0.0 if name == "perfect" else shift, 0.9)
        stats = evaluate_coco(gt_path, dets, results_path=folder / det, keep_eval=True)
        row = {"detector": name, "backbone": "tiny", "input_size": 64, "device": device}
        row.update(error_analysis(stats.pop("coco_eval")))
        row.update(dtype="fp32", batch=1, weights="zoo" if name == "perfect" else "random")
        row.update({s: stats[s] for s in STAT_NAMES}, per_class=stats["per_class"], detections=det)
        row.update(params=1_000_000 * (k + 1), anchors_per_image=1000 * k, positives_per_image=2.0)
        row.update(negatives_per_image=900.0 * k, sample=f"plots/sample_{name}.png")
        row.update(latency_ms_p50=latency * (k + 1), latency_ms_p90=latency * (k + 1.5))
        row.update(latency_ms_p99=latency * (k + 2), latency_preprocess_ms_p50=1.0)
        row.update(latency_forward_ms_p50=latency * (k + 0.5), latency_decode_ms_p50=2.0)
        row["load_avg_1m"] = 0.5 if name == "perfect" else 3.5  # shifted: timed while busy
        if name == "perfect":
            curve = pd.DataFrame({"images_seen": [8, 16, 24], "loss": [3.0, 2.0, 1.5]})
            curve.to_csv(folder / "curve.csv", index=False)
            row["loss_curve"] = "curve.csv"
        store.add_row(row)
        boxes = torch.tensor([[4.0, 4.0, 34.0, 34.0]])
        heat = {"tl": torch.rand(16, 16), "br": torch.rand(16, 16)}
        plots.plot_sample(folder / row["sample"], torch.rand(3, 64, 64),
                          Detections(boxes, torch.tensor([0.9]), torch.tensor([0])),
                          ["square", "disc"], heatmaps=heat if k == 0 else None)  # fmt: skip
    return folder


def test_report_md_and_self_contained_html(tmp_path):
    folder = make_run(tmp_path / "run")
    md_path, html_path = report.write_report(folder)
    md, page = md_path.read_text(), html_path.read_text()
    rows = json.loads((folder / "results.json").read_text())["rows"]
    for r in rows:
        cells = [r["detector"], report.fmt(r["weights"], "w"), f"{r['AP']:.3f}", f"{r['AP50']:.3f}"]
        assert all(f"| {c} |" in md for c in cells), cells
    assert rows[0]["AP"] == 1.0 and 0 < rows[1]["AP"] < 1
    assert "**WARNING** RANDOM WEIGHTS: shifted " in md and "| RANDOM |" in md
    images = [line for line in md.splitlines() if line.startswith("![")]
    for name in ("ap_vs_latency", "anchors_vs_ap", "stage_latency", "pr_curves",
                 "training_curves", "sample_perfect", "sample_shifted"):  # fmt: skip
        assert any(f"plots/{name}.png" in line for line in images), name
        assert (folder / "plots" / f"{name}.png").is_file()
    assert page.count("src='data:image/png;base64,") == len(images)
    assert "src='plots" not in page and "WARNING: RANDOM WEIGHTS" in page
    assert (
        "BUSY CPU: the 1-minute load average exceeded the 2 usable cores while timing shifted;"
        in md
    )
    assert "| square | 1.000 |" in md  # per-class AP of the perfect detector


def test_report_shows_intervals_significance_and_tide(tmp_path):
    folder = make_run(tmp_path / "run", names=("perfect", "shifted", "far"), shift=6.0)
    store = ResultStore(folder, config={"test": 1})
    rows = {r["detector"]: r for r in store.rows}
    # "far": the shifted detections with a made-up interval far below, and an old row
    # (no intervals, no TIDE) that must not break the report.
    store.add_row({**rows["shifted"], "detector": "far", "AP50": 0.01, "AP50_ci95": [0.0, 0.02]})
    old = {k: v for k, v in rows["shifted"].items() if "ci95" not in k and "tide" not in k}
    store.add_row({**old, "detector": "old"})
    md = report.write_report(folder)[0].read_text()
    perfect, shifted = rows["perfect"], rows["shifted"]
    assert perfect["AP_ci95"] == perfect["AP50_ci95"] == [1.0, 1.0]
    lo, hi = shifted["AP50_ci95"]
    assert 0 <= lo <= shifted["AP50"] <= hi <= 1 and lo < hi
    line = next(ln for ln in md.splitlines() if ln.startswith("| shifted |"))
    assert f"| {report.fmt(shifted['AP_ci95'], 'ci')} |" in line
    assert f"| [{lo:.3f}, {hi:.3f}] | n.s. |" in line  # 4 images: overlaps the perfect one
    assert "| [1.000, 1.000] | best |" in md and "| [0.000, 0.020] | lower |" in md
    assert "(95% intervals overlap): perfect / shifted.\n" in md  # not far: disjoint
    head = "| detector | AP50 (TIDE) | Cls dAP50 (errors) | Loc dAP50 (errors) |"
    assert head in md and "| perfect | 1.000 | 0.000 (0) | 0.000 (0) |" in md
    tide = shifted["tide"]
    assert set(tide) == {"cls", "loc", "both", "dupe", "bkg", "miss"} and max(tide.values()) > 0
    assert f"| shifted | {shifted['tide_ap50']:.3f} |" in md
    assert "![TIDE: AP50 gained by fixing each error type](plots/tide.png)" in md
    assert (folder / "plots" / "tide.png").is_file()
    assert "| old |" in md  # its comparison row; absent from the TIDE table
    table = pd.read_csv(folder / "results.csv")
    assert json.loads(table.loc[1, "tide"]) == tide and json.loads(table.loc[1, "AP50_ci95"])


def test_cli_regenerates_the_same_report(tmp_path, capsys):
    folder = make_run(tmp_path / "run")
    first = report.write_report(folder)[0].read_text()
    (folder / "report.md").unlink()
    (folder / "plots" / "pr_curves.png").unlink()
    assert main(["report", str(folder)]) == 0
    assert (folder / "report.md").read_text() == first
    assert (folder / "plots" / "pr_curves.png").is_file()
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert "results.json" in capsys.readouterr().err


def test_two_devices_never_share_a_table(tmp_path):
    folder = make_run(tmp_path / "run", names=("perfect",))
    store = ResultStore(folder, config={"test": 1})
    row = store.rows[0]
    store.add_row({**row, "device": "cuda", "latency_ms_p50": 1.0})
    blocks = report.build_blocks(folder)
    start = blocks.index(("h", 2, "Comparison"))
    tables = [
        (blocks[i - 1], blocks[i]) for i in range(start, len(blocks)) if blocks[i][0] == "table"
    ]
    heading_cpu, cpu_table = tables[0]
    heading_cuda, cuda_table = tables[1]
    assert heading_cpu[2].startswith("cpu (Test CPU)") and len(cpu_table[2]) == 1
    assert heading_cuda[2].startswith("cuda (Test GPU)") and len(cuda_table[2]) == 1
    p50 = cpu_table[1].index("p50 ms")
    assert cpu_table[2][0][p50] == "10.0" and cuda_table[2][0][p50] == "1.0"


def test_precision_recall_from_saved_detections(tmp_path):
    gt = write_json_atomic(tmp_path / "gt.json", GT)
    perfect = write_json_atomic(tmp_path / "p.json", detections(0.0, 0.9))
    recall, precision = report.precision_recall(gt, perfect)
    assert recall.shape == precision.shape == (101,)
    np.testing.assert_array_equal(precision, np.ones(101))
    empty = write_json_atomic(tmp_path / "e.json", [])
    np.testing.assert_array_equal(report.precision_recall(gt, empty)[1], np.zeros(101))
    far = write_json_atomic(tmp_path / "f.json", detections(25.0, 0.9))  # IoU < 0.5 everywhere
    assert report.precision_recall(gt, far)[1].max() == 0.0


def test_pareto_front():
    latency = [10.0, 20.0, 15.0, 30.0, 10.0]
    ap = [0.30, 0.40, 0.20, 0.50, 0.10]
    assert plots.pareto_front(latency, ap) == [0, 1, 3]
    with pytest.raises(ValueError, match="latencies"):
        plots.pareto_front([1.0], [])


def test_compare_reports_deltas(tmp_path, capsys, monkeypatch):
    a = make_run(tmp_path / "a", shift=6.0, latency=10.0)
    b = make_run(tmp_path / "b", shift=3.0, latency=15.0, names=("shifted", "extra"))
    rows_a = {r["detector"]: r for r in json.loads((a / "results.json").read_text())["rows"]}
    rows_b = {r["detector"]: r for r in json.loads((b / "results.json").read_text())["rows"]}
    result = compare_results(a, b)
    (item,) = result["matched"]
    assert item["key"]["detector"] == "shifted" and item["same_device"]
    m = item["metrics"]
    assert m["AP"]["delta"] == pytest.approx(rows_b["shifted"]["AP"] - rows_a["shifted"]["AP"])
    assert m["AP"]["delta"] > 0  # a smaller shift overlaps more
    # shifted is row 1 in a (latency 2 x 10) and row 0 in b (1 x 15)
    assert m["latency_ms_p50"]["delta"] == pytest.approx(-5.0)
    assert m["latency_ms_p50"]["relative"] == pytest.approx(-0.25)
    assert [k["detector"] for k in result["only_a"]] == ["perfect"]
    assert [k["detector"] for k in result["only_b"]] == ["extra"]
    monkeypatch.setenv("COLUMNS", "400")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "shifted" in out and "-5.0 -25%" in out and "only in A" in out
    assert main(["compare", str(a), str(tmp_path / "missing")]) == 2


def test_compare_never_mixes_devices_in_latency(tmp_path):
    a = make_run(tmp_path / "a", cpu="CPU one")
    b = make_run(tmp_path / "b", cpu="CPU two", latency=99.0)
    for item in compare_results(a, b)["matched"]:
        assert not item["same_device"]
        assert not any(f.startswith("latency") for f in item["metrics"])
        assert item["metrics"]["AP"]["delta"] == 0.0
