"""Reparametrisation audit of flatness measures under function-preserving rescalings.

Dinh, Pascanu, Bengio & Bengio 2017 (*Sharp minima can generalize for deep nets*): ReLU
is positively homogeneous, ``relu(a z) = a relu(z)`` for ``a > 0``, so multiplying the
weights and bias of one layer by ``alpha > 0`` and the incoming weights of the next layer
by ``1 / alpha`` leaves the network function unchanged, while the Hessian changes
(``lambda_max`` and the trace can be made arbitrarily large or small, and the log-det
shifts) and so does plain eps-sharpness. Measures built to be scale-aware, such as
adaptive sharpness with elementwise ``|w|`` scaling (Kwon et al. 2021), are invariant.

:func:`rescale_layers` applies the rescaling to a parameter dict (a scalar ``alpha``, or
one factor per hidden unit, which is also function-preserving). It is exact for
``Linear``/``Conv`` pairs joined by a positively homogeneous activation (ReLU, leaky ReLU,
max-pooling, average-pooling); not for tanh/GELU, nor when a normalisation layer sits
between the two layers (BatchNorm in eval mode is affine with a fixed shift, so it breaks
the identity; with a norm layer the rescaling is a symmetry of a different kind).

:func:`invariance_audit` takes flatness-measure callables (``params -> float``; e.g.
``lambda_max`` and ``trace`` from :mod:`landscape.curvature`, eps-sharpness and adaptive
sharpness from :mod:`landscape.probes.sharpness`, a log-det) and reports each before and
after, with the verdict ``"invariant"`` when ``|after - before| / |before| <= rtol``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from landscape.functional import probe_modes

__all__ = ["MeasureChange", "InvarianceReport", "rescale_layers", "output_change", "invariance_audit"]

#: A flatness measure: parameter dict -> number (or an object with a ``value`` attribute).
Measure = Callable[[Mapping[str, Tensor]], Any]


def rescale_layers(
    params: Mapping[str, Tensor],
    first: str,
    second: str,
    alpha: float | Tensor,
) -> dict[str, Tensor]:
    """Function-preserving rescaling of two consecutive layers (Dinh et al. 2017).

    ``first.weight`` and ``first.bias`` are multiplied by ``alpha`` (per output unit when
    ``alpha`` is a vector) and ``second.weight`` is divided by ``alpha`` along its input
    axis; ``second.bias`` is unchanged. Nothing is modified in place.

    Args:
        params: Parameter dict (e.g. :func:`~landscape.probes.functional.parameter_dict`).
        first: Module name of the first layer (e.g. ``"net.0"``), whose output goes
            through a positively homogeneous activation into ``second``.
        second: Module name of the second layer.
        alpha: Positive factor, or a (units,) tensor of positive factors.

    Returns:
        A new dict (unchanged entries are shared with ``params``).

    Raises:
        ValueError: Non-positive or non-finite ``alpha``, missing weights, or the layers'
            shapes do not chain (``first`` outputs != ``second`` inputs, or wrong
            ``alpha`` length).
    """
    w1_key, b1_key, w2_key = f"{first}.weight", f"{first}.bias", f"{second}.weight"
    for key in (w1_key, w2_key):
        if key not in params:
            raise ValueError(f"parameter {key!r} not found; available: {list(params)[:8]}...")
    w1, w2 = params[w1_key], params[w2_key]
    units = int(w1.shape[0])
    if w2.ndim < 2 or int(w2.shape[1]) != units:
        raise ValueError(f"{first!r} has {units} output units but {second!r} weight has shape {tuple(w2.shape)}")
    a = torch.as_tensor(alpha, dtype=w1.dtype, device=w1.device)
    if a.ndim > 1 or (a.ndim == 1 and a.numel() != units):
        raise ValueError(f"alpha must be a scalar or a vector of {units} factors, got shape {tuple(a.shape)}")
    if not bool(torch.all(a > 0)) or not bool(torch.all(torch.isfinite(a))):
        raise ValueError(f"alpha must be finite and > 0 (ReLU is only positively homogeneous), got {alpha!r}")
    out = dict(params)
    a1 = a.reshape(-1, *([1] * (w1.ndim - 1))) if a.ndim == 1 else a
    out[w1_key] = w1 * a1
    if b1_key in params and params[b1_key] is not None:
        out[b1_key] = params[b1_key] * a
    a2 = a.reshape(1, -1, *([1] * (w2.ndim - 2))) if a.ndim == 1 else a
    out[w2_key] = w2 / a2
    return out


def output_change(
    model: nn.Module,
    params_a: Mapping[str, Tensor],
    params_b: Mapping[str, Tensor],
    inputs: Tensor | Sequence[Tensor],
) -> float:
    """Largest absolute difference of the model's outputs at two parameter dicts.

    Runs in eval mode with the model's buffers (the model is left as it was).

    Args:
        inputs: One input tensor, or a sequence of input batches.
    """
    xs = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if not xs:
        raise ValueError("inputs must contain at least one tensor")
    bufs = dict(model.named_buffers())
    worst = None
    with torch.no_grad(), probe_modes(model, bn_train=False):
        for x in xs:
            ya = functional_call(model, {**params_a, **bufs}, (x,))
            yb = functional_call(model, {**params_b, **bufs}, (x,))
            d = (ya - yb).abs().max()
            worst = d if worst is None else torch.maximum(worst, d)
    assert worst is not None  # xs is non-empty
    return float(worst)


@dataclass(frozen=True)
class MeasureChange:
    """One measure before and after the reparametrisation.

    Attributes:
        name: Measure name.
        before: Value at the original parameters.
        after: Value at the rescaled parameters.
        rel_change: ``|after - before| / |before|`` (``inf`` if ``before == 0 != after``).
        verdict: ``"invariant"`` if ``rel_change <= rtol``, else ``"not invariant"``.
    """

    name: str
    before: float
    after: float
    rel_change: float
    verdict: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "before": self.before, "after": self.after, "rel_change": self.rel_change, "verdict": self.verdict}


@dataclass(frozen=True)
class InvarianceReport:
    """Audit of several measures under one reparametrisation.

    Attributes:
        entries: One :class:`MeasureChange` per measure, in the order given.
        rtol: Relative tolerance of the verdicts.
        output_change: Largest output difference (None if no inputs were given).
    """

    entries: tuple[MeasureChange, ...]
    rtol: float
    output_change: float | None

    def __getitem__(self, name: str) -> MeasureChange:
        for e in self.entries:
            if e.name == name:
                return e
        raise KeyError(f"no measure named {name!r}; have {[e.name for e in self.entries]}")

    def to_dict(self) -> dict[str, Any]:
        return {"entries": [e.to_dict() for e in self.entries], "rtol": self.rtol, "output_change": self.output_change}


def _as_number(value: Any, name: str) -> float:
    v = getattr(value, "value", value)
    if isinstance(v, Tensor):
        if v.numel() != 1:
            raise ValueError(f"measure {name!r} returned a tensor of shape {tuple(v.shape)}, expected a scalar")
        v = v.item()
    try:
        return float(v)
    except (TypeError, ValueError):
        raise ValueError(f"measure {name!r} returned {type(value).__name__}, expected a number or an object with .value") from None


def invariance_audit(
    measures: Mapping[str, Measure],
    params_before: Mapping[str, Tensor],
    params_after: Mapping[str, Tensor],
    *,
    rtol: float = 1e-3,
    model: nn.Module | None = None,
    inputs: Tensor | Sequence[Tensor] | None = None,
) -> InvarianceReport:
    """Evaluate each flatness measure before and after a reparametrisation.

    Args:
        measures: ``{name: measure}``; each measure maps a parameter dict to a number
            (or to a result with a ``value`` attribute, e.g. a ``SharpnessResult``). Pass
            deterministic measures (fixed seeds), or the verdict mixes estimator noise
            with the reparametrisation effect.
        params_before: Original parameters.
        params_after: Reparametrised parameters (e.g. from :func:`rescale_layers`).
        rtol: Tolerance of the ``"invariant"`` verdict.
        model: With ``inputs``, also report :func:`output_change` (function preserved?).
        inputs: Input tensor(s) for the output check.

    Raises:
        ValueError: Empty ``measures``, ``rtol <= 0``, or ``inputs`` without ``model``.
    """
    if not measures:
        raise ValueError("measures must contain at least one named measure")
    if not (isinstance(rtol, (int, float)) and rtol > 0):
        raise ValueError(f"rtol must be > 0, got {rtol!r}")
    if (inputs is None) != (model is None):
        raise ValueError("pass model and inputs together (or neither) for the output check")
    entries = []
    for name, fn in measures.items():
        before = _as_number(fn(params_before), name)
        after = _as_number(fn(params_after), name)
        if before == after:
            rel = 0.0
        elif before == 0 or not math.isfinite(before):
            rel = math.inf
        else:
            rel = abs(after - before) / abs(before)
        entries.append(MeasureChange(name, before, after, rel, "invariant" if rel <= rtol else "not invariant"))
    out = None if model is None or inputs is None else output_change(model, params_before, params_after, inputs)
    return InvarianceReport(tuple(entries), float(rtol), out)
