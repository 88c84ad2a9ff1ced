"""HessianOperator / GGNOperator against dense float64 double-backward references.

Every hvp_mode (and both block strategies) is checked on a tanh MLP, a CNN with
BatchNorm in eval mode, an MLP with LayerNorm and an MLP with batch-statistics BatchNorm,
the cases where torch.func.hessian is silently wrong in torch 2.14.1 (DESIGN.md).
"""

from __future__ import annotations

import functools

import pytest
import torch
from models import (
    bn_cnn,
    bn_mlp,
    classification_batches,
    flat_loss,
    linear_model,
    ln_mlp,
    model_state,
    reference_ggn,
    reference_gradient,
    reference_hessian,
    regression_batches,
    rel_err,
    tanh_mlp,
)
from torch import nn

from landscape.curvature.linop import SymmetricOperator
from landscape.curvature.operators import HVP_MODES, GGNOperator, HessianOperator
from landscape.functional import (
    POINT_BN_MODES,
    curvature_mode,
    flatten_tensors,
    parameter_vector,
    select_parameter_names,
    unflatten_vector,
)

SIZES = (5, 3, 4)  # unequal batch sizes: the size weighting matters
CE = nn.CrossEntropyLoss()
RTOL = 1e-8

CASES = {
    "tanh_mlp-eval": (tanh_mlp, (4,), "eval"),
    "bn_cnn-eval": (bn_cnn, (1, 5, 5), "eval"),
    "ln_mlp-eval": (ln_mlp, (4,), "eval"),
    "bn_mlp-batch": (bn_mlp, (4,), "batch"),
}


@functools.cache
def case(name: str):
    factory, in_shape, bn_mode = CASES[name]
    model = factory()
    data = classification_batches(SIZES, in_shape)
    return model, data, bn_mode, reference_hessian(model, CE, data, bn_mode=bn_mode)


