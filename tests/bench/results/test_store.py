"""bench.results.store (atomic writes, the resumable ResultStore) and bench.results.env."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pandas as pd
import pytest

from bench.errors import UsageError
from bench.results.env import collect_env, git_revision
from bench.results.store import (
    KEY_FIELDS,
    ResultStore,
    write_csv_atomic,
    write_json_atomic,
    write_text_atomic,
)

CONFIG = {"detectors": ["cornernet", "retinanet"], "input_size": 511, "iters": 100}


def row(detector: str = "cornernet", **metrics) -> dict:
    base = {
        "detector": detector,
        "backbone": "hourglass-52",
        "input_size": [511, 511],
        "device": "cpu",
        "dtype": "float32",
        "batch": 1,
    }
    return {**base, "p50_ms": 12.5, **metrics}


def leftovers(folder: Path) -> list[Path]:
    return [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_atomic_writes_leave_no_temp_file(tmp_path):
    write_json_atomic(tmp_path / "a.json", {"x": [1, 2]})
    write_text_atomic(tmp_path / "b.txt", "hello\n")
    write_csv_atomic(tmp_path / "c.csv", pd.DataFrame({"x": [1, 2], "y": ["a", "b"]}))
    assert json.loads((tmp_path / "a.json").read_text()) == {"x": [1, 2]}
    assert (tmp_path / "b.txt").read_text() == "hello\n"
    assert pd.read_csv(tmp_path / "c.csv").to_dict("list") == {"x": [1, 2], "y": ["a", "b"]}
    assert leftovers(tmp_path) == []
    # overwrite in place
    write_json_atomic(tmp_path / "a.json", [3])
    assert json.loads((tmp_path / "a.json").read_text()) == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.json", "b.txt", "c.csv"]


def test_interrupted_write_keeps_old_file(tmp_path):
    path = tmp_path / "r.json"
    write_json_atomic(path, {"old": 1})
    # json.dump streams: '{"a": 1, "b": ' reaches the temporary file before the TypeError.
    with pytest.raises(TypeError):
        write_json_atomic(path, {"a": 1, "b": object()})
    with pytest.raises(ValueError):  # strict JSON: NaN refused, also mid-stream
        write_json_atomic(path, {"a": 1, "b": math.nan})
    assert json.loads(path.read_text()) == {"old": 1}
    assert leftovers(tmp_path) == []

    class Exploding(pd.DataFrame):
        def to_csv(self, fh, **kwargs):
            fh.write("partial,")
            raise KeyboardInterrupt

    csv = tmp_path / "r.csv"
    write_csv_atomic(csv, pd.DataFrame({"x": [1]}))
    with pytest.raises(KeyboardInterrupt):
        write_csv_atomic(csv, Exploding({"x": [2]}))
    assert csv.read_text().splitlines() == ["x", "1"]
    assert leftovers(tmp_path) == []


def test_store_writes_json_and_csv_on_each_row(tmp_path):
    store = ResultStore(tmp_path / "run", config=CONFIG, env={"git": "abc"}, dataset={"n": 3})
    store.add_row(row("cornernet", AP=0.41, extra={"a": 1}))
    store.add_row(row("retinanet", AP=math.nan))
    doc = json.loads((tmp_path / "run" / "results.json").read_text())
    assert doc["env"] == {"git": "abc"} and doc["dataset"] == {"n": 3}
    assert [r["detector"] for r in doc["rows"]] == ["cornernet", "retinanet"]
    assert doc["rows"][1]["AP"] is None  # NaN stored as null
    frame = pd.read_csv(tmp_path / "run" / "results.csv")
    assert list(frame["detector"]) == ["cornernet", "retinanet"]
    assert set(KEY_FIELDS) <= set(frame.columns)
    assert json.loads(frame["extra"][0]) == {"a": 1}
    # same key replaces the row
    store.add_row(row("cornernet", AP=0.5))
    assert [r["AP"] for r in store.rows] == [0.5, None]
    with pytest.raises(ValueError, match="batch"):
        store.add_row({k: v for k, v in row().items() if k != "batch"})


def test_rerun_resumes_completed_rows(tmp_path):
    out = tmp_path / "run"
    first = ResultStore(out, config=CONFIG, env={"session": 1})
    first.add_row(row("cornernet"))
    again = ResultStore(out, config=dict(CONFIG), env={"session": 2})
    assert again.has(row("cornernet"))
    assert again.has(("cornernet", "hourglass-52", (511, 511), "cpu", "float32", 1))
    assert not again.has(row("retinanet"))
    assert again.completed() == {("cornernet", "hourglass-52", (511, 511), "cpu", "float32", 1)}
    again.add_row(row("retinanet"))
    doc = json.loads((out / "results.json").read_text())
    assert len(doc["rows"]) == 2
    assert doc["env"] == {"session": 1} and doc["resumes"] == [{"session": 2}]


def test_folder_of_another_run_is_refused(tmp_path):
    out = tmp_path / "run"
    ResultStore(out, config=CONFIG).add_row(row())
    with pytest.raises(UsageError, match=r"run.*another run.*iters"):
        ResultStore(out, config={**CONFIG, "iters": 5})
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "results.json").write_text('{"rows": []}')
    with pytest.raises(UsageError, match="foreign.*no run.json"):
        ResultStore(foreign, config=CONFIG)
    (out / "run.json").write_text("{broken")
    with pytest.raises(UsageError, match="run.json: not valid JSON"):
        ResultStore(out, config=CONFIG)


def test_collect_env_keys_and_types(tmp_path):
    env = collect_env()
    expected = {
        "cpu", "cpu_count", "gpu_name", "gpu_driver", "cuda_version", "torch_version",
        "torchvision_version", "triton_version", "numpy_version", "pycocotools_version",
        "python_version", "git_revision", "git_dirty", "command", "date_utc", "hostname",
    }  # fmt: skip
    assert expected <= set(env)
    for key, value in env.items():
        assert isinstance(value, (str, int, float)), (key, value)
    assert env["cpu_count"] >= 1
    assert env["date_utc"].endswith("+00:00")
    json.dumps(env, allow_nan=False)
    assert git_revision(tmp_path) == ("unknown", False)  # not a git checkout
