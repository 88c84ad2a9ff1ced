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
  For k > 1 a deflated pass from a fresh random vector looks for copies and missed
  eigenvalues, and its basis joins a final Rayleigh-Ritz step (no further product).
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

from landscape.curvature._gram_schmidt import _BREAKDOWN, _fresh_orthogonal, _orthogonalize
from landscape.curvature._thick_restart import _better, _kato_temple, _Run, _thick_restart, _Union, _union_ritz, _value_errors
from landscape.curvature.linop import SymmetricOperator, as_operator
from landscape.curvature.trace import random_probes
from landscape.seeding import seeded_generator

__all__ = ["Eigenpairs", "LanczosTridiagonal", "top_eigenpairs", "lanczos_tridiagonal", "lanczos_basis_bytes",
           "tridiagonal_basis_bytes", "WHICH", "STOP_RULES"]

WHICH = ("LA", "SA", "LM")
STOP_RULES = ("residual", "value")


@dataclass(frozen=True)
class Eigenpairs:
    """Ritz pairs of a symmetric operator from :func:`top_eigenpairs`.

    Attributes:
        values: (k,) Ritz values; descending for "LA", ascending for "SA", by descending
            magnitude for "LM".
        vectors: (P, k) orthonormal Ritz vectors, sign fixed so that the entry of largest
            magnitude is positive.
        residuals: (k,) relative residuals from the Lanczos relation (or, after the
            multiplicity pass's Rayleigh-Ritz step, from both passes' relations),
            ``||A v - theta v|| / max(|theta|, eps^(1/4) ||A||est)``; after the
            multiplicity check added a pair they come from explicit products of the final
            vectors instead.
        true_residuals: (k,) the same quantity from explicit products ``A V`` (one block
            product of k columns, or kept products of the basis), or NaN when
            ``verify=False``.
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
    ``store_products``, and the k Ritz vectors; ``max_basis`` as its default. (The
    multiplicity pass holds ``k + min(max_basis, 20) + 2`` rows, the set, its basis and the
    first run's residual vector, then k new rows in place of that vector at its
    Rayleigh-Ritz step.) Products kept for a free verification sit in basis rows not yet
    used (on CPU, untouched rows take no memory and the products are held as returned).
    Transients come on top: the product being orthogonalised and its work vector, and a
    thick restart rotating up to ``max_basis`` rows into a new block (measured at
    P = 1.1e7, k = 5, float32: peak 32 rows against the 31 stated)."""
    m = min(num_params, _default_basis(k)) if max_basis is None else min(num_params, max_basis)
    return itemsize * num_params * (2 * k + m + 1 + (m if store_products else 0))


def tridiagonal_basis_bytes(num_params: int, num_vectors: int, num_steps: int, *, itemsize: int = 8,
                            reorthogonalize: bool = True) -> int:
    """Bytes of the bases :func:`lanczos_tridiagonal` holds: ``b m P`` for b start vectors run
    side by side and m steps (SLQ: b = its ``probe_batch_size``, or all probes); ``3 b P``
    without reorthogonalisation."""
    held = min(num_steps, num_params) if reorthogonalize else min(3, num_steps)
    return itemsize * num_params * num_vectors * held


