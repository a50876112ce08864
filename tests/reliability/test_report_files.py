"""Issue 13 item 9: ``bench report`` embeds only images of the run folder.

A ``results.json`` row names its sample image; the report used to embed whatever file it named
(``"sample": "../secret.txt"`` ended up base64 in ``report.html``). Now a sample is shown only
when it is a PNG or JPEG (by its first bytes) inside the run folder, symbolic links followed;
any other is left out with a warning naming the row and the path, in the report and as a
Python warning (stderr).
"""

from __future__ import annotations

import base64
import warnings
from pathlib import Path

import numpy as np
from PIL import Image

from bench.cli import main
from bench.results.store import ResultStore

SECRET = b"TOP SECRET: the password is hunter2\n"


def _image(path: Path, fmt: str, grey: int = 200) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8, 3), grey, np.uint8)).save(path, format=fmt)
    return path


def _run(folder: Path, samples: dict[str, str]) -> Path:
    store = ResultStore(folder, config={"test": 1}, env={"cpu": "Test CPU"})
    for name, sample in samples.items():
        row = {"detector": name, "backbone": "tiny", "input_size": 64, "device": "cpu",
               "dtype": "fp32", "batch": 1, "AP": 0.5, "AP50": 0.7, "anchors_per_image": 0,
               "latency_ms_p50": 10.0, "sample": sample}  # fmt: skip
        store.add_row(row)
    return folder


def test_report_embeds_only_png_and_jpeg_files_of_the_run_folder(tmp_path, capsys):
    secret = tmp_path / "secret.txt"
    secret.write_bytes(SECRET)
    outside_png = _image(tmp_path / "elsewhere.png", "PNG", grey=17)
    folder = tmp_path / "run"
    _image(folder / "plots" / "ok.jpg", "JPEG")
    _image(folder / "plots" / "ok.png", "PNG")
    (folder / "plots" / "notes.png").write_bytes(SECRET)  # named .png, but text
    (folder / "plots" / "link.png").symlink_to(outside_png)
    samples = {
        "dotdot": "../secret.txt",
        "absolute": str(secret),
        "absolute-png": str(outside_png),
        "text": "plots/notes.png",
        "link": "plots/link.png",
        "jpeg": "plots/ok.jpg",
        "png": "plots/ok.png",
    }
    _run(folder, samples)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["report", str(folder)]) == 0
    capsys.readouterr()
    page = (folder / "report.html").read_text()
    md = (folder / "report.md").read_text()
    for blob in (SECRET, outside_png.read_bytes()):
        assert base64.b64encode(blob).decode() not in page
    assert SECRET.decode().strip() not in page + md
    jpeg = base64.b64encode((folder / "plots" / "ok.jpg").read_bytes()).decode()
    png = base64.b64encode((folder / "plots" / "ok.png").read_bytes()).decode()
    assert f"data:image/jpeg;base64,{jpeg}" in page and f"data:image/png;base64,{png}" in page
    assert "![jpeg: detections](plots/ok.jpg)" in md and "![png: detections](plots/ok.png)" in md
    messages = [str(w.message) for w in caught]
    why = {"dotdot": "outside the run folder", "absolute": "outside the run folder",
           "absolute-png": "outside the run folder", "link": "outside the run folder",
           "text": "not a PNG or JPEG image"}  # fmt: skip
    for index, (name, sample) in enumerate(samples.items()):
        text = f"results.json row {index} ({name}): sample {sample!r} left out of the report"
        if name in why:
            assert any(m.startswith(text) and why[name] in m for m in messages), (name, messages)
            assert f"> **WARNING** {text}" in md and f"]({sample})" not in md
        else:
            assert not any(m.startswith(text) for m in messages)
