"""``python -m bench``: the cornerbench command line."""

from bench.cli import main

raise SystemExit(main())
