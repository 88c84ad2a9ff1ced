"""Lanczos on a symmetric operator: extreme eigenpairs and Krylov tridiagonals.

Two entry points, in torch on the operator's device (or the basis on ``basis_device``):

* :func:`top_eigenpairs`: thick-restart Lanczos (Wu & Simon, "Thick-restart Lanczos
  method for large symmetric eigenvalue problems", SIAM J. Matrix Anal. Appl. 2000; the
  symmetric case of Stewart's Krylov-Schur method, 2001) with full reorthogonalisation:
  the couplings the projected matrix already fixes are subtracted, then one classical
  Gram-Schmidt pass against the whole basis, repeated only when it cancels (the DGKS
  criterion, Daniel, Gragg, Kaufman & Stewart 1976; "twice is enough": Giraud, Langou &
  Rozloznik 2005). The basis holds at most ``max_basis + 1`` vectors; at a restart the
  ``keep`` best Ritz vectors and the residual vector are kept, which turns the
  projected matrix into an arrowhead. Each Ritz pair carries a residual certificate from
  the Lanczos relation ``A V = V T + q b^T``: ``||A y_i - theta_i y_i|| = |b^T u_i|``.
* :func:`lanczos_tridiagonal`: plain Lanczos with full reorthogonalisation from one or
  several start vectors (run side by side, one block product per step), returning the
  tridiagonal coefficients used by stochastic Lanczos quadrature (:mod:`.slq`).

Breakdown (``beta ~ 0``: the Krylov space is invariant) is handled by continuing with a
fresh random vector orthogonal to the basis and a coupling of exactly zero, so the
projected matrix stays exact and the number of steps is the requested one.

The basis may be kept in a wider dtype than the operator (``dtype=torch.float64`` on a
float32 operator): blocks are cast to the operator's dtype for each product and the
result is cast back (see :meth:`SymmetricOperator.matmat`). It may also be kept off the
operator's device (``basis_device="cpu"`` for a GPU operator): then only the vector being
multiplied and its product cross to the device, and the orthogonalisation runs where the
basis is. :func:`lanczos_basis_bytes` and :func:`tridiagonal_basis_bytes` state the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from landscape.curvature._gram_schmidt import _extend_basis, _fresh_orthogonal, _orthogonalize
from landscape.curvature.linop import SymmetricOperator, as_operator
from landscape.curvature.trace import random_probes
from landscape.seeding import seeded_generator

__all__ = ["Eigenpairs", "LanczosTridiagonal", "top_eigenpairs", "lanczos_tridiagonal", "lanczos_basis_bytes",
           "tridiagonal_basis_bytes", "WHICH", "STOP_RULES"]

WHICH = ("LA", "SA", "LM")
STOP_RULES = ("residual", "value")

# A coupling beta is treated as breakdown when beta <= _BREAKDOWN * eps * ||A||est, where
# eps is the unit roundoff of the coarser of the operator and basis dtypes: below that
# level the new direction is rounding noise of the product.
_BREAKDOWN = 10.0


@dataclass(frozen=True)
class Eigenpairs:
    """Ritz pairs of a symmetric operator from :func:`top_eigenpairs`.

    Attributes:
        values: (k,) Ritz values; descending for "LA", ascending for "SA", by descending
            magnitude for "LM".
        vectors: (P, k) orthonormal Ritz vectors, sign fixed so that the entry of largest
            magnitude is positive.
        residuals: (k,) relative residuals from the Lanczos relation,
            ``||A v - theta v|| / max(|theta|, eps^(1/4) ||A||est)``; after the
            multiplicity check added a pair they come from the explicit products of the
            final Rayleigh-Ritz step instead.
        true_residuals: (k,) the same quantity from explicit products ``A V`` (one block
            product of k columns), or NaN when ``verify=False``.
        num_matvecs: operator-vector products spent (the verification included).
        num_restarts: thick restarts performed.
        converged: every requested pair met ``tol`` in the certificate ``stop`` names
            (from both residuals when verified).
        which: "LA", "SA" or "LM".
        tol: requested tolerance (on the relative residual for ``stop="residual"``, on the
            estimated relative eigenvalue error for ``stop="value"``).
        value_errors: (k,) estimated relative eigenvalue errors
            ``min(r, r^2 / gap) / max(|theta|, eps^(1/4) ||A||est)`` with ``r`` the larger of
            the two residual norms (certificate and, when verified, explicit products) and
            ``gap`` the distance to the nearest other Ritz value, each neighbour moved
            towards theta by its residual (at most halfway). ``r`` alone is a bound on the
            distance to the nearest eigenvalue; ``r^2 / gap`` (Kato-Temple) is how far the
            Ritz value is from the eigenvalue it converges to once that eigenvalue is
            isolated by ``gap``, an estimate because the gap is estimated.
        stop: "residual" or "value", the certificate ``tol`` was applied to.
    """

    values: Tensor
    vectors: Tensor
    residuals: Tensor
    true_residuals: Tensor
    num_matvecs: int
    num_restarts: int
    converged: bool
    which: str
    tol: float
    value_errors: Tensor | None = None
    stop: str = "residual"

    def residual_norms(self, op: SymmetricOperator | Tensor) -> Tensor:
        """(k,) absolute residual norms ``||A y_i - theta_i y_i||`` from one block product of k columns.

        For a unit vector ``y_i`` some eigenvalue of ``A`` lies within this distance of
        ``theta_i`` (a certificate in eigenvalue units, whatever the scale of ``theta_i``).
        """
        op = as_operator(op)
        V = self.vectors.to(dtype=op.dtype, device=op.device)
        R = op.matmat(V) - V * self.values.to(dtype=op.dtype, device=op.device)
        return R.norm(dim=0).to(self.values.dtype)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (the (P, k) vectors are left out; save them with torch)."""
        return {
            "values": self.values.tolist(),
            "residuals": self.residuals.tolist(),
            "true_residuals": self.true_residuals.tolist(),
            "value_errors": None if self.value_errors is None else self.value_errors.tolist(),
            "stop": self.stop,
            "num_matvecs": self.num_matvecs,
            "num_restarts": self.num_restarts,
            "converged": self.converged,
            "which": self.which,
            "tol": self.tol,
        }


