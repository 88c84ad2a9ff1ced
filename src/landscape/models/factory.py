"""``build_model``: one factory for every architecture that ``params.yaml`` may name.

A registry and a factory in the style of timm (Wightman 2019): our architectures are
timm entrypoints (imported below, which registers them), and timm's ``resnet18`` /
``resnet34`` are used as they are. ``build_model`` adds argument checks, an optional
construction seed and the ``init_scale`` rule of ``landscape.models.init_scale``.

Adding an architecture: write a module with an entrypoint decorated by
``landscape.models._registry.register`` (keyword-only options, ``**kwargs`` passed to
``check_entrypoint_extras``) and import it below; it then joins ``MODEL_NAMES`` and the
parametrised tests in ``tests/models`` with no new test code.
"""

from __future__ import annotations

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

__all__ = ["MODEL_NAMES", "OUR_MODEL_NAMES", "TIMM_MODEL_NAMES", "build_model"]

#: Names of the architectures defined in this package, in registration order.
OUR_MODEL_NAMES: tuple[str, ...] = tuple(_registry.OUR_MODEL_NAMES)

#: timm built-ins used as they are. They are size-agnostic (global pooling), so
#: ``build_model`` checks ``img_size`` but does not pass it on.
TIMM_MODEL_NAMES: tuple[str, ...] = ("resnet18", "resnet34")

#: Every name ``build_model`` accepts, sorted.
MODEL_NAMES: tuple[str, ...] = tuple(sorted([*OUR_MODEL_NAMES, *TIMM_MODEL_NAMES]))


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
