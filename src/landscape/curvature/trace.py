"""Stochastic trace estimators of a symmetric operator from matrix-vector products.

Three estimators share one budget convention: ``num_matvecs`` is the number of
operator-vector products the caller allows, and the result reports exactly how many
were spent (never more than the budget).

* Hutchinson (Hutchinson 1990; Girard 1989): ``tr(A) ~ (1/n) sum_i z_i^T A z_i`` with
  Rademacher probes ``z_i``; stderr = sample std / sqrt(n).
* Hutch++ (Meyer, Musco, Musco & Woodruff, "Hutch++: Optimal Stochastic Trace
  Estimation", SOSA 2021): a third of the budget sketches ``Q = orth(A S)``, a third
  computes ``tr(Q^T A Q)`` exactly and the last third runs Hutchinson on the deflated
  remainder ``(I - QQ^T) A (I - QQ^T)``; stderr is that of the remainder.
* XTrace (Epperly, Tropp & Webber, "XTrace: Making the most of every sample in
  stochastic trace estimation", SIAM J. Matrix Anal. Appl. 2024): ``s = budget // 2``
  test vectors, each used both in the low-rank sketch and, leave-one-out, as a
  Hutchinson probe; the exchangeable average of the ``s`` leave-one-out estimates,
  with the paper's error estimate std(tr_i) / sqrt(s).

Memory: ``probe_batch_size`` bounds the probe vectors (and their products) materialised at
once for Hutchinson and the Hutch++ remainder; the probes are the same as without it
(:func:`probe_blocks`), so only the last digits of the sums can move. Hutch++ keeps its
sketch basis Q (P, num_matvecs // 3) whole; XTrace needs all its test vectors at once.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor

from landscape.curvature.linop import SymmetricOperator, as_operator
from landscape.seeding import seeded_generator

__all__ = [
    "TraceEstimate",
    "trace",
    "hutchinson",
    "hutchpp",
    "xtrace",
    "exact_trace",
    "random_probes",
    "probe_blocks",
    "TRACE_METHODS",
]

PROBE_KINDS = ("rademacher", "gaussian", "sphere")


@dataclass(frozen=True)
class TraceEstimate:
    """A trace estimate.

    Attributes:
        value: estimate of ``tr(A)``.
        stderr: estimated standard error of ``value`` (0 when exact, NaN when it cannot
            be estimated from a single sample).
        num_matvecs: operator-vector products actually spent.
        method: estimator name ("hutchinson", "hutch++", "xtrace" or "exact").
    """

    value: float
    stderr: float
    num_matvecs: int
    method: str

    def to_dict(self) -> dict[str, Any]:
        return {"value": self.value, "stderr": self.stderr, "num_matvecs": self.num_matvecs, "method": self.method}

    def interval(self, ci_level: float = 0.95) -> tuple[float, float]:
        """Normal-approximation interval ``value +- z stderr``, z the two-sided normal quantile
        of ``ci_level``; ``(value, value)`` when exact, NaNs when ``stderr`` is NaN.

        Raises:
            ValueError: ``ci_level`` outside (0, 1).
        """
        if not 0 < ci_level < 1:
            raise ValueError(f"ci_level must be in (0, 1), got {ci_level!r}")
        half = NormalDist().inv_cdf(0.5 + ci_level / 2) * self.stderr
        return self.value - half, self.value + half


def random_probes(
    num_rows: int,
    num_cols: int,
    *,
    generator: torch.Generator,
    kind: str = "rademacher",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
) -> Tensor:
    """Draw a (num_rows, num_cols) block of random probe vectors.

    Numbers are drawn on the CPU from ``generator`` and then moved to ``device``, so a
    seed gives the same probes on every device.

    Args:
        num_rows: vector length P.
        num_cols: number of probes.
        generator: a CPU ``torch.Generator``.
        kind: "rademacher" (entries +-1), "gaussian" (standard normal entries) or
            "sphere" (Gaussian columns rescaled to norm sqrt(P)). All have
            ``E[z z^T] = I``.
        dtype: floating dtype of the result.
        device: device of the result.
    """
    if kind not in PROBE_KINDS:
        raise ValueError(f"probe kind must be one of {PROBE_KINDS}, got {kind!r}")
    if kind == "rademacher":
        bits = torch.randint(0, 2, (num_rows, num_cols), generator=generator, dtype=torch.int8)
        out = (2 * bits - 1).to(torch.float64)
    else:
        out = torch.randn(num_rows, num_cols, generator=generator, dtype=torch.float64)
        if kind == "sphere":
            out = out * (math.sqrt(num_rows) / torch.linalg.vector_norm(out, dim=0).clamp_min(torch.finfo(out.dtype).tiny))
    return out.to(device=device, dtype=dtype)


def probe_blocks(
    num_rows: int,
    num_cols: int,
    *,
    generator: torch.Generator,
    kind: str = "rademacher",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str = "cpu",
    batch_size: int | None = None,
) -> Iterator[Tensor]:
    """The columns of :func:`random_probes` ``(num_rows, num_cols, ...)`` in blocks of at most
    ``batch_size``, each equal to those columns of the whole draw; once the iterator is
    exhausted ``generator`` is where the whole draw leaves it.

    Without ``batch_size`` (or with ``batch_size >= num_cols``) the one block is the whole
    draw. Rademacher blocks redraw the stream from the saved generator state in row chunks of
    about ``batch_size * num_rows`` numbers and keep their columns (the CPU generator fills
    ``randint`` serially, so a row chunk is the matching rows of the whole draw): memory
    O(batch_size * num_rows), random-number work ``num_cols / batch_size`` whole draws.
    Gaussian and sphere probes are drawn whole on the CPU (host memory) and moved to
    ``device`` block by block.
    """
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"probe_batch_size must be an int >= 1 or None, got {batch_size!r}")
    if batch_size is None or batch_size >= num_cols:
        yield random_probes(num_rows, num_cols, generator=generator, kind=kind, dtype=dtype, device=device)
        return
    if kind != "rademacher":
        host = random_probes(num_rows, num_cols, generator=generator, kind=kind, dtype=torch.float64, device="cpu")
        for j in range(0, num_cols, batch_size):
            yield host[:, j : j + batch_size].to(device=device, dtype=dtype)
        return
    start = generator.get_state()
    rows = max(1, batch_size * num_rows // num_cols)
    replay = torch.Generator()
    for j in range(0, num_cols, batch_size):
        replay.set_state(start)
        parts = [
            torch.randint(0, 2, (min(rows, num_rows - i), num_cols), generator=replay, dtype=torch.int8)[:, j : j + batch_size]
            for i in range(0, num_rows, rows)
        ]
        yield (2 * torch.cat(parts) - 1).to(torch.float64).to(device=device, dtype=dtype)
    generator.set_state(replay.get_state())


def _apply(op: SymmetricOperator, X: Tensor, block_size: int | None) -> Tensor:
    """``op @ X`` for a (P, n) block, optionally in column chunks of ``block_size``."""
    if block_size is None or X.shape[1] <= block_size:
        return op.matmat(X)
    return torch.cat([op.matmat(X[:, i : i + block_size]) for i in range(0, X.shape[1], block_size)], dim=1)


def _check_common(num_matvecs: int, block_size: int | None, dtype: torch.dtype | None, op: SymmetricOperator) -> torch.dtype:
    if isinstance(num_matvecs, bool) or not isinstance(num_matvecs, int):
        raise ValueError(f"num_matvecs must be an int, got {num_matvecs!r}")
    if block_size is not None and block_size < 1:
        raise ValueError(f"block_size must be >= 1 or None, got {block_size}")
    wdtype = op.dtype if dtype is None else dtype
    if not wdtype.is_floating_point:
        raise ValueError(f"dtype must be a real floating dtype, got {wdtype}")
    return wdtype


def _mean_stderr(samples: Tensor) -> tuple[float, float]:
    """Mean and sample std / sqrt(n) (NaN stderr for one sample) of a 1-D tensor."""
    n = samples.numel()
    mean = float(samples.mean())
    stderr = float(samples.std(correction=1) / math.sqrt(n)) if n > 1 else math.nan
    return mean, stderr


def exact_trace(op: SymmetricOperator | Tensor, *, dtype: torch.dtype | None = None, block_size: int | None = None) -> TraceEstimate:
    """``tr(A) = sum_i e_i^T A e_i`` with P products (reference for small P)."""
    op = as_operator(op)
    wdtype = _check_common(0, block_size, dtype, op)
    P = op.shape[0]
    if P == 0:
        return TraceEstimate(0.0, 0.0, 0, "exact")
    bs = P if block_size is None else block_size
    total = torch.zeros((), dtype=wdtype, device=op.device)
    for i in range(0, P, bs):
        j = min(P, i + bs)
        E = torch.zeros(P, j - i, dtype=wdtype, device=op.device)
        E[torch.arange(i, j, device=op.device), torch.arange(j - i, device=op.device)] = 1
        total = total + torch.diagonal(op.matmat(E)[i:j]).sum()
    return TraceEstimate(float(total), 0.0, P, "exact")


def hutchinson(
    op: SymmetricOperator | Tensor,
    num_matvecs: int = 90,
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
    block_size: int | None = None,
    probe_batch_size: int | None = None,
) -> TraceEstimate:
    """Hutchinson's estimator ``(1/n) sum_i z_i^T A z_i`` with n = ``num_matvecs`` Rademacher probes.

    Args:
        op: symmetric (P, P) operator or dense tensor.
        num_matvecs: number of probes (>= 2, so that a stderr exists).
        seed: seed of the CPU generator drawing the probes.
        dtype: working dtype of the probes (default: the operator's).
        block_size: apply the operator to at most this many columns at once.
        probe_batch_size: materialise at most this many probes (and products) at once
            (default: all); the probes and the estimate are the same.
    """
    op = as_operator(op)
    wdtype = _check_common(num_matvecs, block_size, dtype, op)
    if num_matvecs < 2:
        raise ValueError(f"hutchinson needs num_matvecs >= 2 (a stderr needs two probes), got {num_matvecs}")
    P = op.shape[0]
    if P == 0:
        return TraceEstimate(0.0, 0.0, 0, "hutchinson")
    gen = seeded_generator(seed)
    blocks = probe_blocks(P, num_matvecs, generator=gen, dtype=wdtype, device=op.device, batch_size=probe_batch_size)
    samples = torch.cat([(Z * _apply(op, Z, block_size)).sum(dim=0) for Z in blocks])
    value, stderr = _mean_stderr(samples)
    return TraceEstimate(value, stderr, num_matvecs, "hutchinson")


def hutchpp(
    op: SymmetricOperator | Tensor,
    num_matvecs: int = 90,
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
    block_size: int | None = None,
    probe_batch_size: int | None = None,
) -> TraceEstimate:
    """Hutch++ (Meyer et al. 2021): low-rank deflation plus Hutchinson on the remainder.

    With ``s = num_matvecs // 3``: draw Rademacher ``S`` (P, s) and ``G`` (P, n_h) with
    ``n_h = num_matvecs - 2 s`` (2/3 of the budget for the low-rank part, 1/3 for
    Hutchinson as in the paper; a remainder of the division goes to Hutchinson),
    ``Q = orth(A S)``, ``G' = (I - QQ^T) G`` and return
    ``tr(Q^T A Q) + (1/n_h) sum_i g'_i^T A g'_i``. The stderr is the sample std of the
    remainder terms over sqrt(n_h); the deflated part is exact given Q. When
    ``s >= P`` the sketch spans the whole space and the exact trace is computed with P
    products instead.

    Args:
        op: symmetric (P, P) operator or dense tensor.
        num_matvecs: budget (>= 4: one sketch vector and two Hutchinson probes).
        seed: seed of the CPU generator drawing S and G.
        dtype: working dtype (default: the operator's).
        block_size: apply the operator to at most this many columns at once.
        probe_batch_size: materialise at most this many columns of S, Q or G (and their
            products) at once beside Q (default: all); the probes are the same.
    """
    op = as_operator(op)
    wdtype = _check_common(num_matvecs, block_size, dtype, op)
    if num_matvecs < 4:
        raise ValueError(f"hutch++ needs num_matvecs >= 4 (sketch, exact part, two Hutchinson probes), got {num_matvecs}")
    P = op.shape[0]
    if P == 0:
        return TraceEstimate(0.0, 0.0, 0, "hutch++")
    s = num_matvecs // 3
    if s >= P:
        return TraceEstimate(exact_trace(op, dtype=wdtype, block_size=block_size).value, 0.0, P, "hutch++")
    n_h = num_matvecs - 2 * s
    gen = seeded_generator(seed)
    draw = functools.partial(probe_blocks, generator=gen, dtype=wdtype, device=op.device, batch_size=probe_batch_size)
    sketch = [_apply(op, S, block_size) for S in draw(P, s)]  # S drawn before G, as one draw of both
    Q, _ = torch.linalg.qr(sketch[0] if len(sketch) == 1 else torch.cat(sketch, dim=1))
    del sketch
    step = s if probe_batch_size is None else probe_batch_size
    parts = [(Qb * _apply(op, Qb, block_size)).sum() for Qb in (Q[:, j : j + step] for j in range(0, s, step))]
    low_rank = parts[0] if len(parts) == 1 else torch.stack(parts).sum()

    def remainder(G: Tensor) -> Tensor:
        G = G - Q @ (Q.T @ G)
        G = G - Q @ (Q.T @ G)  # second pass: keeps G' orthogonal to Q in finite precision
        return (G * _apply(op, G, block_size)).sum(dim=0)

    samples = torch.cat([remainder(G) for G in draw(P, n_h)])
    rest, stderr = _mean_stderr(samples)
    return TraceEstimate(float(low_rank) + rest, stderr, 2 * s + n_h, "hutch++")


def xtrace(
    op: SymmetricOperator | Tensor,
    num_matvecs: int = 90,
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
    block_size: int | None = None,
) -> TraceEstimate:
    """XTrace (Epperly, Tropp & Webber 2024), the exchangeable leave-one-out estimator.

    With ``s = num_matvecs // 2`` Rademacher test vectors ``Omega`` (P, s): ``Y = A Omega
    = QR``. Removing column i leaves the basis ``Q_(i)``, whose projector is
    ``Q (I - s_i s_i^T) Q^T`` with ``s_i`` the normalised i-th column of ``R^{-T}``. The
    i-th estimate is ``tr(Q_(i)^T A Q_(i)) + w_i^T (I - Q_(i)Q_(i)^T) A (I - Q_(i)Q_(i)^T) w_i``
    (unbiased since ``Q_(i)`` does not depend on ``w_i``); the result is their mean and the
    reported stderr is the paper's error estimate ``std(tr_i) / sqrt(s)``. All ``s``
    estimates come from ``Y`` and ``Z = A Q`` (2 s products) by s-by-s algebra. When
    ``s >= P`` the exact trace is computed with P products instead.

    Args:
        op: symmetric (P, P) operator or dense tensor.
        num_matvecs: budget (>= 4: two test vectors).
        seed: seed of the CPU generator drawing the test vectors.
        dtype: working dtype (default: the operator's).
        block_size: apply the operator to at most this many columns at once.
    """
    op = as_operator(op)
    wdtype = _check_common(num_matvecs, block_size, dtype, op)
    if num_matvecs < 4:
        raise ValueError(f"xtrace needs num_matvecs >= 4 (two test vectors), got {num_matvecs}")
    P = op.shape[0]
    if P == 0:
        return TraceEstimate(0.0, 0.0, 0, "xtrace")
    s = num_matvecs // 2
    if s >= P:
        return TraceEstimate(exact_trace(op, dtype=wdtype, block_size=block_size).value, 0.0, P, "xtrace")
    gen = seeded_generator(seed)
    Om = random_probes(P, s, generator=gen, dtype=wdtype, device=op.device)
    Y = _apply(op, Om, block_size)
    Q, R = torch.linalg.qr(Y)
    Z = _apply(op, Q, block_size)
    H = Q.T @ Z
    H = 0.5 * (H + H.T)
    W = Q.T @ Om  # (s, s)
    # s_i: normalised columns of R^{-T}; a (numerically) singular R (rank-deficient A)
    # is handled by a pseudo-inverse, which picks the minimum-norm leave-one-out direction.
    eye = torch.eye(s, dtype=wdtype, device=op.device)
    Rinv_T = torch.linalg.solve_triangular(R, eye, upper=True).T
    if not bool(torch.isfinite(Rinv_T).all()):
        Rinv_T = torch.linalg.pinv(R).T
    Sm = Rinv_T / torch.linalg.vector_norm(Rinv_T, dim=0, keepdim=True)
    c = (Sm * W).sum(dim=0)  # c_i = s_i^T W_i
    HS = H @ Sm
    sHs = (Sm * HS).sum(dim=0)  # s_i^T H s_i
    # u_i = (I - QQ^T) w_i + c_i Q s_i; A u_i = Y_i - Z W_i + c_i Z s_i, and Om^T Z = R^T.
    omAom = (Om * Y).sum(dim=0)  # w_i^T A w_i
    RtW = (R * W).sum(dim=0)  # (R^T W)_ii = W_i^T R_i
    RtS = (R * Sm).sum(dim=0)  # s_i^T R_i
    WHW = (W * (H @ W)).sum(dim=0)
    WHS = (W * HS).sum(dim=0)
    quad = omAom - 2 * RtW + 2 * c * RtS + WHW - 2 * c * WHS + c * c * sHs
    samples = torch.diagonal(H).sum() - sHs + quad
    value, stderr = _mean_stderr(samples)
    return TraceEstimate(value, stderr, 2 * s, "xtrace")


TRACE_METHODS: dict[str, Callable[..., TraceEstimate]] = {
    "hutchinson": hutchinson,
    "hutch++": hutchpp,
    "xtrace": xtrace,
}


def trace(
    op: SymmetricOperator | Tensor,
    num_matvecs: int = 90,
    method: str = "hutch++",
    seed: int = 0,
    *,
    dtype: torch.dtype | None = None,
    block_size: int | None = None,
    probe_batch_size: int | None = None,
) -> TraceEstimate:
    """Estimate ``tr(A)`` with at most ``num_matvecs`` operator-vector products.

    Args:
        op: symmetric (P, P) operator or dense tensor.
        num_matvecs: product budget; the result reports what was spent.
        method: "hutchinson", "hutch++" or "xtrace" (see the module docstring).
        seed: seed of the CPU generator drawing the probes.
        dtype: working dtype (default: the operator's).
        block_size: apply the operator to at most this many columns at once.
        probe_batch_size: "hutchinson" and "hutch++" only: materialise at most this many
            probe vectors at once (default: all); the estimate is the same.
    """
    if method not in TRACE_METHODS:
        raise ValueError(f"unknown trace method {method!r}; choose one of {sorted(TRACE_METHODS)}")
    if probe_batch_size is None:
        return TRACE_METHODS[method](op, num_matvecs, seed, dtype=dtype, block_size=block_size)
    if method == "xtrace":
        raise ValueError("xtrace needs all its test vectors at once; probe_batch_size works with 'hutchinson' and 'hutch++'")
    return TRACE_METHODS[method](op, num_matvecs, seed, dtype=dtype, block_size=block_size, probe_batch_size=probe_batch_size)
