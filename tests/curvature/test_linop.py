"""landscape.curvature.linop.ObservedOperator: the wrapped operator's products, each block reported."""

from __future__ import annotations

import torch

from landscape.curvature import ObservedOperator, top_eigenpairs, trace
from landscape.curvature.linop import DenseOperator


def test_observed_operator_reports_every_product_and_changes_no_result(known_spectrum):
    A = known_spectrum.matrix
    blocks: list[int] = []
    observed = ObservedOperator(DenseOperator(A), blocks.append)
    assert observed.shape == (300, 300) and observed.dtype == torch.float64
    plain, seen = trace(A, num_matvecs=30, seed=1), trace(observed, num_matvecs=30, seed=1)
    assert seen == plain and sum(blocks) == seen.num_matvecs
    blocks.clear()
    pairs = top_eigenpairs(observed, k=3, which="LA", tol=1e-6, seed=0)
    assert sum(blocks) == pairs.num_matvecs
    assert torch.equal(pairs.values, top_eigenpairs(A, k=3, which="LA", tol=1e-6, seed=0).values)
