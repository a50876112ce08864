"""The report's training-budget section: equal images seen and equal wall-clock time."""

from __future__ import annotations

import json

import pytest

from bench.results.report_budget import (
    BUDGETS_NAME,
    budget_blocks,
    equal_time,
    normalise_rows,
    run_key,
    seed_spread,
)

ROWS = [
    {"detector": "fast", "images_seen": 10_000, "train_seconds": 100.0, "AP50": 0.2},
    {"detector": "fast", "images_seen": 20_000, "train_seconds": 200.0, "AP50": 0.4,
     "AP": 0.2, "finished": True},
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


def test_rows_without_seed_or_schedule_get_seed_0_and_their_longest_run() -> None:
    rows = normalise_rows(ROWS)
    assert {(r["detector"], r["schedule"], r["seed"]) for r in rows} == {
        ("fast", 20_000, 0), ("slow", 20_000, 0)
    }  # fmt: skip
    assert run_key(rows[0]) == ("fast", 20_000, 0)


def test_seed_spread_over_finished_runs_of_one_schedule() -> None:
    rows = normalise_rows(ROWS) + [
        {"detector": "fast", "schedule": 20_000, "seed": 1, "images_seen": 20_000,
         "AP": 0.3, "AP50": 0.5, "finished": True},
        {"detector": "fast", "schedule": 20_000, "seed": 2, "images_seen": 10_000,
         "AP": 0.1, "AP50": 0.1},  # unfinished: not a seed's result
    ]  # fmt: skip
    (spread,) = seed_spread(rows)
    assert spread["detector"] == "fast" and spread["seeds"] == [0, 1]
    assert spread["AP50_mean"] == pytest.approx(0.45)
    assert spread["AP50_sd"] == pytest.approx(0.0707, abs=1e-4)  # sample sd of 0.4, 0.5
    assert (spread["AP50_min"], spread["AP50_max"]) == (0.4, 0.5)


def test_other_schedules_and_seeds_get_their_own_tables(tmp_path) -> None:
    longer = {"detector": "slow", "schedule": 40_000, "seed": 0, "train_seconds": 600.0,
              "AP": 0.5, "AP50": 0.7, "finished": True}  # fmt: skip
    rows = [*ROWS, {**longer, "images_seen": 20_000, "finished": False, "AP50": 0.5},
            {**longer, "images_seen": 40_000},
            {**ROWS[1], "seed": 1, "AP": 0.2, "AP50": 0.5}]  # fmt: skip
    (tmp_path / BUDGETS_NAME).write_text(json.dumps({"rows": rows}))
    blocks = budget_blocks(tmp_path)
    tables = [b for b in blocks if b[0] == "table"]
    # the main views keep the 20k schedule of seed 0 only
    assert tables[0][2][1] == ["slow", "0.300", "0.600", "5.0"]
    assert tables[2][1] == ["detector", "schedule", "AP50 @ 20,000", "AP50 @ 40,000"]
    assert tables[2][2] == [["slow", "40,000", "0.500", "0.700"]]
    assert tables[3][2][0][:3] == ["fast", "20,000", "0,1"]
