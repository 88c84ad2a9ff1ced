"""Plain mappings (``params.yaml`` sections) -> validated, frozen dataclasses.

The one schema toolkit of the project: a field rule is ``field(metadata=rule(allowed,
check))``; :func:`parse_config` builds a dataclass from a mapping, rejecting unknown keys,
wrong types and values a rule refuses, with an error naming the key path, the value and
what is allowed; :class:`Checked` re-runs the rules when a dataclass is built in code.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

__all__ = [
    "ConfigError",
    "Checked",
    "rule",
    "positive",
    "nonneg",
    "int_at_least",
    "number_above_zero",
    "optional_number_above_zero",
    "one_of",
    "subset_of",
    "optional_subset_of",
    "parse_config",
    "check_key_name",
]

T = TypeVar("T")


class ConfigError(ValueError):
    """A parameter failed validation; the message names the key, value and what is allowed."""


def rule(allowed: str, check: Callable[[Any], bool]) -> dict[str, Any]:
    """Field metadata: ``allowed`` describes the valid values, ``check`` accepts them."""
    return {"allowed": allowed, "check": check}


def positive(x: Any) -> bool:
    return x > 0


def nonneg(x: Any) -> bool:
    return x >= 0


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_positive_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and x > 0 and math.isfinite(x)


def int_at_least(k: int) -> dict[str, Any]:
    """An int >= ``k`` (bools refused)."""
    return rule(f"an int >= {k}", lambda x: _is_int(x) and x >= k)


def number_above_zero() -> dict[str, Any]:
    """A finite number > 0 (bools refused)."""
    return rule("a number > 0", _is_positive_number)


def optional_number_above_zero() -> dict[str, Any]:
    return rule("null or a number > 0", lambda x: x is None or _is_positive_number(x))


def one_of(options: Sequence[Any]) -> dict[str, Any]:
    return rule(f"one of {list(options)}", lambda x: x in options)


def subset_of(options: Sequence[str]) -> dict[str, Any]:
    """A non-empty list drawn from ``options``."""
    return rule(f"a non-empty list of {list(options)}",
                lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and all(v in options for v in x))


def optional_subset_of(options: Sequence[str]) -> dict[str, Any]:
    inner = subset_of(options)
    return rule(f"null or {inner['allowed']}", lambda x: x is None or inner["check"](x))


class Checked:
    """Mixin for frozen dataclasses: re-runs the field rules on construction (lists become
    tuples), so objects built in code are validated like those built by :func:`parse_config`.
    Subclasses add cross-field checks in ``_extra_checks``."""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list):
                value = tuple(tuple(v) if isinstance(v, list) else v for v in value)
                object.__setattr__(self, f.name, value)
            check = f.metadata.get("check")
            if check is None:
                continue
            try:
                ok = bool(check(value))
            except TypeError:
                ok = False
            if not ok:
                raise ConfigError(f"{type(self).__name__}.{f.name}={value!r} is not allowed; allowed: {f.metadata['allowed']}")
        self._extra_checks()

    def _extra_checks(self) -> None:
        return None


def _type_ok(value: Any, annotation: Any) -> bool:
    """Whether ``value`` fits a (simple) type annotation; ints are accepted as floats."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, a) for a in typing.get_args(annotation))
    if annotation is type(None):
        return value is None
    if annotation is bool:
        return isinstance(value, bool)
    if annotation is int:
        return _is_int(value)
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if annotation is str:
        return isinstance(value, str)
    if (origin is not None and issubclass(origin, Mapping)) or annotation is Mapping:
        return isinstance(value, Mapping)
    return True


def parse_config(cls: type[T], values: Mapping[str, Any] | None, where: str) -> T:
    """Build the frozen dataclass ``cls`` from ``values``, validating every key.

    Args:
        cls: a config dataclass (fields may be nested config dataclasses).
        values: the mapping read from YAML (``None`` means all defaults).
        where: the key path of ``values`` in ``params.yaml``, used in error messages.

    Raises:
        ConfigError: unknown key, wrong type or a value outside the allowed range.
    """
    values = {} if values is None else values
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where} must be a mapping, got {values!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} (value {values[unknown[0]]!r}); allowed keys: {sorted(fields)}")
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        key = f"{where}.{name}"
        if name not in values:
            no_default = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if no_default and not dataclasses.is_dataclass(hints[name]):
                raise ConfigError(f"missing required key {key}")
            if no_default:
                kwargs[name] = parse_config(hints[name], None, key)
            continue
        value = values[name]
        if dataclasses.is_dataclass(hints[name]):
            kwargs[name] = parse_config(hints[name], value, key)
            continue
        meta = f.metadata
        if not _type_ok(value, hints[name]):
            allowed = meta.get("allowed", getattr(hints[name], "__name__", str(hints[name])))
            raise ConfigError(f"{key}={value!r} has the wrong type; allowed: {allowed}")
        if "check" in meta and not meta["check"](value):
            raise ConfigError(f"{key}={value!r} is not allowed; allowed: {meta['allowed']}")
        if hints[name] is float or (typing.get_origin(hints[name]) is not None and float in typing.get_args(hints[name])):
            value = float(value) if value is not None else None
        kwargs[name] = dict(value) if isinstance(value, Mapping) else value
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None


_KEY_NAME = re.compile(r"[A-Za-z0-9_-]+")


def check_key_name(name: Any, where: str) -> None:
    """Experiment and config names become DVC param paths (``experiments.<exp>.configs.<cfg>``,
    split at dots) and stage names: a dot would make DVC silently stop tracking the entry's params."""
    if not isinstance(name, str) or not _KEY_NAME.fullmatch(name):
        raise ConfigError(f"{where}={name!r} is not a valid name: use letters, digits, '_' and '-' only "
                          "(DVC splits param paths at dots), e.g. 'lr_0p02' for a learning rate of 0.02")
