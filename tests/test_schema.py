"""The schema toolkit: rule builders, the validate-on-construct mixin, names DVC can track."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest

from landscape.schema import (
    Checked,
    ConfigError,
    check_key_name,
    int_at_least,
    number_above_zero,
    one_of,
    optional_subset_of,
    parse_config,
)


@dataclass(frozen=True)
class _Settings(Checked):
    steps: int = field(default=3, metadata=int_at_least(1))
    lr: float = field(default=0.1, metadata=number_above_zero())
    mode: str = field(default="a", metadata=one_of(["a", "b"]))
    kinds: tuple[str, ...] | None = field(default=None, metadata=optional_subset_of(["x", "y"]))

    def _extra_checks(self) -> None:
        if self.mode == "b" and self.steps < 2:
            raise ConfigError(f"mode 'b' needs steps >= 2, got {self.steps}")


def test_objects_built_in_code_are_checked_like_parsed_ones():
    assert _Settings(kinds=["x"]).kinds == ("x",)  # lists become tuples
    with pytest.raises(ConfigError, match=r"_Settings.steps=0 is not allowed; allowed: an int >= 1"):
        _Settings(steps=0)
    with pytest.raises(ConfigError, match=r"_Settings.steps=True is not allowed"):
        _Settings(steps=True)
    with pytest.raises(ConfigError, match=r"_Settings.kinds=\('z',\) is not allowed; allowed: null or a non-empty list of \['x', 'y'\]"):
        _Settings(kinds=["z"])
    with pytest.raises(ConfigError, match="mode 'b' needs steps >= 2, got 1"):
        _Settings(mode="b", steps=1)


def test_parse_config_names_the_key_path_value_and_what_is_allowed():
    assert parse_config(_Settings, {"lr": 1}, "probes.x").lr == 1.0
    with pytest.raises(ConfigError, match=r"unknown key probes.x.stepz \(value 2\); allowed keys: \['kinds', 'lr', 'mode', 'steps'\]"):
        parse_config(_Settings, {"stepz": 2}, "probes.x")
    with pytest.raises(ConfigError, match=r"probes.x.lr=-1 is not allowed; allowed: a number > 0"):
        parse_config(_Settings, {"lr": -1}, "probes.x")
    with pytest.raises(ConfigError, match=r"probes.x.mode='c' is not allowed; allowed: one of \['a', 'b'\]"):
        parse_config(_Settings, {"mode": "c"}, "probes.x")


@pytest.mark.parametrize("name", ["lr_0.02", "a b", "", 3])
def test_names_dvc_would_split_are_refused(name):
    with pytest.raises(ConfigError, match="is not a valid name"):
        check_key_name(name, "experiments.<name>")
    check_key_name("lr_0p02", "experiments.<name>")
