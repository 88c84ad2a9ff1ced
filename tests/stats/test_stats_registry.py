"""Registry of hypothesis tests: every entry runs on its canonical table; unknown names fail."""

import json

import numpy as np
import pytest
from stats_synth import h1_table, h2_table, h3_table, h4_table

from landscape.stats import HYPOTHESES, HypothesisResult, get_hypothesis, holm

CASES = {
    "h1_batch_sharpness": (lambda rng: h1_table(rng, 12, 0.5, 0.02, noise_y=0.003, seed_sd_y=0.002), {"n_boot": 300}),
    "h2_skip_flattens": (lambda rng: h2_table(rng, 6, -0.4), {"measure": "lambda_max", "log_scale": True}),
    "h3_alignment_escape": (lambda rng: h3_table(rng, 12, 40, 1.5), {}),
    "h4_bounds": (lambda rng: h4_table(rng, 30, -0.2, -0.1), {}),
}


def test_every_registered_hypothesis_has_a_case():
    assert set(CASES) == set(HYPOTHESES)


@pytest.mark.parametrize("name", sorted(HYPOTHESES))
def test_registered_hypothesis_runs_and_serialises(name):
    make, kwargs = CASES[name]
    r = get_hypothesis(name)(make(np.random.default_rng(0)), **kwargs)
    assert isinstance(r, HypothesisResult)
    assert r.supported and 0 <= r.p_value <= 0.05 and r.ci_low <= r.effect <= r.ci_high
    assert r.n_runs > 0 and 0 < r.n_groups <= r.n_runs
    assert r.null and r.alternative and r.test and r.effect_name
    json.dumps(r.to_dict(), allow_nan=True)


def test_family_of_all_four_through_holm():
    rng = np.random.default_rng(1)
    family = [get_hypothesis(n)(CASES[n][0](rng), **CASES[n][1]) for n in sorted(HYPOTHESES)]
    out = holm(family)
    assert [r.name for r in out] == ["H1", "H2[lambda_max]", "H3", "H4"]
    assert all(r.p_holm >= r.p_value for r in out)


def test_unknown_name_lists_valid_ones():
    with pytest.raises(ValueError, match=r"unknown hypothesis 'h5'; valid names: \['h1_batch_sharpness'"):
        get_hypothesis("h5")
