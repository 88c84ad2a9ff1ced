"""The functional core: the BN policy's modes and contexts, and batch helpers."""

from __future__ import annotations

from collections import OrderedDict, UserDict, defaultdict, namedtuple
from types import MappingProxyType

import pytest
import torch
from torch import nn

from landscape.functional import (
    BN_MODES,
    POINT_BN_MODES,
    batch_size_of,
    check_bn_mode,
    eval_mode,
    first_batches,
    has_batchnorm,
    has_running_stats,
    iter_batches,
    move_to,
    probe_modes,
)


def _net(track: bool = True) -> nn.Module:
    return nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4, track_running_stats=track), nn.Dropout(0.5), nn.Linear(4, 2))


def test_one_policy_with_the_fixed_point_modes_a_subset():
    assert BN_MODES == ("eval", "batch", "recalibrate") and set(POINT_BN_MODES) < set(BN_MODES)
    assert check_bn_mode("batch") == "batch"
    with pytest.raises(ValueError, match=r"unknown bn_mode 'recalibrate'; allowed values are \['eval', 'batch'\]"):
        check_bn_mode("recalibrate", allowed=POINT_BN_MODES)
    with pytest.raises(ValueError, match="needs a non-empty list of recal_batches"):
        check_bn_mode("recalibrate")


def test_batchnorm_detection_distinguishes_running_statistics():
    assert has_batchnorm(_net(track=False)) and not has_running_stats(_net(track=False))
    assert has_batchnorm(_net()) and has_running_stats(_net())
    assert not has_batchnorm(nn.Linear(2, 2))


@pytest.mark.parametrize("context", [lambda m: eval_mode(m), lambda m: probe_modes(m, bn_train=True, cumulative=True)])
def test_contexts_restore_every_flag_even_on_error(context):
    model = _net().train()
    model[2].eval()  # a mixed state must come back as it was
    before = [m.training for m in model.modules()]
    momentum = model[1].momentum
    with pytest.raises(RuntimeError, match="inside"), context(model):
        raise RuntimeError("inside")
    assert [m.training for m in model.modules()] == before and model[1].momentum == momentum


def test_eval_mode_uses_running_statistics_and_no_dropout():
    torch.manual_seed(0)
    model, x = _net(), torch.randn(8, 3)
    with eval_mode(model):
        a, b = model(x), model(x)
    assert torch.equal(a, b)  # dropout off, BN from running statistics: deterministic
    with torch.no_grad():
        h = model[0](x)
        ref = model[3]((h - model[1].running_mean) / torch.sqrt(model[1].running_var + model[1].eps) * model[1].weight + model[1].bias)
    assert torch.allclose(a, ref, atol=1e-6)


def test_first_batches_cover_the_first_n_examples_in_order():
    x, y = torch.arange(20.0).reshape(10, 2), torch.arange(10)
    batches = first_batches(x, y, n=7, batch_size=3, device="cpu")
    assert [b[1].tolist() for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    assert torch.equal(torch.cat([b[0] for b in batches]), x[:7])


Pair = namedtuple("Pair", ["a", "b"])


def test_move_to_casts_floats_inside_any_mapping_and_sequence():
    """Floating tensors in any Mapping (UserDict too), list, tuple or named tuple get the
    parameters' dtype; integer tensors keep theirs; containers keep their types."""
    f32, i64 = torch.ones(2, 3), torch.arange(2)
    nest = {
        "user": UserDict({"x": f32, "deep": [f32, (i64, UserDict({"z": f32}))]}),
        "ordered": OrderedDict(x=f32),
        "default": defaultdict(list, x=f32),
        "proxy": MappingProxyType({"x": f32}),
        "pair": Pair(f32, i64),
        "other": "kept",
    }
    moved = move_to(nest, torch.device("cpu"), torch.float64)
    assert type(moved["user"]) is UserDict and type(moved["ordered"]) is OrderedDict
    assert type(moved["default"]) is defaultdict and moved["default"].default_factory is list
    assert type(moved["pair"]) is Pair and type(moved["user"]["deep"][1]) is tuple
    assert type(moved["proxy"]) is MappingProxyType
    floats = [moved["user"]["x"], moved["user"]["deep"][0], moved["user"]["deep"][1][1]["z"], moved["ordered"]["x"],
              moved["default"]["x"], moved["proxy"]["x"], moved["pair"].a]
    assert all(t.dtype == torch.float64 and torch.equal(t, f32.double()) for t in floats)
    assert moved["pair"].b.dtype == torch.int64 and moved["user"]["deep"][1][0].dtype == torch.int64
    assert moved["other"] == "kept"
    assert nest["user"]["x"].dtype == torch.float32  # the caller's batch is not modified


def test_batch_size_from_inputs_in_a_userdict():
    assert batch_size_of(UserDict({"x": torch.ones(5, 2)}), None) == 5
    with pytest.raises(ValueError, match="cannot infer the batch size"):
        batch_size_of(UserDict({"x": torch.tensor(1.0)}), None)
    ((x, y, n),) = list(iter_batches([(UserDict({"x": torch.ones(4, 2)}), torch.zeros(4))], torch.device("cpu"), torch.float64))
    assert n == 4 and x["x"].dtype == torch.float64 and y.dtype == torch.float64


def test_math_attention_switches_fused_attention_off_and_restores_it_even_on_error():
    from timm.layers import Attention

    from landscape.functional import curvature_mode, math_attention

    model = nn.Sequential(Attention(8, num_heads=2), Attention(8, num_heads=2))
    model[1].fused_attn = False  # a mixed state must come back as it was
    before = [m.fused_attn for m in model]
    flags = torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()
    for context in (math_attention, lambda m: curvature_mode(m, "batch")):
        with pytest.raises(RuntimeError, match="inside"), context(model):
            assert [m.fused_attn for m in model] == [False, False]
            assert not torch.backends.cuda.flash_sdp_enabled() and torch.backends.cuda.math_sdp_enabled()
            raise RuntimeError("inside")
        assert [m.fused_attn for m in model] == before
        assert (torch.backends.cuda.flash_sdp_enabled(), torch.backends.cuda.math_sdp_enabled()) == flags
    with eval_mode(model):  # evaluation keeps the fused kernels
        assert [m.fused_attn for m in model] == before


def test_math_attention_gives_scaled_dot_product_attention_a_double_backward():
    import torch.nn.functional as F

    from landscape.functional import math_attention

    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    u = torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64)

    def hvp(attend):
        x = q.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad((attend(x, k, v) ** 2).sum(), x, create_graph=True)
        return torch.autograd.grad((grad * u).sum(), x)[0]

    def written_out(q, k, v):
        return torch.softmax(q @ k.transpose(-2, -1) / 2.0, dim=-1) @ v  # scale 1/sqrt(4)

    with math_attention(nn.Identity()):
        fused = hvp(F.scaled_dot_product_attention)
    assert torch.allclose(fused, hvp(written_out), rtol=1e-12, atol=1e-12)
