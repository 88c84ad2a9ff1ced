"""Curvature through every registered architecture, at a tiny size, in float64 on the CPU.

Every name of ``landscape.models.MODEL_NAMES`` is built from its tiny case below (same
architecture, few channels), its parameters and BatchNorm statistics made generic, and the
products of :class:`HessianOperator` (every ``hvp_mode``) and :class:`GGNOperator` on two
unequal batches compared with independent references, in both BatchNorm modes where the
model has BatchNorm:

- Hessian: double backward of the flat mean loss on a hand-moded deep copy
  (``tests/curvature/models.flat_loss``) whose attention takes its written-out path
  (``fused_attn=False`` set by hand, SDPA math backend): the fused kernels have no double
  backward, so the reference cannot run through them. Tolerance 1e-10 relative.
- Hessian of a model with fused attention, also: fourth-order central differences of the
  gradient of the model as it is (fused kernels on; h = 1e-3, truncation O(h^4) ~ 1e-12,
  rounding ~ eps / h), which shows the math path differentiates the same function.
  Tolerance 1e-8 relative.
- GGN: ``sum_b (n_b / N) J_b^T H_b J_b V`` with ``J_b`` by ``torch.autograd.functional.jacobian``
  through the model as it is (first order: the fused kernels serve) and ``H_b`` the dense
  Hessian of the loss in the outputs. Tolerance 1e-10 relative.

The operator must leave the model as it found it: attention flags and the process' SDPA
backend flags are checked after every case.
"""

from __future__ import annotations

import copy
import functools
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from models import _randomise_batchnorm, flat_loss, rel_err
from torch import Tensor, nn
from torch.func import functional_call
from torch.nn.attention import SDPBackend, sdpa_kernel

from landscape.curvature.operators import GGNOperator, HessianOperator
from landscape.functional import has_batchnorm
from landscape.models import MODEL_NAMES, build_model

DTYPE = torch.float64
CE = F.cross_entropy
SIZES = (4, 3)  # two unequal batches

# Tiny cases: every registered name needs one (a new registration without a case fails
# test_every_registered_model_has_a_case). timm's ResNets keep their block layout, stem,
# max-pool and BatchNorms with two channels per stage.
CASES: dict[str, dict[str, Any]] = {
    "mlp": dict(in_chans=1, img_size=4, num_classes=3, width=6, depth=2, norm="bn"),
    "resmlp": dict(in_chans=1, img_size=4, num_classes=3, width=5, depth=2, norm="bn"),
    "cnn_small": dict(in_chans=1, img_size=8, num_classes=3, width=2, norm="bn"),
    "vgg_small": dict(in_chans=1, img_size=8, num_classes=3, width=2, norm="bn"),
    "resnet_small": dict(in_chans=1, img_size=8, num_classes=3, width=2, norm="bn"),
    "resnet18": dict(in_chans=1, img_size=8, num_classes=3, channels=(2, 2, 2, 2), stem_width=2),
    "resnet34": dict(in_chans=1, img_size=8, num_classes=3, channels=(2, 2, 2, 2), stem_width=2),
    "vit_small_32": dict(in_chans=1, img_size=8, num_classes=3, patch_size=4, embed_dim=8, depth=2, num_heads=2),
    # img_size is the context length, num_classes the vocabulary
    "lm_transformer": dict(in_chans=1, img_size=5, num_classes=7, embed_dim=8, depth=1, num_heads=2, mlp_ratio=2),
}
OPERATORS = ("rev_rev_kept", "rev_rev", "fwd_rev", "ggn")


def _fused_modules(model: nn.Module) -> list[nn.Module]:
    return [m for m in model.modules() if getattr(m, "fused_attn", None) is True]


def _sdpa_flags() -> tuple[bool, ...]:
    b = torch.backends.cuda
    return (b.flash_sdp_enabled(), b.mem_efficient_sdp_enabled(), b.math_sdp_enabled(), b.cudnn_sdp_enabled())


@functools.cache
def _case(name: str) -> tuple[nn.Module, list[tuple[Tensor, Tensor]]]:
    """The tiny model in float64 with generic parameters and BN statistics, and its batches."""
    kw = CASES[name]
    model = build_model(name, seed=0, **kw).to(DTYPE)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # no parameter left at an exact 0 or 1 (zero-init last BN, biases, tokens)
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=DTYPE))
    _randomise_batchnorm(model, g)
    batches = []
    for n in SIZES:
        if name == "lm_transformer":
            x = torch.randint(0, kw["num_classes"], (n, kw["img_size"]), generator=g).to(DTYPE)
        else:
            x = torch.randn(n, kw["in_chans"], kw["img_size"], kw["img_size"], generator=g, dtype=DTYPE)
        batches.append((x, torch.randint(0, kw["num_classes"], (n,), generator=g)))
    return model, batches


def _directions(P: int) -> Tensor:
    g = torch.Generator().manual_seed(1)
    V = torch.randn(P, 2, generator=g, dtype=DTYPE)
    return V / V.norm(dim=0)


def _math_copy(model: nn.Module) -> nn.Module:
    ref = copy.deepcopy(model)
    for m in _fused_modules(ref):
        m.fused_attn = False
    return ref


