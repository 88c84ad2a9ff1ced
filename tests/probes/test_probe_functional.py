"""Tests of landscape.probes.functional: layouts, BN policies, no side effects, filter norm."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from probe_helpers import classification_batches, make_mlp
from torch import nn

from landscape.probes.functional import (
    Objective,
    as_flat,
    evaluate,
    filter_normalize,
    flatten_params,
    mean_loss,
    parameter_dict,
    random_direction,
    recalibrated_buffers,
    unflatten_params,
)


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "modes": [m.training for m in model.modules()],
        "momenta": [getattr(m, "momentum", None) for m in model.modules()],
        "grads": [p.grad for p in model.parameters()],
    }


def _assert_unchanged(model: nn.Module, snap: dict) -> None:
    for k, v in model.state_dict().items():
        assert torch.equal(v, snap["state"][k]), k
    assert [m.training for m in model.modules()] == snap["modes"]
    assert [getattr(m, "momentum", None) for m in model.modules()] == snap["momenta"]
    assert all(p.grad is None for p in model.parameters())


def test_flatten_unflatten_roundtrip_and_order():
    model = make_mlp()
    params = parameter_dict(model)
    flat = flatten_params(params)
    assert flat.shape == (sum(p.numel() for p in model.parameters()),)
    back = unflatten_params(flat, params)
    assert list(back) == [n for n, _ in model.named_parameters()]
    for n in params:
        assert torch.equal(back[n], params[n])
    assert torch.equal(as_flat(params, params), flat)
    assert torch.equal(as_flat(flat, params), flat)


def test_layout_errors():
    params = parameter_dict(make_mlp())
    with pytest.raises(ValueError, match="flat vector of length"):
        unflatten_params(torch.zeros(3, dtype=torch.float64), params)
    with pytest.raises(ValueError, match="missing"):
        as_flat({"net.0.weight": params["net.0.weight"]}, params)
    bad = dict(params)
    bad["net.0.bias"] = torch.zeros(99, dtype=torch.float64)
    with pytest.raises(ValueError, match="has shape"):
        as_flat(bad, params)
    with pytest.raises(ValueError, match="empty parameter dict"):
        flatten_params({})


def test_eval_matches_direct_forward():
    batches = classification_batches()
    model = make_mlp()
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    with torch.no_grad():
        out = model(x)
    ev = evaluate(model, parameter_dict(model), batches, bn_mode="eval")
    assert ev.loss == pytest.approx(F.cross_entropy(out, y).item(), rel=1e-12)
    assert ev.error == pytest.approx((out.argmax(1) != y).double().mean().item(), abs=0)
    assert ev.num_examples == 96 and ev.bn_mode == "eval"
    assert ev.to_dict()["bn_mode"] == "eval"


def test_regression_outputs_have_nan_error():
    model = make_mlp(classes=1)
    batches = [(b[0], b[1].double().unsqueeze(1)) for b in classification_batches()]
    ev = evaluate(model, parameter_dict(model), batches, loss_fn=F.mse_loss, bn_mode="eval")
    assert math.isnan(ev.error) and math.isfinite(ev.loss)


@pytest.mark.parametrize("bn_mode", ["eval", "batch", "recalibrate"])
def test_no_side_effects(bn_mode):
    batches = classification_batches()
    model = make_mlp(bn=True)
    model.train()
    model.net[1].eval()  # mixed modes must come back as they were
    snap = _snapshot(model)
    params = parameter_dict(model)
    evaluate(model, params, batches, bn_mode=bn_mode, recal_batches=batches[:2])
    loss = mean_loss(model, flatten_params(params).requires_grad_(), batches, bn_mode=bn_mode, recal_batches=batches[:2])
    loss.backward()
    _assert_unchanged(model, snap)


def test_batch_mode_equals_train_mode_forward():
    batches = classification_batches()
    model = make_mlp(bn=True)
    ref = copy.deepcopy(model).train()
    with torch.no_grad():
        ref_loss = sum(F.cross_entropy(ref(x), y) * len(y) for x, y in batches) / 96
    ev = evaluate(model, parameter_dict(model), batches, bn_mode="batch")
    assert ev.loss == pytest.approx(ref_loss.item(), rel=1e-12)


def test_recalibration_is_cumulative_average_of_batch_statistics():
    batches = classification_batches()
    model = make_mlp(bn=True)
    params = parameter_dict(model)
    bufs = recalibrated_buffers(model, params, batches)
    # closed form: mean over batches of the batch mean / unbiased variance of the BN input
    lin0 = model.net[0]
    with torch.no_grad():
        h = [lin0(x) for x, _ in batches]
    exp_mean = torch.stack([t.mean(0) for t in h]).mean(0)
    exp_var = torch.stack([t.var(0, unbiased=True) for t in h]).mean(0)
    torch.testing.assert_close(bufs["net.1.running_mean"], exp_mean, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(bufs["net.1.running_var"], exp_var, rtol=1e-12, atol=1e-12)
    assert int(bufs["net.1.num_batches_tracked"]) == len(batches)
    # evaluation in recalibrate mode == eval mode with those buffers
    ev_r = evaluate(model, params, batches, bn_mode="recalibrate", recal_batches=batches)
    ev_e = evaluate(model, params, batches, bn_mode="eval", buffers=bufs)
    assert ev_r.loss == ev_e.loss and ev_r.bn_mode == "recalibrate"


def test_mean_loss_gradient_matches_autograd():
    batches = classification_batches()
    model = make_mlp()
    flat = flatten_params(parameter_dict(model)).requires_grad_()
    (g,) = torch.autograd.grad(mean_loss(model, flat, batches, bn_mode="eval"), flat)
    ref = copy.deepcopy(model)
    loss = sum(F.cross_entropy(ref(x), y) * len(y) for x, y in batches) / 96
    gref = torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, list(ref.parameters()))])
    torch.testing.assert_close(g, gref, rtol=1e-12, atol=1e-14)


def test_objective_argument_errors():
    model = make_mlp()
    batches = classification_batches()
    with pytest.raises(ValueError, match="unknown bn_mode"):
        Objective(model, batches, bn_mode="train")
    with pytest.raises(ValueError, match="needs a non-empty list of recal_batches"):
        Objective(model, batches, bn_mode="recalibrate")
    with pytest.raises(ValueError, match="at least one"):
        Objective(model, [], bn_mode="eval")
    with pytest.raises(ValueError, match=r"e.g. \[\(x, y\)\]"):
        Objective(model, batches[0], bn_mode="eval")
    with pytest.raises(ValueError, match="no trainable parameters"):
        Objective(nn.ReLU(), batches, bn_mode="eval")


def test_filter_normalize_policies():
    model = make_mlp(bn=True)
    params = parameter_dict(model)
    g = torch.Generator().manual_seed(1)
    raw = {n: torch.randn(t.shape, generator=g, dtype=torch.float64) for n, t in params.items()}
    for policy in ("zero", "keep", "normalize"):
        d = filter_normalize(raw, params, bias_policy=policy)
        for n, t in params.items():
            if t.ndim >= 2:
                torch.testing.assert_close(d[n].norm(dim=1), t.norm(dim=1), rtol=1e-12, atol=0)
            elif policy == "zero":
                assert torch.count_nonzero(d[n]) == 0
            elif policy == "keep":
                assert torch.equal(d[n], raw[n])
            else:
                assert d[n].norm().item() == pytest.approx(t.norm().item(), rel=1e-12)
    with pytest.raises(ValueError, match="bias_policy must be one of"):
        filter_normalize(raw, params, bias_policy="ignore")
    with pytest.raises(ValueError, match="no parameter of shape"):
        filter_normalize({"nope": torch.zeros(2)}, params)


def test_random_direction_is_seeded_and_zero_mean():
    params = parameter_dict(make_mlp(hidden=40))
    d1 = random_direction(params, generator=torch.Generator().manual_seed(3))
    d2 = random_direction(params, generator=torch.Generator().manual_seed(3))
    d3 = random_direction(params, generator=torch.Generator().manual_seed(4))
    assert all(torch.equal(d1[n], d2[n]) for n in params)
    assert not torch.equal(d1["net.2.weight"], d3["net.2.weight"])
    # before normalisation the entries are N(0,1): the mean of the 1600 signs is ~0
    w = d1["net.2.weight"]
    assert abs(torch.sign(w).mean().item()) < 3 / math.sqrt(w.numel())
