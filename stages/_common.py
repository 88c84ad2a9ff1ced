"""Imported first by every stage script: puts this checkout's src/ on sys.path (installed or
not) and imports landscape, which pins PyTorch's CPU kernels before torch runs anything.

Stage scripts are thin: argv -> params section -> ``landscape.pipeline.<stage>.run`` -> write
(``landscape.pipeline.cli.stage_main``).
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:
    sys.path.insert(0, str(ROOT / "src"))

import landscape  # noqa: E402,F401
