"""``build_model``: one factory for every architecture that ``params.yaml`` may name.

A registry and a factory in the style of timm (Wightman 2019): our architectures are
timm entrypoints (imported below, which registers them), and timm's ``resnet18`` /
``resnet34`` are used as they are. ``build_model`` adds argument checks, an optional
construction seed and the ``init_scale`` rule of ``landscape.models.init_scale``;
``model_depth`` is the one reading of a config's depth.

Adding an architecture: write a module with an entrypoint decorated by
``landscape.models._registry.register`` (keyword-only options, ``**kwargs`` passed to
``check_entrypoint_extras``) and import it below; it then joins ``MODEL_NAMES`` and the
parametrised tests in ``tests/models`` with no new test code.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from typing import Any

import timm
import torch
from torch import nn

from . import _registry
from . import cnn_small as _cnn_small  # noqa: F401  (registers the entrypoint)
from . import lm_transformer as _lm_transformer  # noqa: F401
from . import mlp as _mlp  # noqa: F401
from . import resmlp as _resmlp  # noqa: F401
from . import resnet_small as _resnet_small  # noqa: F401
from . import vgg_small as _vgg_small  # noqa: F401
from . import vit_small_32 as _vit_small_32  # noqa: F401
from ._layers import check_int
from .init_scale import check_init_scale, scale_init_
from .resnet_small import NUM_STAGES

__all__ = ["MODEL_NAMES", "OUR_MODEL_NAMES", "TIMM_MODEL_NAMES", "TIMM_RESNET_BLOCKS", "build_model", "model_depth"]

#: Names of the architectures defined in this package, in registration order.
OUR_MODEL_NAMES: tuple[str, ...] = tuple(_registry.OUR_MODEL_NAMES)

#: timm built-ins used as they are. They are size-agnostic (global pooling), so
#: ``build_model`` checks ``img_size`` but does not pass it on.
TIMM_MODEL_NAMES: tuple[str, ...] = ("resnet18", "resnet34")

#: Every name ``build_model`` accepts, sorted.
MODEL_NAMES: tuple[str, ...] = tuple(sorted([*OUR_MODEL_NAMES, *TIMM_MODEL_NAMES]))

#: Basic blocks of timm's ResNets (He et al. 2016, Table 1: [2, 2, 2, 2] and [3, 4, 6, 3] per stage).
TIMM_RESNET_BLOCKS: dict[str, int] = {"resnet18": 8, "resnet34": 16}


def build_model(
    name: str,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 28,
    init_scale: float = 1.0,
    *,
    seed: int | None = None,
    **kwargs: Any,
) -> nn.Module:
    """Build a registered architecture with ``timm.create_model``.

    Construction happens on the CPU in float32 (move the model with ``.to()``). Weights
    come from the global torch RNG, so ``torch.manual_seed(s)`` before the call makes it
    deterministic; passing ``seed=s`` gives the same model without touching the caller's
    RNG state.

    Args:
        name: One of :data:`MODEL_NAMES`.
        num_classes: Outputs (logits).
        in_chans: Input channels.
        img_size: Input side length in pixels (``mlp``: ``in_features = in_chans *
            img_size**2`` unless ``in_features`` is given in ``kwargs``).
        init_scale: Multiplies every Linear/Conv weight after the default initialisation
            (rule in ``landscape.models.init_scale``).
        seed: If given, build under ``torch.manual_seed(seed)`` inside a forked CPU RNG.
        **kwargs: Architecture options (``width``, ``depth``, ``norm``, ``skip`` ...);
            see each entrypoint. As in ``timm.create_model``, options set to ``None``
            are dropped (the default applies).

    Returns:
        The model in training mode.

    Raises:
        ValueError: Unknown ``name`` (the message lists :data:`MODEL_NAMES`), a bad size,
            ``init_scale`` or ``seed``, or a bad option of one of our architectures.
        TypeError: An option that timm's own ``resnet18``/``resnet34`` do not take
            (timm's error, passed through).
    """
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {list(MODEL_NAMES)}")
    check_int("num_classes", num_classes)
    check_int("in_chans", in_chans)
    check_int("img_size", img_size)
    init_scale = check_init_scale(init_scale)
    if seed is not None:
        check_int("seed", seed, minimum=0)
    args: dict[str, Any] = dict(kwargs, num_classes=num_classes, in_chans=in_chans)
    if name not in TIMM_MODEL_NAMES:
        args["img_size"] = img_size
    if seed is None:
        model = timm.create_model(name, **args)
    else:
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            model = timm.create_model(name, **args)
    return scale_init_(model, init_scale)


def model_depth(model: Mapping[str, Any]) -> int | None:
    """The depth of a network as a config specifies it: the number of blocks it stacks.

    The unit a skip connection spans, and the one H2's depth factorial doubles; every reader of
    a config's depth (result tables, probes, the smoke profile, report pages) calls this.

    * A ``depth`` option (given, or the entrypoint's default when absent or None): ``mlp``
      hidden layers, ``resmlp`` residual blocks, ``vit_small_32`` / ``lm_transformer``
      transformer blocks.
    * ``resnet_small``: ``3 * blocks_per_stage`` basic blocks (three stages). He et al. (2016,
      section 4.2) count weight layers instead, ``6n + 2``: ResNet-20 / 56 / 110 have 9 / 27 / 54 blocks.
    * timm's ``resnet18`` / ``resnet34``: 8 / 16 basic blocks (:data:`TIMM_RESNET_BLOCKS`).
    * Fixed stacks without a depth option (``cnn_small``, ``vgg_small``): None.

    Args:
        model: ``{"name": <registered name>, **options}`` (a params ``model`` block); a mapping
            with an explicit ``depth`` needs no name.

    Raises:
        ValueError: ``model`` is not a mapping, has neither ``depth`` nor ``name``, or names an
            unregistered model (the message lists :data:`MODEL_NAMES`).
    """
    if not isinstance(model, Mapping):
        raise ValueError(f"model must be a mapping with a 'name' (and options), got {model!r}")
    if model.get("depth") is not None:
        return int(model["depth"])
    name = model.get("name")
    if name is None:
        raise ValueError(f"model needs a 'name' or a 'depth' to have a depth, got {dict(model)!r}")
    if name not in MODEL_NAMES:
        raise ValueError(f"unknown model {name!r}; valid names: {list(MODEL_NAMES)}")
    if name in TIMM_RESNET_BLOCKS:
        return TIMM_RESNET_BLOCKS[name]
    defaults = inspect.signature(timm.models.model_entrypoint(name)).parameters
    if "depth" in defaults:
        return int(defaults["depth"].default)
    if name == "resnet_small":
        blocks = model.get("blocks_per_stage")
        return NUM_STAGES * int(defaults["blocks_per_stage"].default if blocks is None else blocks)
    return None
