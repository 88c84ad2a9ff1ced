"""Diagonals of the gradient covariance, the empirical Fisher, the GGN and the Hessian, with errors.

The second plan's ``C ~ diag(H)`` check compares the diagonal of the per-example gradient
covariance with that of the Hessian. Kunstner, Balles & Hennig (2019), "Limitations of the
empirical Fisher approximation for natural gradient descent" (NeurIPS), show that the
empirical Fisher ``F_emp = (1/N) sum_i g_i g_i^T`` approximates the Fisher, which for softmax
cross-entropy equals the generalized Gauss-Newton matrix ``G``, poorly in general. This module
gives every diagonal with a standard error and compares them:

* :func:`gradient_diagonals`: exact on the data set, from per-example gradients
  (:class:`~landscape.curvature.covariance.PerSampleGradients`, eval-mode BatchNorm):

  - ``diag(F_emp) = (1/N) sum_i g_i^2`` (true labels),
  - ``diag(Sigma) = diag(F_emp) - gbar^2`` (the centred covariance, the SGD noise's shape),
  - ``diag(G) = (1/N) sum_i sum_c p_ic g_ic^2`` with ``g_ic`` the gradient of example i's loss
    at label c and ``p_i`` its softmax: for cross-entropy the output Hessian
    ``diag(p) - p p^T = A A^T`` with columns ``a_c = sqrt(p_c) (e_c - p)``, and ``J_i^T a_c =
    -sqrt(p_c) g_ic``, so ``diag(J^T H_out J) = sum_c p_c g_c^2`` (C per-example passes).

  Their standard errors are those of a mean over examples (``sd_i / sqrt(N)`` of the
  per-example terms): the uncertainty as estimates of the population quantity, zero
  uncertainty about the matrix of this data set, which they give exactly.
* :func:`hutchinson_diagonal`: ``diag(A) ~ diag(B) + mean_s z_s * ((A - B) z_s)`` with
  Rademacher ``z_s`` (Bekas, Kokiopoulou & Saad 2007) and an optional control variate ``B``
  of known diagonal (here ``G`` for ``H``: the probes then only see ``H - G``, whose
  off-diagonal mass is what sets the variance ``sum_{j != i} (A - B)_ij^2 / s``); unbiased,
  with the per-entry standard error across probes.
* :func:`compare_diagonals`: relative errors (raw, best-scaled, and with the estimators'
  noise removed from the squared norm), Pearson and Spearman correlations, and the
  Pearson correlation corrected for attenuation by the estimators' noise (Spearman 1904:
  ``r / sqrt(rel_a rel_b)``, ``rel = 1 - mean(se^2) / var``).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.curvature.covariance import PerSampleGradients
from landscape.curvature.linop import SymmetricOperator, as_operator
from landscape.curvature.noise import DiagonalEstimate
from landscape.functional import LossFn, curvature_mode
from landscape.seeding import seeded_generator

__all__ = ["GradientDiagonals", "gradient_diagonals", "hutchinson_diagonal", "DiagonalComparison", "compare_diagonals"]

Batch = tuple[Tensor, Tensor]


@dataclass(frozen=True)
class GradientDiagonals:
    """Exact diagonals over a data set of N examples, each (P,) float64, with standard errors.

    Attributes:
        empirical_fisher, empirical_fisher_stderr: ``(1/N) sum_i g_i^2``.
        covariance, covariance_stderr: ``diag(Sigma) = (1/N) sum_i (g_i - gbar)^2``.
        ggn, ggn_stderr: ``diag(G) = (1/N) sum_i sum_c p_ic g_ic^2`` (softmax cross-entropy).
        num_examples: N. num_classes: C. per_sample_passes: passes of per-example gradients
            over the data (``1 + C``).
    """

    empirical_fisher: Tensor
    empirical_fisher_stderr: Tensor
    covariance: Tensor
    covariance_stderr: Tensor
    ggn: Tensor
    ggn_stderr: Tensor
    num_examples: int
    num_classes: int
    per_sample_passes: int


def _is_mean_cross_entropy(loss_fn: Any) -> bool:
    if isinstance(loss_fn, nn.CrossEntropyLoss):
        return loss_fn.weight is None and loss_fn.label_smoothing == 0 and loss_fn.reduction in ("mean", "sum")
    base = loss_fn.func if isinstance(loss_fn, functools.partial) else loss_fn
    if base is not F.cross_entropy:
        return False
    extra = set(loss_fn.keywords) if isinstance(loss_fn, functools.partial) else set()
    return extra <= {"reduction"}


def _mean_se(s1: Tensor, s2: Tensor, n: int) -> tuple[Tensor, Tensor]:
    """Mean and its standard error from power sums of n per-example terms (float64)."""
    mean = s1 / n
    var = ((s2 - n * mean * mean) / max(n - 1, 1)).clamp_min(0)
    return mean, torch.sqrt(var / n)


def gradient_diagonals(model: nn.Module, loss_fn: LossFn, data: Iterable[Batch], *, params: Sequence[str] | None = None,
                       chunk_size: int | None = 64) -> GradientDiagonals:
    """Exact ``diag(F_emp)``, ``diag(Sigma)`` and ``diag(G)`` of a classifier over ``data``.

    Args:
        model: a network returning logits (N, C); evaluated in eval mode (BatchNorm running
            statistics), as per-example gradients need (the GGN here is that of ``bn_mode="eval"``).
        loss_fn: softmax cross-entropy with class-index targets and no class weights or label
            smoothing (``F.cross_entropy`` or ``nn.CrossEntropyLoss``); the per-example loss
            is a batch of one, so mean and sum agree.
        data: ``(inputs, targets)`` batches, iterated ``1 + C`` times.
        params: parameter names (default all trainable), in ``named_parameters()`` order.
        chunk_size: examples per vectorised per-example pass.

    Raises:
        ValueError: another loss, targets that are not class indices, or no examples.
    """
    if not _is_mean_cross_entropy(loss_fn):
        raise ValueError(f"gradient_diagonals needs softmax cross-entropy with class-index targets (F.cross_entropy or "
                         f"nn.CrossEntropyLoss without weights or label smoothing), got {loss_fn!r}")
    batches = [(x, y) for x, y in data]
    if not batches or any(y.is_floating_point() or y.ndim != 1 for _, y in batches):
        raise ValueError("data must yield (inputs, targets) batches with 1-d class-index targets, at least one example")
    with torch.no_grad(), curvature_mode(model, "eval"):
        logits = torch.cat([model(x) for x, _ in batches])
    if logits.ndim != 2:
        raise ValueError(f"the model must return logits of shape (N, C), got {tuple(logits.shape)}")
    probs = torch.softmax(logits.double(), dim=1)
    N, C = probs.shape

    grads = PerSampleGradients(model, loss_fn, batches, params=params, chunk_size=chunk_size)
    P = grads.num_params
    s = [torch.zeros(P, dtype=torch.float64, device=grads.device) for _ in range(4)]  # sum g, g^2, g^3, g^4
    for _, chunk in grads.chunks():
        g = chunk.double()
        g2 = g * g
        s[0] += g.sum(0)
        s[1] += g2.sum(0)
        s[2] += (g2 * g).sum(0)
        s[3] += (g2 * g2).sum(0)
    fisher, fisher_se = _mean_se(s[1], s[3], N)
    gbar = s[0] / N
    # sum_i (g_i - gbar)^4 by the binomial expansion of the power sums
    c4 = s[3] - 4 * gbar * s[2] + 6 * gbar**2 * s[1] - 4 * gbar**3 * s[0] + N * gbar**4
    covariance, covariance_se = _mean_se(s[1] - N * gbar**2, c4.clamp_min(0), N)

    # the C label passes side by side, chunk by chunk: d_i = sum_c p_ic g_ic^2 for one chunk of examples at a time
    passes = [PerSampleGradients(model, loss_fn, [(x, torch.full_like(y, c)) for x, y in batches], params=params,
                                 chunk_size=chunk_size) for c in range(C)]
    t1 = torch.zeros(P, dtype=torch.float64, device=grads.device)
    t2 = torch.zeros(P, dtype=torch.float64, device=grads.device)
    for blocks in zip(*(p.chunks() for p in passes), strict=True):
        start, stop = passes[0].spans[blocks[0][0]]
        d = sum(probs[start:stop, c : c + 1].to(g.device) * g.double() ** 2 for c, (_, g) in enumerate(blocks))
        assert isinstance(d, Tensor)
        t1 += d.sum(0)
        t2 += (d * d).sum(0)
    ggn, ggn_se = _mean_se(t1, t2, N)
    return GradientDiagonals(empirical_fisher=fisher, empirical_fisher_stderr=fisher_se, covariance=covariance,
                             covariance_stderr=covariance_se, ggn=ggn, ggn_stderr=ggn_se, num_examples=N, num_classes=C,
                             per_sample_passes=1 + C)


def hutchinson_diagonal(op: SymmetricOperator | Tensor, num_probes: int, *, seed: int = 0,
                        control: SymmetricOperator | Tensor | None = None, control_diagonal: Tensor | None = None,
                        block_size: int = 16) -> DiagonalEstimate:
    """Hutchinson-type diagonal ``diag(A) ~ d_B + mean_s z_s * ((A - B) z_s)`` with its standard error.

    Args:
        op: the (P, P) operator A (e.g. the Hessian).
        num_probes: Rademacher probes s (>= 2); the standard error is the per-entry sd of
            ``z * ((A - B) z)`` over probes divided by ``sqrt(s)``.
        seed: probe seed (CPU generator).
        control: B, an operator whose diagonal ``control_diagonal`` is known exactly (e.g. the
            GGN with its exact diagonal); None: plain Hutchinson (Bekas et al. 2007).
        control_diagonal: (P,) ``diag(B)``; required with ``control``.
        block_size: probes per operator call.

    Returns:
        A :class:`~landscape.curvature.noise.DiagonalEstimate` (``method`` "hutchinson" or
        "hutchinson_control_variate"; ``num_matvecs`` counts products with A and with B).
    """
    A = as_operator(op)
    P = A.shape[0]
    if isinstance(num_probes, bool) or not isinstance(num_probes, int) or num_probes < 2:
        raise ValueError(f"num_probes must be an int >= 2, got {num_probes!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if (control is None) != (control_diagonal is None):
        raise ValueError("control and control_diagonal go together: give both or neither")
    B = as_operator(control) if control is not None else None
    if B is not None and (B.shape != A.shape or control_diagonal is None or tuple(control_diagonal.shape) != (P,)):
        raise ValueError(f"control must be a ({P}, {P}) operator with a ({P},) control_diagonal")
    g = seeded_generator(seed)
    s1 = torch.zeros(P, dtype=torch.float64)
    s2 = torch.zeros(P, dtype=torch.float64)
    for start in range(0, num_probes, block_size):
        b = min(block_size, num_probes - start)
        Z = (torch.randint(0, 2, (P, b), generator=g) * 2 - 1).to(device=A.device, dtype=A.dtype)
        R = A @ Z
        if B is not None:
            R = R - (B @ Z.to(device=B.device, dtype=B.dtype)).to(device=A.device, dtype=A.dtype)
        S = (Z * R).double().cpu()
        s1 += S.sum(1)
        s2 += (S * S).sum(1)
    mean, se = _mean_se(s1, s2, num_probes)
    if control_diagonal is not None:
        mean = mean + control_diagonal.detach().double().cpu()
    method = "hutchinson" if B is None else "hutchinson_control_variate"
    return DiagonalEstimate(mean, se, num_probes * (1 if B is None else 2), method, num_probes)


@dataclass(frozen=True)
class DiagonalComparison:
    """``a`` (an approximation) against ``b`` (the reference), over the P parameters.

    Attributes:
        relative_error: ``||a - b|| / ||b||``.
        relative_error_denoised: the same with the estimators' noise removed from the squared
            error, ``sqrt(max(||a - b||^2 - sum(se_a^2 + se_b^2), 0)) / ||b||`` (its expectation
            under independent unbiased noise is the noiseless squared error).
        scaled_relative_error: ``min_s ||s a - b|| / ||b||`` (shape only, scale removed).
        scale: the minimising ``s = <a, b> / <a, a>``.
        pearson, spearman: correlations over parameters.
        pearson_corrected: Pearson corrected for attenuation, ``r / sqrt(rel_a rel_b)`` with
            reliabilities ``rel = 1 - mean(se^2) / var(estimate)``, clipped to [-1, 1] (NaN when a
            reliability is <= 0; equal to ``pearson`` for exact diagonals).
        reliability_a, reliability_b: those reliabilities.
        num_params: P.
    """

    relative_error: float
    relative_error_denoised: float
    scaled_relative_error: float
    scale: float
    pearson: float
    spearman: float
    pearson_corrected: float
    reliability_a: float
    reliability_b: float
    num_params: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _reliability(x: np.ndarray, se: np.ndarray | None) -> float:
    var = float(x.var())
    if se is None:
        return 1.0
    return 1.0 - float(np.mean(se * se)) / var if var > 0 else math.nan


def compare_diagonals(a: Tensor | np.ndarray, b: Tensor | np.ndarray, *, a_stderr: Tensor | np.ndarray | None = None,
                      b_stderr: Tensor | np.ndarray | None = None) -> DiagonalComparison:
    """Compare two (P,) diagonals (see :class:`DiagonalComparison`); errors are per-entry stderrs."""
    from scipy import stats

    def arr(v: Tensor | np.ndarray | None) -> np.ndarray | None:
        if v is None:
            return None
        return (v.detach().double().cpu().numpy() if isinstance(v, Tensor) else np.asarray(v, dtype=np.float64)).ravel()

    x, y, sx, sy = arr(a), arr(b), arr(a_stderr), arr(b_stderr)
    assert x is not None and y is not None
    if x.shape != y.shape or x.size < 3:
        raise ValueError(f"a and b must be (P,) vectors of one shape with P >= 3, got {x.shape} and {y.shape}")
    for name, se in (("a_stderr", sx), ("b_stderr", sy)):
        if se is not None and (se.shape != x.shape or not np.all(np.isfinite(se)) or np.any(se < 0)):
            raise ValueError(f"{name} must be a finite, non-negative vector of shape {x.shape}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise ValueError("a and b must be finite")
    nb = float(np.linalg.norm(y))
    err2 = float(np.sum((x - y) ** 2))
    noise2 = float(np.sum(sx**2) if sx is not None else 0.0) + float(np.sum(sy**2) if sy is not None else 0.0)
    aa = float(x @ x)
    scale = float(x @ y) / aa if aa > 0 else math.nan
    scaled = float(np.linalg.norm(scale * x - y)) / nb if aa > 0 and nb > 0 else math.nan
    constant = np.ptp(x) == 0 or np.ptp(y) == 0
    pearson = math.nan if constant else float(stats.pearsonr(x, y).statistic)
    spearman = math.nan if constant else float(stats.spearmanr(x, y).statistic)
    ra, rb = _reliability(x, sx), _reliability(y, sy)
    corrected = min(1.0, max(-1.0, pearson / math.sqrt(ra * rb))) if ra > 0 and rb > 0 else math.nan
    return DiagonalComparison(
        relative_error=math.sqrt(err2) / nb if nb > 0 else math.nan,
        relative_error_denoised=math.sqrt(max(err2 - noise2, 0.0)) / nb if nb > 0 else math.nan,
        scaled_relative_error=scaled, scale=scale, pearson=pearson, spearman=spearman, pearson_corrected=corrected,
        reliability_a=ra, reliability_b=rb, num_params=int(x.size))
