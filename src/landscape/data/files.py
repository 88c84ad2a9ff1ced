"""Inputs and targets from a user's tensor file, and a seeded subset of any data.

A tensor file is whatever ``torch.save`` wrote of one of:

* a mapping with ``inputs`` and ``targets`` (or ``x`` and ``y``);
* a pair ``(inputs, targets)``;
* a mapping of splits, each one of the above (the prepare stage's
  ``data/prepared/<dataset>/splits.pt`` holds ``train``, ``test`` and ``probe`` pairs):
  ``split`` picks one.

Inputs are a floating-point tensor (N, ...); targets a tensor (N, ...) with the same N
(int64 class labels (N,) for a cross-entropy loss, floats for a regression loss).
"""

from __future__ import annotations

import dataclasses
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from landscape.seeding import seeded_generator

__all__ = ["TensorData", "load_tensor_file", "subset"]

_KEY_PAIRS = (("inputs", "targets"), ("x", "y"))


@dataclasses.dataclass(frozen=True)
class TensorData:
    """Inputs and targets of one data source.

    Attributes:
        inputs: floating-point inputs (N, ...).
        targets: targets (N, ...).
        source: where they came from (a file, a split, a registered name), for messages
            and records.
    """

    inputs: Tensor
    targets: Tensor
    source: str

    def __post_init__(self) -> None:
        if not isinstance(self.inputs, Tensor) or not self.inputs.is_floating_point() or self.inputs.ndim < 2:
            raise ValueError(f"{self.source}: inputs must be a floating-point tensor (N, ...) with N examples, got "
                             f"{_describe(self.inputs)}")
        if not isinstance(self.targets, Tensor) or self.targets.ndim < 1:
            raise ValueError(f"{self.source}: targets must be a tensor (N, ...), got {_describe(self.targets)}")
        if self.targets.shape[0] != self.inputs.shape[0]:
            raise ValueError(f"{self.source}: inputs hold {self.inputs.shape[0]} examples {tuple(self.inputs.shape)} but targets "
                             f"{self.targets.shape[0]} {tuple(self.targets.shape)}; expected the same N")
        if self.inputs.shape[0] == 0:
            raise ValueError(f"{self.source}: holds no examples")

    def __len__(self) -> int:
        return int(self.inputs.shape[0])

    def to_dict(self) -> dict[str, Any]:
        """Source, size and shapes, for a result's record of its data."""
        return {"source": self.source, "num_examples": len(self), "input_shape": list(self.inputs.shape[1:]),
                "target_shape": list(self.targets.shape[1:]), "target_dtype": str(self.targets.dtype).removeprefix("torch.")}


def _describe(obj: Any) -> str:
    if isinstance(obj, Tensor):
        return f"a {str(obj.dtype).removeprefix('torch.')} tensor of shape {tuple(obj.shape)}"
    return f"a {type(obj).__name__}"


def _pair(obj: Any) -> tuple[Any, Any] | None:
    if isinstance(obj, (tuple, list)) and len(obj) == 2:
        return obj[0], obj[1]
    if isinstance(obj, Mapping):
        for a, b in _KEY_PAIRS:
            if a in obj and b in obj:
                return obj[a], obj[b]
    return None


def load_tensor_file(path: str | Path, split: str | None = None) -> TensorData:
    """Read inputs and targets from a ``torch.save`` file (formats in the module docstring).

    Args:
        path: the file.
        split: the split to read from a mapping of splits (required there, refused
            otherwise).

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file holds none of the formats, the split is missing or not
            wanted, or the tensors have inconsistent shapes; the message says what was found
            and what is accepted.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"data file {p} does not exist")
    try:
        saved = torch.load(p, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:  # not a torch file
        raise ValueError(f"data file {p} is not a file torch.load can read: {exc}") from None
    accepted = "a mapping with 'inputs' and 'targets' (or 'x' and 'y'), a pair (inputs, targets), or a mapping of such splits"
    pair = _pair(saved)
    if pair is not None:
        if split is not None:
            raise ValueError(f"data file {p} holds one (inputs, targets) set, not splits; drop the split {split!r}")
        return TensorData(pair[0], pair[1], str(p))
    splits = {str(k): pr for k, v in saved.items() if (pr := _pair(v)) is not None} if isinstance(saved, Mapping) else {}
    if not splits:
        keys = f" with keys {sorted(map(str, saved))}" if isinstance(saved, Mapping) else ""
        raise ValueError(f"data file {p} holds {_describe(saved)}{keys}; expected {accepted}")
    if split is None or split not in splits:
        what = "names no split" if split is None else f"has no split {split!r}"
        raise ValueError(f"data file {p} holds splits {sorted(splits)} and the request {what}; choose one of them")
    x, y = splits[split]
    return TensorData(x, y, f"{p}[{split}]")


def subset(data: TensorData, num_examples: int | None, seed: int) -> TensorData:
    """``num_examples`` examples drawn without replacement with ``seeded_generator(seed)``,
    in their original order; all of them when ``num_examples`` is None or at least N.

    Raises:
        ValueError: ``num_examples`` is not a positive int.
    """
    if num_examples is None or (isinstance(num_examples, int) and not isinstance(num_examples, bool) and num_examples >= len(data)):
        return data
    if isinstance(num_examples, bool) or not isinstance(num_examples, int) or num_examples < 1:
        raise ValueError(f"num_examples must be a positive int or None (all), got {num_examples!r}")
    keep = torch.randperm(len(data), generator=seeded_generator(seed))[:num_examples].sort().values
    return TensorData(data.inputs[keep], data.targets[keep], f"{data.source} ({num_examples} of {len(data)}, seed {seed})")
