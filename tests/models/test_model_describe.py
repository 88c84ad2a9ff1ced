"""``describe``: parameter counts and BN / LN / skip / dropout flags, per the documented rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from landscape.models import ModelDescription, build_model, describe

F, T = False, True
# name, build kwargs,
# (has_batchnorm, has_layernorm, has_skip, has_dropout, num_batchnorm, norm_types)
CASES: list[tuple[str, dict[str, Any], tuple[Any, ...]]] = [
    ("mlp", dict(width=4), (F, F, F, F, 0, ())),
    ("mlp", dict(width=4, norm="bn", dropout=0.5), (T, F, F, T, 2, ("BatchNorm1d",))),
    ("mlp", dict(width=4, norm="ln"), (F, T, F, F, 0, ("LayerNorm",))),
    ("resmlp", dict(width=4, depth=2), (F, T, T, F, 0, ("LayerNorm",))),
    ("resmlp", dict(width=4, depth=2, norm="bn", skip=False), (T, F, F, F, 5, ("BatchNorm1d",))),
    ("resmlp", dict(width=4, depth=1, norm="none"), (F, F, T, F, 0, ())),
    ("cnn_small", dict(width=2, norm="bn"), (T, F, F, F, 2, ("BatchNorm2d",))),
    ("vgg_small", dict(width=2), (F, F, F, F, 0, ())),
    ("resnet_small", dict(width=2), (T, F, T, F, 9, ("BatchNorm2d",))),
    ("resnet_small", dict(width=2, skip=False, norm="ln"), (F, T, F, F, 0, ("GroupNorm",))),
    ("resnet_small", dict(width=2, norm="none"), (F, F, T, F, 0, ())),
    ("resnet18", dict(in_chans=3), (T, F, T, F, 20, ("BatchNorm2d",))),
    ("vit_small_32", dict(embed_dim=12, depth=1, num_heads=2), (F, T, T, F, 0, ("LayerNorm",))),
    (
        "vit_small_32",
        dict(embed_dim=12, depth=1, num_heads=2, drop_rate=0.1),
        (F, T, T, T, 0, ("LayerNorm",)),
    ),
]


@pytest.mark.parametrize(
    "name, kwargs, expected", CASES, ids=[f"{n}-{i}" for i, (n, _, _) in enumerate(CASES)]
)
def test_describe_flags(name: str, kwargs: dict[str, Any], expected: tuple[Any, ...]) -> None:
    model = build_model(name, seed=0, **kwargs)
    d = describe(model)
    flags = (d.has_batchnorm, d.has_layernorm, d.has_skip, d.has_dropout)
    got = (*flags, d.num_batchnorm, d.norm_types)
    assert got == expected
    assert d.num_params == d.num_trainable == sum(p.numel() for p in model.parameters())


def test_describe_counts_frozen_and_shared_parameters() -> None:
    lin = nn.Linear(3, 4)  # 16 parameters, used twice
    frozen = nn.Linear(4, 2)  # 10 parameters
    frozen.requires_grad_(False)
    model = nn.Sequential(lin, nn.ReLU(), nn.Linear(4, 3), lin, frozen)  # 15 more in the middle
    d = describe(model)
    assert (d.num_params, d.num_trainable) == (16 + 15 + 10, 16 + 15)


def test_describe_counts_zero_probability_dropout_as_absent() -> None:
    assert not describe(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.0))).has_dropout
    assert describe(nn.Sequential(nn.Linear(2, 2), nn.Dropout2d(0.3))).has_dropout


def test_describe_has_no_side_effects_and_serialises() -> None:
    model = build_model("resnet_small", width=2, seed=0).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    d = describe(model)
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())
    out = json.loads(json.dumps(d.to_dict()))
    assert out["norm_types"] == ["BatchNorm2d"] and out["has_skip"] is True
    assert ModelDescription(**{**out, "norm_types": tuple(out["norm_types"])}) == d
