"""Shared fixtures for the curvature estimators: quadratics with known spectra (float64)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest
import torch
from torch import Tensor

from landscape.curvature.linop import DenseOperator, SymmetricOperator


@dataclass(frozen=True)
class Quadratic:
    """A dense symmetric matrix with its float64 eigen-decomposition (ascending)."""

    matrix: Tensor
    eigenvalues: Tensor
    eigenvectors: Tensor

    @property
    def dim(self) -> int:
        return int(self.matrix.shape[0])


class CountingOperator(SymmetricOperator):
    """Wraps an operator and counts operator-vector products (columns of each block), calls
    and the widest block."""

    def __init__(self, inner: SymmetricOperator):
        self.inner = inner
        self.shape = inner.shape
        self.dtype = inner.dtype
        self.device = inner.device
        self.count = 0
        self.calls = 0
        self.widest = 0

    def _matmat(self, V: Tensor) -> Tensor:
        self.count += V.shape[1]
        self.calls += 1
        self.widest = max(self.widest, V.shape[1])
        return self.inner.matmat(V)


def haar_orthogonal(P: int, seed: int) -> Tensor:
    """A Haar-random (P, P) orthogonal matrix (QR of a Gaussian, signs fixed)."""
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(P, P, generator=g, dtype=torch.float64))
    return Q * torch.sign(torch.diagonal(R))


def from_spectrum(eigenvalues: Tensor, seed: int) -> Quadratic:
    """``Q diag(lambda) Q^T`` with Haar Q; ground truth re-derived with ``torch.linalg.eigh``."""
    lam = eigenvalues.to(torch.float64)
    Q = haar_orthogonal(lam.numel(), seed)
    A = (Q * lam) @ Q.T
    A = 0.5 * (A + A.T)
    evals, evecs = torch.linalg.eigh(A)
    return Quadratic(A, evals, evecs)


def known_spectrum_values(P: int = 300, seed: int = 0) -> Tensor:
    """Clusters, one spike, a pair split by 1e-6 relative and negative eigenvalues."""
    g = torch.Generator().manual_seed(seed)
    special = torch.tensor([50.0, 10.0 * (1 + 1e-6), 10.0, 8.0, 7.5, -20.0, -19.5, -5.0, -4.5], dtype=torch.float64)
    n_rest = P - special.numel()
    n_cluster = n_rest // 3
    cluster_a = 1.0 + 1e-3 * torch.randn(n_cluster, generator=g, dtype=torch.float64)
    cluster_b = -1.0 + 1e-3 * torch.randn(n_cluster, generator=g, dtype=torch.float64)
    spread = torch.linspace(-3.0, 3.0, n_rest - 2 * n_cluster, dtype=torch.float64)
    return torch.cat([special, cluster_a, cluster_b, spread])


@pytest.fixture(scope="session")
def known_spectrum() -> Quadratic:
    """P = 300: spike 50, pair 10(1 + 1e-6) / 10, 8, 7.5, negatives down to -20, two tight clusters."""
    return from_spectrum(known_spectrum_values(300), seed=1)


@pytest.fixture(scope="session")
def random_symmetric() -> Quadratic:
    """P = 200 GOE-like matrix (entries of variance ~1/P, spectrum ~[-2, 2])."""
    g = torch.Generator().manual_seed(2)
    P = 200
    X = torch.randn(P, P, generator=g, dtype=torch.float64)
    A = (X + X.T) / math.sqrt(2 * P)
    evals, evecs = torch.linalg.eigh(A)
    return Quadratic(A, evals, evecs)


@pytest.fixture(scope="session")
def decaying_spectrum() -> Quadratic:
    """P = 100, PSD with lambda_i = i^-2: a few directions carry most of the trace."""
    lam = 1.0 / torch.arange(1, 101, dtype=torch.float64) ** 2
    return from_spectrum(lam, seed=3)


@pytest.fixture(scope="session")
def psd_spectrum() -> Quadratic:
    """P = 100, PSD with eigenvalues spread over [1e-2, 5] (log-uniform) and one at 20."""
    g = torch.Generator().manual_seed(4)
    lam = torch.exp(torch.empty(99, dtype=torch.float64).uniform_(math.log(1e-2), math.log(5.0), generator=g))
    return from_spectrum(torch.cat([torch.tensor([20.0], dtype=torch.float64), lam]), seed=5)


@pytest.fixture(scope="session")
def few_distinct() -> Quadratic:
    """P = 50 with three distinct eigenvalues 5 (x4), 3 (x10), 1 (x36): Krylov spaces break down."""
    lam = torch.cat([torch.full((4,), 5.0), torch.full((10,), 3.0), torch.full((36,), 1.0)]).to(torch.float64)
    return from_spectrum(lam, seed=6)


@pytest.fixture()
def counting():
    """Factory: wrap a dense matrix in an operator that counts products."""

    def make(matrix: Tensor) -> CountingOperator:
        return CountingOperator(DenseOperator(matrix))

    return make


@pytest.fixture(scope="session")
def outliers_and_bulk() -> Quadratic:
    """P = 1000, NN-Hessian-like: 10 outliers (a 1.6% and a 1.1% relative gap among the top 5) above a bulk near 0."""
    g = torch.Generator().manual_seed(3)
    top = torch.tensor([0.756, 0.681, 0.670, 0.641, 0.634, 0.60, 0.55, 0.5, 0.45, 0.4], dtype=torch.float64)
    return from_spectrum(torch.cat([top, 0.05 * torch.randn(990, generator=g, dtype=torch.float64)]), seed=2)
