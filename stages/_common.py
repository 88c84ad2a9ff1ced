"""Shared plumbing of the stage scripts: the checkout's src/ on sys.path, the pipeline layer's
params readers, layout and runtime, and the one-line error exit.

Stage scripts are thin: argv -> params section -> ``landscape.pipeline.<stage>.run`` -> write.
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # stages run from a checkout, installed or not
    sys.path.insert(0, str(ROOT / "src"))

from landscape.pipeline.layout import Layout  # noqa: E402
from landscape.pipeline.params import (  # noqa: E402,F401
    experiment_dataset,
    fingerprint,
    load_params,
    section,
)
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device  # noqa: E402,F401
from landscape.schema import ConfigError  # noqa: E402,F401

LAYOUT = Layout(ROOT)


def prepared_path(dataset_key: str) -> Path:
    return LAYOUT.prepared(dataset_key)


def run_dir(experiment: str, config: str, seed: int) -> Path:
    return LAYOUT.run(experiment, config, seed).dir


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error for the user and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)
