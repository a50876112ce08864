"""Result files: atomic writes and a resumable store of benchmark rows.

Every file the harness writes goes through one writer, :func:`write_atomic` (text or binary;
``write_json_atomic``, ``write_text_atomic``, ``write_csv_atomic`` and the checkpoints'
``bench.train.checkpoints.save_atomic`` are thin wrappers): it writes to a temporary file in
the destination's folder, flushes and fsyncs it, ``os.replace``-s it over the destination
and fsyncs the folder. A reader sees the old file or the new one, never half of one; a write that
fails (an exception while serialising, a full disk, Ctrl-C) leaves the old file untouched and
removes its temporary file.

``ResultStore(out_dir, config=...)`` keeps one row per key
``(detector, backbone, input_size, device, dtype, batch)`` in

- ``run.json``: ``{"config": ..., "data_fingerprint": ...}``, the command's configuration
  and the identity of the ground truth its rows were scored against; a folder whose
  ``run.json`` holds another configuration belongs to another run and is refused
  (``UsageError``), and so is one whose fingerprint differs (the data changed since: its
  rows would mix two ground truths). A ``run.json`` without a fingerprint (written before
  fingerprints) is accepted and gets this run's;
- ``results.json``: ``{"env": ..., "dataset": ..., "rows": [...], "resumes": [...]}``;
- ``results.csv``: the rows as a table (pandas), dict/list cells as JSON text.

``save_rows(out_dir, kind, rows, **meta)`` is the one-shot form for commands without resume
(``bench latency``, ``bench kernels``): ``<kind>.json`` ``{**meta, "env", "rows"}``,
``<kind>.csv`` and ``env.json``.

``add_row`` rewrites both result files at once, so an interrupted run loses at most the row
being measured, and ``has`` / ``completed`` let the rerun skip what is already done.
Non-finite floats (NaN, inf) in rows are stored as ``null``: the JSON files stay standard JSON.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import pandas as pd

from bench.errors import UsageError
from bench.faults import fault_point
from bench.procs import clear_stale, owned_name
from bench.results.env import collect_env

KEY_FIELDS: tuple[str, ...] = ("detector", "backbone", "input_size", "device", "dtype", "batch")

RowKey = tuple[Any, ...]


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (best effort: not every OS can open a directory)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def write_atomic(
    path: str | os.PathLike, write: Callable[[IO], None], *, binary: bool = False
) -> Path:
    """Call ``write(fh)`` on a temporary file next to ``path`` (text, UTF-8, or ``binary``),
    fsync it, move it over ``path`` and fsync the folder; returns the path."""
    path = Path(path)
    folder = path.parent
    folder.mkdir(parents=True, exist_ok=True)
    clear_stale(folder, f".{path.name}.", ".tmp")  # left by a killed writer (SIGKILL)
    tmp = folder / owned_name(f".{path.name}.", ".tmp")
    # os.open with mode 0o666 lets the umask decide the permissions, as open() would
    # (tempfile.mkstemp would leave the final file readable by its owner only).
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        mode = {"mode": "wb"} if binary else {"mode": "w", "encoding": "utf-8", "newline": ""}
        with os.fdopen(fd, **mode) as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        fault_point(f"write:{path.name}")  # tests signal here: written, not yet renamed
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.filename2 is None:  # name the destination, not the temporary file or nothing
            raise OSError(exc.errno, exc.strerror, str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(folder)
    return path


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns the path."""
    if not isinstance(text, str):
        raise ValueError(f"write_text_atomic({path}): expected str, got {type(text).__name__}")
    return write_atomic(path, lambda fh: fh.write(text))


def write_json_atomic(path: str | os.PathLike, obj: Any, *, indent: int | None = 2) -> Path:
    """Write ``obj`` as strict JSON (NaN/inf refused: ValueError) to ``path`` atomically."""

    def write(fh: IO[str]) -> None:
        json.dump(obj, fh, indent=indent, allow_nan=False)
        fh.write("\n")

    return write_atomic(path, write)


