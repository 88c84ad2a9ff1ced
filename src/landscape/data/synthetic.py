"""Synthetic classification sets with known structure: Gaussian mixtures and teacher labels.

* ``gaussian_mixture``: K class means with a prescribed separation and isotropic unit
  noise, x = mu_y + eps, eps ~ N(0, I_D) (the controlled-dimensionality mixtures of the
  project plan). For K <= D + 1 the means are the vertices of a regular simplex with
  every pairwise distance equal to ``separation``, randomly rotated into R^D; for
  K > D + 1 (no regular simplex fits) they are K independent uniform points on the sphere
  of radius separation / sqrt(2) (pairwise distance separation on average in high D; the
  realised minimum is in ``meta["min_mean_distance"]``).
* ``teacher_student``: x ~ N(0, I_D) labelled by a random one-hidden-layer tanh teacher,
  y = argmax_k (W2 tanh(W1 x))_k with W1 ~ N(0, 1/D), W2 ~ N(0, 1/width) (the
  teacher-student setting of Gardner & Derrida, 1989; Saad & Solla, 1995). Class
  frequencies follow the teacher and need not be balanced (``meta["class_counts"]``).

All draws come from one ``torch.Generator`` seeded with ``seed``, in float64 on CPU; the
inputs are returned as float32 and teacher labels are computed from those float32
inputs, so ``meta["teacher"]`` reproduces every label exactly.
"""

from __future__ import annotations

import math

import torch

from landscape.data.base import Dataset
from landscape.data.registry import register_dataset
from landscape.seeding import seeded_generator

__all__ = ["gaussian_mixture", "teacher_student", "simplex_means"]


def _positive_int(name: str, value: object, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _seed(seed: object) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    return seed


def _random_orthonormal(rows: int, cols: int, generator: torch.Generator) -> torch.Tensor:
    """(rows, cols) matrix with orthonormal columns, Haar-distributed (QR with sign fix)."""
    q, r = torch.linalg.qr(torch.randn(rows, cols, generator=generator, dtype=torch.float64))
    return q * torch.sign(torch.diagonal(r)).where(torch.diagonal(r) != 0, torch.ones(()))


def simplex_means(num_classes: int, dim: int, separation: float, generator: torch.Generator) -> torch.Tensor:
    """Vertices of a regular simplex centred at 0, all pairwise distances ``separation``.

    Args:
        num_classes: K, at most ``dim + 1``.
        dim: Ambient dimension D.
        separation: Edge length (>= 0).
        generator: Source of the random rotation.

    Returns:
        float64 (K, D) means.
    """
    if num_classes > dim + 1:
        raise ValueError(f"a regular simplex with {num_classes} vertices needs dim >= {num_classes - 1}, got {dim}")
    k = num_classes
    centred = torch.eye(k, dtype=torch.float64) - 1.0 / k  # rows e_i - 1/K: pairwise distance sqrt(2)
    # orthonormal basis of the (K-1)-dim row space: eigenvectors of the projector with eigenvalue 1
    _, vecs = torch.linalg.eigh(centred)
    coords = centred @ vecs[:, 1:]  # (K, K-1), distances preserved
    rotation = _random_orthonormal(dim, k - 1, generator)  # (D, K-1)
    return (coords @ rotation.T) * (separation / math.sqrt(2.0))


@register_dataset("gaussian_mixture", uses_root=False)
def gaussian_mixture(num_classes: int = 10, dim: int = 32, separation: float = 4.0, n: int = 2000,
                     seed: int = 0) -> Dataset:
    """Isotropic Gaussian mixture, x = mu_y + N(0, I), balanced classes, (N, D) float32.

    Args:
        num_classes: K >= 2.
        dim: Input dimension D >= 1.
        separation: Distance between class means (simplex layout, K <= D + 1) or sqrt(2)
            times their radius (sphere layout, K > D + 1), in noise standard deviations.
        n: Number of examples; class sizes differ by at most one.
        seed: Seed of the generator.
    """
    _positive_int("num_classes", num_classes, 2)
    _positive_int("dim", dim)
    _positive_int("n", n)
    _seed(seed)
    if isinstance(separation, bool) or not isinstance(separation, (int, float)) or not (
            math.isfinite(separation) and separation >= 0):
        raise ValueError(f"separation must be a finite number >= 0, got {separation!r}")
    gen = seeded_generator(seed)
    if num_classes <= dim + 1:
        layout = "simplex"
        means = simplex_means(num_classes, dim, float(separation), gen)
    else:
        layout = "sphere"
        raw = torch.randn(num_classes, dim, generator=gen, dtype=torch.float64)
        means = raw / raw.norm(dim=1, keepdim=True) * (float(separation) / math.sqrt(2.0))
    y = (torch.arange(n) % num_classes)[torch.randperm(n, generator=gen)]
    x = means[y] + torch.randn(n, dim, generator=gen, dtype=torch.float64)
    dists = torch.cdist(means, means)
    min_dist = float(dists[~torch.eye(num_classes, dtype=torch.bool)].min())
    meta = {"name": "gaussian_mixture", "num_classes": num_classes, "dim": dim, "separation": float(separation),
            "n": n, "seed": seed, "mean_layout": layout, "means": means.to(torch.float32),
            "min_mean_distance": min_dist, "noise_std": 1.0}
    return Dataset(x=x.to(torch.float32), y=y.to(torch.int64), num_classes=num_classes, meta=meta)


def teacher_logits(x: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor) -> torch.Tensor:
    """Teacher output W2 tanh(W1 x) for inputs x (N, D): logits (N, K), in float64."""
    return torch.tanh(x.to(torch.float64) @ w1.to(torch.float64).T) @ w2.to(torch.float64).T


@register_dataset("teacher_student", uses_root=False)
def teacher_student(dim: int = 32, n: int = 2000, num_classes: int = 10, teacher_width: int = 64,
                    seed: int = 0) -> Dataset:
    """Gaussian inputs labelled by a random tanh teacher MLP, (N, D) float32.

    Args:
        dim: Input dimension D >= 1.
        n: Number of examples.
        num_classes: K >= 2 teacher outputs; label = argmax.
        teacher_width: Hidden width of the teacher.
        seed: Seed of the generator.
    """
    _positive_int("dim", dim)
    _positive_int("n", n)
    _positive_int("num_classes", num_classes, 2)
    _positive_int("teacher_width", teacher_width)
    _seed(seed)
    gen = seeded_generator(seed)
    w1 = torch.randn(teacher_width, dim, generator=gen, dtype=torch.float64) / math.sqrt(dim)
    w2 = torch.randn(num_classes, teacher_width, generator=gen, dtype=torch.float64) / math.sqrt(teacher_width)
    x = torch.randn(n, dim, generator=gen, dtype=torch.float64).to(torch.float32)
    y = teacher_logits(x, w1, w2).argmax(dim=1)
    meta = {"name": "teacher_student", "dim": dim, "n": n, "num_classes": num_classes,
            "teacher_width": teacher_width, "seed": seed, "teacher_activation": "tanh",
            "teacher": {"w1": w1, "w2": w2},
            "class_counts": torch.bincount(y, minlength=num_classes).tolist()}
    return Dataset(x=x, y=y.to(torch.int64), num_classes=num_classes, meta=meta)
