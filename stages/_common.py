"""Shared plumbing of the stage scripts: params, paths, run identities.

Stage scripts are thin: they read ``params.yaml``, validate their section into the frozen
config objects of ``landscape.config``, call one library function and write outputs
atomically. Nothing here computes results.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT / "src") not in sys.path:  # stages run from a checkout, installed or not
    sys.path.insert(0, str(ROOT / "src"))

from landscape.config import ConfigError, DataConfig, RunConfig, parse_config  # noqa: E402

PARAMS_FILE = ROOT / "params.yaml"


def load_params(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """Read ``params.yaml`` (YAML merge keys resolved)."""
    p = Path(path) if path is not None else PARAMS_FILE
    if not p.is_file():
        raise FileNotFoundError(f"params file {p} does not exist")
    with open(p, encoding="utf-8") as fh:
        return yaml.safe_load(fh)


def section(params: dict[str, Any], *keys: str) -> Any:
    """``params[k0][k1]...`` with an error naming the missing key path."""
    node: Any = params
    for i, key in enumerate(keys):
        if not isinstance(node, dict) or key not in node:
            have = sorted(node) if isinstance(node, dict) else []
            raise ConfigError(f"missing key {'.'.join(keys[: i + 1])} in params.yaml; available here: {have}")
        node = node[key]
    return node


def data_config(params: dict[str, Any], key: str) -> DataConfig:
    return parse_config(DataConfig, section(params, "datasets", key), f"datasets.{key}")


def experiment_dataset(params: dict[str, Any], experiment: str) -> str:
    key = section(params, "experiments", experiment, "dataset")
    section(params, "datasets", key)
    return key


def run_config(params: dict[str, Any], experiment: str, config: str) -> RunConfig:
    where = f"experiments.{experiment}.configs.{config}"
    return parse_config(RunConfig, section(params, "experiments", experiment, "configs", config), where)


def prepared_path(dataset_key: str) -> Path:
    return ROOT / "data" / "prepared" / dataset_key / "splits.pt"


def run_dir(experiment: str, config: str, seed: int) -> Path:
    return ROOT / "runs" / experiment / config / f"seed{seed}"


def fingerprint(*parts: Any) -> str:
    """Stable SHA-256 of JSON-serialisable parts (config, seed, data hash)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def configure_torch() -> None:
    """Deterministic algorithms and a fixed CPU thread count (``LANDSCAPE_THREADS``, default 1).

    One thread by default: small models gain little from more on a 2-core machine, and a
    fixed count keeps CPU results bit-identical across machines with different core counts.
    """
    import torch

    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.set_num_threads(int(os.environ.get("LANDSCAPE_THREADS", "1")))


def pick_device():
    """``LANDSCAPE_DEVICE`` if set, else CUDA when available, else CPU."""
    import torch

    return torch.device(os.environ.get("LANDSCAPE_DEVICE") or ("cuda" if torch.cuda.is_available() else "cpu"))


def fail(message: str, code: int = 2) -> None:
    """Print a one-line error for the user and exit non-zero."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(code)


def cpu_workers(device) -> int:
    """Forked worker processes for a stage's independent tasks: ``LANDSCAPE_WORKERS``
    (default: the CPU count, at most 2) on the CPU; 1 on an accelerator (forked workers
    cannot share a CUDA context)."""
    if getattr(device, "type", str(device)) != "cpu":
        return 1
    default = min(2, os.cpu_count() or 1)
    return max(1, int(os.environ.get("LANDSCAPE_WORKERS", default)))
