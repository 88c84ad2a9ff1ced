"""The phi_search stage: its settings (errors name the key), a tiny real search independent of
the number of workers, and Phi of the pipeline's runs from measure outputs."""

import json
import math

import pytest

from landscape.pipeline.layout import Layout
from landscape.pipeline.phi_search import PhiSearchConfig, SearchData, phi_of_runs, run_phi_search
from landscape.pipeline.tables import phi_inputs
from landscape.schema import ConfigError, parse_config


def small_cfg(**over):
    values = {"seeds": [0], "mixture_dims": [4], "mixture_classes": 3, "mixture_separation": 4.0, "mixture_test": 100,
              "grid": {"widths": [4, 16], "depths": [1]},
              "probe": {"num_examples": 64, "noise_examples": 32, "trace_matvecs": 8},
              "training": {"train_examples": 128, "epochs": 2, "batch_size": 32}}
    values.update(over)
    return parse_config(PhiSearchConfig, values, "phi.search")


def test_search_config_rejects_bad_values_with_the_key():
    with pytest.raises(ConfigError, match="unknown key phi.search.grid.heights"):
        parse_config(PhiSearchConfig, {"grid": {"heights": [1]}}, "phi.search")
    with pytest.raises(ConfigError, match="widths=.* is not allowed"):
        parse_config(PhiSearchConfig, {"grid": {"widths": [0, 4]}}, "phi.search")
    with pytest.raises(ConfigError, match="rank='numerical' is not allowed"):
        parse_config(PhiSearchConfig, {"probe": {"rank": "numerical"}}, "phi.search")
    with pytest.raises(ConfigError, match="noise_examples=600 exceeds num_examples=500"):
        parse_config(PhiSearchConfig, {"probe": {"noise_examples": 600}}, "phi.search")
    with pytest.raises(ConfigError, match="select_at='trained' needs also_trained=true"):
        parse_config(PhiSearchConfig, {"probe": {"select_at": "trained"}}, "phi.search")
    with pytest.raises(ConfigError, match="probe.num_examples=500 exceeds training.train_examples=100"):
        parse_config(PhiSearchConfig, {"training": {"train_examples": 100, "batch_size": 10}}, "phi.search")


def mixture_data():
    from landscape.data.synthetic import gaussian_mixture

    ds = gaussian_mixture(num_classes=3, dim=4, separation=4.0, n=228, seed=0)
    return SearchData("gm4", (ds.x[:128], ds.y[:128]), (ds.x[128:], ds.y[128:]), 3, "gaussian_mixture")


def test_tiny_search_rows_are_complete_and_independent_of_workers():
    cfg = small_cfg(probe={"num_examples": 64, "noise_examples": 32, "trace_matvecs": 8, "also_trained": True})
    data = mixture_data()
    rows = run_phi_search(cfg, [data], workers=1)
    assert [(r["width"], r["depth"]) for r in rows] == [(4, 1), (16, 1)]
    for r in rows:
        assert r["status"] == "completed" and r["steps"] == 2 * (128 // 32) and 0 <= r["test_error"] <= 1
        assert r["phi"] == r["init"]["phi"] and math.isfinite(r["phi"]) and r["init"]["noise_examples"] == 32
        assert r["num_params"] == r["width"] * 4 + r["width"] + r["width"] * 3 + 3 and "trained" in r
    forked = run_phi_search(cfg, [data], workers=2)
    assert [r["phi"] for r in forked] == [r["phi"] for r in rows]
    assert [r["test_error"] for r in forked] == [r["test_error"] for r in rows]


def _write(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def run_phi_table(root, experiments, seeds, dims, rank_kind="stable"):
    layout = Layout(root)
    return phi_of_runs(phi_inputs(layout, experiments, seeds, dims), rank_kind)


def test_run_phi_table_computes_phi_from_measure_outputs(tmp_path):
    experiments = {"scaling": {"dataset": "m", "configs": {"w8_d1": {"model": {"name": "mlp", "width": 8, "depth": 1}, "train": {}},
                                                           "rl": {"model": {"name": "mlp"}, "train": {"random_labels": True}}}}}
    run = tmp_path / "runs" / "scaling" / "w8_d1"
    _write(run / "seed0" / "metrics.json", {"status": "completed", "test_error": 0.2, "gen_gap": 0.1, "num_params": 100})
    _write(run / "seed1" / "metrics.json", {"status": "completed", "test_error": 0.3, "gen_gap": 0.1, "num_params": 100})
    _write(tmp_path / "runs" / "scaling" / "rl" / "seed0" / "metrics.json", {"status": "completed", "test_error": 0.9})
    _write(tmp_path / "measure" / "scaling" / "w8_d1" / "seeds" / "seed0" / "curvature.json",
           {"status": "measured", "trace": 50.0, "lambda_max": 5.0, "operator": {"num_params": 100},
            "noise": {"stable_rank_gradients": 4.0, "energy_rank_90": 7}})
    rows = run_phi_table(tmp_path, experiments, [0, 1], {"m": 20})
    assert [(r["config"], r["seed"]) for r in rows] == [("w8_d1", 0), ("w8_d1", 1)]  # random labels left out
    assert rows[0]["phi"] == pytest.approx(50 / 100 / 5 * 4 / 20) and rows[0]["phi_status"] == "ok"
    assert math.isnan(rows[1]["phi"]) and rows[1]["phi_status"] == "input missing"
    energy = run_phi_table(tmp_path, experiments, [0], {"m": 20}, rank_kind="energy90")
    assert energy[0]["phi"] == pytest.approx(50 / 100 / 5 * 7 / 20)
