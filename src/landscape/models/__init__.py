"""Architectures, registered with timm, and the factory that builds them.

``build_model(name, ...)`` calls ``timm.create_model``; ``MODEL_NAMES`` lists the valid
names: ours (``mlp``, ``resmlp``, ``cnn_small``, ``vgg_small``, ``resnet_small``, ``vit_small_32``,
registered with timm's ``register_model``) and timm's ``resnet18`` / ``resnet34``.
``init_scale`` multiplies the initial Linear/Conv weights of any of them
(``landscape.models.init_scale``); ``describe`` reports size and BN/LN/skip/dropout;
``grad_checkpointing`` recomputes the blocks of the large models in the backward pass
(``landscape.models.checkpointing``). ``create_model`` also builds any other timm
architecture; ``read_checkpoint`` and ``load_weights`` load weight files with errors that
name every mismatch (``landscape.models.loading``).
"""

from .checkpointing import CHECKPOINTABLE, checkpoint_units, grad_checkpointing, set_grad_checkpointing
from .describe import ModelDescription, describe
from .factory import MODEL_NAMES, OUR_MODEL_NAMES, TIMM_MODEL_NAMES, build_model
from .init_scale import is_scaled_layer, scale_init_
from .loading import Checkpoint, check_inputs, create_model, input_shape, load_weights, model_origin, read_checkpoint

__all__ = [
    "CHECKPOINTABLE",
    "checkpoint_units",
    "grad_checkpointing",
    "set_grad_checkpointing",
    "MODEL_NAMES",
    "OUR_MODEL_NAMES",
    "TIMM_MODEL_NAMES",
    "ModelDescription",
    "build_model",
    "create_model",
    "model_origin",
    "Checkpoint",
    "read_checkpoint",
    "load_weights",
    "input_shape",
    "check_inputs",
    "describe",
    "is_scaled_layer",
    "scale_init_",
]
