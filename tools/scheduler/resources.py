"""Per-entry resources (GPUs, CPUs, memory, time, partition) from a file keyed by stage pattern.

The file (``resources.yaml`` at the repo root by default)::

    default: {gpus: 0, cpus: 1, mem_gb: 4, time_min: 60}
    stages:
      "train_*": {gpus: 1, cpus: 4, mem_gb: 16, time_min: 720}
      "train_lm": {partition: long}          # every matching pattern applies, in file order
      "measure_*": {gpus: 1, slurm: {constraint: a100}}

An entry's resources are ``default`` updated by every pattern (``fnmatch`` on the entry's
name, e.g. ``train_h1_batch@b32-0``, or on its stage name, ``train_h1_batch``) that matches
it, later patterns over earlier ones. The SLURM executor turns them into ``sbatch`` options;
the local executor reads ``gpus`` only (one GPU per entry, CUDA_VISIBLE_DEVICES).
"""

from __future__ import annotations

import fnmatch
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from landscape.schema import Checked, ConfigError, int_at_least, number_above_zero, parse_config, rule

__all__ = ["Resources", "ResourceTable", "load_resources"]

_SLURM_OWNED = ("cpus-per-task", "mem", "time", "partition", "gpus-per-node", "gres", "job-name", "output", "error", "signal")


def _extra_sbatch_options(value: Any) -> bool:
    return isinstance(value, Mapping) and all(isinstance(k, str) and k.replace("_", "-") not in _SLURM_OWNED for k in value)


@dataclass(frozen=True)
class Resources(Checked):
    """What one entry asks of the machine or the cluster.

    Attributes:
        gpus: GPUs for the entry (SLURM ``--gpus-per-node``; locally, that many devices of its own).
        cpus: CPU cores (``--cpus-per-task``).
        mem_gb: memory in GiB (``--mem``).
        time_min: wall-time limit in minutes (``--time``); a job that reaches it is requeued and resumes.
        partition: SLURM partition (None: the cluster's default).
        slurm: further ``sbatch`` options by name (``account``, ``qos``, ``constraint``, ...), passed as given.
    """

    gpus: int = field(default=0, metadata=int_at_least(0))
    cpus: int = field(default=1, metadata=int_at_least(1))
    mem_gb: float = field(default=4.0, metadata=number_above_zero())
    time_min: int = field(default=60, metadata=int_at_least(1))
    partition: str | None = field(default=None, metadata=rule("null or a partition name", lambda x: x is None or bool(x)))
    slurm: Mapping[str, Any] = field(default_factory=dict, metadata=rule(
        f"a mapping of further sbatch options (not {', '.join(_SLURM_OWNED)}: those come from the fields above)",
        _extra_sbatch_options))


@dataclass(frozen=True)
class ResourceTable:
    """``default`` plus ``(pattern, overrides)`` in file order; :meth:`for_entry` merges them."""

    default: Mapping[str, Any] = field(default_factory=dict)
    patterns: tuple[tuple[str, Mapping[str, Any]], ...] = ()
    source: str = "<defaults>"

    def for_entry(self, name: str) -> Resources:
        """Resources of the entry ``name`` (``stage`` or ``stage@key``)."""
        stage = name.partition("@")[0]
        merged = dict(self.default)
        for pattern, overrides in self.patterns:
            if fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(stage, pattern):
                merged.update(overrides)
        return parse_config(Resources, merged, f"{self.source} (entry {name})")


def load_resources(path: str | os.PathLike[str] | None) -> ResourceTable:
    """Read and validate a resources file; ``None`` or a missing default file gives the defaults.

    Raises:
        ConfigError: a key other than ``default`` and ``stages``, or a bad value (the message
            names the file, the key and what is allowed).
    """
    if path is None:
        return ResourceTable()
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"resources file {path} does not exist")
    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    where = str(path)
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping with keys 'default' and 'stages', got {data!r}")
    unknown = sorted(set(data) - {"default", "stages"})
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {where}; allowed keys: ['default', 'stages']")
    default = data.get("default") or {}
    parse_config(Resources, default, f"{where}: default")
    stages = data.get("stages") or {}
    if not isinstance(stages, Mapping):
        raise ConfigError(f"{where}: stages must map stage patterns to resources, got {stages!r}")
    patterns = []
    for pattern, overrides in stages.items():
        parse_config(Resources, {**default, **(overrides or {})}, f"{where}: stages.{pattern}")
        patterns.append((str(pattern), dict(overrides or {})))
    return ResourceTable(dict(default), tuple(patterns), where)
