"""The bounds stage's summaries: per-run counts, the random-label control's memorisation rule, the h4 headline rows."""

from __future__ import annotations

import math

import pytest

from landscape.io import write_json
from landscape.pipeline.bounds import FAMILIES
from landscape.pipeline.bounds_summary import headline_rows, sanity_summary, summarise
from landscape.pipeline.layout import Layout
from landscape.pipeline.report import HEADLINE_PARAMS, HEADLINE_SECTIONS


def _seed(curv: float, iso: float, train_error: float, test_error: float = 0.06) -> dict:
    bounds = {"curvature": curv, "optimized": curv - 0.05, "isotropic": iso, "occam": 1.0, "holdout_prior": 0.08, "holdout_test": 0.09}
    post = {f: {"test_error": 0.1, "kl": {"kl": 100.0}} for f in ("isotropic", "curvature", "optimized")}
    return {"status": "bounded", "bounds": bounds, "train_error": train_error, "test_error": test_error, "prior": {"bound_error": 0.07},
            "ordering": sorted(bounds, key=bounds.get), "cpu_time_s": 2.0, **post}


REAL = {0: _seed(0.80, 0.90, 0.0), 1: _seed(0.85, 0.84, 0.0), 2: {"status": "skipped: run diverged"}}
RANDOM = {0: _seed(0.99, 0.995, 0.01, 0.9), 1: _seed(0.98, 0.99, 0.07, 0.9)}


def test_summarise_counts_and_per_seed_numbers():
    s = summarise(REAL, FAMILIES)
    assert s["seeds_bounded"] == 2 and s["seeds_skipped"] == 1
    assert s["curvature_bound"]["mean"] == pytest.approx(0.825) and s["curvature_bound"]["n"] == 2
    assert s["seeds_curvature_below_isotropic"] == 1 and s["seeds_curvature_below_occam"] == 2
    assert s["seeds_optimized_below_holdout_prior"] == 0
    assert s["ordering_per_seed"]["2"] == "skipped: run diverged"
    assert set(s["bounds_per_seed"]) == {"0", "1"} and s["train_error_per_seed"] == {"0": 0.0, "1": 0.0}
    assert s["cpu_time_s"] == pytest.approx(4.0)


def test_random_label_control_must_memorise():
    runs = {"s/real": summarise(REAL, FAMILIES), "s/random": summarise(RANDOM, FAMILIES)}
    c = sanity_summary({"real": "s/real", "random": "s/random"}, runs)
    assert c["random_train_error_max"] == pytest.approx(0.07) and not c["random_memorised"]  # 0.07 > 0.05
    assert c["random_vacuous"] and c["real_nonvacuous"]
    assert c["random_best_bound_min"] == pytest.approx(0.93)  # the optimized arm, 0.98 - 0.05
    assert sanity_summary({"real": "s/real", "random": "s/random"}, runs, memorised=0.1)["random_memorised"]


def test_headline_rows_from_the_stage_outputs(tmp_path):
    layout = Layout(tmp_path)
    runs = {"s/real": summarise(REAL, FAMILIES), "s/random": summarise(RANDOM, FAMILIES)}
    write_json(layout.bounds_metrics, {"runs": runs, "sanity": sanity_summary({"real": "s/real", "random": "s/random"}, runs)})
    h4 = {"name": "H4", "status": "tested", "effect_name": "mean of bound_curvature - bound_isotropic", "effect": -0.05,
          "ci_low": -0.08, "ci_high": -0.02, "ci_level": 0.95, "p_value": 0.01, "p_holm": 0.04, "supported": True, "n_runs": 5,
          "n_groups": 5, "extra": {"replication": {"effect": -0.04, "ci_low": -0.07, "ci_high": -0.01, "p_value": 0.02, "n_runs": 5},
                                    "replication_verdict": "supported", "binding_baseline": "bound_isotropic",
                                    "primary_seeds": [0, 1, 2, 3, 4], "replication_seeds": [5, 6, 7, 8, 9],
                                    "power_at_literature_effect": {"bound_occam": 1.0}}}
    write_json(layout.results("hypotheses"), {"hypotheses": [{"name": "H1", "status": "tested"}, h4]})
    rows = headline_rows(layout)
    test = rows[0]
    assert test["row"] == "test" and test["verdict"] == "supported" and test["p_holm"] == 0.04
    assert test["replication_effect"] == -0.04 and test["replication_ci"] == [-0.07, -0.01]
    bounds = [r for r in rows if r["row"] == "bounds"]
    assert len(bounds) == 4 and {r["run"] for r in bounds} == {"s/real", "s/random"}
    assert all(set(FAMILIES) <= set(r) and not math.isnan(r["train_error"]) for r in bounds)
    control = rows[-1]
    assert control["row"] == "random_label_control" and control["random_memorised"] is False
    # The report stage's h4 section is these rows, written with the hypotheses section.
    assert HEADLINE_SECTIONS["h4"](layout) == rows and HEADLINE_PARAMS["h4"] == "hypotheses"


def test_headline_rows_name_the_missing_input(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError, match="hypotheses"):
        headline_rows(layout)
    write_json(layout.results("hypotheses"), {"hypotheses": [{"name": "H4", "status": "not tested: input missing"}]})
    rows = headline_rows(layout)
    assert rows[0] == {"row": "test", "name": "H4", "status": "not tested: input missing", "verdict": None}
    assert rows[1]["status"].startswith("missing: bounds/metrics.json")
