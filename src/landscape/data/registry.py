"""Registry of data sets by name: the one place ``params.yaml``'s ``data.name`` resolves.

Follows timm's registry-and-factory pattern: each loader registers itself under a name,
:func:`load_dataset` builds a set from its name and keyword arguments, and an unknown
name or keyword fails loudly listing what exists.
"""

from __future__ import annotations

import dataclasses
import inspect
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from landscape.data.base import Dataset

__all__ = ["DatasetSpec", "DATASETS", "register_dataset", "load_dataset"]

Loader = Callable[..., Dataset]


@dataclasses.dataclass(frozen=True)
class DatasetSpec:
    """One registry entry.

    Attributes:
        name: Registry key.
        loader: Function building the :class:`Dataset` from keyword arguments.
        uses_root: Whether the loader reads files under a ``root`` directory (synthetic
            and package-bundled sets do not, and ignore ``root``).
        description: One line for listings.
    """

    name: str
    loader: Loader
    uses_root: bool
    description: str

    def options(self) -> tuple[str, ...]:
        """Keyword arguments the loader accepts (besides ``root``)."""
        return tuple(p for p in inspect.signature(self.loader).parameters if p != "root")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready description of the entry."""
        return {"name": self.name, "uses_root": self.uses_root, "description": self.description,
                "options": list(self.options())}


_REGISTRY: dict[str, DatasetSpec] = {}
DATASETS: Mapping[str, DatasetSpec] = MappingProxyType(_REGISTRY)
"""Read-only view of the registered data sets, name -> :class:`DatasetSpec`."""


def register_dataset(name: str, *, uses_root: bool, description: str = "") -> Callable[[Loader], Loader]:
    """Decorator registering a loader under ``name``.

    Args:
        name: Registry key; must be new.
        uses_root: Whether the loader takes a ``root`` directory argument.
        description: One line for listings (defaults to the docstring's first line).
    """

    def decorator(loader: Loader) -> Loader:
        if name in _REGISTRY:
            raise ValueError(f"data set name {name!r} is already registered (to {_REGISTRY[name].loader.__qualname__})")
        params = inspect.signature(loader).parameters
        if uses_root != ("root" in params):
            raise ValueError(f"loader {loader.__qualname__} for {name!r}: uses_root={uses_root} but "
                             f"its signature {'has' if 'root' in params else 'lacks'} a root parameter")
        doc = (loader.__doc__ or "").strip().splitlines()
        _REGISTRY[name] = DatasetSpec(name, loader, uses_root, description or (doc[0] if doc else ""))
        return loader

    return decorator


def load_dataset(name: str, root: str | Path = "data/raw", **kwargs: Any) -> Dataset:
    """Build the registered data set ``name``.

    Args:
        name: A key of :data:`DATASETS`.
        root: Directory holding downloaded data sets (each in its own standard layout);
            ignored by synthetic and package-bundled sets.
        **kwargs: The loader's options (see ``DATASETS[name].options()``).

    Returns:
        The :class:`Dataset`, with ``meta["name"] == name``.

    Raises:
        ValueError: Unknown name (the message lists the registered names) or option.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown data set {name!r}; registered data sets: {', '.join(sorted(_REGISTRY))}")
    spec = _REGISTRY[name]
    unknown = sorted(set(kwargs) - set(spec.options()))
    if unknown:
        raise ValueError(f"data set {name!r} got unknown option(s) {unknown}; "
                         f"allowed: {', '.join(spec.options()) or 'none'}")
    if spec.uses_root:
        kwargs = {"root": Path(root).expanduser(), **kwargs}
    return spec.loader(**kwargs)
