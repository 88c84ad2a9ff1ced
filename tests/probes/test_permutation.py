"""Tests of landscape.probes.permutation: traced specs, exact recovery, barrier reduction."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from probe_helpers import TinyMLP, classification_batches, make_mlp
from torch import nn
from torch.func import functional_call

from landscape.io import to_jsonable
from landscape.probes.connectivity import linear_path
from landscape.probes.permutation import (
    PermutationSpec,
    align,
    apply_permutation,
    permutation_spec,
    random_permutation,
    weight_matching,
)


def _repo_model(name: str, **kw) -> nn.Module:
    from landscape.models.factory import build_model

    return build_model(name, num_classes=3, seed=0, **kw).double()


CASES = {
    "tiny_mlp_bn": (lambda: make_mlp(bn=True), (4, 3)),
    "mlp_none": (lambda: _repo_model("mlp", in_features=5, width=8, depth=3, norm="none"), (4, 5)),
    "mlp_bn": (lambda: _repo_model("mlp", in_features=5, width=8, depth=3, norm="bn"), (4, 5)),
    "mlp_ln": (lambda: _repo_model("mlp", in_features=5, width=8, depth=3, norm="ln"), (4, 5)),
    "cnn_small_bn": (lambda: _repo_model("cnn_small", in_chans=2, img_size=8, width=4, norm="bn"), (4, 2, 8, 8)),
    "resnet_small_skip_bn": (lambda: _repo_model("resnet_small", in_chans=2, img_size=8, width=4, blocks_per_stage=2, norm="bn", skip=True), (4, 2, 8, 8)),
    "resnet_small_plain_ln": (lambda: _repo_model("resnet_small", in_chans=2, img_size=8, width=4, blocks_per_stage=2, norm="ln", skip=False), (4, 2, 8, 8)),
}


def _randomised_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state with non-trivial BN statistics and affine parameters (so they matter)."""
    g = torch.Generator().manual_seed(5)
    st = {}
    for k, v in model.state_dict().items():
        if k.endswith(("running_var", "norm.weight", "norm1.weight", "norm2.weight")) or (v.ndim == 1 and v.is_floating_point() and "running_mean" not in k and k.endswith("weight")):
            v = torch.rand(v.shape, generator=g, dtype=v.dtype) + 0.5
        elif v.is_floating_point() and v.ndim == 1:
            v = torch.randn(v.shape, generator=g, dtype=v.dtype)
        st[k] = v.clone()
    return st


@pytest.mark.parametrize("case", list(CASES))
def test_random_permutation_is_recovered_exactly(case):
    build, shape = CASES[case]
    model = build().eval()
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    spec = permutation_spec(model, x)
    st = _randomised_state(model)
    permuted = apply_permutation(spec, random_permutation(spec, seed=1), st)
    with torch.no_grad():
        y, yp = functional_call(model, st, (x,)), functional_call(model, permuted, (x,))
    torch.testing.assert_close(yp, y, rtol=1e-10, atol=1e-12)  # the spec describes a symmetry
    assert any(not torch.equal(permuted[k], st[k]) for k in spec.axes)
    aligned, res = align(model, st, permuted, x)
    assert res.converged
    for k in st:
        assert torch.equal(aligned[k], st[k]), k  # exactly the original weights and BN statistics
    with torch.no_grad():
        assert torch.equal(functional_call(model, aligned, (x,)), y)
    json.dumps(to_jsonable(res))


def test_spec_of_bn_mlp():
    spec = permutation_spec(make_mlp(bn=True), torch.zeros(2, 3, dtype=torch.float64))
    assert spec.sizes == {"P0": 6, "P1": 6}
    assert spec.axes["net.0.weight"] == {0: ("P0", 1)} and spec.axes["net.0.bias"] == {0: ("P0", 1)}
    for k in ("weight", "bias", "running_mean", "running_var"):
        assert spec.axes[f"net.1.{k}"] == {0: ("P0", 1)}
    assert spec.axes["net.3.weight"] == {0: ("P1", 1), 1: ("P0", 1)}
    assert spec.axes["net.6.weight"] == {1: ("P1", 1)} and "net.6.bias" not in spec.axes
    assert "net.1.num_batches_tracked" not in spec.axes
    assert len(spec.members("P0")) == 7


