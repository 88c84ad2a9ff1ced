"""Gram-Schmidt steps of the Lanczos solvers (:mod:`landscape.curvature.lanczos`): classical
Gram-Schmidt twice, the DGKS-guarded basis extension, and fresh orthogonal vectors."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from landscape.curvature.trace import random_probes

__all__: list[str] = []

# A coupling beta is treated as breakdown when beta <= _BREAKDOWN * eps * ||A||est, where
# eps is the unit roundoff of the coarser of the operator and basis dtypes: below that
# level the new direction is rounding noise of the product.
_BREAKDOWN = 10.0


def _orthogonalize(basis: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Classical Gram-Schmidt twice of ``w`` against rows of ``basis``.

    Shapes: ``basis`` (j, P) and ``w`` (P,), or a batch ``basis`` (b, j, P) and ``w``
    (b, P) (each vector against its own basis). Returns the projected ``w`` and the
    summed coefficients, (j,) or (b, j). A batch is processed one basis at a time: on CPU
    contiguous matrix-vector products beat a strided batched product (measured ~1.8x).
    """
    if basis.ndim == 3:
        pairs = [_orthogonalize(basis[i], w[i]) for i in range(basis.shape[0])]
        return torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs])
    # addmv with the transposed basis: one fused pass, ~1.8x faster than ``w - h @ basis``
    # on P ~ 1e7 (the subtraction otherwise materialises h @ basis first)
    h = basis @ w
    w = torch.addmv(w, basis.T, h, alpha=-1)
    h2 = basis @ w
    w = torch.addmv(w, basis.T, h2, alpha=-1)
    return w, h + h2


# DGKS criterion (Daniel, Gragg, Kaufman & Stewart, Math. Comp. 1976): a Gram-Schmidt pass
# that keeps at least this fraction of the vector's norm left it orthogonal to working
# precision; only a pass that cancelled more is repeated.
_DGKS = 1.0 / math.sqrt(2.0)


def _extend_basis(rows: Tensor, w: Tensor, known: Tensor, out: Tensor | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Orthogonalise the product ``w = A q_j`` against ``rows`` (nl + j + 1, P), q_j last.

    ``known`` (nl + j + 1,) holds the couplings of q_j to earlier rows that the projected
    matrix already fixes (``beta_{j-1}`` to q_{j-1}; after a thick restart the arrowhead
    couplings to the kept Ritz vectors; zero elsewhere). They and ``alpha_j = q_j^T w`` are
    subtracted first, touching only the rows with a non-zero coupling; then one classical
    Gram-Schmidt pass against all rows removes what rounding left, and a second pass runs
    only when the first cancelled more than the DGKS fraction of the norm. That is the
    full reorthogonalisation of classical Gram-Schmidt twice at about half its memory
    traffic (each pass reads the whole basis twice; on P ~ 1e7 that is comparable to a
    Hessian-vector product). ``w`` is left untouched; the result is written to ``out``
    (P,) when given (a work vector reused across steps: a fresh P-vector per step costs
    its page faults, ~10% of the step's vector work at P ~ 1e7 on CPU). Returns the
    orthogonalised vector, the projections ``h`` (nl + j + 1,) with ``A q_j = rows^T h + w``,
    and the vector's norm.
    """
    h = known.clone()
    idx = known.nonzero().squeeze(1)
    if idx.numel():  # the non-zero couplings sit in one block of rows: a view, no gathered copy
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        w = torch.addmv(w, rows[lo:hi].T, known[lo:hi], alpha=-1, out=out)
    else:
        w = w.clone() if out is None else out.copy_(w)
    alpha = rows[-1] @ w
    w.addcmul_(rows[-1], alpha, value=-1)  # in place from here: w is ours
    h[-1] += alpha
    norm = torch.linalg.vector_norm(w)
    for _ in range(2):
        before = norm
        c = rows @ w
        w.addmv_(rows.T, c, alpha=-1)
        h += c
        norm = torch.linalg.vector_norm(w)
        if bool(norm >= _DGKS * before):
            break
    return w, h, norm


def _fresh_orthogonal(basis: Tensor, generator: torch.Generator) -> Tensor:
    """Unit vectors orthogonal to the rows of ``basis`` (..., j, P), one per leading index."""
    lead = basis.shape[:-2]
    P = basis.shape[-1]
    n = math.prod(lead)
    x = random_probes(P, n, generator=generator, kind="gaussian", dtype=basis.dtype, device=basis.device)
    x = x.T.reshape(*lead, P)
    for _ in range(2):
        # Gram-Schmidt twice leaves x orthogonal to working precision unless it lay almost in
        # the span; a random vector of a large space loses little (DGKS: no further round).
        before = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        x, _ = _orthogonalize(basis, x)
        after = torch.linalg.vector_norm(x, dim=-1, keepdim=True)
        x = x / after
        if bool((after >= _DGKS * before).all()):
            break
    return x
