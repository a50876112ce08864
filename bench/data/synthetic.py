"""The built-in synthetic benchmark: coloured shapes on cluttered backgrounds, in COCO format.

Built to exercise what the CornerNet paper argues about (box corners outside the object,
overlapping instances of one category, sizes from 6 px to most of the image, aspect ratios
1:5 to 5:1, clutter); see ``CONVENTIONS`` for the full description and annotation rules, which
are also written into the dataset card.

Every image is rendered from its own RNG, seeded by (seed, split, index), so the output is
byte-identical for a seed whatever the number of worker processes.

One image is rendered by :mod:`bench.data.render` (categories, difficulty levels), with the
drawing primitives of :mod:`bench.data.shapes`.

Public: ``generate_synthetic``, ``ensure_synthetic``, ``validate_params``, ``CATEGORIES``,
``PRESETS``, ``FINGERPRINT_NAME``.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from bench.data.render import CATEGORIES, DIFFICULTIES, render_image
from bench.errors import UsageError
from bench.procs import clear_stale, die_with_parent, owned_name

DEFAULT_DIFFICULTY = "standard"
PRESETS: dict[str, dict[str, int | str]] = {
    "default": {"num_train": 3000, "num_val": 500, "image_size": 128, "seed": 0},
    "smoke": {"num_train": 64, "num_val": 32, "image_size": 128, "seed": 0},
}
for _p in PRESETS.values():
    _p["difficulty"] = DEFAULT_DIFFICULTY
GENERATOR_VERSION = 2  # bump when the rendering changes, so ensure_synthetic regenerates
FINGERPRINT_NAME = "synthetic.json"
# the hard rendering's limits (generator version 1), kept as names for its tests
MIN_VISIBLE = DIFFICULTIES["hard"].min_visible
MIN_SIZE = DIFFICULTIES["hard"].min_size
MAX_ASPECT = DIFFICULTIES["hard"].max_aspect
_SPLITS = ("train", "val")
TITLE = "cornerbench synthetic shapes"
CONVENTIONS = """
- Nine categories with non-contiguous ids (2..88, as COCO's 1..90): box-like `rectangle` and
  `frame`, and shapes whose box corners lie outside the object: `ellipse`, `triangle`,
  `parallelogram`, `ring`, `crescent`, `star`, `cross`. Object colours are random.
- `bbox` [x, y, w, h] in pixels is tight around the object's full drawn mask, before later
  objects occlude it; `area` is the pixel count of that mask and `segmentation` its RLE, so
  bbox, area and segmentation describe the same pixels, as in COCO.
- `visible_fraction` (extra field) is the share of those pixels still visible. Objects with
  less than the difficulty's `min_visible` visible are dropped from the annotations (their
  visible remains stay in the image as clutter); the dropped count is in `synthetic.json`.
- `iscrowd` is 0 everywhere.
- Images are 8-bit RGB PNG named `NNNNNN.png`; image ids are 1..N in file order.
- Box sizes sqrt(w*h) are drawn log-uniform from `min_size` px to `max_fraction` of the image,
  aspect ratios w/h log-uniform in [1/`max_aspect`, `max_aspect`]; annotations are measured on
  the drawn mask, so their ranges differ slightly (a crescent is smaller than its circle).
  Objects from 1..3 categories per image, a share `overlap` of them placed over an earlier
  object; unlabelled clutter (blobs, polylines, dots), lines over objects and pixel noise as
  the difficulty sets them.
"""


def conventions(difficulty: str) -> str:
    """The dataset card's conventions for a :data:`DIFFICULTIES` level, its knobs listed."""
    d = DIFFICULTIES[difficulty]
    knobs = ", ".join(f"`{k}`={v}" for k, v in vars(d).items())
    which = {
        "standard": "the default since generator version 2",
        "hard": "the original (version 1) rendering, byte-identical",
        "easy": "a debugging preset: flat colours on a flat background, no clutter",
    }.get(difficulty, "")
    return f"{CONVENTIONS}- Difficulty **{difficulty}** ({which}): {knobs}.\n"


