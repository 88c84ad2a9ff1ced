"""HypothesisResult: verdict rule, Holm hook, serialisation, argument checks."""

import dataclasses
import json
import math

import numpy as np
import pytest

from landscape.stats import HypothesisResult


def make(**over):
    fields = dict(
        name="H", null="n", alternative="a", test="t", n_runs=10, n_groups=5,
        effect=0.5, ci_low=0.1, ci_high=0.9, p_value=0.01, side="greater",
    )
    fields.update(over)
    return HypothesisResult.build(**fields)


def test_build_sets_p_holm_to_p_value_and_verdict():
    r = make()
    assert r.p_holm == r.p_value == 0.01
    assert r.supported


@pytest.mark.parametrize(
    ("over", "expected"),
    [
        ({}, True),
        ({"p_value": 0.2}, False),
        ({"p_value": 0.05}, True),  # p <= alpha rejects
        ({"effect": -0.5, "ci_low": -0.9, "ci_high": -0.1}, False),  # wrong side
        ({"side": "less", "effect": -0.5, "ci_low": -0.9, "ci_high": -0.1}, True),
        ({"side": "less"}, False),
        ({"side": "two-sided", "effect": -0.5}, True),
        ({"side": "interval"}, True),
        ({"p_value": float("nan")}, False),
        ({"effect": float("nan")}, False),
        ({"side": "greater", "null_value": 1.0, "effect": 0.9}, False),
        ({"side": "greater", "null_value": 1.0, "effect": 1.5, "ci_low": 1.1, "ci_high": 2.0}, True),
    ],
)
def test_verdict_rule(over, expected):
    assert make(**over).supported is expected


def test_ci_requirement_blocks_verdict_when_interval_covers_null():
    loose = make(ci_low=-0.1, ci_high=0.9)
    strict = make(ci_low=-0.1, ci_high=0.9, requires_ci_excluding_null=True)
    assert loose.supported and not strict.supported
    assert make(ci_low=0.01, requires_ci_excluding_null=True).supported
    assert make(side="less", effect=-0.5, ci_low=-0.9, ci_high=-0.01, requires_ci_excluding_null=True).supported


def test_with_p_holm_recomputes_verdict_and_alpha():
    r = make(p_value=0.02)
    assert not r.with_p_holm(0.06).supported
    assert r.with_p_holm(0.06, alpha=0.1).supported
    assert r.with_p_holm(0.06, alpha=0.1).alpha == 0.1
    assert r.p_value == 0.02  # original untouched


def test_frozen():
    r = make()
    with pytest.raises(dataclasses.FrozenInstanceError):
        r.effect = 1.0  # type: ignore[misc]


def test_to_dict_is_plain_and_json_ready():
    r = make(effect=np.float64(0.5), n_runs=np.int64(10), extra={"arr": np.arange(3), "nested": {"x": np.float32(1.5)}})
    d = r.to_dict()
    assert type(d["effect"]) is float and type(d["n_runs"]) is int
    assert d["extra"] == {"arr": [0, 1, 2], "nested": {"x": 1.5}}
    assert json.loads(json.dumps(d))["name"] == "H"
    assert set(d) == {f.name for f in dataclasses.fields(HypothesisResult)}
    assert math.isnan(make(p_value=float("nan")).to_dict()["p_holm"])


@pytest.mark.parametrize(
    ("over", "match"),
    [
        ({"side": "up"}, "side must be one of"),
        ({"alpha": 1.5}, r"alpha must be in \(0, 1\)"),
        ({"ci_level": 0.0}, r"ci_level must be in \(0, 1\)"),
    ],
)
def test_bad_fields_raise(over, match):
    with pytest.raises(ValueError, match=match):
        make(**over)