def _reference_hv(model: nn.Module, batches: list, bn_mode: str, V: Tensor) -> Tensor:
    """H V by double backward on the flat loss of a hand-moded copy on the math path."""
    with sdpa_kernel(SDPBackend.MATH):
        f, theta0 = flat_loss(_math_copy(model), CE, batches, bn_mode=bn_mode)
        theta = theta0.detach().requires_grad_(True)
        (grad,) = torch.autograd.grad(f(theta), theta, create_graph=True)
        cols = [torch.autograd.grad(grad @ v, theta, retain_graph=True)[0] for v in V.T]
    return torch.stack(cols, dim=1)


def _central_difference_hv(model: nn.Module, batches: list, bn_mode: str, V: Tensor, h: float = 1e-3) -> Tensor:
    """H V from the gradient of the model as it is (fused kernels on): fourth-order stencil."""
    f, theta0 = flat_loss(model, CE, batches, bn_mode=bn_mode)

    def grad_at(theta: Tensor) -> Tensor:
        t = theta.detach().requires_grad_(True)
        return torch.autograd.grad(f(t), t)[0]

    cols = []
    for v in V.T:
        g2p, g1p, g1m, g2m = (grad_at(theta0 + s * h * v) for s in (2, 1, -1, -2))
        cols.append((-g2p + 8 * g1p - 8 * g1m + g2m) / (12 * h))
    return torch.stack(cols, dim=1)


def _reference_ggn_v(model: nn.Module, batches: list, bn_mode: str, V: Tensor) -> Tensor:
    """sum_b (n_b / N) J_b^T H_b J_b V, J_b by reverse mode through the model as it is."""
    ref = copy.deepcopy(model).eval()
    if bn_mode == "batch":
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    names = [n for n, p in ref.named_parameters() if p.requires_grad]
    named = dict(ref.named_parameters())
    shapes = [named[n].shape for n in names]
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])
    total = sum(int(y.shape[0]) for _, y in batches)
    out = torch.zeros_like(V)
    for x, y in batches:

        def outputs(flat: Tensor, x: Tensor = x) -> Tensor:
            parts = flat.split([s.numel() for s in shapes])
            return functional_call(ref, {n: c.reshape(s) for n, c, s in zip(names, parts, shapes)}, (x,)).reshape(-1)

        z = outputs(theta0).detach()
        J = torch.autograd.functional.jacobian(outputs, theta0)  # (n * C, P)
        Hz = torch.autograd.functional.hessian(lambda zz, y=y: CE(zz.reshape(y.shape[0], -1), y), z)
        out += (y.shape[0] / total) * J.T @ (Hz @ (J @ V))
    return out


def _bn_modes(name: str) -> list[str]:
    return ["eval", "batch"] if has_batchnorm(_case(name)[0]) else ["eval"]


PARAMS = [
    pytest.param(name, bn_mode, kind, id=f"{name}-{bn_mode}-{kind}")
    for name in MODEL_NAMES
    if name in CASES
    for bn_mode in _bn_modes(name)
    for kind in OPERATORS
]


def test_every_registered_model_has_a_case() -> None:
    missing = sorted(set(MODEL_NAMES) - set(CASES))
    assert not missing, f"add a tiny case for {missing} to CASES"
    assert {n for n, *_ in (p.values for p in PARAMS)} == set(MODEL_NAMES)


@functools.cache
def _reference(name: str, bn_mode: str, kind: str) -> Tensor:
    model, batches = _case(name)
    V = _directions(sum(p.numel() for p in model.parameters()))
    if kind == "ggn":
        return _reference_ggn_v(model, batches, bn_mode, V)
    return _reference_hv(model, batches, bn_mode, V)


@pytest.mark.parametrize("name, bn_mode, kind", PARAMS)
def test_products_match_double_backward(name: str, bn_mode: str, kind: str) -> None:
    model, batches = _case(name)
    fused = _fused_modules(model)
    flags = _sdpa_flags()
    training = [m.training for m in model.modules()]
    if kind == "ggn":
        op: HessianOperator | GGNOperator = GGNOperator(model, CE, batches, bn_mode=bn_mode)
        ref = _reference(name, bn_mode, "ggn")
    else:
        op = HessianOperator(model, CE, batches, bn_mode=bn_mode, hvp_mode=kind)
        ref = _reference(name, bn_mode, "hessian")
    V = _directions(op.shape[0])
    got = op @ V
    assert rel_err(got, ref) < 1e-10
    # the model and torch's attention backends are as they were
    assert all(m.fused_attn is True for m in fused)
    assert _fused_modules(model) == fused
    assert _sdpa_flags() == flags
    assert [m.training for m in model.modules()] == training


@pytest.mark.parametrize("name", [n for n in MODEL_NAMES if n in CASES and _fused_modules(_case(n)[0])])
@pytest.mark.parametrize("bn_mode", ["eval"])
def test_fused_attention_models_match_central_differences(name: str, bn_mode: str) -> None:
    """The math path's Hessian is that of the function the fused kernels compute."""
    model, batches = _case(name)
    V = _directions(sum(p.numel() for p in model.parameters()))
    op = HessianOperator(model, CE, batches, bn_mode=bn_mode)
    assert rel_err(op @ V, _central_difference_hv(model, batches, bn_mode, V)) < 1e-8
