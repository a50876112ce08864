"""Test configuration.

``TRITON_INTERPRET=1`` must be set before triton is first imported, so it is done here,
at the top of the file, when no CUDA device is present (checked without importing torch's
CUDA runtime through triton).
"""

from __future__ import annotations

import os
import random
import shutil
import sys

if shutil.which("nvidia-smi") is None and not os.environ.get("CUDA_VISIBLE_DEVICES"):
    os.environ.setdefault("TRITON_INTERPRET", "1")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run tiny tensors, where a second intra-op thread costs more than it gains, and on a
# shared 2-core machine oversubscription made some tests 10-40x slower. Override with
# CORNERBENCH_TEST_THREADS (benchmarks of CPU paths may want the machine's default).
torch.set_num_threads(int(os.environ.get("CORNERBENCH_TEST_THREADS", "1")))

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
# shared test helpers (tests/grid_detector.py) import as top-level modules; appended, so the
# tests' folders never shadow the real kernels/detectors/bench packages
if os.path.dirname(__file__) not in sys.path:
    sys.path.append(os.path.dirname(__file__))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip ``@pytest.mark.gpu`` tests when CUDA is absent."""
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed() -> None:
    """Seed every RNG before each test so failures reproduce."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def fixtures_dir() -> str:
    """Path of tests/fixtures (reference vectors copied from the original CornerNet)."""
    return FIXTURES
