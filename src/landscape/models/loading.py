"""Networks from names and weight files: any registered or timm architecture, checked loading.

* :func:`create_model`: one of this package's registered names (through
  :func:`~landscape.models.factory.build_model`) or any other timm architecture
  (``timm.create_model``; Wightman 2019), randomly initialised from a seed. Pretrained timm
  weights are read from the local Hugging Face cache only: this module never downloads.
* :func:`read_checkpoint`: a weight file as the train stage writes it (``model.pt`` =
  ``{"model": {name, **options}, "model_kwargs": {...}, "state_dict": ...}``) or a plain
  ``state_dict``.
* :func:`load_weights`: ``load_state_dict`` that names every missing and unexpected key and
  every shape mismatch in one error, instead of PyTorch's multi-line report.
* :func:`check_inputs`: one forward pass on one example, so that data of the wrong shape
  fails with the shapes expected and found before any long computation.
"""

from __future__ import annotations

import dataclasses
import math
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import timm
import torch
from torch import Tensor, nn

from .factory import MODEL_NAMES, OUR_MODEL_NAMES, TIMM_MODEL_NAMES, build_model

__all__ = ["Checkpoint", "model_origin", "create_model", "read_checkpoint", "load_weights", "input_shape", "check_inputs"]

# Weight files timm stores in a Hugging Face repository, in the order timm tries them.
_HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# Keys listed in full in a mismatch message before it says "and N more".
_SHOWN_KEYS = 6


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """Weights read from a file.

    Attributes:
        path: the file.
        state_dict: parameter and buffer tensors by name.
        name: architecture name recorded in the file (None for a plain state_dict).
        kwargs: keyword arguments of :func:`create_model` recorded in the file (options of
            the config plus the sizes the train stage added); empty for a plain state_dict.
        meta: the file's other entries (for a train stage file: ``model``, ``model_kwargs``,
            ``train``, ``experiment``, ``seed``, ...).
    """

    path: Path
    state_dict: Mapping[str, Tensor]
    name: str | None = None
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _not_a_model_message(name: str) -> str:
    return (f"unknown model {name!r}: not one of the registered models {list(MODEL_NAMES)} "
            f"and not a timm model either (timm.list_models() lists timm's {len(timm.list_models())})")


def _cached_pretrained_file(name: str) -> Path:
    """The locally cached weight file of timm's default pretrained tag of ``name``."""
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.constants import HF_HUB_CACHE

    cfg = timm.models.get_pretrained_cfg(name)
    if cfg is None or not cfg.hf_hub_id:
        raise ValueError(f"model {name!r} has no pretrained weights on the Hugging Face hub that could be read from a local cache")
    repo = cfg.hf_hub_id
    files = (cfg.hf_hub_filename,) if cfg.hf_hub_filename else _HF_WEIGHT_FILES
    for filename in files:
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
    raise ValueError(
        f"pretrained weights of {name!r} ({repo}, {' or '.join(files)}) are not in the local Hugging Face cache "
        f"{HF_HUB_CACHE}; nothing is downloaded: fetch them once elsewhere (timm.create_model({name!r}, pretrained=True)) "
        f"and copy the cache, or pass the weights as a checkpoint file"
    )


def model_origin(name: str) -> str:
    """``"registered"`` for this package's architectures, ``"timm"`` for timm's (``resnet18`` ... included).

    Raises:
        ValueError: ``name`` is neither (the message lists the registered names).
    """
    if name in OUR_MODEL_NAMES:
        return "registered"
    if name in TIMM_MODEL_NAMES or timm.is_model(name):
        return "timm"
    raise ValueError(_not_a_model_message(name))


def create_model(name: str, *, seed: int | None = None, pretrained: bool = False, **kwargs: Any) -> nn.Module:
    """Build a registered architecture or any timm architecture, on the CPU in float32.

    Args:
        name: one of :data:`~landscape.models.MODEL_NAMES` or a name ``timm.is_model``
            knows (``timm.list_models()``).
        seed: build under ``torch.manual_seed(seed)`` in a forked CPU generator (the
            caller's generator is untouched); None draws from the global generator.
        pretrained: load timm's default pretrained weights of ``name`` from the local
            Hugging Face cache (``HF_HUB_CACHE``); never downloads. A classifier whose
            ``num_classes`` differs from the pretrained one is re-initialised by timm
            (from ``seed``).
        **kwargs: architecture options (``num_classes``, ``in_chans``, ``img_size``, ``width``,
            ...), passed to ``timm.create_model`` as they are for timm architectures
            (most timm CNNs are size-agnostic and take no ``img_size``).

    Raises:
        ValueError: ``name`` is neither registered nor a timm model (the message lists the
            registered names), an option is bad, or pretrained weights are not cached.
    """
    if name in MODEL_NAMES and not pretrained:
        return build_model(name, seed=seed, **kwargs)
    if model_origin(name) == "registered":
        raise ValueError(f"model {name!r} is defined in this package and has no pretrained weights")
    args = dict(kwargs)
    if name in TIMM_MODEL_NAMES:  # as build_model treats them: size-agnostic, img_size not passed on
        args.pop("img_size", None)
    if pretrained:
        args.update(pretrained=True, pretrained_cfg_overlay={"file": str(_cached_pretrained_file(name)), "source": ""})
    try:
        if seed is None:
            return timm.create_model(name, **args)
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            return timm.create_model(name, **args)
    except TypeError as exc:  # an option the timm architecture does not take
        raise ValueError(f"model {name!r}: {exc}") from None


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read weights saved by the train stage (``model.pt``) or a plain ``state_dict``.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: the file is not a torch file, or holds neither format (the message
            says what it found).
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"checkpoint {p} does not exist")
    try:
        saved = torch.load(p, map_location="cpu", weights_only=False)
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as exc:  # not a torch file
        raise ValueError(f"checkpoint {p} is not a file torch.load can read: {exc}") from None
    if isinstance(saved, nn.Module):
        return Checkpoint(p, saved.state_dict(), meta={"saved_as": type(saved).__name__})
    if not isinstance(saved, Mapping):
        raise ValueError(f"checkpoint {p} holds a {type(saved).__name__}; expected a state_dict or the train stage's "
                         "{'state_dict', 'model', 'model_kwargs'}")
    if "state_dict" in saved:
        state = saved["state_dict"]
        spec = dict(saved.get("model") or {})
        name = spec.pop("name", None)
        kwargs = spec | dict(saved.get("model_kwargs") or {})
        meta = {k: v for k, v in saved.items() if k != "state_dict"}
        _check_state_dict(state, p)
        return Checkpoint(p, state, name=None if name is None else str(name), kwargs=kwargs, meta=meta)
    _check_state_dict(saved, p)
    return Checkpoint(p, saved)


