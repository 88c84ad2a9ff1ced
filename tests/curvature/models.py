"""Small models, data and dense float64 references for the curvature operator tests.

The references never go through ``landscape.curvature``: they put a deep copy of the model
in the requested mode by hand and differentiate a function of the flat parameter vector
twice with ``torch.autograd.functional`` (double backward), which DESIGN.md measured to be
correct through LayerNorm and batch-statistics BatchNorm (unlike ``torch.func.hessian``).
The function is the loss of all batches concatenated, one call of ``loss_fn`` under its
own reduction, so no batch weighting of the engine's can leak into the reference.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

DTYPE = torch.float64


def _randomise_batchnorm(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial affine weights and running statistics, so eval-mode BN matters."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.weight.copy_(1.0 + 0.3 * torch.randn(m.weight.shape, generator=generator, dtype=m.weight.dtype))
                m.bias.copy_(0.3 * torch.randn(m.bias.shape, generator=generator, dtype=m.bias.dtype))
                m.running_mean.copy_(0.2 * torch.randn(m.running_mean.shape, generator=generator, dtype=m.running_mean.dtype))
                m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=generator, dtype=m.running_var.dtype))
                m.num_batches_tracked.fill_(7)


def _init(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model.to(DTYPE)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=DTYPE))
    _randomise_batchnorm(model, g)
    return model


def tanh_mlp(seed: int = 0) -> nn.Module:
    """4 -> 6 -> 3 tanh MLP (51 parameters)."""
    return _init(nn.Sequential(nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)), seed)


def bn_cnn(seed: int = 0) -> nn.Module:
    """Conv(1->2, 3x3) -> BatchNorm2d -> tanh -> avgpool 2x2 -> Linear(8 -> 3) (51 parameters); 1x5x5 inputs."""
    net = nn.Sequential(
        nn.Conv2d(1, 2, 3, padding=1),
        nn.BatchNorm2d(2),
        nn.Tanh(),
        nn.AdaptiveAvgPool2d(2),
        nn.Flatten(),
        nn.Linear(8, 3),
    )
    return _init(net, seed)


def ln_mlp(seed: int = 0) -> nn.Module:
    """4 -> 6 -> LayerNorm -> tanh -> 3 (63 parameters)."""
    return _init(nn.Sequential(nn.Linear(4, 6), nn.LayerNorm(6), nn.Tanh(), nn.Linear(6, 3)), seed)


def bn_mlp(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    """4 -> 6 -> BatchNorm1d -> tanh [-> Dropout] -> 3 (63 parameters)."""
    layers: list[nn.Module] = [nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Tanh()]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(6, 3))
    return _init(nn.Sequential(*layers), seed)


def linear_model(seed: int = 0) -> nn.Module:
    """Linear 4 -> 2 (10 parameters); with MSE its Hessian equals its GGN."""
    return _init(nn.Linear(4, 2), seed)


def classification_batches(
    sizes: Sequence[int], in_shape: tuple[int, ...] = (4,), num_classes: int = 3, seed: int = 0
) -> list[tuple[Tensor, Tensor]]:
    """Gaussian inputs and uniform labels in batches of the given (unequal) sizes."""
    g = torch.Generator().manual_seed(1000 + seed)
    return [
        (torch.randn((n, *in_shape), generator=g, dtype=DTYPE), torch.randint(0, num_classes, (n,), generator=g))
        for n in sizes
    ]


def regression_batches(sizes: Sequence[int], d_in: int = 4, d_out: int = 2, seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    g = torch.Generator().manual_seed(2000 + seed)
    return [
        (torch.randn(n, d_in, generator=g, dtype=DTYPE), torch.randn(n, d_out, generator=g, dtype=DTYPE)) for n in sizes
    ]


def _moded_copy(model: nn.Module, bn_mode: str) -> nn.Module:
    ref = copy.deepcopy(model)
    ref.eval()
    if bn_mode == "batch":
        for m in ref.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()
    return ref


def concat(parts: Sequence[Any]) -> Any:
    """Concatenate batches' inputs or targets along dim 0 (tensors, or mappings of tensors)."""
    if isinstance(parts[0], Mapping):
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}
    return torch.cat(list(parts))


