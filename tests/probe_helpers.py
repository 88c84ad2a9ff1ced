"""Tiny models and data shared by the probe tests (float64, CPU, tens of parameters).

Imported as ``from probe_helpers import ...`` from any test directory (tests/conftest.py's
directory is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn


class TinyMLP(nn.Module):
    """in -> hidden (ReLU) -> hidden (ReLU) -> classes, optional BatchNorm1d after each hidden linear."""

    def __init__(self, d_in: int = 3, hidden: int = 6, classes: int = 3, bn: bool = False, depth: int = 2):
        super().__init__()
        layers: list[nn.Module] = []
        d = d_in
        for _ in range(depth):
            layers.append(nn.Linear(d, hidden))
            if bn:
                layers.append(nn.BatchNorm1d(hidden))
            layers.append(nn.ReLU())
            d = hidden
        layers.append(nn.Linear(d, classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Surface(nn.Module):
    """A point ``theta`` whose 'output' is a given function value (input ignored)."""

    def __init__(self, fn: Callable[[Tensor], Tensor], init: Tensor):
        super().__init__()
        self.fn = fn
        self.theta = nn.Parameter(init.clone().to(torch.float64))

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(self.theta)


def identity_loss(out: Tensor, y: Tensor) -> Tensor:
    """The model's output is the loss itself."""
    return out


#: one dummy batch for Surface models
DUMMY = [(torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64))]


def make_quadratic(eigs: list[float], seed: int = 0) -> tuple[Tensor, Tensor]:
    """Symmetric A = Q diag(eigs) Q^T with a random orthogonal Q; returns (A, eigs)."""
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(len(eigs), len(eigs), generator=g, dtype=torch.float64))
    e = torch.tensor(eigs, dtype=torch.float64)
    return (q * e) @ q.T, e


def classification_batches(n: int = 96, d_in: int = 3, classes: int = 3, batch: int = 32, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d_in, generator=g, dtype=torch.float64)
    w = torch.randn(d_in, classes, generator=g, dtype=torch.float64)
    y = (x @ w + 0.3 * torch.randn(n, classes, generator=g, dtype=torch.float64)).argmax(1)
    return [(x[i : i + batch], y[i : i + batch]) for i in range(0, n, batch)]


def make_mlp(seed: int = 0, **kw) -> TinyMLP:
    """A float64 TinyMLP built under ``seed`` without touching the global RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return TinyMLP(**kw).double()
