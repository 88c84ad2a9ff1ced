"""The escape stage's settings: validation and the keyword arguments they hand to escape_study."""

from __future__ import annotations

import inspect

import pytest

from landscape.dynamics.escape import NOISE_TYPES, escape_study
from landscape.pipeline.escape import EscapeConfig
from landscape.schema import ConfigError, parse_config


@pytest.mark.parametrize(
    "over, match",
    [
        ({"steps": 0}, "steps=0"),
        ({"noise_types": ["sgd", "levy"]}, "noise_types"),
        ({"noise_types": [], "scales": []}, "at least one arm"),
        ({"noise_types": ["scaled"]}, "noise_types"),
        ({"scales": [0.5, -1.0]}, "scales"),
        ({"scales": [1.0, 1.0]}, "scales"),
        ({"noise_at": "end"}, "noise_at='end'"),
        ({"noise_scale": 0.0}, "noise_scale=0.0"),
        ({"lambda_drop": 1.5}, "lambda_drop=1.5"),
        ({"rule": "either"}, "rule='either'"),
        ({"step_size": -1.0}, "step_size=-1.0"),
    ],
)
def test_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        EscapeConfig(**over)


def test_study_kwargs_are_the_settings_of_escape_study():
    cfg = parse_config(EscapeConfig, {"steps": 20, "noise_types": ["sgd", "projected"], "num_examples": 200}, "escape.settings")
    kwargs = cfg.study_kwargs()
    params = inspect.signature(escape_study).parameters
    keyword = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY}
    required = {n for n, p in params.items() if p.kind is p.KEYWORD_ONLY and p.default is p.empty}
    assert required <= set(kwargs) <= keyword - {"basis", "seed"}
    assert kwargs["steps"] == 20 and kwargs["noise_types"] == ("sgd", "projected")
    assert cfg.to_dict()["noise_types"] == ["sgd", "projected"] and list(cfg.to_dict())[:2] == ["num_examples", "chunk_size"]
    assert EscapeConfig().noise_types == ("isotropic",) and "scaled" in NOISE_TYPES
    assert "max_start_loss" not in kwargs and kwargs["rule"] == "basin" and kwargs["noise_at"] == "start"
    with pytest.raises(ConfigError, match="unknown key escape.settings.step "):
        parse_config(EscapeConfig, {"step": 1}, "escape.settings")
