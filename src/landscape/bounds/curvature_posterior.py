"""Curvature posteriors informative in every direction, hold-out and quantised-Occam bounds.

Three pieces of the H4 comparison (PAC-Bayes bounds of a trained network, Dziugaite & Roy
2017; data-dependent priors, Perez-Ortiz et al. 2021, JMLR 22(227)):

* :func:`ggn_diagonal`: the exact diagonal of the generalised Gauss-Newton matrix of the
  mean cross-entropy, ``diag G = (1/N) sum_n sum_c (J_n^T s_nc)^2`` with
  ``s_nc = sqrt(p_nc) (e_c - p_n)`` (``sum_c s_nc s_nc^T = diag p_n - p_n p_n^T``, the
  Hessian of the cross-entropy in the logits; Schraudolph 2002; Martens 2020, Sec. 8):
  one per-example vector-Jacobian product per (example, class), no estimator error.
* :func:`curvature_family`: the posteriors ``N(0, c A^-1)`` with precision
  ``A = D + eps I + V diag(g) V^T``, ``D = diag G``, ``V`` (P, k) the top-k Hessian
  eigenvectors and ``g_i = max(lambda_i - v_i^T D v_i, 0)``, so the precision along
  ``v_i`` is ``max(lambda_i, v_i^T D v_i) + eps`` and every other direction keeps its own
  diagonal curvature. ``tr A^-1`` (Woodbury) and ``ln det A`` (determinant lemma) are
  exact in O(P k^2); draws use the symmetric square root of ``(I + U Gamma U^T)^-1``.
* :func:`holdout_bound` (test-set bound, Langford 2005 Thm 3.3 relaxed by Chernoff's kl
  form) and :func:`quantized_occam_bound` (Occam bound of a b-bit uniformly quantised
  network with the bit width chosen from a finite list at ``ln |list|`` nats; Langford
  2005 Thm 4.1).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.func import grad, vmap

from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.posterior import GaussianFamily

__all__ = [
    "HoldoutBound",
    "QuantizedOccam",
    "curvature_family",
    "ggn_diagonal",
    "holdout_bound",
    "quantize_uniform",
    "quantized_occam_bound",
]

_F64 = torch.float64


def ggn_diagonal(
    logits_fn: Callable[[Tensor, Tensor], Tensor], flat: Tensor, x: Tensor, batch_size: int = 250
) -> Tensor:
    """Exact diagonal of the mean cross-entropy GGN at ``flat`` (module docstring).

    Args:
        logits_fn: ``(flat (P,), inputs (B, ...)) -> logits (B, C)``, differentiable in flat.
        flat: (P,) parameters.
        x: (N, ...) inputs (labels do not enter the GGN of the cross-entropy).
        batch_size: Examples per vectorised pass, >= 1.

    Returns:
        (P,) float64 ``diag G``, >= 0.

    Raises:
        ValueError: On an empty ``x``, a non-vector ``flat`` or a bad ``batch_size``.
    """
    if flat.ndim != 1:
        raise ValueError(f"flat must be a vector (P,), got shape {tuple(flat.shape)}")
    if x.shape[0] < 1:
        raise ValueError("x must hold at least one example")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    theta = flat.detach()

    def contracted(p: Tensor, xi: Tensor, s: Tensor) -> Tensor:
        return (logits_fn(p, xi.unsqueeze(0)).squeeze(0) * s).sum()

    per_example = vmap(grad(contracted), in_dims=(None, 0, 0))
    out = torch.zeros(theta.shape[0], dtype=_F64, device=theta.device)
    for start in range(0, x.shape[0], batch_size):
        xb = x[start : start + batch_size]
        with torch.no_grad():
            prob = torch.softmax(logits_fn(theta, xb), dim=-1)
        C = prob.shape[-1]
        eye = torch.eye(C, dtype=prob.dtype, device=prob.device)
        for c in range(C):
            s = prob[:, c : c + 1].sqrt() * (eye[c] - prob)  # (B, C): s_nc
            g = per_example(theta, xb, s)  # (B, P): J_n^T s_nc
            out += (g.to(_F64) ** 2).sum(0)
    return out / x.shape[0]


def curvature_family(
    diag: Tensor,
    eigvals: Tensor,
    eigvecs: Tensor,
    cs: Sequence[float],
    epss: Sequence[float],
    dtype: torch.dtype,
) -> list[GaussianFamily]:
    """``N(0, c A^-1)``, ``A = diag + eps I + V diag(g) V^T`` for each (eps, c) (module docstring).

    Args:
        diag: (P,) curvature diagonal, >= 0 (clipped at 0).
        eigvals: (k,) top Hessian eigenvalues (k may be 0); ``eigvecs`` (P, k) orthonormal.
        cs: Scales c > 0; ``epss``: dampings eps > 0 (eps-major order, c as given).
        dtype: dtype of the draws.

    Returns:
        One :class:`GaussianFamily` per (eps, c), ``scale = {"c", "eps"}``, with exact
        ``tr(c A^-1)`` and ``ln det(c A^-1)``.

    Raises:
        ValueError: On shape mismatch, non-finite input or non-positive c / eps.
    """
    d = torch.as_tensor(diag).to(_F64).reshape(-1)
    P = d.shape[0]
    lam = torch.as_tensor(eigvals).to(dtype=_F64, device=d.device).reshape(-1)
    V = torch.as_tensor(eigvecs).to(dtype=_F64, device=d.device)
    if V.ndim != 2 or V.shape != (P, lam.shape[0]):
        raise ValueError(f"eigvecs must have shape ({P}, {lam.shape[0]}), got {tuple(V.shape)}")
    if not (torch.isfinite(d).all() and torch.isfinite(lam).all() and torch.isfinite(V).all()):
        raise ValueError("diag, eigvals and eigvecs must be finite")
    for name, vals in (("c", cs), ("eps", epss)):
        if not vals or not all(math.isfinite(v) and v > 0 for v in vals):
            raise ValueError(f"{name} must be a non-empty list of finite floats > 0, got {list(vals)}")
    d = d.clamp(min=0.0)
    gain = (lam - ((V * V) * d[:, None]).sum(0)).clamp(min=0.0)  # g_i
    keep = gain > 0
    V, gain = V[:, keep], gain[keep]
    out: list[GaussianFamily] = []
    for eps in epss:
        de = d + float(eps)
        r = de.rsqrt()
        if V.shape[1]:
            Q, R = torch.linalg.qr(r[:, None] * V)  # U = D_e^-1/2 V = Q R
            omega, W = torch.linalg.eigh((R * gain) @ R.T)  # R Gamma R^T = W Omega W^T
            omega = omega.clamp(min=0.0)
            B = Q @ W  # orthonormal (P, k): I + U Gamma U^T = I + B Omega B^T
        else:
            B, omega = d.new_zeros((P, 0)), d.new_zeros(0)
        # A^-1 = D_e^-1/2 (I - B diag(omega / (1 + omega)) B^T) D_e^-1/2
        trace1 = float((1.0 / de).sum() - ((omega / (1 + omega)) * ((r[:, None] * B) ** 2).sum(0)).sum())
        logdet1 = float(-torch.log(de).sum() - torch.log1p(omega).sum())
        coef = ((1.0 + omega).rsqrt() - 1.0).to(dtype)
        Bd, rd = B.to(dtype), r.to(dtype)

        def noise(z: Tensor, rc: float, Bd: Tensor = Bd, rd: Tensor = rd, coef: Tensor = coef) -> Tensor:
            # sqrt(c) D_e^-1/2 (I + B (1/sqrt(1 + omega) - 1) B^T) z: covariance c A^-1.
            w = z if Bd.shape[1] == 0 else torch.addmm(z, (z @ Bd) * coef, Bd.T)
            return w.mul_(rd * rc) if w is not z else w.mul(rd * rc)

        out.extend(
            GaussianFamily(
                {"c": float(c), "eps": float(eps)},
                float(c) * trace1,
                P * math.log(float(c)) + logdet1,
                functools.partial(noise, rc=math.sqrt(float(c))),
            )
            for c in cs
        )
    return out


@dataclasses.dataclass(frozen=True)
class HoldoutBound:
    """Test-set bound of one deterministic classifier on examples it was not trained on.

    Attributes:
        errors: Mistakes k on the hold-out examples; ``n`` their number.
        empirical_risk: ``k / n``.
        delta: Failure probability.
        bound: ``kl^-1(k / n, ln(1/delta) / n)``.
    """

    errors: int
    n: int
    empirical_risk: float
    delta: float
    bound: float

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        return dataclasses.asdict(self)


def holdout_bound(wrong: Tensor, delta: float) -> HoldoutBound:
    """``kl^-1(k/n, ln(1/delta)/n)`` for 0-1 indicators on held-out examples (Langford 2005, Thm 3.3).

    The Chernoff (kl) relaxation of the binomial tail inversion: valid whenever the
    classifier was fixed before the ``n`` examples were drawn.

    Raises:
        ValueError: On an empty or non-0/1 ``wrong`` or ``delta`` outside (0, 1).
    """
    w = torch.as_tensor(wrong).reshape(-1).to(_F64)
    if w.numel() < 1 or not bool(((w == 0) | (w == 1)).all()):
        raise ValueError(f"wrong must be a non-empty vector of 0/1 indicators, got {w.numel()} entries")
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    n, k = int(w.numel()), int(w.sum())
    return HoldoutBound(k, n, k / n, float(delta), float(kl_inv_upper(k / n, math.log(1.0 / delta) / n)))


def quantize_uniform(flat: Tensor, sizes: Sequence[int], bits: int) -> Tensor:
    """Round each tensor (consecutive ``sizes`` of ``flat``) to ``2^bits`` levels on its [min, max].

    Returns:
        (P,) the dequantised parameters (float64). Describing them takes ``bits`` per entry
        plus two float32 numbers (min, max) per tensor.
    """
    if not isinstance(bits, int) or bits < 1:
        raise ValueError(f"bits must be an int >= 1, got {bits!r}")
    if sum(sizes) != flat.shape[0]:
        raise ValueError(f"sizes sum to {sum(sizes)}, flat has {flat.shape[0]} entries")
    parts = []
    for chunk in flat.detach().to(_F64).split(list(sizes)):
        lo, hi = chunk.min().float().double(), chunk.max().float().double()  # stored as float32
        step = (hi - lo) / (2**bits - 1)
        parts.append(chunk.clone() if step == 0 else lo + torch.round((chunk - lo) / step).clamp(0, 2**bits - 1) * step)
    return torch.cat(parts)


@dataclasses.dataclass(frozen=True)
class QuantizedOccam:
    """Occam bound of a quantised network, best over a finite list of bit widths.

    Attributes:
        bits: Bit width chosen; ``bits_options`` the list it was chosen from.
        description_nats: ``(bits P + 64 T + extra) ln 2``: entries, (min, max) per tensor, other stored tensors.
        union_cost: ``ln |bits_options|``.
        train_error: 0-1 error of the quantised network on the n examples.
        n: Examples; ``delta``: failure probability.
        bound: ``kl^-1(train_error, (description_nats + union_cost + ln(1/delta)) / n)``.
        per_bits: Per option: its quantised train error and bound.
    """

    bits: int
    bits_options: tuple[int, ...]
    description_nats: float
    union_cost: float
    train_error: float
    n: int
    delta: float
    bound: float
    per_bits: tuple[dict[str, float], ...]

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON."""
        out = dataclasses.asdict(self)
        out["bits_options"], out["per_bits"] = list(self.bits_options), [dict(p) for p in self.per_bits]
        return out