def validate_params(
    num_train: int, num_val: int, image_size: int, seed: int, difficulty: str = DEFAULT_DIFFICULTY
) -> None:
    """Raise ``UsageError`` naming the first bad generation parameter."""
    if difficulty not in DIFFICULTIES:
        raise UsageError(
            f"--difficulty {difficulty!r}: expected one of {', '.join(sorted(DIFFICULTIES))}"
        )
    checks = (
        ("--num-train", num_train, 1, 10_000_000),
        ("--num-val", num_val, 1, 10_000_000),
        ("--image-size", image_size, 32, 4096),
        ("--seed", seed, 0, 2**63 - 1),
    )
    for flag, value, lo, hi in checks:
        if isinstance(value, bool) or not isinstance(value, int | np.integer):
            raise UsageError(f"{flag} must be an integer, got {value!r}")
        if not lo <= value <= hi:
            raise UsageError(f"{flag} must be between {lo} and {hi}, got {value}")


def _render_to_file(job: tuple[str, int, int, int, int, str]) -> tuple[list[dict], int]:
    """Worker: render image ``index`` of a split, write it as PNG, return its annotations."""
    folder, split_code, index, size, seed, difficulty = job
    rng = np.random.default_rng(np.random.SeedSequence([seed, split_code, index]))
    image, anns, dropped = render_image(rng, size, difficulty)
    Image.fromarray(image).save(os.path.join(folder, f"{index:06d}.png"), compress_level=1)
    return anns, dropped


