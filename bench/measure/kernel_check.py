"""Each Triton kernel against its torch reference on one device: gpu-check's ``correctness`` part.

``python -m bench.measure.kernel_check [--out DIR] [--dry-run] [--seed N]``

On a CUDA device, at the shapes ``python -m bench kernels`` times (CornerNet at 511 x 511:
pooling maps (1, 256, 128, 128), heads 1 x 80 x 128 x 128 with K = 100 and 1000 detections,
Soft-NMS of 1000 boxes), in fp32, fp16 and bf16 (Soft-NMS in fp32):

- ``corner_pool`` each direction, forward (bit-identical) and backward (``assert_close``);
- ``fused_corner_pool`` each corner, inference, and training (forward and both gradients);
- ``heatmap_peaks``: scores within 1e-6, classes and positions identical;
- ``cornernet_decode``: the valid detections (score > -1) within 1e-4, sorted as the tests do;
- ``soft_nms`` each method and ``soft_nms_per_class``: hard and linear to 1e-7; gaussian
  (float32 exp on Triton) the same kept boxes, scores to 1e-6 relative.

Every Triton call names ``backend="triton"``, so a silent fall-back to the reference cannot
pass. The references run on the kernel's device on upcast inputs, as tests/kernels does (the
Soft-NMS reference on the CPU). Inputs are fresh random draws from ``--seed`` (default: the
clock, written into the report so that a failure can be replayed).

``--dry-run``: the same checks on the CPU through Triton's interpreter at tiny shapes, in
fp32 and fp16 only (bf16 arithmetic is silently wrong in the interpreter). It sets
``TRITON_INTERPRET=1`` before triton is imported and refuses to run if triton was imported
without it.

Writes ``correctness.json`` ({device, dry_run, seed, rows}) into ``--out`` (default: the
current folder) and prints one line per check. Each check is caught on its own: a failure is
recorded with its traceback and the others still run. Exit code 0 when every check passed,
1 otherwise, 2 when there is no CUDA device and no ``--dry-run``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import kernels  # kernels.<op>: looked up at call time (the tests swap in a wrong op)
from bench.results.store import write_json_atomic
from kernels.corner_pool import (
    CORNERS,
    DIRECTIONS,
    corner_pool,
    corner_pool_reference,
    fused_corner_pool,
    fused_corner_pool_reference,
)
from kernels.decode import canonical_detections, cornernet_decode_reference
from kernels.heatmap import heatmap_peaks_reference
from kernels.soft_nms import soft_nms, soft_nms_per_class, soft_nms_reference

__all__ = ["SHAPES", "build_parser", "check_kernels", "main"]

# mode -> sizes; "gpu": the benchmark's (bench/measure/kernel_timing.py), "tiny": interpreter-sized
SHAPES: dict[str, dict[str, Any]] = {
    "gpu": dict(pool=(1, 256, 128, 128), heat=(1, 80, 128, 128), k=100, dets=1000, boxes=1000,
                labels=80),
    "tiny": dict(pool=(1, 2, 9, 11), heat=(1, 3, 12, 10), k=10, dets=50, boxes=40, labels=3),
}  # fmt: skip
# bf16 arithmetic is silently wrong in the interpreter (values held as uint16)
DTYPES = {
    "gpu": (torch.float32, torch.float16, torch.bfloat16),
    "tiny": (torch.float32, torch.float16),
}


def _fwd_bwd(fn: Callable, inputs: list[torch.Tensor], grad: torch.Tensor, *args: Any):
    """Output and input gradients of ``fn(*inputs, *args)`` for the output gradient ``grad``."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    out = fn(*leaves, *args)
    out.backward(grad)
    return out.detach(), [t.grad for t in leaves]


def _err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.double() - want.double()).abs().max()) if want.numel() else 0.0


