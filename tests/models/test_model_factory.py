"""Every registered architecture, through ``build_model`` and ``timm.create_model``.

The parametrised tests run over ``MODEL_NAMES``: a new registration joins them with no
new test code (it gets ``DEFAULT_CASE`` and, without a formula in ``PARAM_FORMULAS``, only
the positivity check of its parameter count). Parameter counts are checked against
closed-form formulas, which are themselves anchored on published counts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest
import timm
import torch
from torch import nn

import landscape.models as lm
from landscape.models import MODEL_NAMES, build_model, describe

# ---------------------------------------------------------------- closed-form counts


def _conv(c_in: int, c_out: int, k: int, bias: bool) -> int:
    return c_in * c_out * k * k + (c_out if bias else 0)


def _linear(d_in: int, d_out: int, bias: bool = True) -> int:
    return d_in * d_out + (d_out if bias else 0)


def _norm(norm: str, c: int) -> int:
    return 0 if norm == "none" else 2 * c  # BN, LayerNorm and GroupNorm: weight + bias


def mlp_params(
    in_chans: int,
    img_size: int,
    num_classes: int,
    width: int = 256,
    depth: int = 2,
    norm: str = "none",
    in_features: int | None = None,
    **_: Any,
) -> int:
    d = in_features if in_features is not None else in_chans * img_size**2
    total = 0
    for _i in range(depth):
        total += _linear(d, width, bias=norm != "bn") + _norm(norm, width)
        d = width
    return total + _linear(d, num_classes)


def resmlp_params(
    in_chans: int,
    img_size: int,
    num_classes: int,
    width: int = 64,
    depth: int = 4,
    norm: str = "ln",
    in_features: int | None = None,
    **_: Any,
) -> int:
    d = in_features if in_features is not None else in_chans * img_size**2
    block = _norm(norm, width) + _linear(width, width, bias=norm != "bn") + _norm(norm, width) + _linear(width, width)
    return _linear(d, width) + depth * block + _norm(norm, width) + _linear(width, num_classes)


def cnn_small_params(
    in_chans: int, num_classes: int, width: int = 16, norm: str = "none", **_: Any
) -> int:
    chans = [in_chans, width, 2 * width]
    convs = sum(
        _conv(chans[i], chans[i + 1], 3, norm != "bn") + _norm(norm, chans[i + 1]) for i in range(2)
    )
    return convs + _linear(2 * width, num_classes)


def vgg_small_params(
    in_chans: int, num_classes: int, width: int = 16, norm: str = "none", **_: Any
) -> int:
    total, c, bias = 0, in_chans, norm != "bn"
    for s in range(3):
        o = width * 2**s
        total += _conv(c, o, 3, bias) + _conv(o, o, 3, bias) + 2 * _norm(norm, o)
        c = o
    return total + _linear(c, num_classes)


def resnet_small_params(
    in_chans: int,
    num_classes: int,
    width: int = 16,
    blocks_per_stage: int = 1,
    norm: str = "bn",
    skip: bool = True,
    **_: Any,
) -> int:
    bias = norm != "bn"
    total = _conv(in_chans, width, 3, bias) + _norm(norm, width)
    c = width
    for s in range(3):
        o = width * 2**s
        for b in range(blocks_per_stage):
            total += _conv(c, o, 3, bias) + _conv(o, o, 3, bias) + 2 * _norm(norm, o)
            if skip and (c != o or (s > 0 and b == 0)):
                total += _conv(c, o, 1, bias) + _norm(norm, o)
            c = o
    return total + _linear(c, num_classes)


def timm_basic_resnet_params(layers: tuple[int, ...], in_chans: int, num_classes: int) -> int:
    """torchvision/timm ResNet with basic blocks: 7x7 stem, widths 64..512, BN, no conv bias."""
    total = _conv(in_chans, 64, 7, False) + 2 * 64
    c = 64
    for s, n in enumerate(layers):
        o = 64 * 2**s
        for b in range(n):
            total += _conv(c, o, 3, False) + _conv(o, o, 3, False) + 2 * 2 * o
            if b == 0 and (s > 0 or c != o):
                total += _conv(c, o, 1, False) + 2 * o
            c = o
    return total + _linear(c, num_classes)


def vit_params(
    in_chans: int,
    img_size: int,
    num_classes: int,
    patch_size: int = 4,
    embed_dim: int = 384,
    depth: int = 12,
    **_: Any,
) -> int:
    d, tokens = embed_dim, (img_size // patch_size) ** 2
    patch = in_chans * patch_size**2 * d + d
    block = 12 * d * d + 13 * d  # 2 LayerNorms, qkv, proj, fc1 (4d), fc2
    return patch + d + (tokens + 1) * d + depth * block + 2 * d + _linear(d, num_classes)


def lm_params(
    img_size: int, num_classes: int, embed_dim: int = 128, depth: int = 2, mlp_ratio: int = 4, **_: Any
) -> int:
    d, r = embed_dim, mlp_ratio
    block = 2 * 2 * d + _linear(d, 3 * d) + _linear(d, d) + _linear(d, r * d) + _linear(r * d, d)
    assert block == (4 + 2 * r) * d * d + (9 + r) * d  # the formula in the module docstring
    return num_classes * d + img_size * d + depth * block + 2 * d + _linear(d, num_classes)


PARAM_FORMULAS: dict[str, Callable[..., int]] = {
    "mlp": mlp_params,
    "resmlp": resmlp_params,
    "cnn_small": cnn_small_params,
    "vgg_small": vgg_small_params,
    "resnet_small": resnet_small_params,
    "resnet18": lambda in_chans, num_classes, **_: timm_basic_resnet_params(
        (2, 2, 2, 2), in_chans, num_classes
    ),
    "resnet34": lambda in_chans, num_classes, **_: timm_basic_resnet_params(
        (3, 4, 6, 3), in_chans, num_classes
    ),
    "vit_small_32": vit_params,
    "lm_transformer": lm_params,
}

# ---------------------------------------------------------------- cases (data)

# Small inputs suited to each model; the large timm models and the ViT keep their real
# configuration (counts checked against the formulas) on 32 px images, batch 2.
CASES: dict[str, dict[str, Any]] = {
    "mlp": dict(in_chans=1, img_size=8, num_classes=10, width=16, depth=2),
    "resmlp": dict(in_chans=1, img_size=8, num_classes=10, width=8, depth=3, norm="bn"),
    "cnn_small": dict(in_chans=1, img_size=8, num_classes=10, width=4, norm="bn"),
    "vgg_small": dict(in_chans=3, img_size=8, num_classes=5, width=4),
    "resnet_small": dict(in_chans=1, img_size=8, num_classes=10, width=4),
    "resnet18": dict(in_chans=1, img_size=32, num_classes=10),
    "resnet34": dict(in_chans=3, img_size=32, num_classes=7),
    "vit_small_32": dict(in_chans=3, img_size=32, num_classes=10),
    # a language model: img_size is the context length, num_classes the vocabulary
    "lm_transformer": dict(in_chans=1, img_size=12, num_classes=50, embed_dim=16, num_heads=2),
}
DEFAULT_CASE: dict[str, Any] = dict(in_chans=3, img_size=32, num_classes=10)
# Shallower variants for the tests that build a model three or four times.
REPEAT_OVERRIDES: dict[str, dict[str, Any]] = {"vit_small_32": dict(depth=2)}


@pytest.fixture(params=MODEL_NAMES)
def case(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param, dict(CASES.get(request.param, DEFAULT_CASE))


def _repeat_case(case: tuple[str, dict[str, Any]]) -> tuple[str, dict[str, Any]]:
    name, kw = case
    return name, dict(kw, **REPEAT_OVERRIDES.get(name, {}))


def _scaled_weight_keys(model: nn.Module) -> set[str]:
    conv_linear = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
    return {f"{n}.weight" for n, m in model.named_modules() if isinstance(m, conv_linear)}


# ---------------------------------------------------------------- parametrised over names


def test_forward_shape_and_parameter_count(case: tuple[str, dict[str, Any]]) -> None:
    name, kw = case
    model = build_model(name, seed=0, **kw)
    if name == "lm_transformer":  # token ids (B, T), as float like every data set's inputs
        x = torch.randint(0, kw["num_classes"], (2, kw["img_size"])).float()
    else:
        x = torch.randn(2, kw["in_chans"], kw["img_size"], kw["img_size"])
    model.eval()
    with torch.no_grad():
        y = model(x)
    assert y.shape == (2, kw["num_classes"])
    assert torch.isfinite(y).all()
    count = describe(model).num_params
    assert count == sum(p.numel() for p in model.parameters()) > 0
    if name in PARAM_FORMULAS:
        assert count == PARAM_FORMULAS[name](**kw)


def test_construction_is_deterministic(case: tuple[str, dict[str, Any]]) -> None:
    name, kw = _repeat_case(case)
    torch.manual_seed(0)
    a = build_model(name, **kw).state_dict()
    rng_before = torch.get_rng_state()
    b = build_model(name, seed=0, **kw).state_dict()
    assert torch.equal(torch.get_rng_state(), rng_before), "seed= must not touch global RNG"
    c = build_model(name, seed=1, **kw).state_dict()
    assert list(a) == list(b) == list(c)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a)


def test_init_scale_multiplies_linear_and_conv_weights_only(
    case: tuple[str, dict[str, Any]],
) -> None:
    name, kw = _repeat_case(case)
    base = build_model(name, seed=0, **kw)
    scaled_keys = _scaled_weight_keys(base)
    assert scaled_keys
    one = base.state_dict()
    for scale in (2.0, 0.5):
        other = build_model(name, seed=0, init_scale=scale, **kw).state_dict()
        assert list(other) == list(one)
        for k, v in one.items():
            expected = v * scale if k in scaled_keys else v
            assert torch.equal(other[k], expected), (k, scale)


def test_timm_create_model_builds_the_same_model(case: tuple[str, dict[str, Any]]) -> None:
    name, kw = _repeat_case(case)
    args = dict(kw)
    if name in lm.TIMM_MODEL_NAMES:
        args.pop("img_size")  # timm's ResNets take no img_size
    torch.manual_seed(5)
    direct = timm.create_model(name, **args).state_dict()
    built = build_model(name, seed=5, **kw).state_dict()
    assert list(direct) == list(built)
    assert all(torch.equal(direct[k], built[k]) for k in direct)


# ---------------------------------------------------------------- registry


def test_required_names_are_registered_with_timm_as_ours() -> None:
    ours = {"mlp", "cnn_small", "vgg_small", "resnet_small", "vit_small_32"}
    assert ours | {"resnet18", "resnet34"} <= set(MODEL_NAMES)
    assert list(MODEL_NAMES) == sorted(MODEL_NAMES)
    assert set(lm.OUR_MODEL_NAMES) >= ours
    for name in lm.OUR_MODEL_NAMES:
        entry = timm.models.model_entrypoint(name)
        assert entry.__module__.startswith("landscape.models."), name
    for name in lm.TIMM_MODEL_NAMES:
        assert timm.models.model_entrypoint(name).__module__.startswith("timm."), name


def test_register_refuses_a_name_timm_already_owns() -> None:
    from landscape.models._registry import OUR_MODEL_NAMES, register

    def resnet18(pretrained: bool = False, **kwargs: Any) -> nn.Module:
        raise AssertionError("never called")

    with pytest.raises(RuntimeError, match="'resnet18' is already registered"):
        register(resnet18)
    assert timm.models.model_entrypoint("resnet18").__module__ == "timm.models.resnet"
    assert "resnet18" not in OUR_MODEL_NAMES


def test_unknown_name_lists_valid_names() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'resnet_tiny'; valid names: \[.*'mlp'"):
        build_model("resnet_tiny")
    with pytest.raises(ValueError, match="vit_small_32"):  # a timm name we do not expose
        build_model("vgg11")


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(num_classes=0), "num_classes must be an integer >= 1, got 0"),
        (dict(in_chans=True), "in_chans must be an integer >= 1, got True"),
        (dict(img_size=2.5), "img_size must be an integer >= 1, got 2.5"),
        (dict(init_scale=0.0), "init_scale must be a finite number > 0, got 0.0"),
        (dict(init_scale=-1), "init_scale must be a finite number > 0, got -1"),
        (dict(init_scale=math.inf), "init_scale must be a finite number > 0, got inf"),
        (dict(init_scale="2"), "init_scale must be a finite number > 0, got '2'"),
        (dict(seed=-3), "seed must be an integer >= 0, got -3"),
    ],
    ids=lambda v: str(v) if isinstance(v, dict) else "",
)
def test_build_model_rejects_bad_common_arguments(kwargs: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_model("mlp", **kwargs)


@pytest.mark.parametrize("name", lm.OUR_MODEL_NAMES)
def test_our_entrypoints_reject_unknown_kwargs_and_pretrained(name: str) -> None:
    unknown = rf"model '{name}' got an unknown keyword argument 'widht'; accepted: \[.*'init_scale'"
    with pytest.raises(ValueError, match=unknown):
        build_model(name, widht=3)
    with pytest.raises(ValueError, match=f"model '{name}' has no pretrained weights"):
        timm.create_model(name, pretrained=True)
    with pytest.raises(ValueError, match=f"model '{name}' has no pretrained configurations"):
        timm.create_model(f"{name}.in1k")  # a tag becomes pretrained_cfg


@pytest.mark.parametrize("name", ["mlp", "resmlp", "cnn_small", "vgg_small", "resnet_small"])
def test_bad_norm_names_the_allowed_values(name: str) -> None:
    with pytest.raises(ValueError, match=r"norm must be one of \['none', 'bn', 'ln'\], got 'xx'"):
        build_model(name, norm="xx")


def test_default_config_parameter_counts() -> None:
    """Hand-computed counts of the defaults on 28 x 28 x 1 inputs, 10 classes (reported)."""
    expected = {
        ("mlp", ()): 269_322,  # 784-256-256-10
        ("cnn_small", ()): 5_130,  # 1->16->32 convs, head 32->10
        ("vgg_small", ()): 72_442,  # 16,16 | 32,32 | 64,64, head 64->10
        ("resnet_small", (("width", 8),)): 19_810,  # BN, 1 block per stage
        ("resnet_small", (("width", 16),)): 77_754,
    }
    for (name, extra), count in expected.items():
        model = build_model(name, seed=0, **dict(extra))
        assert describe(model).num_params == count, name


def test_formulas_reproduce_published_counts() -> None:
    # torchvision's documented ResNet-18/34 and timm's ViT-S/16 (224 px, 3 ch, 1000 classes).
    assert timm_basic_resnet_params((2, 2, 2, 2), 3, 1000) == 11_689_512
    assert timm_basic_resnet_params((3, 4, 6, 3), 3, 1000) == 21_797_672
    assert vit_params(3, 224, 1000, patch_size=16) == 22_050_664


VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("mlp", dict(img_size=8, num_classes=3, width=7, depth=3, norm="bn")),
    ("mlp", dict(img_size=8, width=7, depth=1, norm="ln", activation="gelu", dropout=0.2)),
    ("mlp", dict(in_features=5, width=4, depth=0, num_classes=3)),
    ("cnn_small", dict(in_chans=3, img_size=14, width=5, norm="ln")),
    ("vgg_small", dict(img_size=14, width=3, norm="bn")),
    ("resnet_small", dict(img_size=14, width=4, blocks_per_stage=2, norm="none")),
    ("resnet_small", dict(img_size=14, width=4, skip=False, norm="ln")),
    ("resnet_small", dict(img_size=8, width=6, blocks_per_stage=2, skip=False)),
    ("vit_small_32", dict(img_size=16, num_classes=3, embed_dim=24, depth=1, num_heads=6)),
    ("vit_small_32", dict(img_size=32, patch_size=8, embed_dim=12, depth=2, num_heads=3)),
]


@pytest.mark.parametrize(
    "name, kwargs", VARIANTS, ids=[f"{n}-{i}" for i, (n, _) in enumerate(VARIANTS)]
)
def test_parameter_count_of_variants(name: str, kwargs: dict[str, Any]) -> None:
    kw = dict(dict(in_chans=1, img_size=28, num_classes=10), **kwargs)
    model = build_model(name, seed=0, **kw)
    assert describe(model).num_params == PARAM_FORMULAS[name](**kw)
    side = kw["img_size"]
    shape = (2, kw["in_features"]) if "in_features" in kw else (2, kw["in_chans"], side, side)
    model.eval()
    with torch.no_grad():
        assert model(torch.randn(shape)).shape == (2, kw["num_classes"])
