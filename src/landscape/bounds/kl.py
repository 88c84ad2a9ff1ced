"""Binary relative entropy kl(q || p) and its inverses, the workhorse of kl-form bounds.

For ``q, p`` in [0, 1] the Bernoulli relative entropy is

    kl(q || p) = q ln(q / p) + (1 - q) ln((1 - q) / (1 - p)),   with 0 ln 0 = 0,

and the upper inverse used by every "kl form" bound (Langford & Seeger 2001; Seeger
2002, "PAC-Bayesian generalisation error bounds for Gaussian process classification";
Maurer 2004, "A note on the PAC Bayesian theorem") is

    kl^-1(q, c) = sup { p in [q, 1] : kl(q || p) <= c }.

:func:`kl_inv_upper` computes it with Newton's method started to the right of the root,
where the convexity of ``p -> kl(q || p)`` makes every Newton iterate stay at or above
the root, safeguarded by a bracket and bisection, then nudged up ulp by ulp until
``kl(q || p) >= c`` as computed: the result is within a few ulps of the root and never
understates the bound beyond the rounding of ``kl`` itself. Edge cases are exact: ``c = 0 -> q``, ``q = 1 -> 1``,
``q = 0 -> 1 - exp(-c)``, ``c = inf -> 1``; for very large ``c`` the result rounds to 1.

All arithmetic is float64 NumPy; inputs broadcast against each other.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike

__all__ = ["binary_kl", "kl_inv_upper", "kl_inv_lower", "kl_inv_upper_bisection"]

_EPS = float(np.finfo(np.float64).eps)
# Below this |x| the series of x - log1p(x) is used (16 terms: truncation < 1e-17 * x^2).
_SERIES_CUTOFF = 0.1
_SERIES_TERMS = 16


def _x_minus_log1p(x: np.ndarray) -> np.ndarray:
    """``x - log1p(x)`` for ``x >= -1`` without cancellation near 0 (>= 0 everywhere)."""
    x = np.asarray(x, dtype=np.float64)
    out = np.empty_like(x)
    small = np.abs(x) < _SERIES_CUTOFF
    xs = x[small]
    # x - log1p(x) = x^2 * sum_{m>=0} (-1)^m x^m / (m + 2), summed in Horner form.
    acc = np.zeros_like(xs)
    for m in range(_SERIES_TERMS - 1, -1, -1):
        acc = (-1.0) ** m / (m + 2) + xs * acc
    out[small] = xs * xs * acc
    xl = x[~small]
    with np.errstate(divide="ignore"):
        out[~small] = xl - np.log1p(xl)
    return out


def binary_kl(q: ArrayLike, p: ArrayLike) -> np.ndarray | float:
    """Bernoulli relative entropy ``kl(q || p)`` in nats.

    Computed as ``q * g(p/q - 1) + (1 - q) * g((1-p)/(1-q) - 1)`` with
    ``g(x) = x - log1p(x) >= 0`` (the linear parts cancel exactly), so the result is
    non-negative and accurate to a few ulps even when ``p`` is close to ``q``.

    Args:
        q: First argument(s) in [0, 1] (e.g. an empirical risk).
        p: Second argument(s) in [0, 1] (e.g. a true risk); broadcasts against ``q``.

    Returns:
        ``kl(q || p)`` with the broadcast shape (a float for scalar inputs); ``inf``
        where ``p`` is 0 or 1 and ``q`` differs from it.

    Raises:
        ValueError: If any ``q`` or ``p`` lies outside [0, 1] or is NaN.
    """
    qa = _as_unit_interval(q, "q")
    pa = _as_unit_interval(p, "p")
    qa, pa = np.broadcast_arrays(qa, pa)
    out = _binary_kl_unchecked(qa, pa)
    return float(out) if out.ndim == 0 else out


def _binary_kl_unchecked(q: np.ndarray, p: np.ndarray) -> np.ndarray:
    """``kl(q || p)`` for validated float64 arrays of equal shape."""
    q = np.asarray(q, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros(np.broadcast_shapes(q.shape, p.shape), dtype=np.float64)
    q, p = np.broadcast_arrays(q, p)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        inner = (q > 0) & (q < 1)
        qi, pi = q[inner], p[inner]
        d = pi - qi
        x = d / qi  # may overflow for subnormal q: use log1p(x) = ln(d/q) + log1p(q/d) there
        big = ~(x <= 1e8)
        term_q = np.empty_like(d)
        term_q[~big] = qi[~big] * _x_minus_log1p(x[~big])
        qb, db = qi[big], d[big]
        term_q[big] = db - qb * (np.log(db) - np.log(qb) + np.log1p(qb / db))
        term_r = (1.0 - qi) * _x_minus_log1p(-d / (1.0 - qi))
        out[inner] = term_q + term_r
        zero = q == 0
        out[zero] = -np.log1p(-p[zero])  # kl(0 || p) = -ln(1 - p)
        one = q == 1
        out[one] = 0.0 - np.log(p[one])  # kl(1 || p) = -ln p (0.0 - turns -0.0 into 0.0)
    return out


def _as_unit_interval(x: ArrayLike, name: str) -> np.ndarray:
    arr = np.asarray(x, dtype=np.float64)
    bad = ~((arr >= 0.0) & (arr <= 1.0))
    if np.any(bad):
        raise ValueError(f"{name} must lie in [0, 1], got {arr[bad].ravel()[:5].tolist()}")
    return arr


def _as_budget(c: ArrayLike) -> np.ndarray:
    arr = np.asarray(c, dtype=np.float64)
    bad = ~(arr >= 0.0)  # catches NaN too; +inf is allowed
    if np.any(bad):
        raise ValueError(f"c must be >= 0 (nats, +inf allowed), got {arr[bad].ravel()[:5].tolist()}")
    return arr


def kl_inv_upper(q: ArrayLike, c: ArrayLike, *, max_iter: int = 200) -> np.ndarray | float:
    """Upper inverse ``kl^-1(q, c) = sup{p in [q, 1] : kl(q || p) <= c}``.

    Safeguarded Newton iteration (see the module docstring) inside the bracket

        max(q, 1 - (1 - q) exp(-c / (1 - q)))  <=  p*  <=
        min(q + sqrt(c / 2), 1 - exp(-(c + h(q)) / (1 - q))),

    where ``h`` is the binary entropy in nats: ``q + sqrt(c/2)`` is Pinsker's inequality,
    the other two ends follow from ``kl(q||p) = -h(q) - q ln p - (1-q) ln(1-p)`` with
    ``q ln q <= q ln p <= 0``.

    Args:
        q: Empirical value(s) in [0, 1].
        c: Budget(s) in nats, ``>= 0`` (``inf`` allowed); broadcasts against ``q``.
        max_iter: Iteration cap (Newton usually needs < 10; bisection fallback < 64).

    Returns:
        ``p*`` with the broadcast shape (a float for scalar inputs); ``p* >= q``.

    Raises:
        ValueError: If ``q`` is outside [0, 1], ``c`` is negative or NaN, or
            ``max_iter < 1``.
    """
    if max_iter < 1:
        raise ValueError(f"max_iter must be >= 1, got {max_iter}")
    qa, ca = np.broadcast_arrays(_as_unit_interval(q, "q"), _as_budget(c))
    qa = qa.astype(np.float64, copy=True)
    ca = ca.astype(np.float64, copy=True)
    out = np.empty(qa.shape, dtype=np.float64)

    # Exact edge cases.
    done = np.zeros(qa.shape, dtype=bool)
    zero_c = ca == 0
    out[zero_c] = qa[zero_c]
    done |= zero_c
    inf_c = np.isinf(ca) & ~done
    out[inf_c] = 1.0
    done |= inf_c
    one_q = (qa == 1) & ~done
    out[one_q] = 1.0
    done |= one_q
    zero_q = (qa == 0) & ~done
    out[zero_q] = -np.expm1(-ca[zero_q])
    done |= zero_q

    active = ~done
    if np.any(active):
        out[active] = _newton_interior(qa[active], ca[active], max_iter)
    return float(out) if out.ndim == 0 else out


def _newton_interior(q: np.ndarray, c: np.ndarray, max_iter: int) -> np.ndarray:
    """Root of ``kl(q||p) = c`` on ``p > q`` for 0 < q < 1 and 0 < c < inf (1-D arrays)."""
    r = 1.0 - q
    h = -(q * np.log(q) + r * np.log(r))  # binary entropy, nats
    lo = np.maximum(q, -np.expm1(np.log(r) - c / r))
    hi = np.minimum.reduce([q + np.sqrt(c / 2.0), -np.expm1(-(c + h) / r), np.ones_like(q)])
    hi = np.maximum(hi, lo)
    x = hi.copy()
    active = np.ones(q.shape, dtype=bool)
    for _ in range(max_iter):
        idx = np.flatnonzero(active)
        if idx.size == 0:
            break
        qi, ci, xi = q[idx], c[idx], x[idx]
        f = _binary_kl_unchecked(qi, xi) - ci
        above = f > 0
        hi[idx] = np.where(above, xi, hi[idx])
        lo[idx] = np.where(above, lo[idx], xi)
        lo_i, hi_i = lo[idx], hi[idx]
        with np.errstate(divide="ignore", invalid="ignore"):
            slope = (xi - qi) / (xi * (1.0 - xi))
            step = f / slope
            x_new = xi - step
        # After a tiny Newton step (quadratic convergence) x_new is the root to rounding.
        tiny_step = np.isfinite(x_new) & (np.abs(step) <= 4.0 * _EPS * xi)
        hi[idx] = np.where(f == 0, xi, np.where(tiny_step, np.clip(x_new, lo_i, hi_i), hi[idx]))
        bad = ~np.isfinite(x_new) | (x_new <= lo_i) | (x_new >= hi_i)
        x_new = np.where(bad, 0.5 * (lo_i + hi_i), x_new)
        converged = tiny_step | (f == 0) | (hi_i - lo_i <= 2.0 * np.spacing(hi_i))
        x[idx] = x_new
        active[idx[converged]] = False
    # hi is the smallest point seen with kl(q||hi) > c, the analytic upper bracket, or the
    # converged Newton iterate; step it up ulp by ulp until kl(q||hi) >= c as computed, so
    # the result never understates the bound.
    for _ in range(16):
        short = _binary_kl_unchecked(q, hi) < c
        if not np.any(short):
            break
        hi[short] = np.nextafter(hi[short], 1.0)
    return hi


def kl_inv_lower(q: ArrayLike, c: ArrayLike, *, max_iter: int = 200) -> np.ndarray | float:
    """Lower inverse ``inf{p in [0, q] : kl(q || p) <= c}``, via ``kl(q||p) = kl(1-q||1-p)``.

    Args:
        q: Empirical value(s) in [0, 1].
        c: Budget(s) in nats, ``>= 0``.
        max_iter: Passed to :func:`kl_inv_upper`.

    Returns:
        The lower end of the kl confidence interval, ``<= q``.

    Raises:
        ValueError: As :func:`kl_inv_upper`.
    """
    qa = _as_unit_interval(q, "q")
    up = np.asarray(kl_inv_upper(1.0 - qa, c, max_iter=max_iter), dtype=np.float64)
    out = 1.0 - up
    return float(out) if out.ndim == 0 else out


def kl_inv_upper_bisection(q: float, c: float, *, iterations: int = 200) -> float:
    """Slow scalar reference for :func:`kl_inv_upper`: plain bisection on [q, 1].

    Uses its own textbook ``kl`` formula (``q ln(q/p) + (1-q) ln((1-q)/(1-p))``), so it
    shares no numerics with the fast path; meant for tests.

    Args:
        q: Empirical value in [0, 1].
        c: Budget in nats, ``>= 0`` and finite.
        iterations: Number of halvings (200 reaches float64 resolution).

    Returns:
        The upper end of the final bracket (``kl(q || p) >= c`` there).

    Raises:
        ValueError: If ``q`` is outside [0, 1] or ``c`` is negative, NaN or infinite.
    """
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must lie in [0, 1], got {q}")
    if not (c >= 0.0 and math.isfinite(c)):
        raise ValueError(f"c must be finite and >= 0, got {c}")

    def kl(a: float, b: float) -> float:
        if b <= 0.0:
            return 0.0 if a == 0.0 else math.inf
        if b >= 1.0:
            return 0.0 if a == 1.0 else math.inf
        t1 = 0.0 if a == 0.0 else a * math.log(a / b)
        t2 = 0.0 if a == 1.0 else (1.0 - a) * math.log((1.0 - a) / (1.0 - b))
        return t1 + t2

    lo, hi = q, 1.0
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        if mid <= lo or mid >= hi:
            break
        if kl(q, mid) > c:
            hi = mid
        else:
            lo = mid
    return hi if kl(q, hi) >= c or hi == 1.0 else lo
