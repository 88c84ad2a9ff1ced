"""Tests of landscape.probes.invariance on a small ReLU MLP (Dinh et al. 2017 rescaling)."""

from __future__ import annotations

import json

import pytest
import torch
from probe_helpers import classification_batches, make_mlp

from landscape.io import to_jsonable
from landscape.probes.functional import flatten_params, mean_loss, parameter_dict, unflatten_params
from landscape.probes.invariance import invariance_audit, output_change, rescale_layers
from landscape.probes.sharpness import adaptive_sharpness, worst_case_sharpness

BATCHES = classification_batches()
X = torch.cat([b[0] for b in BATCHES])


def _hessian(model, params):
    """Dense float64 Hessian by double backward (the reference path of DESIGN.md)."""
    flat = flatten_params(params)
    return torch.autograd.functional.hessian(lambda v: mean_loss(model, unflatten_params(v, params), BATCHES, bn_mode="eval"), flat)


@pytest.mark.parametrize("alpha", [5.0, 0.3, "vector"])
def test_rescaling_preserves_outputs(alpha):
    net = make_mlp()
    p = parameter_dict(net)
    a = torch.linspace(0.2, 4.0, 6, dtype=torch.float64) if alpha == "vector" else alpha
    q = rescale_layers(p, "net.0", "net.2", a)
    q = rescale_layers(q, "net.2", "net.4", 2.5)
    assert output_change(net, p, q, X) < 1e-6
    assert output_change(net, p, q, [X[:10], X[10:]]) < 1e-12  # float64: exact to rounding
    assert not torch.allclose(q["net.0.weight"], p["net.0.weight"])
    assert torch.equal(q["net.4.bias"], p["net.4.bias"])
    assert torch.equal(p["net.0.weight"], parameter_dict(net)["net.0.weight"])  # input dict untouched


def test_audit_adaptive_sharpness_invariant_plain_measures_not():
    net = make_mlp()
    p = parameter_dict(net)
    q = rescale_layers(p, "net.0", "net.2", 3.7)
    kw = dict(bn_mode="eval", steps=8, seed=3)
    measures = {
        "adaptive_sharpness": lambda prm: adaptive_sharpness(net, prm, BATCHES, eps=0.05, **kw),
        "eps_sharpness": lambda prm: worst_case_sharpness(net, prm, BATCHES, eps=0.05, **kw),
        "lambda_max": lambda prm: torch.linalg.eigvalsh(_hessian(net, prm)).max(),
        "trace": lambda prm: torch.trace(_hessian(net, prm)).item(),
        "logdet": lambda prm: torch.linalg.slogdet(_hessian(net, prm) + torch.eye(87, dtype=torch.float64)).logabsdet,
    }
    report = invariance_audit(measures, p, q, rtol=1e-6, model=net, inputs=X)
    assert report.output_change < 1e-6
    assert report["adaptive_sharpness"].verdict == "invariant"
    assert report["adaptive_sharpness"].rel_change < 1e-8
    for name in ("eps_sharpness", "lambda_max", "trace", "logdet"):
        assert report[name].verdict == "not invariant" and report[name].rel_change > 0.05, name
    json.dumps(to_jsonable(report))
    with pytest.raises(KeyError, match="no measure named"):
        report["spectral_norm"]


def test_audit_verdict_threshold_and_zero_before():
    p = parameter_dict(make_mlp())
    rep = invariance_audit({"one": lambda _: 1.0, "drift": lambda prm: 1.0 + 1e-4 * float(prm is not p), "zero": lambda prm: 0.0 if prm is p else 1.0}, p, dict(p), rtol=1e-3)
    assert rep["one"].verdict == "invariant" and rep["one"].rel_change == 0.0
    assert rep["drift"].verdict == "invariant" and rep["drift"].rel_change == pytest.approx(1e-4)
    assert rep["zero"].verdict == "not invariant" and rep["zero"].rel_change == float("inf")
    assert rep.output_change is None


def test_invariance_argument_errors():
    net = make_mlp()
    p = parameter_dict(net)
    with pytest.raises(ValueError, match="alpha must be finite and > 0"):
        rescale_layers(p, "net.0", "net.2", -1.0)
    with pytest.raises(ValueError, match="alpha must be a scalar or a vector of 6"):
        rescale_layers(p, "net.0", "net.2", torch.ones(3))
    with pytest.raises(ValueError, match="not found"):
        rescale_layers(p, "net.1", "net.2", 2.0)
    with pytest.raises(ValueError, match="output units but"):
        rescale_layers(p, "net.2", "net.0", 2.0)
    with pytest.raises(ValueError, match="at least one named measure"):
        invariance_audit({}, p, p)
    with pytest.raises(ValueError, match="rtol must be > 0"):
        invariance_audit({"a": lambda _: 1.0}, p, p, rtol=0)
    with pytest.raises(ValueError, match="pass model and inputs together"):
        invariance_audit({"a": lambda _: 1.0}, p, p, model=net)
    with pytest.raises(ValueError, match="expected a number"):
        invariance_audit({"a": lambda _: "big"}, p, p)