@dataclass(frozen=True)
class LanczosTridiagonal:
    """Tridiagonal Lanczos coefficients from :func:`lanczos_tridiagonal`.

    For one start vector: ``alpha`` (m,), ``beta`` (m-1,), ``basis`` (P, m) or None.
    For a block of b start vectors: ``alpha`` (b, m), ``beta`` (b, m-1), ``basis``
    (b, P, m) or None. ``T = tridiag(beta, alpha, beta)`` satisfies
    ``T = V^T A V`` with ``V`` the orthonormal basis whose first column is the
    normalised start vector; a zero ``beta`` marks a breakdown after which the recurrence
    continued from a fresh random orthogonal vector.
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor | None
    num_matvecs: int

    def to_dict(self) -> dict[str, Any]:
        return {"alpha": self.alpha.tolist(), "beta": self.beta.tolist(), "num_matvecs": self.num_matvecs}


def lanczos_basis_bytes(num_params: int, k: int, *, max_basis: int | None = None, itemsize: int = 8,
                        store_products: bool = False) -> int:
    """Bytes of the vectors :func:`top_eigenpairs` holds: ``(k + max_basis + 1) P`` basis rows
    (the k locked rows of the multiplicity pass included), ``max_basis P`` more with
    ``store_products``, and the k Ritz vectors; ``max_basis`` as its default. Transients
    come on top: a thick restart rotates up to ``max_basis`` rows into a new block, and the
    Rayleigh-Ritz step after a multiplicity replacement holds a few blocks of k rows."""
    m = min(num_params, max(2 * k + 1, 20)) if max_basis is None else min(num_params, max_basis)
    return itemsize * num_params * (2 * k + m + 1 + (m if store_products else 0))


def tridiagonal_basis_bytes(num_params: int, num_vectors: int, num_steps: int, *, itemsize: int = 8,
                            reorthogonalize: bool = True) -> int:
    """Bytes of the bases :func:`lanczos_tridiagonal` holds: ``b m P`` for b start vectors run
    side by side and m steps (SLQ: b = its ``probe_batch_size``, or all probes); ``3 b P``
    without reorthogonalisation."""
    held = min(num_steps, num_params) if reorthogonalize else min(3, num_steps)
    return itemsize * num_params * num_vectors * held


def _basis_device(op: SymmetricOperator, basis_device: torch.device | str | None) -> torch.device:
    return op.device if basis_device is None else torch.device(basis_device)


def _working_dtype(op: SymmetricOperator, dtype: torch.dtype | None) -> torch.dtype:
    wdtype = op.dtype if dtype is None else dtype
    if not isinstance(wdtype, torch.dtype) or not wdtype.is_floating_point:
        raise ValueError(f"dtype must be a real floating torch dtype, got {dtype!r}")
    return wdtype


def _noise_eps(op: SymmetricOperator, wdtype: torch.dtype) -> float:
    """Unit roundoff of the coarser of the operator's and the basis' dtypes."""
    op_eps = torch.finfo(op.dtype).eps if op.dtype.is_floating_point else 0.0
    return max(torch.finfo(wdtype).eps, op_eps)


def _start_vector(
    P: int, v0: Tensor | None, generator: torch.Generator, wdtype: torch.dtype, device: torch.device, hint: Tensor | None = None
) -> Tensor:
    """Unit start vector: ``v0``, else a Gaussian draw from ``generator``, plus the unit
    ``hint`` in equal measure when one is given (finite and non-zero)."""
    if v0 is None:
        v = random_probes(P, 1, generator=generator, kind="gaussian", dtype=wdtype, device=device).reshape(P)
        if hint is not None:
            h = hint.detach().reshape(-1).to(device=device, dtype=wdtype)
            h_norm = torch.linalg.vector_norm(h)
            if h.shape == (P,) and bool(torch.isfinite(h_norm)) and float(h_norm) > 0.0:
                v = v / torch.linalg.vector_norm(v) + h / h_norm
    else:
        if v0.shape != (P,):
            raise ValueError(f"v0 must have shape ({P},), got {tuple(v0.shape)}")
        v = v0.detach().to(device=device, dtype=wdtype)
    norm = torch.linalg.vector_norm(v)
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise ValueError(f"v0 must be a finite non-zero vector, got norm {float(norm)}")
    return v / norm


def _order(theta: Tensor, which: str) -> Tensor:
    """Indices of Ritz values, best first, for ``which``."""
    if which == "LA":
        return torch.argsort(theta, descending=True, stable=True)
    if which == "SA":
        return torch.argsort(theta, stable=True)
    return torch.argsort(theta.abs(), descending=True, stable=True)


def _fix_signs(V: Tensor) -> Tensor:
    """Flip columns of V (P, k) so that each column's largest-magnitude entry is positive."""
    idx = V.abs().argmax(dim=0)
    signs = torch.sign(V.gather(0, idx.unsqueeze(0))).squeeze(0)
    signs = torch.where(signs == 0, torch.ones_like(signs), signs)
    return V * signs


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
class _Run:
    """Outcome of one thick-restart solve (internal)."""

    theta: Tensor  # (k,) best first
    Y: Tensor  # (k, P) Ritz vectors as rows
    AY: Tensor | None  # (k, P) their products from the stored products of the basis, or None
    coupling: Tensor  # (k,) |b^T u_i|, absolute residual norms from the Lanczos relation
    gap: Tensor  # (k,) gap estimates of the wanted Ritz values (see _value_errors)
    num_matvecs: int
    num_restarts: int
    converged: bool
    exhausted: bool
    anorm: Tensor