def _pool(shape, dtype, device, gen) -> list[tuple[str, Callable[[], float]]]:

    def draw() -> torch.Tensor:
        return torch.randn(shape, generator=gen).to(device=device, dtype=dtype)

    def one(direction: str) -> float:
        x, grad = draw(), draw()
        y_ref, (gx_ref,) = _fwd_bwd(corner_pool_reference, [x], grad, direction)
        y, (gx,) = _fwd_bwd(lambda t, d: corner_pool(t, d, backend="triton"), [x], grad, direction)
        assert torch.equal(y, y_ref), "forward differs from the reference (must be identical)"
        torch.testing.assert_close(gx, gx_ref)
        return max(_err(y, y_ref), _err(gx, gx_ref))

    def fused(corner: str, train: bool) -> float:
        a, b, grad = draw(), draw(), draw()
        if not train:
            dir_a, dir_b = CORNERS[corner]
            pa, pb = corner_pool_reference(a, dir_a), corner_pool_reference(b, dir_b)
            want = (pa.float() + pb.float()).to(dtype)
            got = fused_corner_pool(a, b, corner, backend="triton")
            torch.testing.assert_close(got, want)
            return _err(got, want)
        want, grads_ref = _fwd_bwd(fused_corner_pool_reference, [a, b], grad, corner)
        tri = lambda p, q, c: fused_corner_pool(p, q, c, backend="triton")  # noqa: E731
        got, grads = _fwd_bwd(tri, [a, b], grad, corner)
        torch.testing.assert_close(got, want)
        for g, g_ref in zip(grads, grads_ref):
            torch.testing.assert_close(g, g_ref)
        return max(_err(got, want), *(_err(g, r) for g, r in zip(grads, grads_ref)))

    checks = [(f"corner_pool {d} fwd+bwd", lambda d=d: one(d)) for d in DIRECTIONS]
    for corner in CORNERS:
        checks.append((f"fused_corner_pool {corner}", lambda c=corner: fused(c, False)))
        checks.append((f"fused_corner_pool {corner} fwd+bwd", lambda c=corner: fused(c, True)))
    return checks


def _heads(sizes, dtype, device, gen) -> list[torch.Tensor]:
    b, c, h, w = sizes["heat"]
    heads = [torch.randn(b, c, h, w, generator=gen) for _ in range(2)]  # unit logits
    heads += [torch.randn(b, 1, h, w, generator=gen) for _ in range(2)]  # tags
    heads += [torch.rand(b, 2, h, w, generator=gen) for _ in range(2)]  # offsets
    return [t.to(device=device, dtype=dtype) for t in heads]


def _peaks_and_decode(sizes, dtype, device, gen) -> list[tuple[str, Callable[[], float]]]:

    k = sizes["k"]

    def peaks() -> float:
        heat = _heads(sizes, dtype, device, gen)[0]
        scores, *ints = kernels.heatmap_peaks(heat, k, backend="triton")
        ref_scores, *ref_ints = heatmap_peaks_reference(heat.float(), k)
        torch.testing.assert_close(scores, ref_scores, atol=1e-6, rtol=1e-6)
        for a, b in zip(ints, ref_ints):
            torch.testing.assert_close(a, b, atol=0, rtol=0)
        return _err(scores, ref_scores)

    def decode() -> float:
        heads = _heads(sizes, dtype, device, gen)
        got = kernels.cornernet_decode(*heads, K=k, num_dets=sizes["dets"], backend="triton")
        ref = cornernet_decode_reference(*[h.float() for h in heads], K=k, num_dets=sizes["dets"])
        assert got.shape == ref.shape and got.dtype == torch.float32, (got.shape, got.dtype)
        err = 0.0
        for g, r in zip(canonical_detections(got.cpu()), canonical_detections(ref.cpu())):
            assert g.shape == r.shape, f"{g.shape[0]} valid detections, expected {r.shape[0]}"
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4)
            err = max(err, _err(g, r))
        return err

    return [(f"heatmap_peaks k={k}", peaks), (f"cornernet_decode K={k}", decode)]


def _soft_nms(sizes, device, gen) -> list[tuple[str, Callable[[], float]]]:

    def draw(n: int):
        xy = torch.rand(n, 2, generator=gen) * 400
        wh = torch.rand(n, 2, generator=gen) * 120 + 4
        labels = torch.randint(0, sizes["labels"], (n,), generator=gen)
        return torch.cat([xy, xy + wh], 1), torch.rand(n, generator=gen), labels

    def same(got, ref, method: str = "gaussian") -> float:
        keep, kept = got[0].cpu(), got[1].cpu()
        if method == "gaussian":  # float32 exp on Triton: ~1 ulp per weight (kernels.soft_nms)
            order, ref_order = torch.argsort(keep), torch.argsort(ref[0])
            assert torch.equal(keep[order], ref[0][ref_order]), "kept boxes differ"
            torch.testing.assert_close(kept[order], ref[1][ref_order], atol=0, rtol=1e-6)
            return _err(kept[order], ref[1][ref_order])
        assert torch.equal(keep, ref[0]), "kept indices differ from the reference"
        torch.testing.assert_close(kept, ref[1], atol=0, rtol=1e-7)
        return _err(kept, ref[1])

    def one(method: str) -> float:
        boxes, scores, _ = draw(sizes["boxes"])
        ref = soft_nms_reference(boxes, scores, method=method)
        got = soft_nms(boxes.to(device), scores.to(device), method=method, backend="triton")
        return same(got, ref, method)

    def per_class() -> float:
        boxes, scores, labels = draw(sizes["boxes"])
        ref = soft_nms_per_class(boxes, scores, labels, backend="torch")
        args = (t.to(device) for t in (boxes, scores, labels))
        return same(soft_nms_per_class(*args, backend="triton"), ref)

    n = sizes["boxes"]
    checks = [
        (f"soft_nms {m} {n} boxes", lambda m=m: one(m)) for m in ("hard", "linear", "gaussian")
    ]
    return checks + [(f"soft_nms_per_class gaussian {n} boxes", per_class)]


