"""Tables at 80 columns (bench.commands._tables): the columns that fit, numbers and names whole,
a line pointing to the rest; ``--wide``: every column."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from bench.cli import main
from bench.commands import kernels as kernels_cmd
from bench.commands._tables import Col, fit_table, pointer
from bench.commands.latency import latency_table
from bench.commands.report import SUMMARY, print_summary

# (detector, AP, AP50, anchors/img, p50 ms): the names and figures of reports/cpu-zoo-2026-12-02
ZOO = [
    ("cornernet", 0.401, 0.570, 0, 9.2),
    ("faster_rcnn", 0.618, 0.863, 4092, 13.5),
    ("cornernet-no-corner-pool", 0.355, 0.526, 0, 9.0),
    ("retinanet-paper-anchors", 0.242, 0.422, 3069, 8.5),
    ("ssd-paper-anchors", 0.029, 0.085, 1536, 8.1),
]
KERNEL_CASES = [
    "corner_pool tl fwd (1, 256, 128, 128)",
    "corner_pool tl fwd+bwd (1, 256, 128, 128)",
    "cornernet_decode 1x80x128x128 K=100",
]


def zoo_rows(weights: str = "zoo", batch: int = 1) -> list[dict]:
    return [
        {"detector": name, "weights": weights, "batch": batch, "params": 480_000,
         "anchors_per_image": anchors, "AP": ap, "AP50": ap50, "latency_ms_p50": p50,
         "device": "cpu", "backbone": "tiny", "input_size": 128, "dtype": "fp32"}
        for name, ap, ap50, anchors, p50 in ZOO
    ]  # fmt: skip


def printed(fn, width: int) -> str:
    console = Console(file=io.StringIO(), width=width)
    fn(console)
    return console.file.getvalue()


def row_line(out: str, name: str, *also: str) -> str:
    """The first line holding ``name`` whole (a folded name is on no line) and ``also``."""
    lines = [line for line in out.splitlines() if f"│ {name} " in line]
    lines = [line for line in lines if all(f" {a} " in line for a in also)]
    assert lines, (name, also, out)
    return lines[0]


def header(out: str) -> str:
    """The header rows of the (first) table printed."""
    lines = out.splitlines()
    top = next(i for i, line in enumerate(lines) if line.startswith("┏"))
    return "\n".join(lines[top : next(i for i, line in enumerate(lines) if line.startswith("┡"))])


def test_summary_at_80_columns_keeps_numbers_and_names_whole(tmp_path):
    report = tmp_path / "report.md"
    out = printed(lambda c: print_summary(c, zoo_rows(), full=report), 80)
    assert "…" not in out
    assert max(len(line) for line in out.splitlines()[:-1]) <= 80
    for name, ap, ap50, anchors, p50 in ZOO:
        line = row_line(out, name)
        assert f" {ap:.3f} " in line and f" {ap50:.3f} " in line and f" {p50:.1f} " in line
        assert f" {anchors:,} " in line
    # weights fits beside the essentials; batch and params do not
    assert "weights" in header(out) and "params" not in header(out)
    assert out.splitlines()[-1] == (
        f"2 columns left out at 80 columns; --wide for all, full table in {report}"
    )


def test_summary_wide_has_every_column_and_no_pointer():
    out = printed(lambda c: print_summary(c, zoo_rows(), wide=True), 80)
    assert all(h in header(out) for h in SUMMARY), out
    assert "…" not in out and "left out" not in out
    assert " 0.48M " in row_line(out, "cornernet-no-corner-pool")
    wide = printed(lambda c: print_summary(c, zoo_rows()), 200)  # room for all: no pointer
    assert "params" in header(wide) and "left out" not in wide


def test_summary_keeps_random_weights_and_several_batches_in_view():
    rows = zoo_rows("random", batch=1) + zoo_rows("random", batch=2)
    out = printed(lambda c: print_summary(c, rows), 80)
    assert "RANDOM" in row_line(out, "cornernet")
    assert "batch" in header(out) and "…" not in out


def write_run(folder: Path, rows: list[dict], cpu: str = "Test CPU") -> Path:
    folder.mkdir(parents=True)
    doc = {"rows": rows, "env": {"cpu": cpu}, "config": {}, "dataset": {}}
    (folder / "results.json").write_text(json.dumps(doc))
    return folder


def test_compare_at_80_columns(tmp_path, capsys, monkeypatch):
    a = write_run(tmp_path / "a", zoo_rows())
    faster = [{**r, "AP": r["AP"] + 0.01, "latency_ms_p50": r["latency_ms_p50"] / 2}
              for r in zoo_rows()]  # fmt: skip
    b = write_run(tmp_path / "b", faster)
    monkeypatch.setenv("COLUMNS", "80")
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    lines = out.splitlines()
    for name, ap, _, _, p50 in ZOO:
        line = row_line(out, name)
        assert f"{ap:.3f} -> {ap + 0.01:.3f}" in line and f"{p50:.1f} -> {p50 / 2:.1f}" in line
        below = lines[lines.index(line) + 1]  # the deltas, under their values
        assert "(+0.010)" in below and "-50%)" in below
    assert "AP75" not in header(out) and "9 columns left out at 80 columns; --wide for all" in out
    assert main(["compare", str(a), str(b), "--wide"]) == 0
    wide = capsys.readouterr().out
    header_of_wide = header(wide)
    for col in ("batch", "AP75", "AR100", "anchors/img", "params", "p99 ms", "dec ms"):
        assert col in header_of_wide
    assert "left out" not in wide
    assert "0.401 -> 0.411 (+0.010)" in row_line(wide, "cornernet")


def fake_rows(cases, device, **kwargs) -> list[dict]:
    rows = []
    for case in KERNEL_CASES:
        for provider, ms in (("torch", 151.393), ("cummax", 1057.877)):
            row = {"case": case, "provider": provider, "median_ms": ms, "p90_ms": ms * 1.1,
                   "x_vs_torch": 151.393 / ms}  # fmt: skip
            if case.startswith("corner_pool"):
                row.update({"GB/s": 2.41, "of_copy": 0.125, "of_peak": None})
            rows.append(row)
    return rows


@pytest.fixture
def fake_kernels(monkeypatch):
    monkeypatch.setattr(kernels_cmd, "copy_bandwidth", lambda device: 19.0)
    monkeypatch.setattr(kernels_cmd, "kernel_cases", lambda device: [])
    monkeypatch.setattr(kernels_cmd, "run_cases", fake_rows)


def test_kernels_at_80_columns(tmp_path, capsys, monkeypatch, fake_kernels):
    monkeypatch.setenv("COLUMNS", "80")
    out_dir = tmp_path / "k"
    assert main(["kernels", "--device", "cpu", "--out", str(out_dir)]) == 0
    out = capsys.readouterr().out
    assert "…" not in out
    for case in KERNEL_CASES:
        assert f"│ {case} " in out  # whole, on one line
    line = row_line(out, "corner_pool tl fwd+bwd (1, 256, 128, 128)", "cummax")
    assert " 1057.877 " in line and " 0.14 " in line
    assert "GB/s" not in header(out) and "of copy" not in header(out)
    pointer_line = f"left out at 80 columns; --wide for all, full table in {out_dir / 'kernels.md'}"
    assert pointer_line in out
    assert main(["kernels", "--device", "cpu", "--out", str(out_dir), "--wide"]) == 0
    wide = capsys.readouterr().out
    assert all(h in header(wide) for h in ("p90 ms", "GB/s", "of copy", "x vs torch", "median ms"))
    assert "left out" not in wide and " 12% " in wide


def test_latency_table_fits_and_wide_has_everything():
    rows = [
        {"detector": name, "variant": "eager", "batch": 1, "params": 480_000, "device": "cpu",
         "backbone": "tiny", "input_size": 128, "dtype": "fp32",
         **{f"latency_{s}_ms_p50": 1234.5 for s in ("preprocess", "forward", "decode")},
         **{f"latency_ms_{k}": 2345.6 for k in ("p50", "p90", "p99", "mean")}}
        for name, *_ in ZOO
    ]  # fmt: skip
    out = printed(lambda c: c.print(latency_table(rows, "Latency", width=80)), 80)
    assert "…" not in out and " 2345.6 " in row_line(out, "cornernet-no-corner-pool")
    assert max(len(line) for line in out.splitlines()) <= 80
    wide = printed(lambda c: c.print(latency_table(rows, "Latency"), crop=False), 80)
    assert all(h in header(wide) for h in ("params", "preprocess", "p99", "mean"))
    assert "params" not in header(out)


def test_fit_table_rules():
    cols = [Col("name", "name"), Col("value"), Col("extra", keep=1), Col("more", keep=2)]
    rows = [["a" * 30, "1.000", "x" * 20, "y"]]
    _, left = fit_table("t", cols, rows, width=80)
    assert left == []
    _, left = fit_table("t", cols, rows, width=50)
    assert left == ["extra", "more"]  # "more" would fit, but keeps its place behind "extra"
    # essentials too wide even at their minimum: all of them, past the width, nothing cut
    table, left = fit_table("t", cols, rows, width=20)
    out = printed(lambda c: c.print(table, crop=False), 20)
    assert left == ["extra", "more"] and "1.000" in out and "…" not in out
    assert pointer(1, 80) == "1 column left out at 80 columns; --wide for all"