def write_csv_atomic(path: str | os.PathLike, dataframe: pd.DataFrame) -> Path:
    """Write ``dataframe`` as CSV (no index column) to ``path`` atomically."""
    if not isinstance(dataframe, pd.DataFrame):
        raise ValueError(
            f"write_csv_atomic({path}): expected a pandas DataFrame, got {type(dataframe).__name__}"
        )
    return write_atomic(path, lambda fh: dataframe.to_csv(fh, index=False))


def _clean(value: Any) -> Any:
    """Rows as plain JSON: non-finite floats -> None, numpy scalars -> Python, tuples -> lists."""
    if isinstance(value, Mapping):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    ndim = getattr(value, "ndim", None)
    if ndim == 0 and hasattr(value, "item"):
        value = value.item()  # numpy / torch scalar
    elif ndim is not None and hasattr(value, "tolist"):
        return _clean(value.tolist())  # numpy array / tensor
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _csv_cell(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, (dict, list)) else value


def _read_json(path: Path, what: str) -> Any:
    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except json.JSONDecodeError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}); expected {what}") from exc


def save_rows(
    out_dir: str | os.PathLike, kind: str, rows: Sequence[Mapping[str, Any]], **meta: Any
) -> dict[str, Any]:
    """Write ``<kind>.json`` (``{**meta, "env": env, "rows": rows}``), ``<kind>.csv`` and
    ``env.json`` into ``out_dir`` atomically; ``meta["env"]``, if given, is used as the
    environment (else :func:`bench.results.env.collect_env`). Returns the environment."""
    out = Path(out_dir)
    env = meta.pop("env", None) or collect_env()
    rows = [dict(r) for r in rows]
    write_json_atomic(out / f"{kind}.json", {**meta, "env": env, "rows": rows})
    write_csv_atomic(out / f"{kind}.csv", pd.DataFrame(rows))
    write_json_atomic(out / "env.json", env)
    return env


