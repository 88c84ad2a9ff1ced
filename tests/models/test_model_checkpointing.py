"""Gradient checkpointing of the large models' blocks: the same gradients, buffers and
Hessian-vector products as the plain network (float64), with the blocks really recomputed."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.models import CHECKPOINTABLE, build_model, checkpoint_units, grad_checkpointing, set_grad_checkpointing
from landscape.models.checkpointing import is_grad_checkpointing

F64 = torch.float64

# (name, build options, input shape or None for token windows); dropout on where the model has it
CASES = {
    "resnet_small": ({"width": 4, "blocks_per_stage": 2, "norm": "bn", "in_chans": 3, "img_size": 8}, (6, 3, 8, 8)),
    "resnet18": ({"in_chans": 3}, (4, 3, 32, 32)),
    "resnet34": ({"in_chans": 3}, (2, 3, 16, 16)),
    "vit_small_32": ({"embed_dim": 32, "depth": 2, "num_heads": 2, "drop_rate": 0.2, "in_chans": 3, "img_size": 16}, (4, 3, 16, 16)),
    "lm_transformer": ({"embed_dim": 16, "depth": 2, "num_heads": 2, "drop_rate": 0.2, "in_features": 6}, None),
}


def _problem(name: str) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    options, shape = CASES[name]
    model = build_model(name, num_classes=5, seed=0, **options).to(F64)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(*shape, generator=g, dtype=F64) if shape else torch.randint(0, 5, (4, 6), generator=g).to(F64)
    return model, x, torch.randint(0, 5, (x.shape[0],), generator=g)


def _train_step(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[list[torch.Tensor], dict[str, torch.Tensor]]:
    model.train()
    model.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the dropout masks
    F.cross_entropy(model(x), y).backward()
    return [p.grad.clone() for p in model.parameters()], {k: v.clone() for k, v in model.state_dict().items()}


def _max_diff(a: list[torch.Tensor] | dict[str, torch.Tensor], b: list[torch.Tensor] | dict[str, torch.Tensor]) -> float:
    pairs = zip(a.values(), b.values(), strict=True) if isinstance(a, dict) else zip(a, b, strict=True)  # type: ignore[union-attr,arg-type]
    return max(float((u.double() - v.double()).abs().max()) for u, v in pairs)


def test_every_checkpointable_model_is_a_case():
    assert set(CASES) == set(CHECKPOINTABLE)


@pytest.mark.parametrize("name", list(CASES))
def test_checkpointed_step_gives_the_plain_gradients_and_buffers(name):
    model, x, y = _problem(name)
    plain_grads, plain_state = _train_step(copy.deepcopy(model), x, y)
    ck = copy.deepcopy(model)
    units = checkpoint_units(ck)
    calls = []
    first = next(m for m in units[0].modules() if isinstance(m, (nn.Conv2d, nn.Linear)))
    first.register_forward_hook(lambda *_: calls.append(1))
    assert set_grad_checkpointing(ck, True) == len(units) > 0 and is_grad_checkpointing(ck)
    grads, state = _train_step(ck, x, y)
    assert len(calls) == 2  # the forward and the recomputation in the backward pass
    assert _max_diff(grads, plain_grads) <= 1e-12
    assert _max_diff(state, plain_state) <= 1e-12  # BatchNorm running statistics updated once, not twice
    assert max(float(g.abs().max()) for g in grads) > 0


def test_timm_own_checkpointing_updates_batchnorm_statistics_twice_ours_does_not():
    """Why the library does not use timm's set_grad_checkpointing: its recomputation moves the
    running statistics (and num_batches_tracked) a second time."""
    model, x, y = _problem("resnet18")
    _, plain = _train_step(copy.deepcopy(model), x, y)
    timm_own = copy.deepcopy(model)
    timm_own.set_grad_checkpointing(True)
    _, theirs = _train_step(timm_own, x, y)
    assert theirs["layer1.0.bn1.num_batches_tracked"] == 2 and plain["layer1.0.bn1.num_batches_tracked"] == 1
    assert _max_diff(theirs, plain) > 1e-3


def test_hessian_vector_products_through_checkpointed_blocks_match():
    model, x, y = _problem("resnet_small")

    def hvp(net: nn.Module) -> torch.Tensor:
        net.train()
        params = list(net.parameters())
        g = torch.autograd.grad(F.cross_entropy(net(x), y), params, create_graph=True)
        v = [torch.linspace(-1, 1, p.numel(), dtype=F64).reshape(p.shape) for p in params]
        return torch.cat([h.flatten() for h in torch.autograd.grad(sum((a * b).sum() for a, b in zip(g, v)), params)])

    plain = hvp(copy.deepcopy(model))
    ck = copy.deepcopy(model)
    set_grad_checkpointing(ck, True)
    assert float((hvp(ck) - plain).abs().max()) <= 1e-12 * float(plain.abs().max())


def test_checkpointing_applies_only_in_training_with_autograd_and_is_undone():
    model, x, y = _problem("lm_transformer")
    calls = []
    model.blocks[0].fc1.register_forward_hook(lambda *_: calls.append(1))
    with grad_checkpointing(model):
        model.eval()
        F.cross_entropy(model(x), y).backward()  # eval mode: plain blocks
        model.train()
        with torch.no_grad():
            model(x)
        assert len(calls) == 2
    assert not is_grad_checkpointing(model) and "forward" not in model.blocks[0].__dict__
    with grad_checkpointing(model, enable=False):
        assert not is_grad_checkpointing(model)


def test_unsupported_model_names_the_supported_ones():
    mlp = build_model("mlp", num_classes=3, in_features=4, width=8, depth=2)
    with pytest.raises(ValueError, match=r"gradient checkpointing is implemented for \['resnet18', .*got a MLP"):
        set_grad_checkpointing(mlp)