def _better(a: Tensor, b: Tensor, which: str) -> Tensor:
    """Elementwise: ``a`` is a better eigenvalue than ``b`` for ``which``."""
    if which == "LA":
        return a > b
    if which == "SA":
        return a < b
    return a.abs() > b.abs()


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
) -> _Run:
    """Thick-restart Lanczos for k pairs of A restricted to the complement of ``locked``.

    ``locked`` (nl, P) holds orthonormal rows that every basis vector is orthogonalised
    against, so the iteration runs on ``(I - L^T L) A (I - L^T L)``. ``v0`` must be a unit
    vector orthogonal to ``locked``. Requires ``k <= m <= P - nl``.

    With ``rival`` (k = 1, the multiplicity check) the run may also stop, after at least m
    products, once the best Ritz pair has relative residual <= sqrt(tol) and its value is
    worse than ``rival`` by more than its residual norm: the eigenvalue it approximates
    then cannot beat ``rival``.

    With ``every_step`` convergence is tested after every product (stopping as soon as the
    wanted pairs converge); otherwise only with a full basis, where a wanted eigenvalue
    that a small Krylov space has not yet seen is less likely to be skipped.

    ``stop`` picks the certificate compared with ``tol``: "residual" (relative residual)
    or "value" (estimated relative eigenvalue error, :func:`_value_errors`).

    With ``store`` the product ``A q_j`` of every basis vector is kept (rotated along at
    restarts), so the Ritz vectors' products come out without further products.
    """
    P = op.shape[0]
    nl = 0 if locked is None else locked.shape[0]
    # Uninitialised: a row is written before it is read (zero-filling (m + 1) P numbers
    # costs ~0.5 s at P ~ 1e7 and m = 20 on CPU).
    Q = torch.empty(nl + m + 1, P, dtype=v0.dtype, device=v0.device)  # rows: locked, then basis
    W = torch.empty(m, P, dtype=v0.dtype, device=v0.device) if store else None  # W[i] = A Q[nl + i]
    if locked is not None and nl:
        Q[:nl] = locked
    H = torch.zeros(m + 1, m, dtype=v0.dtype, device=v0.device)  # projected matrix plus coupling row
    Q[nl] = v0
    tiny = torch.finfo(v0.dtype).tiny

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
        if rival is not None and not done and (stop == "value" or num_matvecs >= m):
            # Early certification needs a Ritz pair converged to sqrt(tol) (and, for the
            # residual rule, a full basis behind it): only then is the best Ritz value taken
            # to approximate the extreme eigenvalue, so that its inclusion interval (the
            # residual norm, or the value estimate for ``stop="value"``) bounds what the
            # pass could find.
            best = theta[want[0]]
            res = crit[0] if stop == "value" else coupling[want[0]].abs()
            gap = (rival - best) if which == "LA" else (best - rival) if which == "SA" else (rival.abs() - best.abs())
            done = bool((gap > res) & (res <= math.sqrt(tol) * denom[0]))
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
            num_matvecs += 1
            anorm = torch.maximum(anorm, torch.linalg.vector_norm(w))
            known = torch.zeros(nl + j + 1, dtype=H.dtype, device=H.device)
            known[nl : nl + j] = H[j, :j]
            w, h = _extend_basis(Q[: nl + j + 1], w, known)
            H[: j + 1, j] = h[nl:]  # couplings to locked rows are projected away (deflation)
            j += 1
            if nl + j >= P:  # the rows span the whole space: what is left of w is rounding
                exhausted = True
            else:
                beta = torch.linalg.vector_norm(w)
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
        j = keep
        num_restarts += 1
    want = order[:k]
    return _Run(
        theta=theta[want],
        Y=U[:, want].T @ Q[nl : nl + size],
        AY=None if W is None else U[:, want].T @ W[:size],
        coupling=coupling[want].abs(),
        gap=_value_errors(theta, coupling, want)[1],
        num_matvecs=num_matvecs,
        num_restarts=num_restarts,
        converged=done or exhausted,
        exhausted=exhausted,
        anorm=anorm,
    )


