"""Classical parameter-count bounds for a single (deterministic) network: the H4 baseline.

Occam / description-length bound (primary; exact constants). Langford 2005, "Tutorial on
practical prediction theory for classification" (JMLR 6), Theorem 4.1 (Occam's razor
bound) in its relative-entropy form: for a countable class with a prior ``pi(h)`` fixed
before the data, with probability >= 1 - delta over n i.i.d. samples, for all h,

    kl( emp(h) || risk(h) ) <= ( ln(1 / pi(h)) + ln(1 / delta) ) / n.

A network with P parameters each stored in b bits is one of ``2^(b P)`` bit strings;
the uniform prior gives ``ln(1/pi) = b P ln 2`` and

    risk <= kl^-1( emp, (b P ln 2 + ln(1/delta)) / n )          (:func:`occam_bound`).

With ``b = 32`` this is a rigorous bound on the float32 network exactly as trained (every
float32 vector is one of the strings); smaller b is rigorous only for the network
quantised to b bits (its own empirical risk must then be used). The cost grows linearly
in P: this is the "raw parameter count" complexity that H4 compares against.

VC bound (secondary). Bousquet, Boucheron & Lugosi 2004, "Introduction to statistical
learning theory" (LNAI 3176), Sec. 4.3, the Vapnik-Chervonenkis bound with Sauer's lemma:
with probability >= 1 - delta, for all h in a class of VC dimension d (``2n >= d``),

    risk <= emp + 2 sqrt( 2 (d ln(2 e n / d) + ln(2 / delta)) / n )   (:func:`vc_bound`).

The caller supplies d. For piecewise-linear (ReLU) networks with P parameters and L
layers, Bartlett, Harvey, Liaw & Mehrabian 2019 ("Nearly-tight VC-dimension and
pseudodimension bounds for piecewise linear neural networks", JMLR 20) prove
``VCdim = O(P L log P)`` and exhibit networks with ``Omega(P L log(P / L))``; their explicit
upper bound (Theorem 7 there) is not re-derived here. Passing ``d = P`` is therefore an
*optimistic* stand-in (below every valid VC dimension of a deep ReLU class), giving a
number no valid VC bound can beat; report it as such.
"""

from __future__ import annotations

import math

import numpy as np

from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.pacbayes import BoundResult

__all__ = ["occam_bound", "vc_bound"]


def _check_common(empirical_risk: float, n: int, delta: float) -> None:
    if not (0.0 <= empirical_risk <= 1.0):
        raise ValueError(f"empirical_risk must lie in [0, 1], got {empirical_risk}")
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    if not (0.0 < delta < 1.0):
        raise ValueError(f"delta must lie in (0, 1), got {delta}")


def occam_bound(
    empirical_risk: float,
    num_params: int,
    n: int,
    delta: float,
    *,
    bits_per_param: int = 32,
) -> BoundResult:
    """Occam bound ``kl^-1(emp, (b P ln 2 + ln(1/delta)) / n)`` (Langford 2005, Thm 4.1).

    Args:
        empirical_risk: Training 0-1 error of the (stored) network, in [0, 1].
        num_params: P, the number of stored parameters.
        n: Number of training samples.
        delta: Failure probability, in (0, 1).
        bits_per_param: b, bits per stored parameter (32 for float32).

    Returns:
        :class:`~landscape.bounds.pacbayes.BoundResult` with ``kind="occam"``,
        ``kl = b P ln 2`` (description length, nats) and ``confidence_term = ln(1/delta)``.

    Raises:
        ValueError: On out-of-range arguments.
    """
    _check_common(empirical_risk, n, delta)
    if not isinstance(num_params, (int, np.integer)) or num_params < 1:
        raise ValueError(f"num_params must be an integer >= 1, got {num_params!r}")
    if not isinstance(bits_per_param, (int, np.integer)) or bits_per_param < 1:
        raise ValueError(f"bits_per_param must be an integer >= 1, got {bits_per_param!r}")
    length = float(bits_per_param) * float(num_params) * math.log(2.0)
    conf = math.log(1.0 / delta)
    budget = (length + conf) / n
    bound = float(kl_inv_upper(empirical_risk, budget))
    return BoundResult(
        kind="occam",
        bound=bound,
        empirical_risk=float(empirical_risk),
        kl=length,
        confidence_term=conf,
        union_cost=0.0,
        grid_size=1,
        budget=budget,
        n=int(n),
        delta=float(delta),
    )


def vc_bound(empirical_risk: float, vc_dim: int, n: int, delta: float) -> BoundResult:
    """VC bound ``min(1, emp + 2 sqrt(2 (d ln(2en/d) + ln(2/delta)) / n))`` (BBL 2004).

    Args:
        empirical_risk: Training 0-1 error, in [0, 1].
        vc_dim: d, an upper bound on the VC dimension of the class (see module docstring).
        n: Number of training samples.
        delta: Failure probability, in (0, 1).

    Returns:
        :class:`~landscape.bounds.pacbayes.BoundResult` with ``kind="vc"``, ``kl = 0``,
        ``confidence_term = d ln(2en/d) + ln(2/delta)`` and ``budget`` that term over n;
        ``bound = 1`` when ``2n < d`` (Sauer's lemma step does not apply: vacuous).

    Raises:
        ValueError: On out-of-range arguments.
    """
    _check_common(empirical_risk, n, delta)
    if not isinstance(vc_dim, (int, np.integer)) or vc_dim < 1:
        raise ValueError(f"vc_dim must be an integer >= 1, got {vc_dim!r}")
    capacity = vc_dim * math.log(2.0 * math.e * n / vc_dim) + math.log(2.0 / delta)
    budget = capacity / n
    bound = 1.0 if 2 * n < vc_dim else min(1.0, empirical_risk + 2.0 * math.sqrt(2.0 * budget))
    return BoundResult(
        kind="vc",
        bound=bound,
        empirical_risk=float(empirical_risk),
        kl=0.0,
        confidence_term=capacity,
        union_cost=0.0,
        grid_size=1,
        budget=budget,
        n=int(n),
        delta=float(delta),
    )
