"""Shared test set-up: the library is importable from the checkout, CPU-only, single-threaded,
with the pinned CPU kernels (landscape.reproducibility). DVC run by the tests sends no usage
report: each DVC command otherwise spawns an analytics daemon that tries to reach DVC's server
(58 of them in one run of the suite, 20 s of CPU, and no network here)."""

import os
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["DVC_NO_ANALYTICS"] = "1"  # inherited by every subprocess the tests start

import landscape  # noqa: E402,F401  (pins the CPU kernel dispatch before torch runs anything)
import torch  # noqa: E402

torch.set_num_threads(1)


#: The end-to-end modules in the order they start (the rest keep collection order): the two that
#: build the shared repositories first (tests/pipeline/repo_copy.py: `ci` and `paper_smoke`, one per
#: xdist worker), then the two that work on copies of the ci one.
SLOW_ORDER = ("test_dvc_pipeline.py", "test_paper_smoke.py", "test_dvc_reruns.py", "test_slurm.py")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``slow`` first, in :data:`SLOW_ORDER` (stable order otherwise). `make test`
    runs ``--dist loadscope --no-loadscope-reorder``: modules go to the workers in this order
    (xdist would otherwise order them by test count, the few-test end-to-end modules last), so
    the two builds start at once and the many short modules fill in behind the long ones instead
    of leaving a long unit to run alone at the end."""
    def key(item) -> tuple[bool, int]:
        name = item.path.name
        return item.get_closest_marker("slow") is None, SLOW_ORDER.index(name) if name in SLOW_ORDER else len(SLOW_ORDER)

    items.sort(key=key)
