"""Synthetic sets: Gaussian mixture geometry and noise, teacher-student labels, determinism."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.data import load_dataset
from landscape.data.synthetic import gaussian_mixture, teacher_logits, teacher_student

SEEDS = range(10)


@pytest.mark.parametrize("num_classes,dim", [(2, 1), (3, 2), (5, 4), (10, 32), (4, 50)])
def test_simplex_means_have_exact_pairwise_separation(num_classes, dim):
    ds = gaussian_mixture(num_classes=num_classes, dim=dim, separation=3.0, n=50, seed=1)
    means = ds.meta["means"].to(torch.float64)
    assert ds.meta["mean_layout"] == "simplex" and means.shape == (num_classes, dim)
    off = ~torch.eye(num_classes, dtype=torch.bool)
    torch.testing.assert_close(torch.cdist(means, means)[off], torch.full((num_classes * (num_classes - 1),), 3.0,
                                                                          dtype=torch.float64), rtol=1e-6, atol=0)
    torch.testing.assert_close(means.sum(dim=0), torch.zeros(dim, dtype=torch.float64), rtol=0, atol=1e-5)
    assert ds.meta["min_mean_distance"] == pytest.approx(3.0, rel=1e-9)


def test_sphere_layout_when_no_simplex_fits():
    ds = gaussian_mixture(num_classes=12, dim=3, separation=2.0, n=60, seed=0)
    means = ds.meta["means"].to(torch.float64)
    assert ds.meta["mean_layout"] == "sphere"
    torch.testing.assert_close(means.norm(dim=1), torch.full((12,), 2.0 / math.sqrt(2.0), dtype=torch.float64),
                               rtol=1e-6, atol=0)
    off = ~torch.eye(12, dtype=torch.bool)
    assert ds.meta["min_mean_distance"] == pytest.approx(float(torch.cdist(means, means)[off].min()), rel=1e-6)


def test_mixture_noise_is_isotropic_unit_gaussian_over_seeds():
    """Residuals x - mu_y pooled over seeds: mean 0, variance 1, no correlation (3-4 standard errors)."""
    dim, n = 6, 2000
    residuals = []
    for seed in SEEDS:
        ds = gaussian_mixture(num_classes=4, dim=dim, separation=5.0, n=n, seed=seed)
        residuals.append(ds.x.to(torch.float64) - ds.meta["means"].to(torch.float64)[ds.y])
    r = torch.cat(residuals)  # (10 n, dim)
    m = r.shape[0]
    assert r.mean(dim=0).abs().max() < 4 / math.sqrt(m)
    cov = r.T @ r / m
    var_se = math.sqrt(2 / m)
    assert (cov.diagonal() - 1).abs().max() < 4 * var_se
    assert (cov - torch.diag(cov.diagonal())).abs().max() < 4 / math.sqrt(m)


def test_mixture_labels_are_balanced_and_shuffled():
    ds = gaussian_mixture(num_classes=7, dim=3, n=100, seed=3)
    counts = ds.class_counts()
    assert int(counts.max() - counts.min()) <= 1 and int(counts.sum()) == 100
    assert not torch.equal(ds.y, torch.arange(100) % 7)


def test_zero_separation_puts_all_means_at_origin():
    ds = gaussian_mixture(num_classes=3, dim=4, separation=0.0, n=10, seed=0)
    assert torch.equal(ds.meta["means"], torch.zeros(3, 4))


@pytest.mark.parametrize("name", ["gaussian_mixture", "teacher_student"])
def test_deterministic_for_fixed_seed(name):
    a, b = load_dataset(name, seed=5, n=200), load_dataset(name, seed=5, n=200)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)
    c = load_dataset(name, seed=6, n=200)
    assert not torch.equal(a.x, c.x)
    assert a.x.dtype == torch.float32 and a.x.shape == (200, 32)


def test_teacher_labels_are_argmax_of_recorded_teacher():
    ds = teacher_student(dim=5, n=500, num_classes=4, teacher_width=16, seed=2)
    t = ds.meta["teacher"]
    assert t["w1"].shape == (16, 5) and t["w2"].shape == (4, 16)
    assert torch.equal(teacher_logits(ds.x, t["w1"], t["w2"]).argmax(dim=1), ds.y)
    assert ds.meta["class_counts"] == ds.class_counts().tolist()
    assert (ds.class_counts() > 0).sum() >= 2  # a random teacher uses several classes


def test_teacher_inputs_are_standard_gaussian_over_seeds():
    xs = torch.cat([teacher_student(dim=4, n=1000, seed=s).x.to(torch.float64) for s in SEEDS])
    m = xs.shape[0]
    assert xs.mean(dim=0).abs().max() < 4 / math.sqrt(m)
    assert (xs.var(dim=0, correction=0) - 1).abs().max() < 4 * math.sqrt(2 / m)


def test_teacher_classes_equally_likely_over_seeds():
    """By symmetry of the random teacher every class has probability 1/K; pooled over seeds."""
    k, seeds = 3, 40
    per_seed = torch.stack([teacher_student(dim=8, n=400, num_classes=k, teacher_width=32, seed=s).class_counts()
                            for s in range(seeds)]).to(torch.float64) / 400
    freq = per_seed.mean(dim=0)
    # independent teachers: the standard error comes from the spread across teachers
    se = per_seed.std(dim=0) / math.sqrt(seeds)
    assert (se > 0).all()
    assert ((freq - 1 / k).abs() < 4 * se).all()


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
        ({"dim": 0}, "dim must be an int >= 1, got 0"),
        ({"n": 0}, "n must be an int >= 1, got 0"),
        ({"separation": -1.0}, "separation must be a finite number >= 0, got -1.0"),
        ({"separation": float("nan")}, "separation must be a finite number >= 0, got nan"),
        ({"seed": -1}, "seed must be a non-negative int, got -1"),
        ({"seed": 1.5}, "seed must be a non-negative int, got 1.5"),
    ],
)
def test_mixture_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        gaussian_mixture(**kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"num_classes": 1}, "num_classes must be an int >= 2, got 1"),
        ({"teacher_width": 0}, "teacher_width must be an int >= 1, got 0"),
        ({"dim": True}, "dim must be an int >= 1, got True"),
        ({"seed": -3}, "seed must be a non-negative int, got -3"),
    ],
)
def test_teacher_argument_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        teacher_student(**kwargs)