def _default_basis(k: int) -> int:
    """Default ``max_basis`` for k pairs: ``max(2 k + 1, 20)``."""
    return max(2 * k + 1, 20)


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
    ``hint`` in equal measure when one is given and is finite and non-zero (a zero hint,
    such as the gradient at a minimum, or a non-finite one leaves the draw alone). A hint
    of any shape but (P,) is an error of the operator that offers it."""
    if v0 is None:
        v = random_probes(P, 1, generator=generator, kind="gaussian", dtype=wdtype, device=device).reshape(P)
        if hint is not None:
            if tuple(hint.shape) != (P,):
                raise ValueError(f"the operator's start_hint() must have shape ({P},) like the operator's ({P}, {P}), "
                                 f"got {tuple(hint.shape)}")
            h = hint.detach().to(device=device, dtype=wdtype)
            h_norm = torch.linalg.vector_norm(h)
            if bool(torch.isfinite(h_norm)) and float(h_norm) > 0.0:
                v.div_(torch.linalg.vector_norm(v)).add_(h, alpha=1.0 / float(h_norm))  # the draw is ours: in place
    else:
        if v0.shape != (P,):
            raise ValueError(f"v0 must have shape ({P},), got {tuple(v0.shape)}")
        v = v0.detach().to(device=device, dtype=wdtype)
    norm = torch.linalg.vector_norm(v)
    if not bool(torch.isfinite(norm)) or float(norm) == 0.0:
        raise ValueError(f"v0 must be a finite non-zero vector, got norm {float(norm)}")
    return v / norm if v0 is not None else v.div_(norm)


def _fix_signs(V: Tensor) -> Tensor:
    """Flip columns of V (P, k), in place, so that each column's largest-magnitude entry is
    positive (the first one on ties); returns V."""
    hi, lo = V.max(dim=0), V.min(dim=0)  # no |V| copy: the largest magnitude is the max or -min
    neg = (-lo.values > hi.values) | ((-lo.values == hi.values) & (lo.indices < hi.indices))  # implies lo < 0
    signs = torch.where(neg, -torch.ones_like(hi.values), torch.ones_like(hi.values))
    return V.mul_(signs)


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
    best eigenpair, with a one-pair solve's basis (``min(max_basis, 20)`` vectors). A
    converged pair better than the k-th value by more than its tolerance ends the pass
    early; finding nothing better takes a full basis of products, since a small Krylov
    space of a large operator converges first to its bulk (on a network Hessian one
    product from a random vector gives a Ritz value near 0 whose residual meets a loose
    tolerance against the floor below, which says nothing about the top). Each pass ends
    with a Rayleigh-Ritz step on the k pairs plus the pass's whole basis, at no product:
    the projection follows from the couplings the deflation projected away
    (:func:`~landscape.curvature._thick_restart._union_ritz`), its Ritz values are no
    worse than the k values, and the pass's space holds what the first Krylov space
    missed near the k-th eigenvalue (timm's ResNet-18, ``tol=0.1``: the first run's
    top-5 error 8.9e-2 becomes 1.2e-2). If the pass found a better pair, the step's
    best k become the set, the pass repeats, and the final certificates come from
    explicit products (k of them, which serve as the verification too); otherwise the
    set is certified and the step's pairs are returned when their certificates, from
    both Lanczos relations, meet ``tol``.

    With ``verify`` the k Ritz vectors are multiplied by the operator in one block
    product and the true relative residuals are reported beside the certificates. At
    ``tol >= eps^(1/2)`` (3.5e-4 in float32) a run that converges within
    ``max_basis // 2`` products, as ``k = 1`` often does there, keeps its products in
    basis rows it has not reached and takes the verification from them:
    ``A y = (A Q^T) u`` for ``y = Q^T u``, no further product. Those products check the
    Lanczos relation and the orthogonalisation (on a float32 ResNet-18 they give the
    explicit product's true residual to 7 digits, 1.1e-3 where the certificate says
    6.9e-4); what they cannot show is the rounding of a fresh product of y against the
    same combination of the basis' products, a few eps ||A|| for a linear operator: below
    ``eps^(1/2)`` relative, the explicit product shows it.

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
            ``min(P, max(2 k + 1, 20))``); memory: :func:`lanczos_basis_bytes`.
        verify: compute true residuals from explicit products: one extra block product
            of k columns, or none when the products were kept (see above and
            ``store_products``).
        check_multiplicity: run the deflated pass described above when k > 1 (at least
            ``min(max_basis, 20)`` more products; its space then serves the final
            Rayleigh-Ritz step).
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
            memory), so the verification and the certificates after a replacement take
            their products from those (``A Y = (A Q) U``) instead of spending k more.
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
        m = min(P, _default_basis(k))
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
    del hint
    # One pair needs no second copy, so k = 1 skips the check and, like any run with the
    # check behind it, stops at the first product where its pair converges (so a looser
    # tol costs fewer products). For k > 1 without the check, stopping that early could
    # return k pairs while a wanted eigenvalue is still unseen, so convergence is then
    # tested with a full basis.
    check_multiplicity = check_multiplicity and k > 1
    every_step = check_multiplicity or stop == "value" or k == 1
    store = bool(store_products)
    # Without stored products the verification may still come free: a run that converges
    # early keeps its products in the rows of the basis buffer that it has not reached
    # (for tol >= eps^(1/2): see the docstring).
    spare = verify and not store and tol >= math.sqrt(eps)
    run = _thick_restart(op, k, which, tol, start, None, lanczos_budget, m, gen, eps, anorm, every_step=every_step, stop=stop,
                         store=store, spare_rows=spare, keep_f=check_multiplicity)
    del start
    values, Y, AY, b, gap, f, anorm = run.theta, run.Y, run.AY, run.b, run.gap, run.f, run.anorm
    num_matvecs, num_restarts, converged = run.num_matvecs, run.num_restarts, run.converged
    # An exhausted basis spanned the whole space: every eigenvalue and copy was seen.
    certified = not check_multiplicity or run.exhausted
    del run
    gained = False  # a pass found a better pair: the set is no longer one Lanczos run's pairs
    check_basis = min(m, P - k, _default_basis(1))  # the pass looks for one pair: a one-pair solve's basis
    final: _Union | None = None  # Rayleigh-Ritz on the set and the certifying pass's basis
    check: _Run | None = None
    while converged and not certified:
        # Leave room for the explicit products of the final set should this pass add a pair.
        pass_budget = budget - num_matvecs - (0 if store else k)
        if pass_budget < 1:
            break  # uncertified, reported through ``converged``
        # The pass's buffer takes the set as its locked rows, which are then not held twice.
        buffer = torch.empty(k + check_basis + 1, P, dtype=wdtype, device=device)
        buffer[:k] = Y
        Y = buffer[:k]
        fresh = _fresh_orthogonal(Y, gen)
        # "Better" must exceed the k-th value's tolerance, so ties (exact copies already
        # present) end the search.
        margin = tol * torch.maximum(values[-1].abs(), eps**0.25 * anorm)
        check = _thick_restart(op, 1, which, tol, fresh, Y, pass_budget, check_basis, gen, eps, anorm, rival=values[-1],
                               stop=stop, store=store, margin=float(margin), keep_basis=True, buffer=buffer)
        del buffer, fresh
        num_matvecs += check.num_matvecs
        num_restarts += check.num_restarts
        anorm = check.anorm
        if not check.converged:
            break
        margin = tol * torch.maximum(values[-1].abs(), eps**0.25 * anorm)
        gain = _better(check.theta[0], values[-1], which) & ((check.theta[0] - values[-1]).abs() > margin)
        assert check.basis is not None  # keep_basis
        single = not gained and not bool(gain)  # the set is still one run's pairs: the union's certificates follow
        un = _union_ritz(values, check.basis, k, which, b=b if single else None, f=f if single else None)
        f = None  # its part is done: the memory goes to the new rows
        if bool(gain):  # the union's best k replace the set, and the search goes on
            values, gained = un.theta, True
            Y, AY = un.vectors(check.basis, AY)
            del check, un
            continue
        certified = True
        final = un
    converged = converged and certified
    f = None

    r_abs: Tensor | None = b.abs()  # certificates from the Lanczos relation(s), or None: from explicit products
    others = values[:0]  # the final union's other Ritz values
    if final is not None and not gained:
        # One pass, nothing missed: the union's pairs, taken when they meet tol as well.
        assert final.r is not None and final.gap is not None
        den = torch.maximum(final.theta.abs(), eps**0.25 * anorm).clamp_min(tiny)
        if bool(((_kato_temple(final.r, final.gap) if stop == "value" else final.r) / den <= tol).all()):
            assert check is not None and check.basis is not None
            values, r_abs, gap = final.theta, final.r, final.gap
            Y, AY = final.vectors(check.basis, AY)
    elif gained:
        # The set holds pairs found on deflated operators: its certificates come from
        # explicit products (which serve as verification at once).
        if final is not None:
            assert check is not None and check.basis is not None
            values, others = final.theta, final.others
            Y, AY = final.vectors(check.basis, AY)
        r_abs = None
    del final
    # The last pass's buffer goes; the set is copied out of it when it still lives there.
    if check is not None and check.basis is not None and Y.untyped_storage().data_ptr() == check.basis.rows.untyped_storage().data_ptr():
        Y = Y.clone()
    check = None
    # Residual norms from stored products come first (their rows are ours: in place); the
    # vectors are then laid out (P, k) with their signs fixed (for k = 1 in Y's storage).
    stored_abs = None if AY is None else torch.linalg.vector_norm(AY.addcmul_(Y, values.unsqueeze(1), value=-1), dim=1)
    AY = None
    vectors = _fix_signs(Y.T.contiguous())
    denom = torch.maximum(values.abs(), eps**0.25 * anorm).clamp_min(tiny)
    if r_abs is None:
        if stored_abs is not None:
            r_abs = stored_abs
        else:
            r_abs = torch.linalg.vector_norm(torch.addcmul(op.matmat(vectors), vectors, values, value=-1), dim=0)
            num_matvecs += k
        # Gaps to the union's other Ritz values, whose residuals are unknown: moved halfway.
        theta_all = torch.cat([values, others])
        gap = _value_errors(theta_all, torch.cat([r_abs, torch.full_like(others, math.inf)]), torch.arange(k, device=device))[1]
        residuals = r_abs / denom
        true_res = residuals.clone() if verify else torch.full_like(values, math.nan)
        value_errors = _kato_temple(r_abs, gap) / denom
        crit = value_errors if stop == "value" else residuals
        room = budget - num_matvecs - n_verify
        if stop == "value" and not bool((crit <= tol).all()) and room >= k:
            # A pair converged on a deflated operator only to ``tol`` in value has too coarse
            # a residual (and gap estimate) here; a short run from the sum of the k vectors
            # (a start rich in every wanted direction) converges them together with fresh
            # certificates.
            v0p = vectors.sum(dim=1)
            v0p = v0p / torch.linalg.vector_norm(v0p)
            run = _thick_restart(op, k, which, tol, v0p, None, room, m, gen, eps, anorm, every_step=True, stop=stop, store=store,
                                 spare_rows=spare)
            num_matvecs += run.num_matvecs
            num_restarts += run.num_restarts
            anorm = run.anorm
            values, Y, r_abs, gap = run.theta, run.Y, run.coupling, run.gap
            converged = converged and run.converged
            stored_abs = None if run.AY is None else torch.linalg.vector_norm(run.AY.addcmul_(Y, values.unsqueeze(1), value=-1), dim=1)
            vectors = _fix_signs(Y.T.contiguous())
            denom = torch.maximum(values.abs(), eps**0.25 * anorm).clamp_min(tiny)
        else:
            converged = converged and bool((crit <= tol).all())
            r_abs = None  # done
    if r_abs is not None:  # certificates from the Lanczos relation(s)
        residuals = r_abs / denom
        if verify:
            if stored_abs is not None:  # from stored products (the residual norm ignores the signs)
                true_abs = stored_abs
            else:
                true_abs = torch.linalg.vector_norm(torch.addcmul(op.matmat(vectors), vectors, values, value=-1), dim=0)
                num_matvecs += k
            true_res = true_abs / denom
            r_abs = torch.maximum(r_abs, true_abs)
        else:
            true_res = torch.full_like(values, math.nan)
        value_errors = _kato_temple(r_abs, gap) / denom
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
