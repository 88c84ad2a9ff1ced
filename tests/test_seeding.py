"""Seeds and generators: plain seeds as torch's manual_seed, keyed streams independent and stable."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.seeding import epoch_seed, seeded_generator, stream_seed


def test_a_plain_seed_is_torch_manual_seed():
    ours = torch.randn(5, generator=seeded_generator(7))
    ref = torch.randn(5, generator=torch.Generator().manual_seed(7))
    assert torch.equal(ours, ref)


def test_streams_are_the_seed_sequence_of_seed_and_keys_and_differ_by_key():
    expected = int(np.random.SeedSequence([3, 1]).generate_state(1, dtype=np.uint64)[0] >> 1)
    assert stream_seed(3, 1) == expected and 0 <= expected < 2**63
    draws = {k: torch.randn(4, generator=seeded_generator(3, k)) for k in range(4)}
    assert all(not torch.equal(draws[a], draws[b]) for a in draws for b in draws if a < b)
    assert torch.equal(draws[2], torch.randn(4, generator=seeded_generator(3, 2)))  # stable


def test_epoch_seeds_differ_across_epochs_and_runs():
    seeds = {epoch_seed(s, e) for s in range(5) for e in range(20)}
    assert len(seeds) == 100 and all(0 <= x < 2**63 - 1 for x in seeds)


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_keys_must_be_non_negative_ints(bad):
    with pytest.raises(ValueError, match="seeds and stream keys must be ints >= 0"):
        stream_seed(0, bad)
