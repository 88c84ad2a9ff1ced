"""Seeds and generators: the one way randomness enters the library.

Every random draw takes a generator built here from an explicit seed, never the global
torch state (STYLE: randomness is an argument), so a stage entry gives the same bytes on
every run and forked workers need not share a stream.

- ``seeded_generator(seed)``: the generator of a plain seed (``torch.Generator().manual_seed(seed)``).
- ``seeded_generator(seed, *keys)``: an independent stream of ``seed`` for each key tuple, derived by
  NumPy's ``SeedSequence`` (``stream_seed``): draws for different purposes of one run never
  overlap, whatever their sizes.
- ``epoch_seed(seed, epoch)``: the seed of epoch ``epoch`` of training run ``seed`` (data order,
  augmentation, dropout).
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["seeded_generator", "stream_seed", "epoch_seed"]

_MAX_SEED = 2**63 - 1


def stream_seed(seed: int, *keys: int) -> int:
    """A 63-bit seed for the stream ``keys`` of ``seed`` (``SeedSequence([seed, *keys])``)."""
    for value in (seed, *keys):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"seeds and stream keys must be ints >= 0, got {value!r}")
    return int(np.random.SeedSequence([int(seed), *map(int, keys)]).generate_state(1, dtype=np.uint64)[0] >> 1)


def seeded_generator(seed: int, *keys: int, device: torch.device | str | None = None) -> torch.Generator:
    """A torch generator on ``device`` (CPU by default) seeded by ``seed``, or by the stream
    ``keys`` of ``seed`` when keys are given."""
    value = stream_seed(seed, *keys) if keys else int(seed)
    return torch.Generator(device=device if device is not None else "cpu").manual_seed(value)


def epoch_seed(seed: int, epoch: int) -> int:
    """Seed of the generator that drives epoch ``epoch`` of run ``seed``."""
    return (seed * 1_000_003 + epoch * 7919 + 17) % _MAX_SEED
