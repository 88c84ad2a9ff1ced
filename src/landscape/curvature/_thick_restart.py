"""The thick-restart Lanczos cycle of :func:`landscape.curvature.lanczos.top_eigenpairs`, its Ritz
certificates, and the Rayleigh-Ritz step on the union of two Krylov spaces.

Internal: every function here assumes arguments that ``top_eigenpairs`` has validated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from landscape.curvature._gram_schmidt import _BREAKDOWN, _extend_basis, _fresh_orthogonal
from landscape.curvature.linop import SymmetricOperator

__all__: list[str] = []


def _order(theta: Tensor, which: str) -> Tensor:
    """Indices of Ritz values, best first, for ``which``."""
    if which == "LA":
        return torch.argsort(theta, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(theta, stable=True)
    return torch.argsort(theta.abs(), descending=True, stable=True)


def _better(a: Tensor, b: Tensor, which: str) -> Tensor:
    """Elementwise: ``a`` is a better eigenvalue than ``b`` for ``which``."""
    if which == "LA":
        return a > b
    if which == "SA":
        return a < b
    return a.abs() > b.abs()


def _value_errors(theta: Tensor, coupling: Tensor, idx: Tensor) -> tuple[Tensor, Tensor]:
    """Estimated absolute errors of the Ritz values ``theta[idx]``: ``min(r, r^2 / gap)``.

    ``r_i = |coupling_i|`` is the residual norm of Ritz pair i, so an eigenvalue lies within
    ``r_i`` of ``theta_i`` (a bound); when that eigenvalue is separated from the rest of
    the spectrum by ``gap_i`` the Ritz value is within ``r_i^2 / gap_i`` of it (Kato-Temple;
    Parlett, The Symmetric Eigenvalue Problem, 1998, Thm 11.7.1). ``gap_i`` is estimated
    from the other Ritz values of the basis: ``min_l (|theta_i - theta_l| - r_l)`` over
    l != i, each neighbour moved towards ``theta_i`` by its own residual norm (the
    eigenvalue it approximates may lie that much closer). Only far-apart neighbours are
    counted this way: the few Ritz values with the largest residuals (unconverged, in the
    bulk) would otherwise close every gap. This is an estimate, not a bound: an eigenvalue
    the Krylov space has not seen can lie closer. Without a positive gap estimate the
    residual norm itself is returned. Returns the estimates and the gaps (0 where none).
    """
    r = coupling.abs()
    if theta.numel() < 2:
        return r[idx], torch.zeros_like(r[idx])
    dist = (theta[idx].unsqueeze(1) - theta.unsqueeze(0)).abs()
    gap = dist - torch.minimum(r.unsqueeze(0), 0.5 * dist)
    gap[torch.arange(idx.numel(), device=theta.device), idx] = math.inf
    gap = gap.min(dim=1).values
    return _kato_temple(r[idx], gap), gap


def _kato_temple(r: Tensor, gap: Tensor) -> Tensor:
    """``min(r, r^2 / gap)``, or ``r`` where the gap is not positive."""
    return torch.where(gap > 0, torch.minimum(r, r**2 / gap.clamp_min(torch.finfo(r.dtype).tiny)), r)


@dataclass
class _Basis:
    """A deflated pass's whole Krylov decomposition, kept for :func:`_union_ritz` (internal).

    With ``L`` the locked rows and ``Q`` the basis: ``A_d Q^T = Q^T T + f coupling^T`` for
    the deflated operator ``A_d = (I - L^T L) A (I - L^T L)``, and ``L A Q^T = cross``.
    """

    rows: Tensor  # (nl + size, P): the locked rows, then the basis (a view of the solver's buffer)
    T: Tensor  # (size, size) projected matrix of the basis, symmetrised
    coupling: Tensor  # (size,) couplings of the basis to f
    cross: Tensor  # (nl, size) L A Q^T, the couplings to the locked rows that deflation projects away
    f: Tensor | None  # (P,) the unit residual vector, None when the rows span the whole space
    products: Tensor | None  # (size, P) A Q^T as rows, when products are stored


@dataclass
class _Run:
    """Outcome of one thick-restart solve (internal)."""

    theta: Tensor  # (k,) best first
    Y: Tensor  # (k, P) Ritz vectors as rows
    AY: Tensor | None  # (k, P) their products from stored products, or None
    b: Tensor  # (k,) signed couplings b^T u_i: A Y^T = Y^T diag(theta) + f b^T, |b| the residual norms
    gap: Tensor  # (k,) gap estimates of the wanted Ritz values (see _value_errors)
    num_matvecs: int
    num_restarts: int
    converged: bool
    exhausted: bool
    anorm: Tensor
    f: Tensor | None = None  # (P,) copy of the unit residual vector (keep_f), None when exhausted
    basis: _Basis | None = None  # the whole decomposition (keep_basis)

    @property
    def coupling(self) -> Tensor:
        """(k,) absolute residual norms from the Lanczos relation."""
        return self.b.abs()


def _thick_restart(
    op: SymmetricOperator,
    k: int,
    which: str,
    tol: float,
    v0: Tensor,
    locked: Tensor | None,
    budget: int,
    m: int,
    gen: torch.Generator,
    eps: float,
    anorm: Tensor,
    rival: Tensor | None = None,
    every_step: bool = True,
    stop: str = "residual",
    store: bool = False,
    margin: float = 0.0,
    spare_rows: bool = False,
    keep_f: bool = False,
    keep_basis: bool = False,
    buffer: Tensor | None = None,
) -> _Run:
    """Thick-restart Lanczos for k pairs of A restricted to the complement of ``locked``.

    ``locked`` (nl, P) holds orthonormal rows that every basis vector is orthogonalised
    against, so the iteration runs on ``(I - L^T L) A (I - L^T L)``. ``v0`` must be a unit
    vector orthogonal to ``locked``. Requires ``k <= m <= P - nl``.

    With ``rival`` (k = 1, the multiplicity check) a converged pair ends the run before m
    products only when it beats ``rival`` by more than ``margin`` (the amount by which the
    caller counts a pair as better); finding nothing better needs a full basis of m
    products, after which the run also stops once the best Ritz pair has relative residual
    <= sqrt(tol) and the eigenvalue it approximates (within its residual norm) cannot beat
    ``rival`` by more than ``margin``.

    With ``every_step`` convergence is tested after every product (stopping as soon as the
    wanted pairs converge); otherwise only with a full basis, where a wanted eigenvalue
    that a small Krylov space has not yet seen is less likely to be skipped.

    ``stop`` picks the certificate compared with ``tol``: "residual" (relative residual)
    or "value" (estimated relative eigenvalue error, :func:`_value_errors`).

    With ``store`` the product ``A q_j`` of every basis vector is kept (rotated along at
    restarts), so the Ritz vectors' products come out without further products. With
    ``spare_rows`` (and not ``store``) the products are kept while they fit in the rows of
    the basis buffer that the basis has not reached yet (product j in row ``nl + m - j``,
    so while ``2 j + 1 < m``) and until the first restart: no memory beyond the basis, and
    a run that converges early returns its Ritz vectors' products (``AY``) all the same.
    ``keep_f`` returns a copy of the residual vector; ``keep_basis`` returns the whole
    decomposition with the couplings to the locked rows (:class:`_Basis`). ``buffer``
    (at least nl + m + 1 rows) is used for the basis instead of a new one; its first nl
    rows may already hold ``locked``.
    """
    P = op.shape[0]
    nl = 0 if locked is None else locked.shape[0]
    # Uninitialised: a row is written before it is read (zero-filling (m + 1) P numbers
    # costs ~0.5 s at P ~ 1e7 and m = 20 on CPU).
    Q = torch.empty(nl + m + 1, P, dtype=v0.dtype, device=v0.device) if buffer is None else buffer[: nl + m + 1]  # locked, basis
    W = torch.empty(m, P, dtype=v0.dtype, device=v0.device) if store else None  # W[i] = A Q[nl + i]
    if locked is not None and nl and not (locked.data_ptr() == Q.data_ptr() and locked.stride() == Q[:nl].stride()):
        Q[:nl] = locked
    H = torch.zeros(m + 1, m, dtype=v0.dtype, device=v0.device)  # projected matrix plus coupling row
    C = torch.zeros(nl, m, dtype=v0.dtype, device=v0.device) if keep_basis else None  # L A Q^T
    Q[nl] = v0
    tiny = torch.finfo(v0.dtype).tiny
    held = 0 if spare_rows and W is None else -1  # products kept in spare rows (rows 0..held-1); -1: none
    # On CPU the spare rows are never touched, so they take no memory: the products are held
    # as the operator returned them instead of copied (a copy into fresh pages costs ~4x a
    # write into used ones at P ~ 1e7). Elsewhere the buffer is allocated whole: copy.
    kept: list[Tensor] | None = [] if held == 0 and Q.device.type == "cpu" else None
    work = torch.empty(P, dtype=v0.dtype, device=v0.device)  # the vector being orthogonalised, reused

    def ritz(size: int, anorm: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, bool]:
        """Ritz data of the current basis and whether the k wanted pairs are done."""
        T = H[:size, :size]
        theta, U = torch.linalg.eigh(0.5 * (T + T.T))
        coupling = H[size, :size] @ U  # residual norm of Ritz pair i (||q_size|| = 1)
        order = _order(theta, which)
        anorm = torch.maximum(anorm, theta.abs().max())
        want = order[:k]
        denom = torch.maximum(theta[want].abs(), eps**0.25 * anorm).clamp_min(tiny)
        crit = _value_errors(theta, coupling, want)[0] if stop == "value" else coupling[want].abs()
        done = bool((crit / denom <= tol).all())
        if rival is not None:
            best = theta[want[0]]
            gap = (rival - best) if which == "LA" else (best - rival) if which == "SA" else (rival.abs() - best.abs())
            if num_matvecs < m:
                # A converged pair that beats the rival ends the pass (the caller takes it);
                # one that does not is no evidence yet: a small Krylov space from a random
                # vector of a large operator converges first to its bulk (on a network
                # Hessian, a single product gives a Ritz value near 0 with a residual far
                # below the floor), not to the extreme eigenvalue the pass looks for.
                done = done and bool(gap + margin < 0)
            elif not done:
                # With a full basis, a Ritz pair converged to sqrt(tol) is taken to
                # approximate the extreme eigenvalue, so its inclusion interval (the residual
                # norm, or the value estimate for ``stop="value"``) bounds what the pass could
                # find. A value within ``margin`` of the rival would not count as better,
                # so the interval may reach that far.
                res = crit[0] if stop == "value" else coupling[want[0]].abs()
                done = bool((gap + margin > res) & (res <= math.sqrt(tol) * denom[0]))
        return theta, U, coupling, order, anorm, done

    num_matvecs = 0
    num_restarts = 0
    j = 0  # basis vectors whose product has been taken
    theta, U, coupling, order, done = None, None, None, None, False
    while True:
        exhausted = False
        while j < m and num_matvecs < budget:
            w = op.matmat(Q[nl + j])
            if W is not None:
                W[j] = w
            elif held == j and 2 * j + 1 < m:  # row nl + m - j lies beyond the next basis row nl + j + 1
                if kept is not None:
                    kept.append(w)  # _extend_basis leaves w as it is
                else:
                    Q[nl + m - j] = w
                held += 1
            else:
                held, kept = -1, None
            num_matvecs += 1
            anorm = torch.maximum(anorm, torch.linalg.vector_norm(w))
            known = torch.zeros(nl + j + 1, dtype=H.dtype, device=H.device)
            known[nl : nl + j] = H[j, :j]
            w, h, beta = _extend_basis(Q[: nl + j + 1], w, known, out=work)
            H[: j + 1, j] = h[nl:]  # couplings to locked rows are projected away (deflation)
            if C is not None:
                C[:, j] = h[:nl]
            j += 1
            if nl + j >= P:  # the rows span the whole space: what is left of w is rounding
                exhausted = True
            else:
                # One host sync per step to branch on breakdown; the product dominates the cost.
                if bool(beta <= _BREAKDOWN * eps * anorm):
                    Q[nl + j] = _fresh_orthogonal(Q[: nl + j], gen)  # coupling H[j, j-1] stays exactly 0
                else:
                    H[j, j - 1] = beta
                    torch.div(w, beta, out=Q[nl + j])
            if j >= k and (every_step or j == m or exhausted):  # the small eigh is cheap
                theta, U, coupling, order, anorm, done = ritz(j, anorm)
                if done or exhausted:
                    break
        size = j
        if theta is None or theta.numel() != size:  # no step in this cycle (budget spent)
            theta, U, coupling, order, anorm, done = ritz(size, anorm)
        assert U is not None and coupling is not None and order is not None  # set with theta by ritz()
        if done or exhausted or num_matvecs >= budget or size < m:
            break
        # Thick restart: keep the best Ritz vectors and the residual vector.
        keep = min(m - 1, k + (m - k) // 2)
        sel = order[:keep]
        Y = U[:, sel].T @ Q[nl : nl + size]
        Q[nl + keep] = Q[nl + size]  # keep < size: rows never overlap; later rows are rewritten before use
        if W is not None:
            W[:keep] = U[:, sel].T @ W[:size]
        Q[nl : nl + keep] = Y
        H.zero_()
        H[:keep, :keep] = torch.diag(theta[sel])
        H[keep, :keep] = coupling[sel]
        if C is not None:
            C[:, :keep] = C[:, :size] @ U[:, sel]
            C[:, keep:] = 0.0
        held, kept = -1, None  # spare-row products are not rotated
        j = keep
        num_restarts += 1
    want = order[:k]
    AY = None
    if W is not None:
        AY = U[:, want].T @ W[:size]
    elif held == size and kept is not None:
        AY = torch.zeros(k, P, dtype=Q.dtype, device=Q.device)
        for i, wi in enumerate(kept):
            AY.addr_(U[i, want], wi)
    elif held == size:  # product i in row nl + m - i: the rows reversed
        AY = U[:, want].flip(0).T @ Q[nl + m - size + 1 : nl + m + 1]
    f = None if exhausted else Q[nl + size]
    basis = None
    if keep_basis:
        assert C is not None
        T = H[:size, :size]
        basis = _Basis(rows=Q[: nl + size], T=0.5 * (T + T.T), coupling=H[size, :size].clone(), cross=C[:, :size].clone(), f=f,
                       products=None if W is None else W[:size])
    return _Run(
        theta=theta[want],
        Y=U[:, want].T @ Q[nl : nl + size],
        AY=AY,
        b=coupling[want],
        gap=_value_errors(theta, coupling, want)[1],
        num_matvecs=num_matvecs,
        num_restarts=num_restarts,
        converged=done or exhausted,
        exhausted=exhausted,
        anorm=anorm,
        f=None if f is None or not keep_f else f.clone(),
        basis=basis,
    )


@dataclass
class _Union:
    """Rayleigh-Ritz pairs on the union of two Krylov spaces (internal): values and
    coefficients; the vectors are formed by :meth:`vectors`."""

    theta: Tensor  # (k,) best first
    coef: Tensor  # (nl + size, k): the Ritz vectors are coef^T B for the rows B = [Y; Q]
    r: Tensor | None  # (k,) residual norms ||A y - theta y|| from the two Lanczos relations, when known
    gap: Tensor | None  # (k,) gap estimates (see _value_errors), with r
    others: Tensor  # the union's other Ritz values

    def vectors(self, check: _Basis, AY: Tensor | None) -> tuple[Tensor, Tensor | None]:
        """The k Ritz vectors as rows (k, P), and their products from stored ones (or None)."""
        nl = self.coef.shape[0] - check.T.shape[0]
        Y = self.coef.T @ check.rows
        if AY is None or check.products is None:
            return Y, None
        return Y, self.coef[:nl].T @ AY + self.coef[nl:].T @ check.products


def _union_ritz(theta: Tensor, check: _Basis, k: int, which: str, b: Tensor | None = None, f: Tensor | None = None) -> _Union:
    """Rayleigh-Ritz on ``span(Y) + span(Q)``: k pairs ``(theta, Y)`` (``Y`` the locked rows of
    a deflated pass, ``Y A Y^T = diag(theta)``) and the basis Q of that pass, at no further
    product.

    The projection of A on the orthonormal rows ``B = [Y; Q]`` is
    ``G = [[diag(theta), X], [X^T, T]]``: ``X = Y A Q^T`` are the couplings that the pass
    projected away and ``T`` its projected matrix. Ritz values of the larger space are no
    worse (Cauchy interlacing), and the pass's space, grown from a fresh random vector,
    holds what the first Krylov space missed near the k-th eigenvalue: the products of the
    multiplicity check become accuracy.

    Residual norms follow when the k pairs come from one Lanczos run with residual vector
    ``f`` (orthogonal to Y) and signed couplings ``b``, ``A Y^T = Y^T diag(theta) + f b^T``:
    with the pass's relation ``A Q^T = Q^T T + Y^T X + g c^T`` (``g`` orthogonal to Y and Q),
    a Ritz pair ``(mu, u = [u_Y; u_Q])`` of G has
    ``A B^T u - mu B^T u = (b^T u_Y) f_perp + (c^T u_Q) g``, ``f_perp = f - Q^T Q f``, whose
    norm needs ``||Q f||`` and ``f^T g`` (one pass over Q).
    """
    nl = theta.numel()
    size = check.T.shape[0]
    G = torch.zeros(nl + size, nl + size, dtype=check.T.dtype, device=check.T.device)
    G[:nl, :nl] = torch.diag(theta)
    G[:nl, nl:] = check.cross
    G[nl:, :nl] = check.cross.T
    G[nl:, nl:] = check.T
    mu, U = torch.linalg.eigh(G)
    order = _order(mu, which)
    sel = order[:k]
    r = gap = None
    if b is not None and f is not None:
        a = b @ U[:nl]  # (b^T u_Y) for every Ritz pair
        c = check.coupling @ U[nl:] if check.f is not None else torch.zeros_like(mu)
        Qf = check.rows[nl:] @ f
        f_perp2 = (1.0 - Qf @ Qf).clamp_min(0.0)  # ||f|| = 1
        fg = f @ check.f if check.f is not None else torch.zeros((), dtype=f.dtype, device=f.device)
        r_all = (a**2 * f_perp2 + c**2 + 2.0 * a * c * fg).clamp_min(0.0).sqrt()
        r, gap = r_all[sel], _value_errors(mu, r_all, sel)[1]
    return _Union(theta=mu[sel], coef=U[:, sel], r=r, gap=gap, others=mu[order[k:]])
