"""Table readers: paths from the layout, missing inputs named with the stage that writes them,
rows in the order of the artifact tree."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from landscape.pipeline.layout import Layout
from landscape.pipeline.tables import (
    bounds_files,
    curvature_files,
    data_dims,
    gradient_noise_runs,
    logged_curves,
    require,
    run_metrics,
    scaling_runs,
)
from landscape.schema import ConfigError

EXPERIMENTS = {"b": {"dataset": "d", "configs": {"x": {"train": {"batch_size": 8}}, "a": {"train": {"batch_size": 32}}}},
               "a": {"dataset": "d", "configs": {"y": {}}}}


def _write(path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def test_require_names_the_path_and_the_stage(tmp_path):
    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"hypotheses/results\.json is missing; it is written by the 'hypotheses' stage"):
        require(layout.results("hypotheses"), "hypotheses")
    _write(layout.results("hypotheses"), {})
    assert require(layout.results("hypotheses"), "hypotheses") == tmp_path / "hypotheses" / "results.json"
    with pytest.raises(ValueError, match="unknown study 'nope'"):
        layout.results("nope")


def test_bounds_files_read_what_the_bounds_stage_writes(tmp_path):
    layout = Layout(tmp_path)
    for run in ("h1/b32", "sanity/rl"):
        for seed in (0, 1):
            _write(tmp_path / "bounds" / "runs" / run / f"seed{seed}" / "bounds.json", {"status": "bounded"})
    found = bounds_files(layout, ["sanity/rl", "h1/b32"], [1, 0])
    assert [(r, s) for r, s, _ in found] == [("h1/b32", 0), ("h1/b32", 1), ("sanity/rl", 0), ("sanity/rl", 1)]
    assert found[0][2] == layout.bounds_run("h1", "b32", 0) and found[0][2].is_file()
    (tmp_path / "bounds" / "runs" / "sanity" / "rl" / "seed1" / "bounds.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"bounds/runs/sanity/rl/seed1/bounds\.json is missing; it is written by the 'bounds' stage"):
        bounds_files(layout, ["sanity/rl"], [0, 1])


def test_runs_and_curvature_files_in_tree_order_only_for_params_configs(tmp_path):
    layout = Layout(tmp_path)
    for exp, cfg in (("b", "x"), ("b", "a"), ("a", "y"), ("stale", "z")):
        for seed in (0, 1):
            _write(layout.run(exp, cfg, seed).metrics, {"status": "completed", "test_error": 0.1 * seed})
            _write(layout.curvature(exp, cfg, seed), {"status": "measured"})
    runs = run_metrics(layout, EXPERIMENTS, [1, 0])
    assert list(zip(runs.experiment, runs.config, runs.seed)) == [("a", "y", 0), ("a", "y", 1), ("b", "a", 0), ("b", "a", 1), ("b", "x", 0), ("b", "x", 1)]
    assert runs.test_error.tolist() == pytest.approx([0.0, 0.1] * 3)
    files = curvature_files(layout, EXPERIMENTS, [0, 1])
    assert [f[:3] for f in files] == list(zip(runs.experiment, runs.config, runs.seed))
    assert all(f[3] == layout.curvature(*f[:3]) for f in files)


def test_logged_curves_long_format(tmp_path):
    layout = Layout(tmp_path)
    logs = layout.run("b", "x", 0).logged_metrics
    logs.mkdir(parents=True)
    (logs / "test_error.tsv").write_text("step\ttest_error\n0\t0.5\n1\t0.25\n")
    (logs / "train_loss.tsv").write_text("step\ttrain_loss\n")  # an empty log adds no rows
    curves = logged_curves(layout, [("b", "x", 0), ("b", "a", 0)])
    assert list(curves.columns) == ["step", "value", "metric", "experiment", "config", "seed"]
    assert curves.value.tolist() == [0.5, 0.25] and set(curves.metric) == {"test_error"}
    assert logged_curves(layout, []).empty


def test_scaling_and_gradient_tables(tmp_path):
    layout = Layout(tmp_path)
    configs = {"w8": {"model": {"width": 8, "depth": 2}}}
    _write(layout.curvature("s", "w8", 0), {"status": "measured", "lambda_max": 3.0, "spectral_norm": 3.0, "trace": "9",
                                           "at_init": {"lambda_max": 1.0, "spectral_norm": 2.5, "rmt": {"status": "ok", "bulk_sigma": 0.5, "outlier_count": 4,
                                                                                  "outlier_count_is_lower_bound": True}}})
    rows = scaling_runs(layout, "s", configs, [0, 1])
    assert len(rows) == 1 and rows.iloc[0]["trained.trace"] == 9.0 and rows.iloc[0]["at_init.bulk_sigma2"] == 0.25
    assert rows.iloc[0]["at_init.spectral_norm"] == 2.5 and rows.iloc[0]["at_init.lambda_max"] == 1.0
    assert pd.isna(rows.iloc[0]["at_init.outlier_count"]) and pd.isna(rows.iloc[0]["at_init.trace"])
    with pytest.raises(ConfigError, match=r"experiments\.s\.configs\.w8\.model needs width and depth"):
        scaling_runs(layout, "s", {"w8": {"model": {"width": 8}}}, [0])
    _write(layout.curvature("b", "x", 0), {"noise": {"energy_rank_90": 5, "diag_correlation": {"pearson_covariance": 0.3, "num_params": 7}}})
    noise = gradient_noise_runs(layout, "b", EXPERIMENTS["b"]["configs"], [0, 1])
    assert noise[["config", "batch_size", "energy_rank_90", "num_params"]].values.tolist() == [["x", 8.0, 5.0, 7]]


def test_data_dims_from_prepared_meta(tmp_path):
    layout = Layout(tmp_path)
    _write(layout.prepared_meta("d"), {"input_shape": [1, 8, 8]})
    assert data_dims(layout, {**EXPERIMENTS, "c": {"dataset": "missing", "configs": {}}}) == {"d": 64}
