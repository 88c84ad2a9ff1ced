"""Deterministic train/test/probe splits and train-only input normalisation.

:func:`make_splits` partitions a :class:`~landscape.data.base.Dataset` with one seeded
``torch.Generator``:

1. test rows: ``round(test_fraction * N)`` rows, stratified by class (per-class counts
   are the largest-remainder apportionment of the proportional quotas, so each class
   gets its quota rounded up or down); or the official test split with
   ``official_split=True``;
2. train rows: the rest, optionally cut to ``max_train`` rows (again stratified);
3. probe rows: a fixed subset of the *train* split of size ``min(probe_size, n_train)``
   (stratified), on which curvature and landscape probes are evaluated.

The test selection happens first, so the test split does not depend on ``max_train`` or
``probe_size``. Rows within each split are in a seeded random order.

Normalisation (``normalize=True``): per-channel mean and standard deviation (population,
over examples and pixels; per feature for (N, D) data) computed on the train split only
and applied to all three splits; a channel with zero spread on the train split is only
centred (its std is recorded as 1). The statistics are stored in ``meta["normalization"]``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
from torch import Tensor

from landscape.data.base import Dataset, content_hash
from landscape.seeding import seeded_generator

__all__ = ["Splits", "make_splits", "channel_stats", "apply_normalization", "stratified_choice"]


@dataclasses.dataclass(frozen=True)
class Splits:
    """The three splits of one data set.

    Attributes:
        train: (x, y) of the train split.
        test: (x, y) of the test split.
        probe: (x, y) of the probe subset, rows of ``train``.
        train_index: int64 (n_train,) row indices into the source data set.
        test_index: int64 (n_test,) row indices into the source data set.
        probe_index: int64 (n_probe,) row indices into the *train split*
            (``probe[0] == train[0][probe_index]``).
        meta: Settings that produced the splits (seed, fractions, sizes, dataset name) and,
            if normalised, ``normalization = {"mean": [...], "std": [...]}``.
    """

    train: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]
    probe: tuple[Tensor, Tensor]
    train_index: Tensor
    test_index: Tensor
    probe_index: Tensor
    meta: dict[str, Any]

    def hashes(self) -> dict[str, str]:
        """Content hash of (x, y) of each split."""
        return {"train": content_hash(*self.train), "test": content_hash(*self.test),
                "probe": content_hash(*self.probe)}

    def to_dict(self) -> dict[str, Any]:
        """Sizes, content hashes and ``meta``, for the prepare stage's JSON metrics."""
        return {"num_train": int(self.train[1].shape[0]), "num_test": int(self.test[1].shape[0]),
                "num_probe": int(self.probe[1].shape[0]), "content_hash": self.hashes(), "meta": dict(self.meta)}


