"""The report's training-budget section: equal images seen and equal wall-clock time."""

from __future__ import annotations

import json

from bench.report_budget import BUDGETS_NAME, budget_blocks, equal_time

ROWS = [
    {"detector": "fast", "images_seen": 10_000, "train_seconds": 100.0, "AP50": 0.2},
    {"detector": "fast", "images_seen": 20_000, "train_seconds": 200.0, "AP50": 0.4,
     "finished": True},
    {"detector": "slow", "images_seen": 10_000, "train_seconds": 150.0, "AP50": 0.3},
    {"detector": "slow", "images_seen": 20_000, "train_seconds": 300.0, "AP50": 0.6,
     "finished": True},
]  # fmt: skip


def test_equal_time_takes_each_detector_s_last_checkpoint_within_the_fastest_run() -> None:
    limit, reached = equal_time(ROWS)
    assert limit == 200.0
    assert reached["fast"]["images_seen"] == 20_000
    assert reached["slow"]["images_seen"] == 10_000  # its 20k took 300 s > 200 s


def test_no_finished_run_no_equal_time_view() -> None:
    assert equal_time([{**r, "finished": False} for r in ROWS]) == (None, {})


def test_budget_blocks_show_both_views_and_a_plot(tmp_path) -> None:
    assert budget_blocks(tmp_path) == []  # no budgets.json: no section
    (tmp_path / BUDGETS_NAME).write_text(json.dumps({"rows": ROWS}))
    blocks = budget_blocks(tmp_path)
    tables = [b for b in blocks if b[0] == "table"]
    assert tables[0][1] == ["detector", "AP50 @ 10,000", "AP50 @ 20,000", "train min"]
    assert tables[0][2][1] == ["slow", "0.300", "0.600", "5.0"]
    assert tables[1][2] == [["fast", "20,000", "0.400"], ["slow", "10,000", "0.300"]]
    assert (tmp_path / "plots" / "budgets.png").stat().st_size > 1000
