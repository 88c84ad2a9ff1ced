"""The depth of a network as a params ``model`` block specifies it: the one reading of it.

Depth here is the number of blocks a network stacks, the unit a skip connection spans and the
one H2's depth factorial doubles. Every reader of a config's depth (the result tables, the
probes, the smoke profile, the report pages) calls :func:`model_depth`.

This module imports nothing from the model registry (timm, and through it tqdm's notebook
check, which prints a warning into every report page that imports it); the entrypoint
defaults below are checked against the entrypoints' signatures, and every depth against the
blocks counted in the built network of every registered model, by ``tests/pipeline/test_depth.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["DEPTH_OPTIONS", "FIXED_DEPTHS", "model_depth"]

#: Architectures sized by a depth option: (option, the entrypoint's default, blocks per unit of it).
DEPTH_OPTIONS: dict[str, tuple[str, int, int]] = {
    "mlp": ("depth", 2, 1),  # hidden layers
    "resmlp": ("depth", 4, 1),  # residual blocks
    "vit_small_32": ("depth", 12, 1),  # transformer blocks
    "lm_transformer": ("depth", 2, 1),  # transformer blocks
    "resnet_small": ("blocks_per_stage", 1, 3),  # basic blocks in each of its 3 stages
}
#: Architectures of a fixed depth: timm's ResNet-18 / 34 (He et al. 2016, Table 1: [2, 2, 2, 2] and
#: [3, 4, 6, 3] basic blocks) and the fixed stacks without blocks (None).
FIXED_DEPTHS: dict[str, int | None] = {"resnet18": 8, "resnet34": 16, "cnn_small": None, "vgg_small": None}


def model_depth(model: Mapping[str, Any]) -> int | None:
    """The blocks a network stacks, from its params ``model`` block.

    * An explicit ``depth`` option: its value (``mlp`` hidden layers, ``resmlp`` residual
      blocks, ``vit_small_32`` / ``lm_transformer`` transformer blocks).
    * ``resnet_small``: ``3 * blocks_per_stage`` basic blocks. He et al. (2016, section 4.2)
      count weight layers instead, ``6n + 2``: ResNet-20 / 56 / 110 stack 9 / 27 / 54 blocks.
    * Otherwise the entrypoint's default (:data:`DEPTH_OPTIONS`; an option set to None is
      dropped, as ``build_model`` drops it), or the architecture's fixed depth
      (:data:`FIXED_DEPTHS`: timm's ResNet-18 / 34 stack 8 / 16; ``cnn_small`` and
      ``vgg_small``, no blocks: None).

    Args:
        model: ``{"name": <registered name>, **options}``; with an explicit ``depth`` no name is needed.

    Raises:
        ValueError: ``model`` is not a mapping, has neither ``depth`` nor ``name``, or names an
            architecture this module does not know (the message lists the known ones).
    """
    if not isinstance(model, Mapping):
        raise ValueError(f"model must be a mapping with a 'name' (and options), got {model!r}")
    if model.get("depth") is not None:
        return int(model["depth"])
    name = model.get("name")
    if name is None:
        raise ValueError(f"model needs a 'name' or a 'depth' to have a depth, got {dict(model)!r}")
    if name in FIXED_DEPTHS:
        return FIXED_DEPTHS[name]
    if name not in DEPTH_OPTIONS:
        raise ValueError(f"no depth rule for model {name!r}; known: {sorted([*DEPTH_OPTIONS, *FIXED_DEPTHS])}")
    option, default, blocks = DEPTH_OPTIONS[name]
    value = model.get(option)
    return blocks * int(default if value is None else value)