def test_resnet_residual_stream_shares_one_permutation_per_stage():
    skip = permutation_spec(_repo_model("resnet_small", in_chans=1, width=4, blocks_per_stage=2, skip=True), torch.zeros(2, 1, 8, 8, dtype=torch.float64))
    plain = permutation_spec(_repo_model("resnet_small", in_chans=1, width=4, blocks_per_stage=2, skip=False), torch.zeros(2, 1, 8, 8, dtype=torch.float64))
    assert len(skip.sizes) == 3 * 3 and len(plain.sizes) == 1 + 3 * 4
    stream = skip.axes["stem.conv.weight"][0][0]
    assert skip.axes["stages.0.0.conv2.weight"][0][0] == stream == skip.axes["stages.0.1.conv2.weight"][0][0]
    assert skip.axes["stages.0.1.conv1.weight"][1][0] == stream
    stage1 = skip.axes["stages.1.0.shortcut.0.weight"][0][0]
    assert skip.axes["stages.1.1.conv2.weight"][0][0] == stage1 != stream
    assert skip.axes["head.weight"] == {1: (skip.axes["stages.2.1.conv2.weight"][0][0], 1)}


def test_flatten_of_spatial_map_uses_blocks():
    model = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2)).double()
    x = torch.randn(2, 1, 4, 4, dtype=torch.float64)
    spec = permutation_spec(model, x)
    assert spec.axes["3.weight"] == {1: ("P0", 16)}
    st = {k: v.detach() for k, v in model.state_dict().items()}
    permuted = apply_permutation(spec, random_permutation(spec, seed=0), st)
    with torch.no_grad():
        torch.testing.assert_close(functional_call(model, permuted, (x,)), model(x))


def _train(seed: int, batches) -> TinyMLP:
    model = make_mlp(seed=seed, hidden=16)
    opt = torch.optim.Adam(model.parameters(), lr=0.02)
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    return model


def test_alignment_does_not_raise_the_barrier():
    batches = classification_batches(n=192, seed=3)
    a, b = _train(0, batches), _train(1, batches)
    x = batches[0][0]
    sa = {k: v.detach() for k, v in a.state_dict().items()}
    sb = {k: v.detach() for k, v in b.state_dict().items()}
    aligned, res = align(a, sa, sb, x)
    assert res.objective[-1] >= res.objective[0]
    with torch.no_grad():
        torch.testing.assert_close(functional_call(a, aligned, (x,)), b(x), rtol=1e-10, atol=1e-12)
    before = linear_path(a, sa, sb, batches, bn_mode="eval")
    after = linear_path(a, sa, {k: aligned[k] for k in sa}, batches, bn_mode="eval")
    assert after.barrier <= before.barrier
    assert after.losses[0] == before.losses[0] and after.losses[-1] == pytest.approx(before.losses[-1], rel=1e-12)


class _Cat(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(3, 4), nn.Linear(8, 2)

    def forward(self, x):
        h = self.a(x)
        return self.b(torch.cat([h, h], dim=1))


def test_permutation_errors():
    with pytest.raises(ValueError, match="does not know how 'cat'"):
        permutation_spec(_Cat(), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="groups=2 is not supported"):
        permutation_spec(nn.Sequential(nn.Conv2d(1, 4, 1), nn.Conv2d(4, 4, 1, groups=2)), torch.zeros(1, 1, 2, 2))
    with pytest.raises(ValueError, match="does not commute with channel permutations"):
        permutation_spec(nn.Sequential(nn.Conv2d(1, 4, 1), nn.GroupNorm(2, 4)), torch.zeros(1, 1, 2, 2))
    spec = PermutationSpec({"P0": 3}, {"w": {0: ("P0", 1)}})
    with pytest.raises(ValueError, match="missing or has the wrong shape"):
        apply_permutation(spec, {"P0": torch.arange(4)}, {"w": torch.zeros(3)})
    with pytest.raises(ValueError, match="restarts must be an integer >= 1"):
        weight_matching(spec, {"w": torch.zeros(3)}, {"w": torch.zeros(3)}, restarts=0)
    with pytest.raises(ValueError, match="no tensor of the spec"):
        weight_matching(spec, {"v": torch.zeros(3)}, {"v": torch.zeros(3)})
