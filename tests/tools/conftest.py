"""The repo root on sys.path: ``tools`` is run from a checkout (``python -m tools.scheduler``), not installed."""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
