"""Reading ``params.yaml``: sections with errors that name the missing key path."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from landscape.pipeline.layout import Layout
from landscape.schema import ConfigError

__all__ = ["load_params", "section", "experiment_dataset", "fingerprint"]


def load_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read ``params.yaml`` (YAML merge keys resolved); ``path`` defaults to the layout's."""
    p = Path(path) if path is not None else Layout().params_file
    if not p.is_file():
        raise FileNotFoundError(f"params file {p} does not exist")
    with open(p, encoding="utf-8") as fh:
        loaded = yaml.safe_load(fh)
    if not isinstance(loaded, dict):
        raise ConfigError(f"{p} must hold a mapping of sections, got {type(loaded).__name__}")
    return loaded


def section(params: Mapping[str, Any], *keys: str) -> Any:
    """``params[k0][k1]...`` with an error naming the missing key path."""
    node: Any = params
    for i, key in enumerate(keys):
        if not isinstance(node, Mapping) or key not in node:
            have = sorted(node) if isinstance(node, Mapping) else []
            raise ConfigError(f"missing key {'.'.join(keys[: i + 1])} in params.yaml; available here: {have}")
        node = node[key]
    return node


def experiment_dataset(params: Mapping[str, Any], experiment: str) -> str:
    """The data set key of an experiment group (checked to exist under ``datasets``)."""
    key = section(params, "experiments", experiment, "dataset")
    section(params, "datasets", key)
    return str(key)


def logs_tensorboard(params: Mapping[str, Any], experiment: str) -> bool:
    """Whether any config of ``experiments.<experiment>`` sets ``train.tensorboard: true``: the
    group's train entries then declare ``tb/`` as an output (an entry with it off leaves the
    directory empty)."""
    configs = section(params, "experiments", experiment).get("configs") or {}
    return any(bool(((spec or {}).get("train") or {}).get("tensorboard", False)) for spec in configs.values())


def fingerprint(*parts: Any) -> str:
    """Stable SHA-256 of JSON-serialisable parts (config, seed, data hash)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()
