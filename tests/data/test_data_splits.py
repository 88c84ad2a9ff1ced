"""make_splits: partition, stratification, probe subset, determinism, normalisation, errors."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.data import Dataset, apply_normalization, channel_stats, make_splits
from landscape.data.splits import stratified_choice

CLASS_SIZES = [50, 30, 17, 3]


def _imbalanced(image: bool = False, seed: int = 0) -> Dataset:
    gen = torch.Generator().manual_seed(seed)
    y = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(CLASS_SIZES)])
    y = y[torch.randperm(len(y), generator=gen)]
    n = len(y)
    x = torch.rand(n, 2, 3, 3, generator=gen) if image else torch.randn(n, 5, generator=gen) * 3 + 1
    return Dataset(x=x, y=y, num_classes=4, meta={"name": "imbalanced"})


def _assert_within_one_of_quota(selected_labels: torch.Tensor, pool_labels: torch.Tensor, k: int) -> None:
    got = torch.bincount(selected_labels, minlength=4).to(torch.float64)
    quota = torch.bincount(pool_labels, minlength=4).to(torch.float64) * k / len(pool_labels)
    assert ((got - quota).abs() < 1).all(), (got, quota)
    assert int(got.sum()) == k


def test_partition_sizes_and_stratification():
    ds = _imbalanced()
    s = make_splits(ds, test_fraction=0.3, probe_size=20, seed=1)
    n = len(ds)
    train, test = s.train_index.tolist(), s.test_index.tolist()
    assert len(test) == round(0.3 * n) and len(train) == n - len(test)
    assert not set(train) & set(test) and set(train) | set(test) == set(range(n))
    assert len(set(train)) == len(train)
    _assert_within_one_of_quota(s.test[1], ds.y, len(test))
    _assert_within_one_of_quota(s.probe[1], s.train[1], 20)
    assert torch.equal(s.train[0], ds.x[s.train_index]) and torch.equal(s.test[1], ds.y[s.test_index])


def test_probe_is_fixed_subset_of_train():
    ds = _imbalanced()
    s = make_splits(ds, probe_size=15, seed=2)
    assert s.probe_index.unique().numel() == 15
    assert int(s.probe_index.max()) < s.train[0].shape[0]
    assert torch.equal(s.probe[0], s.train[0][s.probe_index]) and torch.equal(s.probe[1], s.train[1][s.probe_index])
    assert torch.equal(make_splits(ds, probe_size=15, seed=2).probe_index, s.probe_index)
    assert make_splits(ds, probe_size=10_000, seed=2).probe[0].shape[0] == s.train[0].shape[0]  # min(probe, n_train)
    empty = make_splits(ds, probe_size=0, seed=2)
    assert empty.probe[0].shape == (0, 5) and empty.probe[1].shape == (0,)


def test_determinism_and_seed_dependence():
    ds = _imbalanced()
    a, b = make_splits(ds, seed=4, max_train=40), make_splits(ds, seed=4, max_train=40)
    assert all(torch.equal(u, v) for u, v in [(a.train_index, b.train_index), (a.test_index, b.test_index),
                                               (a.probe_index, b.probe_index)])
    assert a.to_dict() == b.to_dict()
    c = make_splits(ds, seed=5, max_train=40)
    assert set(c.test_index.tolist()) != set(a.test_index.tolist())


def test_test_split_does_not_depend_on_max_train_or_probe_size():
    ds = _imbalanced()
    full = make_splits(ds, seed=3, probe_size=5)
    capped = make_splits(ds, seed=3, probe_size=50, max_train=25)
    assert torch.equal(full.test_index, capped.test_index)
    assert capped.train[0].shape[0] == 25
    assert set(capped.train_index.tolist()) <= set(full.train_index.tolist())
    _assert_within_one_of_quota(capped.train[1], full.train[1], 25)
    assert capped.probe[0].shape[0] == 25
    assert make_splits(ds, seed=3, max_train=10_000).train[0].shape[0] == full.train[0].shape[0]


@pytest.mark.parametrize("stratify", [True, False])
def test_every_row_equally_likely_in_test_over_seeds(stratify):
    """Inclusion frequency of each row over 400 seeds matches its probability (5 standard errors).

    Stratified: a row of class c is in the test split with probability E[quota_c] / n_c, where
    quota_c is floor(k n_c / n) or that plus one; the average of the realised per-class
    quotas estimates E[quota_c]. Unstratified: probability k / n for every row.
    """
    ds = _imbalanced()
    n, seeds = len(ds), 400
    k = round(0.2 * n)
    hits = torch.zeros(n, dtype=torch.float64)
    quota_sum = torch.zeros(4, dtype=torch.float64)
    for seed in range(seeds):
        s = make_splits(ds, test_fraction=0.2, probe_size=0, seed=seed, stratify=stratify)
        hits[s.test_index] += 1
        quota_sum += torch.bincount(s.test[1], minlength=4).to(torch.float64)
    sizes = torch.tensor(CLASS_SIZES, dtype=torch.float64)
    p = (quota_sum / seeds / sizes)[ds.y] if stratify else torch.full((n,), k / n, dtype=torch.float64)
    se = torch.sqrt(p * (1 - p) / seeds).clamp(min=1 / seeds)
    assert ((hits / seeds - p).abs() < 5 * se).all()


def test_unstratified_split_is_still_a_partition():
    ds = _imbalanced()
    s = make_splits(ds, test_fraction=0.25, seed=0, stratify=False, max_train=30, probe_size=7)
    assert not set(s.train_index.tolist()) & set(s.test_index.tolist())
    assert (s.train[0].shape[0], s.test[0].shape[0], s.probe[0].shape[0]) == (30, 25, 7)


@pytest.mark.parametrize("image", [True, False])
def test_normalization_uses_train_statistics_only(image):
    ds = _imbalanced(image=image)
    raw = make_splits(ds, seed=0)
    s = make_splits(ds, seed=0, normalize=True)
    dims = (0, 2, 3) if image else (0,)
    x_train = raw.train[0].to(torch.float64)
    mean_ref = x_train.mean(dim=dims)
    std_ref = x_train.std(dim=dims, correction=0)
    norm = s.meta["normalization"]
    assert norm["computed_on"] == "train"
    torch.testing.assert_close(torch.tensor(norm["mean"], dtype=torch.float64), mean_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(torch.tensor(norm["std"], dtype=torch.float64), std_ref, rtol=1e-6, atol=1e-7)
    # the train split is standardised exactly; test and probe use the same (train) statistics
    t = s.train[0].to(torch.float64)
    torch.testing.assert_close(t.mean(dim=dims), torch.zeros_like(mean_ref), rtol=0, atol=1e-6)
    torch.testing.assert_close(t.std(dim=dims, correction=0), torch.ones_like(std_ref), rtol=0, atol=1e-6)
    shape = (1, -1) + (1,) * (ds.x.ndim - 2)
    back = s.test[0].to(torch.float64) * std_ref.reshape(shape) + mean_ref.reshape(shape)
    torch.testing.assert_close(back, raw.test[0].to(torch.float64), rtol=0, atol=1e-5)
    assert torch.equal(s.probe[0], s.train[0][s.probe_index])
    # the test split's own statistics differ, so they were not used
    assert not torch.allclose(raw.test[0].to(torch.float64).mean(dim=dims), mean_ref, atol=1e-3)


def test_constant_channel_is_only_centred():
    x = torch.stack([torch.full((10,), 0.5), torch.linspace(0, 1, 10)], dim=1)
    mean, std = channel_stats(x)
    assert std[0] == 1.0 and mean[0] == 0.5
    out = apply_normalization(x, mean, std)
    assert torch.equal(out[:, 0], torch.zeros(10))
    with pytest.raises(ValueError, match=r"expected a non-empty \(N, D\) or \(N, C, H, W\) tensor, got \(0, 2\)"):
        channel_stats(torch.zeros(0, 2))


def test_official_split_mode():
    ds = _imbalanced()
    ds = Dataset(x=ds.x, y=ds.y, num_classes=4, meta={"name": "imb", "official_split": {"train": 80, "test": 20}})
    s = make_splits(ds, official_split=True, probe_size=10, seed=0, max_train=50)
    assert sorted(s.test_index.tolist()) == list(range(80, 100))
    assert s.train[0].shape[0] == 50 and int(s.train_index.max()) < 80
    with pytest.raises(ValueError, match=r"official_split=True needs meta\['official_split'\].*'imbalanced' has None"):
        make_splits(_imbalanced(), official_split=True)
    bad = Dataset(x=ds.x, y=ds.y, num_classes=4, meta={"name": "imb", "official_split": {"train": 90, "test": 0}})
    with pytest.raises(ValueError, match=r"official_split sizes .* must both be >= 1 and sum to the 100 rows"):
        make_splits(bad, official_split=True)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"test_fraction": 0.0}, r"test_fraction must be a number in \(0, 1\), got 0.0"),
        ({"test_fraction": 1.0}, r"test_fraction must be a number in \(0, 1\), got 1.0"),
        ({"test_fraction": True}, r"test_fraction must be a number in \(0, 1\), got True"),
        ({"test_fraction": 0.001}, r"test_fraction=0.001 of 100 rows gives 0 test rows; need between 1 and 99"),
        ({"test_fraction": 0.999}, r"gives 100 test rows"),
        ({"probe_size": -1}, "probe_size must be an int >= 0, got -1"),
        ({"seed": -2}, "seed must be a non-negative int, got -2"),
        ({"max_train": 0}, "max_train must be None or an int >= 1, got 0"),
    ],
)
def test_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_splits(_imbalanced(), **kwargs)


def test_stratified_choice_edges():
    gen = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 1, 1, 1, 2])
    chosen, rest = stratified_choice(labels, 0, gen)
    assert chosen.numel() == 0 and sorted(rest.tolist()) == list(range(6))
    chosen, rest = stratified_choice(labels, 6, gen)
    assert sorted(chosen.tolist()) == list(range(6)) and rest.numel() == 0
    chosen, _ = stratified_choice(labels, 3, gen)  # quotas 1, 1.5, 0.5 -> 1 + (2,0 or 1,1)
    counts = torch.bincount(labels[chosen], minlength=3)
    assert int(counts[0]) == 1 and int(counts.sum()) == 3 and int(counts[1]) in (1, 2)
    with pytest.raises(ValueError, match="cannot choose 7 of 6 items"):
        stratified_choice(labels, 7, gen)


def test_to_dict_reports_sizes_and_hashes():
    ds = _imbalanced()
    d = make_splits(ds, seed=0, probe_size=9).to_dict()
    assert (d["num_train"], d["num_test"], d["num_probe"]) == (80, 20, 9)
    assert set(d["content_hash"]) == {"train", "test", "probe"}
    assert d["meta"]["dataset"] == "imbalanced" and d["meta"]["seed"] == 0
    assert all(len(h) == 64 for h in d["content_hash"].values())
    assert math.isclose(d["meta"]["test_fraction"], 0.2)
