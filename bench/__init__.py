"""cornerbench's harness: ``python -m bench`` (see ``docs/architecture.md`` for the layout)."""

from pathlib import Path

#: the repository root (the zoo, reports and data folders are relative to it)
REPO_DIR = Path(__file__).resolve().parent.parent