def top_eigenpairs(
    op: SymmetricOperator | Tensor,
    k: int = 5,
    which: str = "LA",
    tol: float = 1e-4,
    seed: int = 0,
    max_matvecs: int | None = None,
    dtype: torch.dtype | None = None,
    v0: Tensor | None = None,
    *,
    max_basis: int | None = None,
    verify: bool = True,
    check_multiplicity: bool = True,
    stop: str = "residual",
    store_products: bool = False,
    basis_device: torch.device | str | None = None,
) -> Eigenpairs:
    """k extreme eigenpairs of a symmetric operator by thick-restart Lanczos.

    Each cycle extends the Lanczos basis to ``max_basis`` vectors (full
    reorthogonalisation, see the module docstring), solves the projected problem with
    ``torch.linalg.eigh`` and stops when the k wanted Ritz pairs have relative residual
    ``|b^T u_i| / max(|theta_i|, eps^(1/4) ||A||est) <= tol`` (tested after every product
    when k = 1 or ``check_multiplicity`` guards against a premature stop, so a looser
    ``tol`` costs fewer products; else with a full basis); otherwise it restarts with the ``keep = k + (max_basis - k) // 2`` best Ritz
    vectors plus the residual vector.
    ``eps`` is the unit roundoff of the coarser of the operator and basis dtypes and
    ``||A||est`` the largest Ritz value magnitude or product norm seen. The floor
    ``eps^(1/4) ||A||est`` (1.2e-4 ||A|| in float64, 1.8e-2 ||A|| in float32) judges
    eigenvalues near zero on an absolute scale that the rounding of the products
    (~ eps ||A||) lets the true residual reach for ``tol`` down to ~1e-8 (float64) or
    ~1e-4 (float32).

    Repeated eigenvalues: the Krylov space of one start vector holds one direction per
    distinct eigenvalue, so further copies of an exactly repeated eigenvalue (e.g. the
    null space of a rank-deficient GGN with ``which="SA"``) are invisible to it. With
    ``check_multiplicity`` the solver then runs a deflated pass: Lanczos from a fresh
    random vector on ``(I - Y Y^T) A (I - Y Y^T)`` (Y the k converged vectors) for its
    best eigenpair; if that is better than the k-th value by more than its tolerance it
    replaces the k-th pair and the pass repeats, otherwise the set is certified (one
    extra single-pair solve when nothing is missing). After a replacement, a
    Rayleigh-Ritz step on the span of all pairs seen (one block product) removes the
    first-order error that deflation against approximate pairs leaves.

    With ``verify`` the k Ritz vectors are multiplied by the operator in one block
    product and the true relative residuals are reported beside the certificates.

    Args:
        op: symmetric (P, P) operator or dense tensor.
        k: number of eigenpairs, 1 <= k < P.
        which: "LA" (largest algebraic), "SA" (smallest algebraic) or "LM" (largest
            magnitude).
        tol: relative residual to reach, > 0.
        seed: seed for the start vector (when ``v0`` is None) and for fresh vectors after
            a breakdown or for the multiplicity check; deterministic for a fixed seed.
        max_matvecs: product budget for everything (default ``100 * max_basis``). When it
            runs out the current Ritz pairs are returned with ``converged=False``.
        dtype: dtype of the basis and projected problem (default: the operator's);
            products are done in the operator's dtype. A float32 basis on large P lets
            the true residual exceed the certificate (measured ~2e-5 relative at
            P = 1e6), which ``verify`` reports; use torch.float64 for tol below ~1e-3.
        v0: (P,) start vector. Default: a Gaussian vector drawn from ``seed``, and for
            ``which`` "LA" or "LM" plus, in equal measure, the operator's
            :meth:`~landscape.curvature.linop.SymmetricOperator.start_hint` when it has
            one (a Hessian or GGN operator: the loss gradient, which lies mostly in the top
            eigenspace; Gur-Ari, Roberts & Dyer 2018, arXiv:1812.04754). On timm's
            ResNet-18 that halves the products to a 4e-3 top eigenvalue (11 -> 6).
        max_basis: largest basis size, ``k < max_basis <= P`` (default
            ``min(P, max(2 k + 1, 20))``); memory is (k + max_basis + 1) P numbers.
        verify: compute true residuals with one extra block product of k columns.
        check_multiplicity: run the deflated pass described above when k > 1 (measured
            cost on the test matrices: +20% to +70% products).
        stop: the certificate ``tol`` applies to. "residual" (default): the relative
            residual ``||A y - theta y|| / |theta|``, a bound on the distance from theta
            to an eigenvalue (ARPACK's convergence test). "value": the estimated relative
            eigenvalue error ``min(r, r^2 / gap) / |theta|`` (see
            :attr:`Eigenpairs.value_errors`); the eigenvalue converges about twice as fast
            as the residual, so asking for eigenvalues to 1e-4 costs far fewer products
            than residuals to 1e-4, and the vectors are then only accurate to about
            ``sqrt(tol * gap / |theta|)``. Convergence is tested after every product in
            both modes when k = 1 or the multiplicity check runs.
            Both certificates are reported either way.
        store_products: keep the product ``A q`` of every basis vector (twice the basis
            memory), so the verification and the Rayleigh-Ritz step after a replacement
            take their products from those (``A Y = (A Q) U``) instead of spending k more.
        basis_device: where the basis lives and the orthogonalisation runs (default: the
            operator's device; ``"cpu"`` keeps a GPU operator's device memory to one block);
            the vectors are returned there. Memory: :func:`lanczos_basis_bytes`.

    Returns:
        :class:`Eigenpairs`.
    """
    op = as_operator(op)
    if which not in WHICH:
        raise ValueError(f"which must be one of {WHICH}, got {which!r}")
    P = op.shape[0]
    if isinstance(k, bool) or not isinstance(k, int) or k < 1 or k >= P:
        raise ValueError(f"k must be an int with 1 <= k < P = {P}, got {k!r}")
    if not (isinstance(tol, (int, float)) and tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a finite number > 0, got {tol!r}")
    if stop not in STOP_RULES:
        raise ValueError(f"stop must be one of {STOP_RULES}, got {stop!r}")
    wdtype = _working_dtype(op, dtype)
    if max_basis is None:
        m = min(P, max(2 * k + 1, 20))
    else:
        if isinstance(max_basis, bool) or not isinstance(max_basis, int) or max_basis <= k:
            raise ValueError(f"max_basis must be an int > k = {k}, got {max_basis!r}")
        m = min(P, max_basis)
    n_verify = k if verify and not store_products else 0
    budget = 100 * m if max_matvecs is None else max_matvecs
    if isinstance(budget, bool) or not isinstance(budget, int) or budget < k + n_verify:
        raise ValueError(
            f"max_matvecs must be an int >= {k + n_verify} (k Lanczos steps{' + k to verify' if verify else ''}), got {max_matvecs!r}"
        )
    lanczos_budget = budget - n_verify

    device = _basis_device(op, basis_device)
    gen = seeded_generator(seed)
    eps = _noise_eps(op, wdtype)
    tiny = torch.finfo(wdtype).tiny
    anorm = torch.zeros((), dtype=wdtype, device=device)
    # The operator's hint (a Hessian's loss gradient, rich in its top eigendirections) with
    # the random draw: a far better start for the top end, never one orthogonal to a wanted
    # direction. The bottom end (SA) starts from the draw alone.
    hint = op.start_hint() if v0 is None and which != "SA" else None
    start = _start_vector(P, v0, gen, wdtype, device, hint=hint)
    # One pair needs no second copy, so k = 1 skips the check and, like any run with the
    # check behind it, stops at the first product where its pair converges (so a looser
    # tol costs fewer products). For k > 1 without the check, stopping that early could
    # return k pairs while a wanted eigenvalue is still unseen, so convergence is then
    # tested with a full basis.
    check_multiplicity = check_multiplicity and k > 1
    every_step = check_multiplicity or stop == "value" or k == 1
    store = bool(store_products)
    run = _thick_restart(op, k, which, tol, start, None, lanczos_budget, m, gen, eps, anorm, every_step=every_step, stop=stop, store=store)
    values, Y, AY, anorm = run.theta, run.Y, run.AY, run.anorm
    num_matvecs, num_restarts, converged = run.num_matvecs, run.num_restarts, run.converged
    # An exhausted basis spanned the whole space: every eigenvalue and copy was seen.
    certified = not check_multiplicity or run.exhausted
    dropped: list[Tensor] = []  # pairs pushed out of the set by better deflated pairs
    dropped_products: list[Tensor] = []
    while converged and not certified:
        # Leave room for the final Rayleigh-Ritz products should this pass add a pair.
        pass_budget = budget - num_matvecs - (0 if store else k + len(dropped) + 1)
        if pass_budget < 1:
            break  # uncertified, reported through ``converged``
        fresh = _fresh_orthogonal(Y, gen)
        check = _thick_restart(
            op, 1, which, tol, fresh, Y, pass_budget, min(m, P - k), gen, eps, anorm, rival=values[-1], stop=stop, store=store
        )
        num_matvecs += check.num_matvecs
        num_restarts += check.num_restarts
        anorm = check.anorm
        if not check.converged:
            break
        # "Better" must exceed the k-th value's tolerance, so ties (exact copies already
        # present) end the search.
        margin = tol * torch.maximum(values[-1].abs(), eps**0.25 * anorm)
        gain = _better(check.theta[0], values[-1], which) & ((check.theta[0] - values[-1]).abs() > margin)
        if not bool(gain):
            certified = True
            break
        dropped.append(Y[-1:])
        values = torch.cat([values[:-1], check.theta])
        Y = torch.cat([Y[:-1], check.Y])
        order = _order(values, which)
        values, Y = values[order], Y[order]
        if store:
            assert AY is not None and check.AY is not None  # store=True keeps the products
            dropped_products.append(AY[-1:])
            AY = torch.cat([AY[:-1], check.AY])[order]
    converged = converged and certified

    use_run = not dropped
    if dropped:
        # Pairs found on the deflated operator carry first-order errors from the residuals
        # of the pairs they were deflated against; a Rayleigh-Ritz step on the span of
        # every pair seen (kept and dropped) removes them. Its explicit products give the
        # residuals, so they serve as certificate and verification at once.
        S, R = torch.linalg.qr(torch.cat([Y, *dropped]).T)  # (P, k + c) orthonormal, [Y; d]^T = S R
        if store:  # A S = A [Y; d]^T R^-1 from the stored products
            assert AY is not None
            AS = torch.linalg.solve_triangular(R.T, torch.cat([AY, *dropped_products]), upper=False).T
        else:
            AS = op.matmat(S)
            num_matvecs += S.shape[1]
        G = S.T @ AS
        theta, U = torch.linalg.eigh(0.5 * (G + G.T))
        sel = _order(theta, which)[:k]
        values = theta[sel]
        vectors = S @ U[:, sel]
        denom = torch.maximum(values.abs(), eps**0.25 * anorm).clamp_min(tiny)
        all_res = torch.linalg.vector_norm(AS @ U - (S @ U) * theta, dim=0)
        residuals = all_res[sel] / denom
        value_errors = _value_errors(theta, all_res, sel)[0] / denom
        vectors = _fix_signs(vectors)
        true_res = residuals.clone() if verify else torch.full_like(values, math.nan)
        crit = value_errors if stop == "value" else residuals
        room = budget - num_matvecs - n_verify
        if stop == "value" and not bool((crit <= tol).all()) and room >= k:
            # The replacement pair was converged on the deflated operator only to ``tol`` in
            # value, which leaves its residual (and the Rayleigh-Ritz gap estimates) too
            # coarse here; a short run from the sum of the k vectors (a start rich in
            # every wanted direction) converges them together with fresh certificates.
            v0p = vectors.sum(dim=1)
            v0p = v0p / torch.linalg.vector_norm(v0p)
            run = _thick_restart(op, k, which, tol, v0p, None, room, m, gen, eps, anorm, every_step=True, stop=stop, store=store)
            num_matvecs += run.num_matvecs
            num_restarts += run.num_restarts
            anorm = run.anorm
            values, Y = run.theta, run.Y
            converged = converged and run.converged
            use_run = True
        else:
            converged = converged and bool((crit <= tol).all())
    if use_run:  # the Lanczos pairs, with their certificates
        vectors = _fix_signs(Y.T.contiguous())
        denom = torch.maximum(values.abs(), eps**0.25 * anorm).clamp_min(tiny)
        residuals = run.coupling / denom
        r_abs = run.coupling
        if verify:
            if run.AY is not None:  # from the stored products; the residual norm ignores the signs
                true_abs = torch.linalg.vector_norm(run.AY - run.Y * values.unsqueeze(1), dim=1)
            else:
                AV = op.matmat(vectors)
                num_matvecs += k
                true_abs = torch.linalg.vector_norm(AV - vectors * values, dim=0)
            true_res = true_abs / denom
            r_abs = torch.maximum(r_abs, true_abs)
        else:
            true_res = torch.full_like(values, math.nan)
        value_errors = _kato_temple(r_abs, run.gap) / denom
        crit = value_errors if stop == "value" else torch.maximum(residuals, true_res.nan_to_num(0.0))
        converged = converged and bool((crit <= tol).all())
    return Eigenpairs(
        values=values,
        vectors=vectors,
        residuals=residuals,
        true_residuals=true_res,
        num_matvecs=num_matvecs,
        num_restarts=num_restarts,
        converged=converged,
        which=which,
        tol=float(tol),
        value_errors=value_errors,
        stop=stop,
    )


def _three_term(op: SymmetricOperator, q: Tensor, m: int, eps: float, gen: torch.Generator) -> tuple[Tensor, Tensor]:
    """The Lanczos recurrence without a stored basis: ``q`` (b, P) unit start vectors; returns
    alpha (b, m) and beta (b, m - 1). Each new direction is orthogonalised (twice) against
    the current and previous vectors only; a breakdown restarts from a fresh random vector
    orthogonal to those two (the tridiagonal is block diagonal there, as with a basis)."""
    b = q.shape[0]
    alpha = torch.zeros(b, m, dtype=q.dtype, device=q.device)
    beta = torch.zeros(b, max(m - 1, 0), dtype=q.dtype, device=q.device)
    anorm = torch.zeros(b, dtype=q.dtype, device=q.device)
    prev = torch.zeros_like(q)
    for j in range(m):
        W = op.matmat(q.T.contiguous()).T.contiguous()  # (b, P): one block product
        anorm = torch.maximum(anorm, torch.linalg.vector_norm(W, dim=1))
        a = (q * W).sum(dim=1)
        alpha[:, j] = a
        if j == m - 1:
            break
        W = W - a.unsqueeze(1) * q - (beta[:, j - 1].unsqueeze(1) * prev if j else 0.0)
        local = torch.stack([prev, q], dim=1)  # (b, 2, P)
        W, h = _orthogonalize(local, W)
        alpha[:, j] += h[:, 1]
        bt = torch.linalg.vector_norm(W, dim=1)
        broken = bt <= _BREAKDOWN * eps * anorm
        nxt = W / torch.where(broken, torch.ones_like(bt), bt).unsqueeze(1)
        if bool(broken.any()):
            idx = broken.nonzero().squeeze(1)
            nxt[idx] = _fresh_orthogonal(local[idx], gen)
            bt = torch.where(broken, torch.zeros_like(bt), bt)
        beta[:, j] = bt
        prev, q = q, nxt
    return alpha, beta


def lanczos_tridiagonal(
    op: SymmetricOperator | Tensor,
    v0: Tensor,
    num_steps: int,
    *,
    dtype: torch.dtype | None = None,
    seed: int = 0,
    return_basis: bool = False,
    basis_device: torch.device | str | None = None,
    reorthogonalize: bool = True,
) -> LanczosTridiagonal:
    """Lanczos tridiagonalisation with full reorthogonalisation from one or more start vectors.

    Several start vectors (columns of ``v0``) run independent recurrences side by side
    with one block product per step, so ``b`` probes cost ``b * m`` products in ``m``
    operator calls. Each new direction is orthogonalised twice (classical Gram-Schmidt)
    against its own basis. At a breakdown the coupling is set to exactly zero and the
    recurrence continues from a fresh random orthogonal vector drawn from ``seed``: the
    tridiagonal becomes block diagonal and the Gauss quadrature of the start vector is
    still exact.

    Args:
        op: symmetric (P, P) operator or dense tensor.
        v0: start vector (P,) or block (P, b) of non-zero start vectors (normalised here).
        num_steps: number of steps m >= 1; capped at P.
        dtype: dtype of the basis and coefficients (default: the operator's).
        seed: seed for fresh vectors after a breakdown.
        return_basis: also return the orthonormal basis (memory b m P numbers are held
            either way, :func:`tridiagonal_basis_bytes`; this only keeps them).
        basis_device: where the bases and coefficients live (default: the operator's device).
        reorthogonalize: False runs the plain three-term recurrence (with local
            reorthogonalisation against the two previous vectors), holding ``3 b P`` numbers
            instead of ``b m P``. The basis then loses orthogonality as Ritz values
            converge and T acquires copies of them, but the Gauss quadrature of the start
            vector, and so the SLQ density and its moments, stays accurate in floating
            point (Greenbaum 1989; Knizhnerman 1996; Chen, Trogdon & Ubaru 2021,
            "Analysis of stochastic Lanczos quadrature for spectrum approximation"). For
            quadrature only: eigenpairs need the reorthogonalised basis.

    Returns:
        :class:`LanczosTridiagonal` with ``num_matvecs = b * m``.
    """
    op = as_operator(op)
    P = op.shape[0]
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"num_steps must be an int >= 1, got {num_steps!r}")
    if P == 0:
        raise ValueError("the operator has dimension 0; Lanczos needs P >= 1")
    if v0.ndim not in (1, 2) or v0.shape[0] != P:
        raise ValueError(f"v0 must have shape ({P},) or ({P}, b), got {tuple(v0.shape)}")
    wdtype = _working_dtype(op, dtype)
    single = v0.ndim == 1
    device = _basis_device(op, basis_device)
    V0 = v0.detach().reshape(P, -1).to(device=device, dtype=wdtype)
    b = V0.shape[1]
    norms = torch.linalg.vector_norm(V0, dim=0)
    if b == 0 or not bool(torch.isfinite(norms).all()) or bool((norms == 0).any()):
        raise ValueError("v0 must hold at least one finite non-zero start vector")
    m = min(num_steps, P)
    gen = seeded_generator(seed)
    eps = _noise_eps(op, wdtype)
    if not reorthogonalize:
        if return_basis:
            raise ValueError("return_basis needs reorthogonalize=True: the three-term recurrence keeps no basis")
        alpha, beta = _three_term(op, (V0 / norms).T.contiguous(), m, eps, gen)
        return LanczosTridiagonal(alpha[0], beta[0], None, m) if single else LanczosTridiagonal(alpha, beta, None, b * m)
    Q = torch.zeros(b, m, P, dtype=wdtype, device=device)
    alpha = torch.zeros(b, m, dtype=wdtype, device=device)
    beta = torch.zeros(b, max(m - 1, 0), dtype=wdtype, device=device)
    anorm = torch.zeros(b, dtype=wdtype, device=device)
    q = (V0 / norms).T.contiguous()  # (b, P)
    for j in range(m):
        Q[:, j] = q
        W = op.matmat(q.T.contiguous()).T.contiguous()  # (b, P): one block product
        anorm = torch.maximum(anorm, torch.linalg.vector_norm(W, dim=1))
        if j == m - 1:
            alpha[:, j] = (q * W).sum(dim=1)
            break
        W, h = _orthogonalize(Q[:, : j + 1], W)
        alpha[:, j] = h[:, j]
        bt = torch.linalg.vector_norm(W, dim=1)
        broken = bt <= _BREAKDOWN * eps * anorm
        q = W / torch.where(broken, torch.ones_like(bt), bt).unsqueeze(1)
        if bool(broken.any()):  # j + 1 < m <= P, so an orthogonal complement exists
            idx = broken.nonzero().squeeze(1)
            q[idx] = _fresh_orthogonal(Q[idx, : j + 1], gen)
            bt = torch.where(broken, torch.zeros_like(bt), bt)
        beta[:, j] = bt
    basis = None
    if return_basis:
        basis = Q.transpose(1, 2)
        basis = basis[0] if single else basis
    if single:
        return LanczosTridiagonal(alpha[0], beta[0], basis, m)
    return LanczosTridiagonal(alpha, beta, basis, b * m)
