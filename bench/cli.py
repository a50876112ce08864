"""The ``python -m bench`` command line.

Each subcommand lives in its own module of ``bench/commands/``, which provides
``add_arguments(parser)`` and ``run(args) -> int`` (the exit code). A command's module is
imported only when it is used, so ``--help`` is fast.

Exit codes: 0 success, 2 bad input (missing file, unknown name, ...) and files that cannot be
written (full disk, read-only file system, no permission: one line naming the file and the
reason, no traceback), 1 anything else, 130 Ctrl-C (one line on stderr: what was saved and
how to resume, from the command module's ``INTERRUPTED`` when it has one), 141 when stdout is
a pipe closed early (``bench compare --json | head``): no traceback, the rest of the output is
dropped, and 141 = 128 + SIGPIPE is what a shell reports for any other program cut off by
``head``, so a ``set -o pipefail`` script sees a truncated output, not a success.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib
import os
import sys
from collections.abc import Sequence

from bench.errors import UsageError

# OSErrors of the file system or of the user's paths, not of the program: exit 2, one line
WRITE_ERRNOS = frozenset(
    {errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS, errno.EACCES, errno.EPERM,
     errno.ENOTDIR, errno.EISDIR}
)  # fmt: skip
FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG, errno.EROFS})  # only writes meet these

EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "run": (
        "bench.commands.run",
        "run the suite: data, zoo checkpoints, COCO AP, anchors, latency, report",
    ),
    "data": ("bench.commands.data", "generate the built-in synthetic COCO-format benchmark"),
    "eval": ("bench.commands.eval", "COCO bbox evaluation of a results JSON with pycocotools"),
    "kernels": ("bench.commands.kernels", "time the Triton kernels against their torch references"),
    "anchors": (
        "bench.commands.anchors",
        "anchors per image of each detector; --fit/--coverage: anchors fitted to a data set and "
        "the share of its boxes they cover",
    ),
    "train": ("bench.commands.train", "train detectors with equal budgets"),
    "latency": ("bench.commands.latency", "per-stage latency of each detector"),
    "report": ("bench.commands.report", "regenerate a report from saved results"),
    "compare": ("bench.commands.compare", "show the differences between two result folders"),
    "cornernet-eval": (
        "bench.commands.cornernet_eval",
        "a release CornerNet checkpoint on COCO with the release's test pipeline",
    ),
    "analyze": (
        "bench.commands.analyze",
        "CornerNet's oracle analysis; AP by training budget from train snapshots",
    ),
    "gpu-check": (
        "bench.commands.gpu_check",
        "kernel correctness, kernel benchmarks, paper-scale latency and the GPU tests within 8 "
        "minutes; --dry-run: the same plan on the CPU",
    ),
}


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser; subcommand modules are imported only when their name is used."""
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="cornerbench: anchors or no anchors, on your hardware.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, help_text) in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def os_error_message(exc: OSError) -> str:
    """One line for a file-system error: the file (the destination when it names two), the
    reason and its code, e.g. ``cannot write run/last.pt: No space left on device (ENOSPC)``
    or ``out/x.json: Permission denied (EACCES)``."""
    name = exc.filename2 if exc.filename2 is not None else exc.filename
    reason = f"{exc.strerror} ({errno.errorcode.get(exc.errno or 0, '?')})"
    if name is None:
        return f"a file operation failed: {reason}"
    return f"{'cannot write ' * (exc.errno in FULL)}{os.fsdecode(name)}: {reason}"


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and dispatch to the subcommand's module; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0
    name = argv[0]
    if name not in COMMANDS:
        parser.print_usage(sys.stderr)
        print(
            f"error: unknown command {name!r}; choose from {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    # imported on use: `--help` stays fast and each command pulls only its own dependencies
    module = importlib.import_module(COMMANDS[name][0])
    sub = argparse.ArgumentParser(prog=f"python -m bench {name}", description=COMMANDS[name][1])
    module.add_arguments(sub)
    args = sub.parse_args(argv[1:])
    try:
        code = int(module.run(args) or 0)
        sys.stdout.flush()  # here: a closed pipe raises now, not at interpreter exit
        return code
    except BrokenPipeError:
        # Python's advice (library/signal.html, "Note on SIGPIPE"): point stdout at devnull
        # so that the flush at exit cannot raise again
        with contextlib.suppress(OSError, ValueError):  # stdout without a descriptor (captured)
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except KeyboardInterrupt:
        saved = getattr(module, "INTERRUPTED", "nothing more was saved")
        print(f"interrupted (Ctrl-C): {saved}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno not in WRITE_ERRNOS:
            raise
        print(f"error: {os_error_message(exc)}", file=sys.stderr)
        return 2