# ---------------------------------------------------------------- writing a dataset
def _generate_split(
    root: Path, split: str, num: int, size: int, seed: int, workers: int, difficulty: str
) -> dict:
    """Render one split into ``root/split/`` and write its COCO JSON; returns its counts."""
    (root / split).mkdir()
    code = _SPLITS.index(split)
    jobs = [(str(root / split), code, i, size, seed, difficulty) for i in range(num)]
    if workers <= 1 or num < 4 * workers:
        results: list[tuple[list[dict], int]] = [_render_to_file(j) for j in jobs]
    else:
        # fork on Linux (fast; workers use only numpy and PIL), spawn elsewhere
        method = "fork" if sys.platform.startswith("linux") else "spawn"
        ctx = multiprocessing.get_context(method)
        with ctx.Pool(workers, initializer=die_with_parent, initargs=(os.getpid(),)) as pool:
            results = pool.map(_render_to_file, jobs, chunksize=max(1, num // (workers * 8)))
    images, annotations, dropped = [], [], 0
    for i, (anns, n_dropped) in enumerate(results):
        images.append({"id": i + 1, "file_name": f"{i:06d}.png", "width": size, "height": size})
        for ann in anns:
            annotations.append({"id": len(annotations) + 1, "image_id": i + 1, **ann})
        dropped += n_dropped
    info = {"description": TITLE, "version": str(GENERATOR_VERSION), "seed": seed}
    info["difficulty"] = difficulty
    coco = {
        "info": info,
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": [{"id": c, "name": n, "supercategory": s} for c, n, s in CATEGORIES],
    }
    ann_file = root / "annotations" / f"instances_{split}.json"
    ann_file.write_text(json.dumps(coco, separators=(",", ":")))
    return {"images": num, "annotations": len(annotations), "dropped_occluded": dropped}


def read_fingerprint(root: Path) -> dict | None:
    """``root/synthetic.json`` when this generator wrote it (the folder is a synthetic set,
    whatever ``--data`` calls it), else None."""
    try:
        data = json.loads((root / FINGERPRINT_NAME).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and data.get("generator") == __name__ else None


def generate_synthetic(
    out: str | Path,
    *,
    num_train: int = PRESETS["default"]["num_train"],
    num_val: int = PRESETS["default"]["num_val"],
    image_size: int = PRESETS["default"]["image_size"],
    seed: int = PRESETS["default"]["seed"],
    difficulty: str = DEFAULT_DIFFICULTY,
    workers: int | None = None,
    overwrite: bool = False,
    card: bool = True,
) -> Path:
    """Write the synthetic dataset to ``out`` and return its (absolute) path.

    Layout: ``out/{train,val}/NNNNNN.png``, ``out/annotations/instances_{train,val}.json``,
    ``out/synthetic.json`` (parameters and counts) and, with ``card``, the dataset card
    (``README.md``, ``card.json``, ``card_stats.png``, ``card_samples.png``).

    Everything is written into ``out.tmp-<pid>-XXXX`` beside ``out`` and renamed at the end,
    so an interrupted run never leaves a folder that looks complete; one left by a killed
    generator is removed by the next one (:func:`bench.procs.clear_stale`). An existing
    non-empty ``out`` is a ``UsageError`` unless ``overwrite``, and is only ever replaced when
    it holds a ``synthetic.json`` of this generator. ``workers`` defaults to the CPU count (at
    most 8).
    """
    validate_params(num_train, num_val, image_size, seed, difficulty)
    workers = min(os.cpu_count() or 1, 8) if workers is None else int(workers)
    if workers < 0:
        raise UsageError(f"--workers must be >= 0, got {workers}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"output {out} exists and is not a folder")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise UsageError(
                f"output folder {out} exists and is not empty; pass --overwrite to replace it "
                "or choose another --out"
            )
        if read_fingerprint(out) is None:
            raise UsageError(
                f"output folder {out} is not empty and holds no {FINGERPRINT_NAME}: it is not a "
                "cornerbench synthetic dataset, so it is not replaced; choose another --out"
            )
    final = out.resolve()  # resolved: "." has no name
    final.parent.mkdir(parents=True, exist_ok=True)
    for tag in (".tmp-", ".old-"):  # left by a generator that was killed (SIGKILL)
        clear_stale(final.parent, final.name + tag)
    tmp = final.with_name(owned_name(f"{final.name}.tmp-"))
    tmp.mkdir()
    try:
        (tmp / "annotations").mkdir()
        params = {"num_train": num_train, "num_val": num_val, "image_size": image_size}
        params |= {"seed": seed, "difficulty": difficulty}
        info = {"generator": __name__, "version": GENERATOR_VERSION, "params": params}
        info["counts"] = {
            split: _generate_split(tmp, split, num, image_size, seed, workers, difficulty)
            for split, num in zip(_SPLITS, (num_train, num_val))
        }
        if card:
            from bench.data.card import write_card  # matplotlib: imported only when needed

            splits = {s: (tmp / s, tmp / "annotations" / f"instances_{s}.json") for s in _SPLITS}
            write_card(
                tmp, splits, title=TITLE, generator=info, conventions=conventions(difficulty)
            )
        # the fingerprint is written last: a folder with it is complete
        (tmp / FINGERPRINT_NAME).write_text(json.dumps(info, indent=2) + "\n")
        if final.exists():
            old = final.with_name(owned_name(f"{final.name}.old-"))
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old)
        else:
            tmp.rename(final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def ensure_synthetic(
    root: str | Path, *, workers: int | None = None, card: bool = True, overwrite: bool = True,
    **params: int,
) -> Path:  # fmt: skip
    """Return ``root`` (absolute), generating the synthetic set there unless it is complete.

    ``params`` (``num_train``, ``num_val``, ``image_size``, ``seed``, ``difficulty``) override
    ``PRESETS["default"]``; ``ensure_synthetic(root, **PRESETS["smoke"])`` gives the small set.
    Complete means: ``root/synthetic.json`` names this generator version and these parameters,
    and both annotation files and image folders (with the right image counts) exist. A stale
    set made by this generator is replaced; a non-empty folder that is not one raises
    ``UsageError``. Without ``overwrite`` (a folder the user named, as ``bench data synthetic``
    without ``--overwrite``) nothing non-empty is replaced: ``UsageError`` naming what is wrong.
    """
    unknown = set(params) - set(PRESETS["default"])
    if unknown:
        raise UsageError(f"unknown synthetic parameters {sorted(unknown)}")
    params = {**PRESETS["default"], **params}
    validate_params(**params)
    root = Path(root).resolve()
    info = read_fingerprint(root)
    recorded = (info or {}).get("params") or {}
    missing = [
        what
        for split in _SPLITS
        for what, ok in (
            (
                f"annotations/instances_{split}.json",
                (root / "annotations" / f"instances_{split}.json").is_file(),
            ),
            (
                f"{split}/ ({recorded.get(f'num_{split}', '?')} images)",
                (root / split).is_dir()
                and sum(1 for _ in os.scandir(root / split)) == recorded.get(f"num_{split}"),
            ),
        )  # fmt: skip
        if not ok
    ]
    same = info is not None and info.get("version") == GENERATOR_VERSION and recorded == params
    if same and not missing:
        return root
    if not overwrite and root.is_dir() and any(root.iterdir()):
        why = (
            f"no {FINGERPRINT_NAME}" if info is None
            else f"missing or incomplete: {', '.join(missing)}" if missing
            else "made by another generator version or with other parameters"
        )  # fmt: skip
        raise UsageError(
            f"{root} is not a complete synthetic set ({why}) and is not replaced, so that "
            f"nothing in it is lost: regenerate it with `python -m bench data synthetic --out "
            f"{root} --overwrite`, or name another folder"
        )
    return generate_synthetic(root, **params, workers=workers, overwrite=True, card=card)
