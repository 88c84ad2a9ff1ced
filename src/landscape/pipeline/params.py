"""Reading ``params.yaml``: sections with errors that name the missing key path."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from landscape.pipeline.layout import Layout
from landscape.schema import ConfigError

__all__ = ["load_params", "section", "experiment_dataset", "seeds_of", "group_seeds", "replication_split", "fingerprint"]


# libyaml's parser under PyYAML's safe constructor: the same document as yaml.safe_load
# (tests/pipeline/test_params.py compares every profile) in a tenth of the time; every stage
# entry reads params.yaml once (0.15 s of pure-Python parsing on paper_smoke's).
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_params(path: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Read ``params.yaml`` (YAML merge keys resolved); ``path`` defaults to the layout's."""
    p = Path(path) if path is not None else Layout().params_file
    if not p.is_file():
        raise FileNotFoundError(f"params file {p} does not exist")
    with open(p, encoding="utf-8") as fh:
        loaded = yaml.load(fh, Loader=_SAFE_LOADER)  # a safe loader
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


def seeds_of(spec: Mapping[str, Any], default: Sequence[int]) -> list[int]:
    """The seeds of one experiment group: its own ``seeds`` list, else ``default`` (the top-level ``seeds``)."""
    own = spec.get("seeds") if isinstance(spec, Mapping) else None
    return [int(s) for s in (own if own is not None else default)]


def group_seeds(params: Mapping[str, Any], group: str) -> list[int]:
    """The seeds of ``experiments.<group>``: its ``seeds`` key when set, else the top-level ``seeds``.

    A group lists more seeds than the top-level list to carry its own replication (issue
    design: effects tested on the top-level seeds, replicated on the rest).
    """
    return seeds_of(section(params, "experiments", group), section(params, "seeds"))


def replication_split(params: Mapping[str, Any], group: str) -> tuple[list[int], list[int]]:
    """``(primary, replication)`` seeds of a group: primary are those in the top-level ``seeds``
    (in the group's order), replication the group's others (empty when the group has none)."""
    top = set(section(params, "seeds"))
    seeds = group_seeds(params, group)
    return [s for s in seeds if s in top], [s for s in seeds if s not in top]


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
