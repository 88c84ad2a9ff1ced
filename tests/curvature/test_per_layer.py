"""Per-layer curvature against the diagonal blocks of the dense double-backward Hessian."""

from __future__ import annotations

import sys

import pytest
import torch
from models import bn_cnn, bn_mlp, classification_batches, ln_mlp, model_state, reference_hessian
from torch import nn

from landscape.curvature.linop import DenseOperator
from landscape.curvature.per_layer import default_parameter_groups, per_layer_curvature, power_top_eigenvalue

CE = nn.CrossEntropyLoss()
SIZES = (5, 3, 4)


def _blocks(model, H, groups):
    names = [n for n, _ in model.named_parameters()]
    sizes = dict((n, p.numel()) for n, p in model.named_parameters())
    start = dict(zip(names, torch.tensor([0, *sizes.values()]).cumsum(0).tolist()))
    out = {}
    for g, members in groups.items():
        ordered = [n for n in names if n in members]
        idx = torch.cat([torch.arange(start[n], start[n] + sizes[n]) for n in ordered])
        out[g] = H[idx][:, idx]
    return out


def test_default_groups_are_modules_owning_parameters():
    model = bn_cnn()
    assert default_parameter_groups(model) == {
        "0": ["0.weight", "0.bias"],
        "1": ["1.weight", "1.bias"],
        "5": ["5.weight", "5.bias"],
    }
    lin = nn.Linear(2, 2)
    assert default_parameter_groups(lin) == {"(root)": ["weight", "bias"]}


@pytest.mark.parametrize(
    "factory,in_shape,bn_mode", [(bn_cnn, (1, 5, 5), "eval"), (bn_mlp, (4,), "batch")], ids=["bn_cnn-eval", "bn_mlp-batch"]
)
def test_dense_blocks_match_reference(factory, in_shape, bn_mode):
    model = factory()
    data = classification_batches(SIZES, in_shape)
    H = reference_hessian(model, CE, data, bn_mode=bn_mode)
    before = model_state(model)
    res = per_layer_curvature(model, CE, data, bn_mode=bn_mode, exact_max_dim=64)
    blocks = _blocks(model, H, default_parameter_groups(model))
    assert [layer.name for layer in res.layers] == list(blocks)
    for layer in res.layers:
        B = blocks[layer.name]
        assert layer.num_params == B.shape[0]
        assert layer.eigen_method == "dense" and layer.trace_method == "dense"
        assert layer.top_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(B)[-1]), rel=1e-9, abs=1e-12)
        assert layer.trace == pytest.approx(float(torch.trace(B)), rel=1e-9, abs=1e-12)
    assert res.batch_order_dependent == (bn_mode == "batch")
    assert res.num_examples == sum(SIZES)
    assert all(torch.equal(before[k], v) for k, v in model_state(model).items())
    d = res.to_dict()
    assert d["layers"][0]["name"] == res.layers[0].name and d["bn_mode"] == bn_mode


def test_krylov_path_and_user_groups():
    model = ln_mlp()
    data = classification_batches(SIZES)
    H = reference_hessian(model, CE, data)
    groups = {"first": ["0.weight", "0.bias"], "norm+head": ["1.weight", "1.bias", "3.weight", "3.bias"]}
    seen = []
    res = per_layer_curvature(model, CE, data, groups=groups, exact_max_dim=0, num_matvecs=10, tol=1e-10, seed=3, on_group=seen.append)
    assert seen == list(res.layers)  # each group reported as soon as it is done
    blocks = _blocks(model, H, groups)
    for layer in res.layers:
        B = blocks[layer.name]
        assert layer.eigen_method == "lanczos" and layer.eigen_converged
        assert layer.top_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(B)[-1]), rel=1e-8)
        assert layer.trace_method != "dense"
        # stochastic trace: within 4 reported standard errors of the exact block trace
        assert abs(layer.trace - float(torch.trace(B))) <= 4 * layer.trace_stderr + 1e-10
    assert res.by_name()["first"].param_names == ("0.weight", "0.bias")


def test_exact_trace_when_block_is_within_budget():
    model = ln_mlp()
    data = classification_batches(SIZES)
    H = reference_hessian(model, CE, data)
    groups = {"head": ["3.weight", "3.bias"]}  # 21 parameters
    res = per_layer_curvature(model, CE, data, groups=groups, exact_max_dim=0, num_matvecs=40)
    (layer,) = res.layers
    assert layer.trace_method == "exact" and layer.trace_stderr == 0.0
    assert layer.trace == pytest.approx(float(torch.trace(_blocks(model, H, groups)["head"])), rel=1e-10)


