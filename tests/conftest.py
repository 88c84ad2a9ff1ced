"""Shared test set-up: the library is importable from the checkout, CPU-only, single-threaded,
with the pinned CPU kernels (landscape.reproducibility)."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import landscape  # noqa: E402,F401  (pins the CPU kernel dispatch before torch runs anything)
import torch  # noqa: E402

torch.set_num_threads(1)


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``slow`` first (stable order otherwise): under ``--dist loadscope`` the two
    end-to-end modules, the longest units, then start at once, one per worker, and the other
    modules fill in behind them instead of leaving a long unit to run alone at the end."""
    items.sort(key=lambda item: item.get_closest_marker("slow") is None)
