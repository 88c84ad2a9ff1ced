"""Registration of our architectures with timm's own model registry.

Every architecture of this package is a timm entrypoint (Wightman, *PyTorch Image Models*,
2019), so ``timm.create_model(name, **kwargs)`` builds ours and timm's alike. This module
wraps ``timm.models.register_model`` with a clash check (a name that timm already owns is
an error at import, never a silent overwrite) and validates the bookkeeping keyword
arguments that ``timm.create_model`` forwards to every entrypoint.
"""

from __future__ import annotations

import inspect
import warnings
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import timm.models

__all__ = ["OUR_MODEL_NAMES", "register", "check_entrypoint_extras"]

F = TypeVar("F", bound=Callable[..., Any])

#: Names registered by this package, in registration order.
OUR_MODEL_NAMES: list[str] = []

# Keyword arguments that ``timm.create_model`` passes to every entrypoint.
_TIMM_BOOKKEEPING = ("pretrained_cfg", "pretrained_cfg_overlay", "cache_dir")


def register(fn: F) -> F:
    """Register ``fn`` with timm under ``fn.__name__``, refusing to shadow an existing model.

    Args:
        fn: Model entrypoint; its ``__name__`` is the model name.

    Returns:
        ``fn`` unchanged (as timm's ``register_model``).

    Raises:
        RuntimeError: ``fn.__name__`` already names a model defined elsewhere (a timm
            built-in or another package). Re-importing our own module is allowed.
    """
    name = fn.__name__
    if timm.models.is_model(name):
        existing = timm.models.model_entrypoint(name)
        same = (existing.__module__, existing.__qualname__) == (fn.__module__, fn.__qualname__)
        if not same:
            raise RuntimeError(
                f"model name {name!r} is already registered in timm by "
                f"{existing.__module__}.{existing.__qualname__}; pick another name"
            )
        with warnings.catch_warnings():  # module reload: timm warns about the overwrite
            warnings.simplefilter("ignore")
            timm.models.register_model(fn)
    else:
        timm.models.register_model(fn)
    if name not in OUR_MODEL_NAMES:
        OUR_MODEL_NAMES.append(name)
    return fn


def check_entrypoint_extras(
    entrypoint: Callable[..., Any], pretrained: bool, extras: Mapping[str, Any]
) -> None:
    """Validate what an entrypoint received beyond its own keyword arguments.

    ``timm.create_model`` always passes ``pretrained``, ``pretrained_cfg``,
    ``pretrained_cfg_overlay`` and ``cache_dir``; ours have no pretrained weights, so those
    must be unset. Anything else is a misspelt or unsupported argument.

    Args:
        entrypoint: The entrypoint being called (its signature lists the valid arguments).
        pretrained: The ``pretrained`` flag received.
        extras: The entrypoint's ``**kwargs``.

    Raises:
        ValueError: ``pretrained`` is true, a bookkeeping argument is set, or an unknown
            keyword argument was given (the message lists the accepted ones).
    """
    name = entrypoint.__name__
    if pretrained:
        raise ValueError(f"model {name!r} has no pretrained weights; got pretrained={pretrained!r}")
    for key, value in extras.items():
        if key in _TIMM_BOOKKEEPING:
            if value is not None:
                raise ValueError(
                    f"model {name!r} has no pretrained configurations; got {key}={value!r}"
                )
            continue
        accepted = [
            p.name
            for p in inspect.signature(entrypoint).parameters.values()
            if p.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        raise ValueError(
            f"model {name!r} got an unknown keyword argument {key!r}; accepted: {accepted}"
        )