def test_fallback_without_lanczos_and_trace_modules(monkeypatch):
    monkeypatch.setitem(sys.modules, "landscape.curvature.lanczos", None)  # import raises ImportError
    monkeypatch.setitem(sys.modules, "landscape.curvature.trace", None)
    model = ln_mlp()
    data = classification_batches(SIZES)
    H = reference_hessian(model, CE, data)
    groups = {"first": ["0.weight", "0.bias"]}
    (layer,) = per_layer_curvature(model, CE, data, groups=groups, exact_max_dim=0, num_matvecs=12, tol=1e-12).layers
    B = _blocks(model, H, groups)["first"]
    assert layer.eigen_method == "power" and layer.trace_method == "hutchinson"
    assert layer.top_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(B)[-1]), rel=1e-5)
    assert abs(layer.trace - float(torch.trace(B))) <= 4 * layer.trace_stderr


def test_power_iteration_finds_largest_algebraic_eigenvalue():
    g = torch.Generator().manual_seed(0)
    Q, _ = torch.linalg.qr(torch.randn(30, 30, generator=g, dtype=torch.float64))
    for spectrum in (torch.linspace(-1, 5, 30), torch.linspace(-9, 2, 30)):  # dominant +, dominant -
        A = DenseOperator((Q * spectrum.double()) @ Q.T)
        lam, resid, conv, used = power_top_eigenvalue(A, tol=1e-13, max_iter=5000, seed=1)
        assert conv and used > 1
        assert lam == pytest.approx(float(spectrum.max()), rel=1e-6)


def test_fallback_hutchinson_is_unbiased_over_seeds():
    from landscape.curvature.per_layer import _hutchinson

    g = torch.Generator().manual_seed(1)
    A = torch.randn(20, 20, generator=g, dtype=torch.float64)
    op = DenseOperator(A + A.T)
    estimates = torch.tensor([_hutchinson(op, 5, seed)[0] for seed in range(400)], dtype=torch.float64)
    stderr = estimates.std() / len(estimates) ** 0.5
    assert abs(float(estimates.mean()) - float(torch.trace(A + A.T))) < 3 * float(stderr)


def test_argument_errors():
    model = ln_mlp()
    data = classification_batches(SIZES)
    with pytest.raises(ValueError, match="non-empty mapping"):
        per_layer_curvature(model, CE, data, groups={})
    with pytest.raises(ValueError, match="must list parameter names, got the string"):
        per_layer_curvature(model, CE, data, groups={"a": "0.weight"})
    with pytest.raises(ValueError, match="unknown parameter name 'x'"):
        per_layer_curvature(model, CE, data, groups={"a": ["x"]})
    with pytest.raises(ValueError, match="exact_max_dim must be an int >= 0"):
        per_layer_curvature(model, CE, data, exact_max_dim=-1)
    with pytest.raises(ValueError, match="num_matvecs must be a positive int"):
        per_layer_curvature(model, CE, data, num_matvecs=0)
    with pytest.raises(ValueError, match="unknown bn_mode"):
        per_layer_curvature(model, CE, data, bn_mode="train")
    with pytest.raises(ValueError, match="tol must be > 0"):
        power_top_eigenvalue(DenseOperator(torch.eye(3, dtype=torch.float64)), tol=0)


def test_summed_loss_blocks_match_the_concatenated_reference():
    """reduction="sum" (stated for a plain function): the blocks of the summed loss's Hessian."""
    model = bn_cnn()
    data = classification_batches(SIZES, (1, 5, 5))

    def summed(z, y):
        return nn.functional.cross_entropy(z, y, reduction="sum")

    H = reference_hessian(model, summed, data)
    with pytest.raises(ValueError, match=r"pass reduction='mean'.*or reduction='sum'"):
        per_layer_curvature(model, summed, data)
    res = per_layer_curvature(model, summed, data, exact_max_dim=64, reduction="sum")
    blocks = _blocks(model, H, default_parameter_groups(model))
    for layer in res.layers:
        B = blocks[layer.name]
        assert layer.top_eigenvalue == pytest.approx(float(torch.linalg.eigvalsh(B)[-1]), rel=1e-9, abs=1e-12)
        assert layer.trace == pytest.approx(float(torch.trace(B)), rel=1e-9, abs=1e-12)
