"""Issue 13 item 6: user text printed through rich is text, never markup.

A category named ``sign [/]`` must not crash ``bench eval`` (``MarkupError``), ``crowd [ignore]``
must print whole, and a folder or detector name holding ``[/x]`` or ``[ignore]`` must print as
it is in every table and message (``bench run``, ``bench report``, ``bench compare``).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bench.cli import main
from bench.commands import run as run_cmd
from bench.measure.suite import SuiteOutcome
from bench.results.store import ResultStore, write_json_atomic
from detectors import DETECTORS

NAMES = ("sign [/]", "crowd [ignore]", "[bold]loud[/bold]")


def squash(text: str) -> str:
    """``text`` without white space: a line the console wrapped compares whole."""
    return "".join(text.split())


def _gt(path: Path) -> Path:
    gt = {
        "images": [{"id": 1, "file_name": "1.png", "width": 64, "height": 64}],
        "categories": [{"id": k + 1, "name": n} for k, n in enumerate(NAMES)],
        "annotations": [
            {"id": k + 1, "image_id": 1, "category_id": k + 1, "bbox": [4 + 20 * k, 4, 16, 16],
             "area": 256, "iscrowd": 0}
            for k in range(len(NAMES))
        ],
    }  # fmt: skip
    return write_json_atomic(path, gt)


def test_eval_prints_category_names_as_they_are(tmp_path, capsys):
    folder = tmp_path / "odd [/x] [ignore]"
    gt = _gt(folder / "gt.json")
    dt = write_json_atomic(
        folder / "dt.json", [{"image_id": 1, "category_id": 1, "bbox": [4, 4, 16, 16], "score": 1}]
    )
    assert main(["eval", "--gt", str(gt), "--dt", str(dt)]) == 0
    out = squash(capsys.readouterr().out)
    for name in NAMES:
        assert squash(name) in out, name
    assert squash(f"{folder / 'dt.json'} against {gt}") in out  # the title names them whole


def _run_folder(folder: Path, detector: str) -> Path:
    store = ResultStore(folder, config={"test": 1}, env={"cpu": "Test [/] CPU"})
    row = {"detector": detector, "backbone": "tiny", "input_size": 64, "device": "cpu",
           "dtype": "fp32", "batch": 1, "weights": "random", "params": 1000, "AP": 0.5,
           "AP50": 0.7, "anchors_per_image": 0, "latency_ms_p50": 10.0, "latency_ms_p90": 12.0,
           "latency_ms_p99": 13.0}  # fmt: skip
    store.add_row(row)
    return folder


def test_report_and_compare_print_names_and_paths_as_they_are(tmp_path, capsys):
    a = _run_folder(tmp_path / "a [/x]", "crowd [ignore]")
    b = _run_folder(tmp_path / "b [bold]", "crowd [ignore]")
    assert main(["report", str(a), "--wide"]) == 0
    out = capsys.readouterr().out
    assert "crowd [ignore]" in out and "RANDOM" in out
    assert main(["compare", str(a), str(b), "--wide"]) == 0
    out = capsys.readouterr().out
    assert "crowd [ignore]" in out
    assert squash(f"A = {a}, B = {b}") in squash(out.replace("│", ""))


def test_run_prints_out_path_and_failures_as_they_are(tmp_path, capsys, monkeypatch):
    """``--out`` holding ``[/x]``: the results are written, then the closing lines printed."""
    out = tmp_path / "runs [/x]"

    def fake_suite(spec, builders, *, err, main):  # the measured folder, without models
        _run_folder(spec.out, "cornernet")
        md, html = spec.out / "report.md", spec.out / "report.html"
        md.write_text("# r\n")
        html.write_text("<p>r</p>\n")
        store = ResultStore(spec.out, config={"test": 1})
        return SuiteOutcome(store, (md, html), ["cornernet (ValueError: bad [/] value [red])"])

    monkeypatch.setattr(run_cmd, "DETECTORS", {"cornernet": DETECTORS["cornernet"]})
    monkeypatch.setattr(run_cmd, "prepare_data", lambda data, profile: ("synthetic", tmp_path))
    monkeypatch.setattr(run_cmd, "run_suite", fake_suite)
    data = f"synthetic:{tmp_path / 'data [/d]'}"
    argv = ["run", "--detectors", "cornernet", "--profile", "smoke", "--input-size", "64",
            "--data", data, "--out", str(out), "--no-ablations"]  # fmt: skip
    assert main(argv) == 1  # the failed variant
    err = squash(capsys.readouterr().err)
    assert squash(f"results: {out.resolve() / 'results.json'}") in err
    assert squash("cornernet (ValueError: bad [/] value [red])") in err
    assert squash(f"data: {data}") in err
    assert json.loads((out / "results.json").read_text())["rows"][0]["detector"] == "cornernet"


@pytest.mark.parametrize("name", NAMES)
def test_table_cells_titles_and_headers_are_text(name):
    from rich.console import Console

    from bench.commands._tables import Col, Markup, fit_table

    table, _ = fit_table(f"title {name}", [Col(name, "name"), Col("x")], [[name, "1"]], width=80)
    console = Console(width=80, record=True)
    console.print(table)
    text = console.export_text()
    assert text.count(name) == 3, text  # title, header, cell
    styled, _ = fit_table("t", [Col("w", "text")], [[Markup("[bold red]RANDOM[/]")]], width=None)
    console.print(styled)
    assert "RANDOM" in console.export_text() and "[/]" not in console.export_text()