def check_kernels(device: torch.device, *, tiny: bool, seed: int) -> list[dict[str, Any]]:
    """Run every check on ``device``; one row per check: kernel, dtype, shape, ok, max_abs_err,
    seconds, and error/traceback when it failed. Never raises for a failing check."""
    mode = "tiny" if tiny else "gpu"
    sizes = SHAPES[mode]
    gen = torch.Generator().manual_seed(seed)
    plan: list[tuple[str, str, str, Callable[[], float]]] = []
    for dtype in DTYPES[mode]:
        name = str(dtype).removeprefix("torch.")
        for label, fn in _pool(sizes["pool"], dtype, device, gen):
            plan.append((label, name, str(sizes["pool"]), fn))
        for label, fn in _peaks_and_decode(sizes, dtype, device, gen):
            plan.append((label, name, str(sizes["heat"]), fn))
    for label, fn in _soft_nms(sizes, device, gen):
        plan.append((label, "float32", f"({sizes['boxes']}, 4)", fn))
    rows = []
    for label, dtype, shape, fn in plan:
        row: dict[str, Any] = {"kernel": label, "dtype": dtype, "shape": shape}
        start = time.perf_counter()
        try:
            row.update(ok=True, max_abs_err=fn())
        except Exception as exc:  # recorded, and the next check runs
            error = f"{type(exc).__name__}: {exc}"
            row.update(ok=False, max_abs_err=None, error=error, traceback=traceback.format_exc())
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        row["seconds"] = time.perf_counter() - start
        rows.append(row)
        status = "ok" if row["ok"] else f"FAILED: {row['error'].splitlines()[0]}"
        print(f"{label:<36} {dtype:<9} {shape:<18} {row['seconds']:6.2f} s  {status}", flush=True)
    return rows


def build_parser() -> argparse.ArgumentParser:
    """Arguments of ``python -m bench.measure.kernel_check``."""
    parser = argparse.ArgumentParser(
        prog="python -m bench.measure.kernel_check",
        description="each Triton kernel against its torch reference on this device",
    )
    parser.add_argument("--out", type=Path, default=Path("."), help="folder for correctness.json")
    parser.add_argument("--dry-run", action="store_true", help="CPU, interpreter, tiny shapes")
    parser.add_argument("--seed", type=int, default=None, help="default: from the clock")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.measure.kernel_check``: 0 (all passed), 1 (a check failed), 2 (no CUDA)."""
    args = build_parser().parse_args(argv)
    if args.dry_run:
        if "triton" in sys.modules and os.environ.get("TRITON_INTERPRET") != "1":
            print("--dry-run: triton was imported without TRITON_INTERPRET=1", file=sys.stderr)
            return 2
        os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported (by kernels)
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        print("no CUDA device: use --dry-run to check on the CPU", file=sys.stderr)
        return 2

    seed = args.seed if args.seed is not None else time.time_ns() % 2**31
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu (interpreter)"
    print(f"kernel check on {name}, seed {seed}", flush=True)
    rows = check_kernels(device, tiny=args.dry_run, seed=seed)
    doc = {"device": name, "dry_run": args.dry_run, "seed": seed, "rows": rows}
    write_json_atomic(args.out / "correctness.json", doc)
    failed = [f"{r['kernel']} {r['dtype']}" for r in rows if not r["ok"]]
    verdict = f"; FAILED: {', '.join(failed)}" if failed else ""
    print(f"{len(rows) - len(failed)}/{len(rows)} checks passed{verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