@pytest.mark.parametrize("vectorize", [True, False], ids=["block", "loop"])
@pytest.mark.parametrize("hvp_mode", HVP_MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_hessian_matches_double_backward_reference(name, hvp_mode, vectorize):
    model, data, bn_mode, H = case(name)
    op = HessianOperator(model, CE, data, bn_mode=bn_mode, hvp_mode=hvp_mode, vectorize=vectorize, block_size=7)
    D = op.to_dense()
    assert op.shape == H.shape
    assert D.dtype == torch.float64
    assert rel_err(D, H) < RTOL
    assert rel_err(D.T, D) < 1e-12


@pytest.mark.parametrize("hvp_mode", HVP_MODES)
@pytest.mark.parametrize("name", list(CASES))
def test_hvp_matches_finite_differences_of_gradient(name, hvp_mode):
    model, data, bn_mode, _ = case(name)
    op = HessianOperator(model, CE, data, bn_mode=bn_mode, hvp_mode=hvp_mode)
    v = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    theta = parameter_vector(model)
    eps = 1e-5
    g_plus = reference_gradient(model, CE, data, bn_mode=bn_mode, theta=theta + eps * v)
    g_minus = reference_gradient(model, CE, data, bn_mode=bn_mode, theta=theta - eps * v)
    fd = (g_plus - g_minus) / (2 * eps)
    # central differences: O(eps^2) truncation + O(1e-16 / eps) rounding
    assert rel_err(op @ v, fd) < 1e-6


def test_multi_batch_is_size_weighted_mean():
    model = tanh_mlp(1)
    data = classification_batches((7, 2, 3), seed=1)
    pooled = [(torch.cat([x for x, _ in data]), torch.cat([y for _, y in data]))]
    H_pooled = reference_hessian(model, CE, pooled)
    for mode in HVP_MODES:
        D = HessianOperator(model, CE, data, hvp_mode=mode).to_dense()
        assert rel_err(D, H_pooled) < RTOL, mode
    # the plain (unweighted) average of per-batch Hessians is a different matrix
    unweighted = sum(HessianOperator(model, CE, [b]).to_dense() for b in data) / len(data)
    assert rel_err(unweighted, H_pooled) > 1e-2


@pytest.mark.parametrize("hvp_mode", HVP_MODES)
@pytest.mark.parametrize("bn_mode", POINT_BN_MODES)
def test_model_state_flags_and_grads_untouched(bn_mode, hvp_mode):
    model = bn_mlp(2, dropout=0.3)
    model.train()
    model[0].eval()  # a mixed-mode model must come back mixed
    before = model_state(model)
    flags = [m.training for m in model.modules()]
    data = classification_batches(SIZES)
    op = HessianOperator(model, CE, data, bn_mode=bn_mode, hvp_mode=hvp_mode)
    op @ torch.ones(op.shape[0], dtype=torch.float64)
    op.gradient()
    ggn = GGNOperator(model, CE, data, bn_mode=bn_mode)
    ggn @ torch.ones(op.shape[0], 2, dtype=torch.float64)
    after = model_state(model)
    assert before.keys() == after.keys()
    for k in before:
        assert torch.equal(before[k], after[k]), k  # incl. running_mean/var, num_batches_tracked
    assert [m.training for m in model.modules()] == flags
    assert model[1].track_running_stats is True
    assert all(p.grad is None for p in model.parameters())


def test_dropout_disabled_and_report():
    model = bn_mlp(3, dropout=0.5).train()
    data = classification_batches(SIZES)
    op = HessianOperator(model, CE, data, bn_mode="batch", hvp_mode="rev_rev")
    D1, D2 = op.to_dense(), op.to_dense()
    assert torch.equal(D1, D2)  # no random masks
    assert rel_err(D1, reference_hessian(model, CE, data, bn_mode="batch")) < RTOL  # reference: dropout off
    r = op.report
    assert r.has_dropout and r.has_batchnorm and r.batch_order_dependent
    assert (r.bn_mode, r.num_params, r.num_examples, r.num_batches) == ("batch", 63, 12, 3)
    assert r.product_mode == "rev_rev" and r.kind == "hessian"
    assert r.to_dict()["param_names"] == [n for n, _ in model.named_parameters()]
    eval_report = HessianOperator(model, CE, data, bn_mode="eval").report
    assert not eval_report.batch_order_dependent
    tanh_report = HessianOperator(tanh_mlp(), CE, data, bn_mode="batch").report
    assert not tanh_report.has_batchnorm and not tanh_report.batch_order_dependent and not tanh_report.has_dropout


def test_bn_batch_mode_depends_on_batch_composition():
    model = bn_mlp(4)
    data = classification_batches((6, 6))
    regrouped = [(torch.cat([data[0][0][:3], data[1][0][:3]]), torch.cat([data[0][1][:3], data[1][1][:3]])),
                 (torch.cat([data[0][0][3:], data[1][0][3:]]), torch.cat([data[0][1][3:], data[1][1][3:]]))]
    H_a = HessianOperator(model, CE, data, bn_mode="batch").to_dense()
    H_b = HessianOperator(model, CE, regrouped, bn_mode="batch").to_dense()
    assert rel_err(H_a, H_b) > 1e-3
    E_a = HessianOperator(model, CE, data, bn_mode="eval").to_dense()
    E_b = HessianOperator(model, CE, regrouped, bn_mode="eval").to_dense()
    assert rel_err(E_a, E_b) < 1e-12


def test_auto_mode_resolution_by_budget():
    model, data, _, H = case("tanh_mlp-eval")
    kept = HessianOperator(model, CE, data)
    assert kept.report.product_mode == "rev_rev_kept" and kept.report.requested_mode == "auto"
    assert kept.report.graph_bytes > 0
    tight = HessianOperator(model, CE, data, graph_budget_bytes=16)
    assert tight.report.product_mode == "rev_rev" and tight.report.graph_bytes is None
    assert rel_err(tight.to_dense(), H) < RTOL


@pytest.mark.parametrize("hvp_mode", HVP_MODES)
def test_operator_is_frozen_at_construction(hvp_mode):
    model = tanh_mlp(5)
    data = classification_batches(SIZES)
    op = HessianOperator(model, CE, data, hvp_mode=hvp_mode)
    H0 = reference_hessian(model, CE, data)
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(2.0)
    assert rel_err(op.to_dense(), H0) < RTOL


def test_parameter_subset_is_diagonal_block():
    model, data, bn_mode, H = case("ln_mlp-eval")
    names = [n for n, _ in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]
    offsets = dict(zip(names, torch.tensor([0, *sizes]).cumsum(0).tolist()))
    subset = ["3.weight", "1.bias"]  # given out of order; flattened in named_parameters order
    op = HessianOperator(model, CE, data, bn_mode=bn_mode, params=subset)
    assert op.param_names == ("1.bias", "3.weight")
    idx = torch.cat([torch.arange(offsets[n], offsets[n] + dict(zip(names, sizes))[n]) for n in op.param_names])
    assert op.shape == (len(idx), len(idx))
    assert rel_err(op.to_dense(), H[idx][:, idx]) < RTOL


def test_ggn_matches_reference_and_is_psd():
    for name in CASES:
        model, data, bn_mode, _ = case(name)
        G = reference_ggn(model, CE, data, bn_mode=bn_mode)
        for output_hessian in ("auto", "autodiff"):
            for vectorize in (True, False):
                ggn = GGNOperator(model, CE, data, bn_mode=bn_mode, output_hessian=output_hessian, vectorize=vectorize)
                D = ggn.to_dense()
                assert rel_err(D, G) < RTOL, (name, output_hessian, vectorize)
                assert rel_err(D.T, D) < 1e-12
                evals = torch.linalg.eigvalsh(0.5 * (D + D.T))
                assert evals[0] >= -1e-12 * evals[-1]
        assert GGNOperator(model, CE, data, bn_mode=bn_mode).report.output_hessian == "closed_form_cross_entropy"


def test_ggn_equals_hessian_for_linear_model_with_mse():
    model = linear_model()
    data = regression_batches((4, 6))
    mse = nn.MSELoss()
    H = reference_hessian(model, mse, data)
    for output_hessian in ("auto", "autodiff"):
        ggn = GGNOperator(model, mse, data, output_hessian=output_hessian)
        assert rel_err(ggn.to_dense(), H) < RTOL
    assert GGNOperator(model, mse, data).report.output_hessian == "closed_form_mse"
    for hvp_mode in HVP_MODES:  # fwd_rev: floating targets need a materialised zero tangent
        for vectorize in (True, False):
            op = HessianOperator(model, mse, data, hvp_mode=hvp_mode, vectorize=vectorize)
            assert rel_err(op.to_dense(), H) < RTOL, (hvp_mode, vectorize)


def test_loss_linear_in_parameters_has_zero_curvature():
    """Gradient blocks without a graph (a loss linear in the parameters) give H = 0, not an error."""
    model = linear_model()
    data = regression_batches((4, 3))

    def linear_loss(out, y):
        return (out * y).mean()

    for hvp_mode in HVP_MODES:
        for vectorize in (True, False):
            D = HessianOperator(model, linear_loss, data, hvp_mode=hvp_mode, vectorize=vectorize, reduction="mean").to_dense()
            assert torch.equal(D, torch.zeros_like(D)), (hvp_mode, vectorize)
    G = GGNOperator(model, linear_loss, data, reduction="mean").to_dense()
    assert torch.equal(G, torch.zeros_like(G))


def test_ggn_cross_entropy_closed_form_with_ignore_index_and_label_smoothing():
    model = tanh_mlp(6)
    data = classification_batches(SIZES, seed=6)
    data[0][1][1] = -100
    data[2][1][0] = -100
    for loss in (nn.CrossEntropyLoss(ignore_index=-100, label_smoothing=0.1), nn.CrossEntropyLoss(reduction="sum")):
        if loss.reduction == "sum":
            data = classification_batches(SIZES, seed=6)
        closed = GGNOperator(model, loss, data).to_dense()
        auto = GGNOperator(model, loss, data, output_hessian="autodiff").to_dense()
        assert rel_err(closed, auto) < 1e-12
        assert rel_err(closed, reference_ggn(model, loss, data)) < RTOL


@pytest.mark.parametrize("hvp_mode", HVP_MODES)
def test_gradient_and_loss(hvp_mode):
    # With kept graphs (auto, rev_rev_kept) they come from the construction pass.
    model, data, bn_mode, _ = case("bn_mlp-batch")
    op = HessianOperator(model, CE, data, bn_mode=bn_mode, hvp_mode=hvp_mode)
    assert rel_err(op.gradient(), reference_gradient(model, CE, data, bn_mode=bn_mode)) < 1e-12
    f, theta = flat_loss(model, CE, data, bn_mode=bn_mode)
    assert torch.allclose(op.loss(), f(theta), rtol=1e-12, atol=0)


def test_to_scipy_and_block_products():
    model, data, bn_mode, H = case("bn_cnn-eval")
    op = HessianOperator(model, CE, data, bn_mode=bn_mode)
    assert isinstance(op, SymmetricOperator)
    V = torch.randn(op.shape[0], 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert rel_err(op @ V, H @ V) < RTOL
    lin = op.to_scipy()
    assert rel_err(torch.as_tensor(lin.matvec(V[:, 0].numpy())), H @ V[:, 0]) < RTOL
    assert rel_err(op.matvec(V[:, 1].float()).double(), H @ V[:, 1]) < 1e-5  # caller dtype kept


@pytest.mark.parametrize("hvp_mode", HVP_MODES)
def test_products_inside_no_grad(hvp_mode):
    """Krylov solvers often run under torch.no_grad(); construction and products must still work."""
    model, data, bn_mode, H = case("bn_mlp-batch")
    v = torch.randn(H.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with torch.no_grad():
        op = HessianOperator(model, CE, data, bn_mode=bn_mode, hvp_mode=hvp_mode)
        hv = op @ v
        gv = GGNOperator(model, CE, data, bn_mode=bn_mode) @ v
        g = op.gradient()
    assert rel_err(hv, H @ v) < RTOL
    assert rel_err(gv, reference_ggn(model, CE, data, bn_mode=bn_mode) @ v) < RTOL
    assert rel_err(g, reference_gradient(model, CE, data, bn_mode=bn_mode)) < 1e-12


def test_float32_model_follows_parameter_dtype():
    model = tanh_mlp(7)
    data = classification_batches(SIZES)
    H = reference_hessian(model, CE, data)
    model32 = tanh_mlp(7).float()
    op = HessianOperator(model32, CE, data)  # float64 data is cast to the parameters' dtype
    assert op.dtype == torch.float32 and op.device == next(model32.parameters()).device
    assert rel_err(op.to_dense().double(), H) < 1e-4


def test_curvature_mode_restores_on_error():
    model = bn_mlp().train()
    with pytest.raises(RuntimeError, match="boom"):
        with curvature_mode(model, "batch"):
            assert model[1].training and not model[1].track_running_stats and not model[0].training
            raise RuntimeError("boom")
    assert all(m.training for m in model.modules()) and model[1].track_running_stats


def test_flatten_roundtrip_and_errors():
    shapes = [torch.Size([2, 3]), torch.Size([4]), torch.Size([])]
    v = torch.arange(11.0)
    parts = unflatten_vector(v, shapes)
    assert [p.shape for p in parts] == shapes
    assert torch.equal(flatten_tensors(parts), v)
    V = torch.arange(33.0).reshape(11, 3)
    blocks = unflatten_vector(V, shapes)
    assert [b.shape for b in blocks] == [(3, 2, 3), (3, 4), (3,)]
    assert torch.equal(flatten_tensors(blocks, batch_dims=1).T, V)
    with pytest.raises(ValueError, match="vector has 10 entries but the shapes hold 11"):
        unflatten_vector(torch.zeros(10), shapes)
    with pytest.raises(ValueError, match="at least one tensor"):
        flatten_tensors([])


class _ShrinkingData:
    """Yields one example fewer on every pass (a broken data source)."""

    def __init__(self):
        self.n = 6

    def __iter__(self):
        batches = classification_batches((self.n,))
        self.n -= 1
        return iter(batches)


def test_argument_errors():
    model, data, _, _ = case("tanh_mlp-eval")
    with pytest.raises(ValueError, match=r"unknown bn_mode 'train'; allowed values are \['eval', 'batch'\]"):
        HessianOperator(model, CE, data, bn_mode="train")
    with pytest.raises(ValueError, match=r"unknown bn_mode 'recalibrate'"):
        GGNOperator(model, CE, data, bn_mode="recalibrate")
    with pytest.raises(ValueError, match=r"unknown hvp_mode 'fast'; allowed values are \['auto'"):
        HessianOperator(model, CE, data, hvp_mode="fast")
    with pytest.raises(ValueError, match=r"unknown output_hessian 'exact'"):
        GGNOperator(model, CE, data, output_hessian="exact")
    with pytest.raises(ValueError, match="unknown parameter name 'nope'"):
        HessianOperator(model, CE, data, params=["nope"])
    with pytest.raises(ValueError, match="listed twice"):
        HessianOperator(model, CE, data, params=["0.weight", "0.weight"])
    with pytest.raises(ValueError, match="empty list"):
        HessianOperator(model, CE, data, params=[])
    with pytest.raises(ValueError, match="list of parameter names, got the string"):
        HessianOperator(model, CE, data, params="0.weight")
    with pytest.raises(ValueError, match="no examples"):
        HessianOperator(model, CE, [])
    with pytest.raises(ValueError, match=r"\(inputs, targets\) pair; batch 0"):
        HessianOperator(model, CE, [torch.zeros(3, 4)])
    with pytest.raises(ValueError, match="iterable of"):
        HessianOperator(model, CE, torch.zeros(3, 4))
    with pytest.raises(ValueError, match="block_size must be a positive int"):
        HessianOperator(model, CE, data, block_size=0)
    with pytest.raises(ValueError, match="graph_budget_bytes"):
        HessianOperator(model, CE, data, graph_budget_bytes=-1)
    with pytest.raises(ValueError, match="vectorize must be True, False or None"):
        HessianOperator(model, CE, data, vectorize="yes")
    with pytest.raises(ValueError, match="loss_fn must be callable"):
        HessianOperator(model, "ce", data)
    frozen = tanh_mlp()
    frozen[0].weight.requires_grad_(False)
    with pytest.raises(ValueError, match="does not require grad"):
        select_parameter_names(frozen, ["0.weight"])
    op = HessianOperator(model, CE, _ShrinkingData(), hvp_mode="rev_rev")
    with pytest.raises(RuntimeError, match="yielded 5 examples in this pass but 6 at construction"):
        op @ torch.ones(op.shape[0], dtype=torch.float64)


def test_start_hint_is_the_gradient_and_lanczos_stays_exact():
    # The Hessian operator's start hint is its loss gradient (free with kept graphs), and the
    # ObservedOperator wrapper passes it on.
    from landscape.curvature import top_eigenpairs
    from landscape.curvature.linop import ObservedOperator

    from models import classification_batches, reference_gradient, reference_hessian, tanh_mlp

    model, data, loss_fn = tanh_mlp(3), classification_batches([40, 24], seed=3), nn.CrossEntropyLoss()
    op = HessianOperator(model, loss_fn, data)
    g = reference_gradient(model, loss_fn, data)
    torch.testing.assert_close(op.start_hint(), g, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(ObservedOperator(op, lambda n: None).start_hint(), g, rtol=1e-10, atol=1e-12)
    lam = torch.linalg.eigvalsh(reference_hessian(model, loss_fn, data))[-1]
    res = top_eigenpairs(op, k=1, tol=1e-8, seed=0)
    assert res.converged
    torch.testing.assert_close(res.values[0], lam, rtol=1e-8, atol=0.0)