def _check_state_dict(state: Any, path: Path) -> None:
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"checkpoint {path}: expected a non-empty state_dict (name -> tensor), got {type(state).__name__}")
    bad = [str(k) for k, v in state.items() if not isinstance(v, Tensor)]
    if bad:
        raise ValueError(f"checkpoint {path}: state_dict entries {_shown(bad)} are not tensors; expected a state_dict (name -> tensor)")


def _shown(keys: list[str]) -> str:
    head = ", ".join(keys[:_SHOWN_KEYS])
    return head + (f" and {len(keys) - _SHOWN_KEYS} more" if len(keys) > _SHOWN_KEYS else "")


def load_weights(model: nn.Module, state_dict: Mapping[str, Tensor], *, source: str = "state_dict") -> nn.Module:
    """``model.load_state_dict(state_dict)`` (strict), with one error naming every mismatch.

    Args:
        model: the architecture (modified in place and returned).
        state_dict: tensors by name; values are copied into the model's tensors.
        source: how the error names the weights (e.g. the checkpoint path).

    Raises:
        ValueError: keys missing from ``state_dict``, keys the model lacks, or tensors of
            other shapes; the message lists them (the first few of each kind and a count).
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [str(k) for k in state_dict if k not in own]
    shapes = [f"{k} {tuple(state_dict[k].shape)} vs model {tuple(v.shape)}"
              for k, v in own.items() if k in state_dict and tuple(state_dict[k].shape) != tuple(v.shape)]
    problems = []
    if missing:
        problems.append(f"missing keys: {_shown(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_shown(unexpected)}")
    if shapes:
        problems.append(f"shape mismatches: {_shown(shapes)}")
    if problems:
        raise ValueError(f"{source} does not match the architecture {type(model).__name__} "
                         f"({len(own)} tensors): " + "; ".join(problems))
    model.load_state_dict(state_dict)
    return model


def input_shape(name: str, kwargs: Mapping[str, Any]) -> tuple[int, ...] | None:
    """Per-example input shape an architecture was built for, from its options (None if free).

    ``mlp`` with ``in_features``: ``(in_features,)`` (any shape with that many entries is
    flattened); our other architectures: ``(in_chans, img_size, img_size)`` (defaults of
    :func:`~landscape.models.factory.build_model` where absent). timm architectures are
    size-agnostic: None.
    """
    if name not in MODEL_NAMES or name in TIMM_MODEL_NAMES:
        return None
    if name == "mlp" and kwargs.get("in_features") is not None:
        return (int(kwargs["in_features"]),)
    side = int(kwargs.get("img_size", 28))
    return (int(kwargs.get("in_chans", 1)), side, side)


def check_inputs(model: nn.Module, inputs: Tensor, *, expected: tuple[int, ...] | None = None, what: str = "the data") -> Tensor:
    """Check that ``model`` takes ``inputs`` (N, ...) and return its outputs on the first example.

    Args:
        model: the network (evaluated on one example in eval mode, without gradient, cast
            to its parameters' dtype and device; its train/eval flag is restored).
        inputs: a batch of inputs.
        expected: per-example shape the model was built for (:func:`input_shape`); a
            one-entry shape ``(D,)`` accepts any shape with D entries.
        what: how the error names the data.

    Raises:
        ValueError: ``inputs`` has the wrong per-example shape or the forward pass fails;
            the message names the expected and the found shapes.
    """
    found = tuple(inputs.shape[1:])
    if expected is not None:
        fits = math.prod(found) == expected[0] if len(expected) == 1 else found == tuple(expected)
        if not fits:
            want = f"{expected[0]} features per example" if len(expected) == 1 else f"examples of shape {tuple(expected)}"
            raise ValueError(f"{what} has examples of shape {found}, but the model expects {want}")
    was_training = model.training
    model.eval()
    try:
        first = next(iter(model.parameters()), None)
        example = inputs[:1] if first is None else inputs[:1].to(device=first.device, dtype=first.dtype)
        with torch.no_grad():
            return model(example)
    except (RuntimeError, ValueError) as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        want = f"examples of shape {tuple(expected)}" if expected is not None else "another input shape"
        raise ValueError(f"{what} has examples of shape {found}, but the model expects {want} ({reason})") from None
    finally:
        model.train(was_training)
