"""How a prepared data set is loaded and split (the ``datasets.<key>`` section of params)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from landscape.schema import rule

__all__ = ["DataConfig"]


@dataclass(frozen=True)
class DataConfig:
    """One prepared data set: which loader, its options, and how it is split.

    Attributes:
        name: registered data set name (see ``landscape.data.DATASETS``).
        options: keyword arguments of the loader (e.g. ``image_size``, ``n``, ``dim``).
        root: directory searched for data sets that live on disk.
        download: let torchvision download missing files (needs a network).
        test_fraction: share of examples held out as the test split.
        probe_size: size of the fixed probe subset of the train split (curvature is
            measured there).
        split_seed: seed of the deterministic split.
        max_train: cap on the number of training examples (``None`` for all).
        normalize: standardise inputs with train-split statistics.
        official_split: keep the data set's official train/test split (torchvision sets)
            instead of a random stratified one.
    """

    name: str
    options: Mapping[str, Any] = field(default_factory=dict)
    root: str = "data/raw"
    download: bool = False
    test_fraction: float = field(default=0.2, metadata=rule("a float in (0, 1)", lambda x: 0 < x < 1))
    probe_size: int = field(default=1000, metadata=rule("an int >= 1", lambda x: x >= 1))
    split_seed: int = 0
    max_train: int | None = field(default=None, metadata=rule("null or an int >= 1", lambda x: x is None or x >= 1))
    normalize: bool = True
    official_split: bool = False
