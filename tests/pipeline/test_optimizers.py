"""The optimizers stage: its runs read from a synthetic runs/ tree (metrics.json and DVCLive
logs), divergence counted and listed, a missing run an error, and settings errors that name
the key and the value."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from landscape.pipeline.layout import Layout
from landscape.pipeline.optimizers import OptimizersConfig, compare_optimizers
from landscape.pipeline.tables import optimizer_runs
from landscape.schema import ConfigError, parse_config
from landscape.stats.optimizers import headline

LEVELS = {"normal": ["sgd_n", "cadapt_n"], "large": ["sgd_l", "cadapt_l"]}
CONFIGS = {
    "sgd_n": {"model": {"name": "mlp"}, "train": {"optimizer": "sgd", "lr": 0.05}},
    "cadapt_n": {"model": {"name": "mlp"}, "train": {"optimizer": "curvature_adaptive", "lr": 0.05, "curvature_gamma": 0.1}},
    "sgd_l": {"model": {"name": "mlp"}, "train": {"optimizer": "sgd", "lr": 0.4}},
    "cadapt_l": {"model": {"name": "mlp"}, "train": {"optimizer": "curvature_adaptive", "lr": 0.4, "curvature_gamma": 0.1}},
}
SETTINGS = OptimizersConfig(levels=LEVELS, comparisons=(("curvature_adaptive", "sgd"),), alpha=0.05, ci_level=0.95, min_pairs=3)



def _write_run(root: Path, cfg: str, seed: int, status: str, test_error: float, epochs: int, hvps_per_epoch: int) -> None:
    paths = Layout(root).run("opt", cfg, seed)
    run, logs = paths.dir, paths.logged_metrics
    logs.mkdir(parents=True)
    m = {"status": status, "steps": 10 * epochs, "epochs_completed": epochs, "diverged_step": 10 * epochs + 3 if status == "diverged" else None}
    if status == "completed":
        m["test_error"] = test_error
    (run / "metrics.json").write_text(json.dumps(m))
    if epochs == 0:
        return
    steps = range(epochs)
    (logs / "test_error.tsv").write_text("step\ttest_error\n" + "".join(f"{s}\t{test_error + 0.1 * (epochs - s)}\n" for s in steps))
    (logs / "train_loss.tsv").write_text("step\ttrain_loss\n" + "".join(f"{s}\t{1.0 / (s + 1)}\n" for s in steps))
    (logs / "epoch_time_s.tsv").write_text("step\tepoch_time_s\n" + "".join(f"{s}\t0.5\n" for s in steps))
    if hvps_per_epoch:
        (logs / "hvps_total.tsv").write_text("step\thvps_total\n" + "".join(f"{s}\t{hvps_per_epoch * (s + 1)}\n" for s in steps))


def test_stage_function_reads_runs_and_counts_divergence(tmp_path):
    rng = np.random.default_rng(5)
    base = 0.1 + rng.normal(0, 0.01, 5)
    for seed in range(5):
        _write_run(tmp_path, "sgd_n", seed, "completed", base[seed], 3, 0)
        _write_run(tmp_path, "cadapt_n", seed, "completed", base[seed] - 0.03 + rng.normal(0, 0.002), 3, 9)
        div = seed in (0, 3)
        _write_run(tmp_path, "sgd_l", seed, "diverged" if div else "completed", base[seed] + 0.05, 1 if seed == 3 else (0 if div else 3), 0)
        _write_run(tmp_path, "cadapt_l", seed, "completed", base[seed], 3, 9)
    res = compare_optimizers(Layout(tmp_path), "opt", CONFIGS, list(range(5)), SETTINGS)
    table = {r["config"]: r for r in res["table"]}
    assert table["sgd_l"]["n_diverged"] == 2 and table["sgd_l"]["diverged_seeds"] == [0, 3] and table["sgd_l"]["test_error_n"] == 3
    assert table["cadapt_n"]["hvps_mean"] == 27 and table["sgd_n"]["hvps_mean"] == 0 and table["cadapt_n"]["hvps_per_step"] == pytest.approx(0.9)
    assert table["sgd_n"]["seconds_mean"] == pytest.approx(1.5) and table["sgd_n"]["seconds_n"] == 5
    errors = {e["name"]: e for e in res["test_error"]}
    normal = errors["test_error[curvature_adaptive vs sgd, normal]"]
    assert normal["status"] == "tested" and normal["supported"] and normal["effect"] < 0
    assert normal["ci_low"] <= -0.03 <= normal["ci_high"] and normal["extra"]["holm_family_size"] == 2
    assert errors["test_error[curvature_adaptive vs sgd, large]"]["n_runs"] == 3
    curve = [c for c in res["curves"] if c["config"] == "sgd_l" and c["metric"] == "test_error"]
    assert [c["n"] for c in curve] == [4, 3, 3]  # seed 0 logged no epoch, seed 3 one epoch
    flat = headline(res)
    assert flat["configs"]["sgd_l"]["n_diverged"] == 2 and flat["comparisons"]["divergence[curvature_adaptive vs sgd, large]"]["tested"]


def test_missing_run_is_an_error_not_a_gap(tmp_path):
    _write_run(tmp_path, "sgd_n", 0, "completed", 0.1, 2, 0)
    assignment = SETTINGS.assign(CONFIGS)
    with pytest.raises(FileNotFoundError, match=r"run opt/sgd_n/seed1 has no"):
        optimizer_runs(Layout(tmp_path), "opt", {"sgd_n": assignment["sgd_n"]}, [0, 1])


# ------------------------------------------------------------------ settings


@pytest.mark.parametrize(
    "kwargs, configs, match",
    [
        ({"levels": {}}, CONFIGS, r"optimizers\.levels=\{\} is not allowed"),
        ({"levels": {"a": ["sgd_n"], "b": ["sgd_n"]}}, CONFIGS, r"lists a config twice"),
        ({"comparisons": [["sgd", "sgd"]]}, CONFIGS, r"optimizers\.comparisons=\[\['sgd', 'sgd'\]\] is not allowed"),
        ({"alpha": 1.5}, CONFIGS, r"optimizers\.alpha=1\.5 is not allowed; allowed: a float in \(0, 1\)"),
        ({"min_pairs": 1}, CONFIGS, r"optimizers\.min_pairs=1 is not allowed"),
        ({"levels": {**LEVELS, "x": ["nope"]}}, CONFIGS, r"optimizers\.levels names 'nope', not a key of"),
        ({}, {**CONFIGS, "extra": CONFIGS["sgd_n"]}, r"experiments\.optimizers\.configs\.extra is in no optimizers\.levels entry"),
        ({"levels": {"normal": ["sgd_n", "sgd_l"], "large": ["cadapt_n", "cadapt_l"]}}, CONFIGS, r"two configs with optimizer 'sgd'"),
        ({"comparisons": [["hybrid", "sgd"]]}, CONFIGS, r"needs optimizer 'hybrid' at level 'normal'"),
    ],
)
def test_bad_settings_name_key_and_value(kwargs, configs, match):
    with pytest.raises(ConfigError, match=match):
        cfg = parse_config(OptimizersConfig, {"levels": LEVELS, "comparisons": [["curvature_adaptive", "sgd"]], **kwargs}, "optimizers")
        cfg.assign(configs)