def stratified_choice(labels: Tensor, k: int, generator: torch.Generator,
                      stratify: bool = True) -> tuple[Tensor, Tensor]:
    """Split positions ``0..n-1`` into k chosen and n - k others, both in random order.

    With ``stratify`` class c gets floor(k n_c / n) or one more (largest remainders, ties
    broken at random), so chosen class frequencies match the pool's to within one example.

    Args:
        labels: int64 (n,) labels of the pool.
        k: Number to choose, 0 <= k <= n.
        generator: CPU generator (consumed).
        stratify: Whether to stratify by label; otherwise a uniform random subset.

    Returns:
        ``(chosen, rest)`` int64 position tensors.
    """
    n = int(labels.shape[0])
    if not 0 <= k <= n:
        raise ValueError(f"cannot choose {k} of {n} items")
    perm = torch.randperm(n, generator=generator)
    if not stratify or n == 0:
        return perm[:k], perm[k:]
    shuffled = labels[perm]
    num_classes = int(shuffled.max()) + 1
    counts = torch.bincount(shuffled, minlength=num_classes)
    quota = counts * k // n  # exact integer floors
    remainder = counts * k - quota * n  # numerators of the fractional parts
    class_order = torch.randperm(num_classes, generator=generator)  # random tie-break
    ranked = class_order[torch.argsort(-remainder[class_order], stable=True)]
    quota[ranked[: k - int(quota.sum())]] += 1
    # rank of each shuffled item among the items of its class (0, 1, ...)
    order = torch.argsort(shuffled, stable=True)
    starts = torch.cumsum(counts, 0) - counts
    rank = torch.empty(n, dtype=torch.int64)
    rank[order] = torch.arange(n) - starts[shuffled[order]]
    take = rank < quota[shuffled]
    return perm[take], perm[~take]


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and population std of x (N, C, H, W), or per-feature for (N, D).

    Computed in float64 and returned in x's dtype, shape (C,) or (D,). Zero std -> 1.
    """
    if x.ndim not in (2, 4) or x.shape[0] == 0:
        raise ValueError(f"expected a non-empty (N, D) or (N, C, H, W) tensor, got {tuple(x.shape)}")
    dims = (0,) if x.ndim == 2 else (0, 2, 3)
    x64 = x.to(torch.float64)
    mean = x64.mean(dim=dims)
    std = x64.std(dim=dims, correction=0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return mean.to(x.dtype), std.to(x.dtype)


def apply_normalization(x: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """(x - mean) / std per channel (axis 1), returning a new tensor."""
    shape = (1, -1) + (1,) * (x.ndim - 2)
    return (x - mean.reshape(shape).to(x)) / std.reshape(shape).to(x)


def _check_fraction(test_fraction: float) -> None:
    if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be a number in (0, 1), got {test_fraction!r}")


def make_splits(ds: Dataset, test_fraction: float = 0.2, probe_size: int = 1000, seed: int = 0,
                max_train: int | None = None, *, stratify: bool = True, normalize: bool = False,
                official_split: bool = False) -> Splits:
    """Deterministic train/test/probe splits of ``ds`` (see the module docstring).

    Args:
        ds: The data set.
        test_fraction: Fraction of rows for the test split, in (0, 1); the count is
            rounded to the nearest integer and must leave both splits non-empty. Unused
            with ``official_split``.
        probe_size: Requested probe size (>= 0); the probe has min(probe_size, n_train) rows.
        seed: Seed of the ``torch.Generator`` driving every choice.
        max_train: Optional cap (>= 1) on the number of train rows.
        stratify: Keep class proportions in every selection.
        normalize: Standardise inputs per channel with train-split statistics.
        official_split: Use ``ds.meta["official_split"]`` (official train rows, then
            official test rows) instead of a random test selection.

    Returns:
        :class:`Splits`.
    """
    _check_fraction(test_fraction)
    if isinstance(probe_size, bool) or not isinstance(probe_size, int) or probe_size < 0:
        raise ValueError(f"probe_size must be an int >= 0, got {probe_size!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if max_train is not None and (isinstance(max_train, bool) or not isinstance(max_train, int) or max_train < 1):
        raise ValueError(f"max_train must be None or an int >= 1, got {max_train!r}")
    n = len(ds)
    gen = seeded_generator(seed)

    if official_split:
        sizes = ds.meta.get("official_split")
        if not isinstance(sizes, dict) or not {"train", "test"} <= set(sizes):
            raise ValueError(f"official_split=True needs meta['official_split'] = {{'train': n, 'test': n}}; "
                             f"data set {ds.name!r} has {sizes!r}")
        n_off_train, n_off_test = int(sizes["train"]), int(sizes["test"])
        if n_off_train < 1 or n_off_test < 1 or n_off_train + n_off_test != n:
            raise ValueError(f"official_split sizes {sizes} must both be >= 1 and sum to the {n} rows of {ds.name!r}")
        pool = torch.randperm(n_off_train, generator=gen)
        test_index = n_off_train + torch.randperm(n_off_test, generator=gen)
    else:
        n_test = math.floor(test_fraction * n + 0.5)
        if not 1 <= n_test <= n - 1:
            raise ValueError(f"test_fraction={test_fraction} of {n} rows gives {n_test} test rows; "
                             f"need between 1 and {n - 1}")
        test_pos, pool = stratified_choice(ds.y, n_test, gen, stratify)
        test_index = test_pos

    if max_train is not None and max_train < pool.shape[0]:
        keep, _ = stratified_choice(ds.y[pool], max_train, gen, stratify)
        train_index = pool[keep]
    else:
        train_index = pool
    n_train = int(train_index.shape[0])
    probe_index, _ = stratified_choice(ds.y[train_index], min(probe_size, n_train), gen, stratify)

    x_train, x_test = ds.x[train_index], ds.x[test_index]
    meta: dict[str, Any] = {
        "dataset": ds.name, "seed": seed, "test_fraction": float(test_fraction), "probe_size": probe_size,
        "max_train": max_train, "stratify": stratify, "official_split": official_split,
        "num_train": n_train, "num_test": int(test_index.shape[0]), "num_probe": int(probe_index.shape[0]),
    }
    if normalize:
        mean, std = channel_stats(x_train)
        x_train, x_test = apply_normalization(x_train, mean, std), apply_normalization(x_test, mean, std)
        meta["normalization"] = {"mean": mean.tolist(), "std": std.tolist(), "computed_on": "train"}
    y_train = ds.y[train_index]
    return Splits(
        train=(x_train, y_train),
        test=(x_test, ds.y[test_index]),
        probe=(x_train[probe_index], y_train[probe_index]),
        train_index=train_index,
        test_index=test_index,
        probe_index=probe_index,
        meta=meta,
    )
