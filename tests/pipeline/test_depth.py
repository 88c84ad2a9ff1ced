"""landscape.pipeline.depth.model_depth against ground truth: the blocks counted in the built
network of every registered model (at its defaults and with a deeper option), and its table of
entrypoint defaults against the entrypoints' own signatures."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import timm
import torch
from timm.models.resnet import BasicBlock as TimmBasicBlock
from timm.models.vision_transformer import Block as ViTBlock
from torch import nn

from landscape.models import MODEL_NAMES, build_model
from landscape.models.lm_transformer import _Block as LMBlock
from landscape.models.mlp import MLPLayer
from landscape.models.resmlp import ResidualBlock
from landscape.models.resnet_small import NUM_STAGES, BasicBlock
from landscape.pipeline.depth import DEPTH_OPTIONS, FIXED_DEPTHS, model_depth

REPO = Path(__file__).resolve().parents[2]
#: A deeper variant of each model with a depth option.
DEEPER: dict[str, dict[str, Any]] = {"mlp": {"depth": 3}, "resmlp": {"depth": 5}, "resnet_small": {"blocks_per_stage": 2},
                                     "vit_small_32": {"depth": 2}, "lm_transformer": {"depth": 3}}


def _stacked_blocks(model: nn.Module) -> int:
    """MLP hidden layers, residual (MLP or basic) blocks and transformer blocks of a built network."""
    kinds = (MLPLayer, ResidualBlock, BasicBlock, TimmBasicBlock, ViTBlock, LMBlock)
    return sum(isinstance(m, kinds) for m in model.modules())


CASES = [(name, {}) for name in MODEL_NAMES] + sorted(DEEPER.items())


@pytest.mark.parametrize("name, options", CASES, ids=[f"{n}-{'deeper' if o else 'defaults'}" for n, o in CASES])
def test_depth_is_the_number_of_blocks_the_built_network_stacks(name: str, options: dict[str, Any]) -> None:
    """Every registered model at its defaults (a new one joins with no new test code; one without
    a rule fails here) and with a deeper option: the depth of its params block equals the blocks
    of the network built from it, None exactly for the fixed stacks with no block. Built on the
    meta device (shapes only)."""
    with torch.device("meta"):
        model = build_model(name, num_classes=10, in_chans=3, img_size=32, seed=0, **options)
    assert model_depth({"name": name, **options}) == (_stacked_blocks(model) or None)


def test_the_table_covers_every_registered_model_with_its_entrypoint_defaults() -> None:
    assert sorted([*DEPTH_OPTIONS, *FIXED_DEPTHS]) == sorted(MODEL_NAMES)
    for name, (option, default, _) in DEPTH_OPTIONS.items():
        assert inspect.signature(timm.models.model_entrypoint(name)).parameters[option].default == default, name
    assert DEPTH_OPTIONS["resnet_small"][2] == NUM_STAGES


def test_cifar_resnets_explicit_depth_and_bad_input() -> None:
    """He et al.'s ResNet-20 / 56 / 110 (6n + 2 layers) stack 9 / 27 / 54 basic blocks; an explicit
    depth needs no name; an option set to None takes the default; bad input is named."""
    assert [model_depth({"name": "resnet_small", "blocks_per_stage": n}) for n in (3, 9, 18)] == [9, 27, 54]
    assert model_depth({"width": 8, "depth": 2}) == 2 and model_depth({"name": "mlp", "depth": None}) == 2
    with pytest.raises(ValueError, match=r"no depth rule for model 'nope'; known: .*'resmlp'"):
        model_depth({"name": "nope"})
    with pytest.raises(ValueError, match="needs a 'name' or a 'depth'"):
        model_depth({"width": 8})
    with pytest.raises(ValueError, match="must be a mapping"):
        model_depth("mlp")  # type: ignore[arg-type]


def test_the_table_readers_do_not_import_the_model_registry() -> None:
    """The report pages import the table readers; timm (and through it tqdm's notebook check)
    would print a warning into every page, and torch and statsmodels cost each page about 2.5 s
    (the readers that need them import them). Checked in a fresh process."""
    code = ("import sys, landscape.pipeline.tables; "
            "print(sorted(m for m in ('timm', 'landscape.models', 'torch', 'statsmodels') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONPATH": str(REPO / "src"), "PATH": ""}).stdout
    assert out.strip() == "[]"