class ResultStore:
    """Rows of one benchmark run in ``out_dir``, written after every row; resumable.

    Args:
        out_dir: the run's folder (created if missing).
        config: the command's configuration (JSON-serialisable). Stored in ``run.json`` on
            first use; reopening the folder with a different config raises ``UsageError``.
        env: provenance (``bench.results.env.collect_env()``). The first session's goes to ``env``;
            a resumed session's is appended to ``resumes``.
        dataset: a description of the data (name, image count, annotation file, ...).
        fingerprint: the identity of the ground truth (see the module docstring).
    """

    def __init__(
        self,
        out_dir: str | os.PathLike,
        *,
        config: Mapping[str, Any],
        env: Mapping[str, Any] | None = None,
        dataset: Mapping[str, Any] | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.out_dir = Path(out_dir)
        self.config = _clean(dict(config))
        self.fingerprint = fingerprint
        self.run_path = self.out_dir / "run.json"
        self.json_path = self.out_dir / "results.json"
        self.csv_path = self.out_dir / "results.csv"
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UsageError(f"{self.out_dir}: exists and is not a folder")
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self._check_owner()
        self._rows: dict[RowKey, dict[str, Any]] = {}
        self._doc: dict[str, Any] = {"env": {}, "dataset": {}, "rows": []}
        if self.json_path.exists():
            self._load()
            if env is not None:
                self._doc.setdefault("resumes", []).append(_clean(dict(env)))
            stored = self._doc.get("dataset") or {}
            if dataset is not None and stored and stored != _clean(dict(dataset)):
                raise UsageError(
                    f"{self.json_path}: results on dataset {stored!r}, "
                    f"but this run uses {_clean(dict(dataset))!r}; use another output folder"
                )
            if dataset is not None and not stored:
                self._doc["dataset"] = _clean(dict(dataset))
        else:
            self._doc["env"] = _clean(dict(env or {}))
            self._doc["dataset"] = _clean(dict(dataset or {}))
        self._flush()

    def _check_owner(self) -> None:
        if self.run_path.exists():
            stored = _read_json(self.run_path, 'an object {"config": ...}')
            if not isinstance(stored, dict) or "config" not in stored:
                raise UsageError(f"{self.run_path}: expected an object with a 'config' key")
            if stored["config"] != self.config:
                diff = sorted(
                    k
                    for k in set(stored["config"]) | set(self.config)
                    if stored["config"].get(k) != self.config.get(k)
                )
                raise UsageError(
                    f"{self.out_dir} holds the results of another run (run.json differs in "
                    f"{', '.join(diff)}); use another output folder or the same configuration"
                )
            self._check_fingerprint(stored)
        elif self.json_path.exists() or self.csv_path.exists():
            raise UsageError(
                f"{self.out_dir} holds results.json/results.csv but no run.json: results of "
                "another (or an unknown) run; use another output folder"
            )
        else:
            write_json_atomic(self.run_path, self._run_doc({}))

    def _run_doc(self, stored: Mapping[str, Any]) -> dict[str, Any]:
        doc = {**stored, "config": self.config}
        if self.fingerprint is not None:
            doc["data_fingerprint"] = self.fingerprint
        return doc

    def _check_fingerprint(self, stored: Mapping[str, Any]) -> None:
        old = stored.get("data_fingerprint")
        if old is not None and self.fingerprint is not None and old != self.fingerprint:
            raise UsageError(
                f"{self.out_dir} holds results scored against other ground truth: run.json "
                f"records data fingerprint {old}, the data now gives {self.fingerprint} (the "
                "dataset was regenerated or edited since); use another output folder"
            )
        if old is None and self.fingerprint is not None:  # written before fingerprints
            write_json_atomic(self.run_path, self._run_doc(stored))

    def _load(self) -> None:
        doc = _read_json(self.json_path, 'an object {"env", "dataset", "rows"}')
        if not isinstance(doc, dict) or not isinstance(doc.get("rows"), list):
            raise UsageError(f"{self.json_path}: expected an object with a 'rows' list")
        self._doc = doc
        for row in doc["rows"]:
            self._rows[self.key_of(row)] = row

    def _flush(self) -> None:
        self._doc["rows"] = list(self._rows.values())
        write_json_atomic(self.json_path, self._doc)
        table = [{k: _csv_cell(v) for k, v in row.items()} for row in self._doc["rows"]]
        frame = pd.DataFrame(table)
        if frame.empty:
            frame = pd.DataFrame(columns=list(KEY_FIELDS))
        write_csv_atomic(self.csv_path, frame)

    @staticmethod
    def key_of(row: Mapping[str, Any] | Sequence[Any]) -> RowKey:
        """The key of a row (a mapping with the ``KEY_FIELDS``) or a key tuple itself."""
        if isinstance(row, Mapping):
            missing = [k for k in KEY_FIELDS if k not in row]
            if missing:
                raise ValueError(f"result row lacks the key field(s) {missing}; got {sorted(row)}")
            values = [row[k] for k in KEY_FIELDS]
        else:
            values = list(row)
            if len(values) != len(KEY_FIELDS):
                raise ValueError(f"a row key has {len(KEY_FIELDS)} values {KEY_FIELDS}, got {row}")
        # Lists (an input size [h, w]) become tuples so that keys are hashable.
        return tuple(tuple(v) if isinstance(v, list) else v for v in _clean(values))

    def add_row(self, row: Mapping[str, Any]) -> None:
        """Add (or replace, same key) one row and rewrite results.json and results.csv."""
        clean = _clean(dict(row))
        self._rows[self.key_of(clean)] = clean
        self._flush()

    def has(self, key: Mapping[str, Any] | Sequence[Any]) -> bool:
        """Whether a row with this key (a row mapping or a ``KEY_FIELDS`` tuple) is stored."""
        return self.key_of(key) in self._rows

    def completed(self) -> set[RowKey]:
        """The keys of every stored row."""
        return set(self._rows)

    @property
    def rows(self) -> list[dict[str, Any]]:
        """The stored rows, in insertion order (copies)."""
        return [dict(r) for r in self._rows.values()]

    @property
    def env(self) -> dict[str, Any]:
        """The provenance of the session that created the folder."""
        return dict(self._doc.get("env", {}))