def _flat_layout(ref: nn.Module, names: Sequence[str] | None) -> tuple[list[str], list, list[int], Tensor]:
    named = dict(ref.named_parameters())
    names = list(names) if names is not None else [n for n, p in ref.named_parameters() if p.requires_grad]
    shapes = [named[n].shape for n in names]
    theta0 = torch.cat([named[n].detach().reshape(-1) for n in names])
    return names, shapes, [math.prod(s) for s in shapes], theta0


def _outputs_fn(
    ref: nn.Module, batches: Sequence[tuple[Any, Tensor]], names: list[str], shapes: list, sizes: list[int], bn_mode: str
) -> Callable[[Tensor], Tensor]:
    """flat parameters -> the outputs of all examples, concatenated along dim 0.

    In eval mode (no batch statistics) one forward of all inputs concatenated; with batch
    statistics each batch goes through on its own (its statistics are part of its
    definition) and only the outputs are concatenated.
    """
    x_all = concat([x for x, _ in batches])

    def outputs(flat: Tensor) -> Tensor:
        params = {n: c.reshape(s) for n, c, s in zip(names, flat.split(sizes), shapes, strict=True)}
        if bn_mode == "batch":
            return torch.cat([functional_call(ref, params, (x,)) for x, _ in batches])
        return functional_call(ref, params, (x_all,))

    return outputs


def flat_loss(
    model: nn.Module,
    loss_fn: Callable[[Tensor, Tensor], Tensor],
    batches: Sequence[tuple[Any, Tensor]],
    names: Sequence[str] | None = None,
    bn_mode: str = "eval",
) -> tuple[Callable[[Tensor], Tensor], Tensor]:
    """The loss of all batches CONCATENATED, ``loss_fn(outputs of all examples, all targets)``
    under ``loss_fn``'s own reduction, as a function of the flat selected parameters; and theta0.

    No batch weighting enters: one call of ``loss_fn`` on the concatenated data defines the
    data-set loss (a mean over all terms, or their sum).
    """
    ref = _moded_copy(model, bn_mode)
    names, shapes, sizes, theta0 = _flat_layout(ref, names)
    outputs = _outputs_fn(ref, batches, names, shapes, sizes, bn_mode)
    y_all = concat([y for _, y in batches])
    return (lambda flat: loss_fn(outputs(flat), y_all)), theta0


def reference_hessian(model, loss_fn, batches, names=None, bn_mode="eval") -> Tensor:
    """Dense Hessian (P, P) of the concatenated loss by double backward on the flat parameter vector."""
    f, theta0 = flat_loss(model, loss_fn, batches, names, bn_mode)
    return torch.autograd.functional.hessian(f, theta0)


def reference_gradient(model, loss_fn, batches, names=None, bn_mode="eval", theta: Tensor | None = None) -> Tensor:
    f, theta0 = flat_loss(model, loss_fn, batches, names, bn_mode)
    x = (theta0 if theta is None else theta).detach().requires_grad_(True)
    (g,) = torch.autograd.grad(f(x), x)
    return g


def reference_ggn(model, loss_fn, batches, bn_mode="eval") -> Tensor:
    """Dense ``J^T H_z J`` of the concatenated loss: ``J`` the Jacobian (reverse mode) of all
    outputs, ``H_z`` the Hessian (double backward) of ``loss_fn(z, all targets)`` in them."""
    ref = _moded_copy(model, bn_mode)
    names, shapes, sizes, theta0 = _flat_layout(ref, None)
    outputs = _outputs_fn(ref, batches, names, shapes, sizes, bn_mode)
    y_all = concat([y for _, y in batches])
    z = outputs(theta0).detach()
    J = torch.autograd.functional.jacobian(lambda flat: outputs(flat).reshape(-1), theta0)  # (numel z, P)
    Hz = torch.autograd.functional.hessian(lambda zz: loss_fn(zz.reshape(z.shape), y_all), z.reshape(-1))
    return J.T @ Hz @ J


def model_state(model: nn.Module) -> dict[str, Tensor]:
    """A deep copy of parameters and buffers, to check that nothing changed."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def rel_err(a: Tensor, b: Tensor) -> float:
    return float((a - b).norm() / b.norm())
