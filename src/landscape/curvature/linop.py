"""Symmetric linear operators: the one interface every curvature estimator consumes.

An operator knows its ``shape`` (P, P), ``dtype`` and ``device`` and multiplies a block
of vectors with ``matmat``. Estimators (Lanczos, Hutch++, SLQ, ...) are free functions of
an operator, so a dense symmetric tensor (wrapped by :func:`as_operator`) serves as
ground truth in tests.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["SymmetricOperator", "DenseOperator", "ObservedOperator", "as_operator"]


class SymmetricOperator:
    """Base class of a symmetric (P, P) operator acting on torch tensors.

    Subclasses implement :meth:`_matmat` for a (P, k) block. ``op @ v`` accepts (P,) or
    (P, k); vectors are cast to the operator's dtype and device and results are returned
    in the caller's dtype.
    """

    shape: tuple[int, int]
    dtype: torch.dtype
    device: torch.device

    def _matmat(self, V: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def matmat(self, V: Tensor) -> Tensor:
        """Multiply a block ``V`` of shape (P, k) (or a vector (P,)) by the operator."""
        if V.shape[0] != self.shape[1] or V.ndim not in (1, 2):
            raise ValueError(f"expected a tensor of shape ({self.shape[1]},) or ({self.shape[1]}, k), got {tuple(V.shape)}")
        squeeze = V.ndim == 1
        block = V.reshape(V.shape[0], -1).to(device=self.device, dtype=self.dtype)
        out = self._matmat(block).to(dtype=V.dtype, device=V.device)
        return out.reshape(-1) if squeeze else out

    def matvec(self, v: Tensor) -> Tensor:
        """Multiply a single vector of shape (P,)."""
        return self.matmat(v.reshape(-1))

    def start_hint(self) -> Tensor | None:
        """A (P,) vector rich in the top eigendirections that the operator has at hand at
        little or no cost, or None (the default). ``top_eigenpairs`` adds it to its random
        start vector for the top end of the spectrum."""
        return None

    def __matmul__(self, V: Tensor) -> Tensor:
        return self.matmat(V)

    def to_dense(self) -> Tensor:
        """Materialise the (P, P) matrix column block by column block (small P only)."""
        eye = torch.eye(self.shape[1], dtype=self.dtype, device=self.device)
        return self.matmat(eye)

    def to_scipy(self) -> Any:
        """A ``scipy.sparse.linalg.LinearOperator`` view (float64 NumPy in and out)."""
        from scipy.sparse.linalg import LinearOperator

        def mm(x: np.ndarray) -> np.ndarray:
            X = torch.as_tensor(np.asarray(x, dtype=np.float64).reshape(self.shape[1], -1))
            return self.matmat(X).cpu().numpy()

        return LinearOperator(
            shape=self.shape,
            dtype=np.float64,
            matvec=lambda x: mm(x).reshape(-1),
            matmat=mm,
            rmatvec=lambda x: mm(x).reshape(-1),
        )


class DenseOperator(SymmetricOperator):
    """A dense symmetric matrix as an operator (ground truth in tests, small problems)."""

    def __init__(self, matrix: Tensor):
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            raise ValueError(f"expected a square matrix, got shape {tuple(matrix.shape)}")
        self.matrix = matrix
        self.shape = (int(matrix.shape[0]), int(matrix.shape[1]))
        self.dtype = matrix.dtype
        self.device = matrix.device

    def _matmat(self, V: Tensor) -> Tensor:
        return self.matrix @ V

    def to_dense(self) -> Tensor:
        return self.matrix


class ObservedOperator(SymmetricOperator):
    """An operator that reports its products: ``on_products(k)`` after each block of k columns.

    The products are the wrapped operator's own, so every estimator gives the same result
    on it; the callback drives progress bars or budgets (e.g. ``tqdm.update``).
    """

    def __init__(self, inner: SymmetricOperator, on_products: Callable[[int], Any]):
        self.inner = inner
        self.on_products = on_products
        self.shape = inner.shape
        self.dtype = inner.dtype
        self.device = inner.device

    def _matmat(self, V: Tensor) -> Tensor:
        out = self.inner.matmat(V)
        self.on_products(int(V.shape[1]))
        return out

    def start_hint(self) -> Tensor | None:
        return self.inner.start_hint()


def as_operator(A: SymmetricOperator | Tensor) -> SymmetricOperator:
    """Return ``A`` if it is an operator, or wrap a dense symmetric tensor."""
    if isinstance(A, SymmetricOperator):
        return A
    if isinstance(A, Tensor):
        return DenseOperator(A)
    raise TypeError(f"expected a SymmetricOperator or a dense torch.Tensor, got {type(A).__name__}")