def quantized_occam_bound(
    errors_by_bits: dict[int, float], num_params: int, num_tensors: int, n: int, delta: float, *, extra_bits: int = 0
) -> QuantizedOccam:
    """Occam bound (Langford 2005, Thm 4.1) of the b-bit network, b chosen at ``ln |options|`` nats.

    Args:
        errors_by_bits: Bit width -> 0-1 error of the network quantised to it
            (:func:`quantize_uniform`) on the n training examples.
        num_params: P, quantised entries; ``num_tensors``: tensors (each stores min, max).
        n: Training examples; ``delta``: failure probability.
        extra_bits: Bits of other stored tensors the network reads (e.g. BatchNorm statistics).
    """
    if not errors_by_bits:
        raise ValueError("errors_by_bits must name at least one bit width")
    union = math.log(len(errors_by_bits))
    rows = []
    for b, err in sorted(errors_by_bits.items()):
        nats = (b * num_params + 64 * num_tensors + extra_bits) * math.log(2.0)
        bound = float(kl_inv_upper(err, (nats + union + math.log(1.0 / delta)) / n))
        rows.append({"bits": b, "train_error": float(err), "description_nats": nats, "bound": bound})
    best = min(rows, key=lambda r: (r["bound"], r["bits"]))
    return QuantizedOccam(
        bits=int(best["bits"]), bits_options=tuple(sorted(errors_by_bits)), description_nats=best["description_nats"],
        union_cost=union, train_error=best["train_error"], n=int(n), delta=float(delta), bound=best["bound"],
        per_bits=tuple(rows),
    )
