"""The probe stage's trajectory probe on real (tiny) runs: prepare and train as the stages do
(scikit-learn's 8x8 digits, an 8-unit MLP, 4 epochs), then probe the path of seed 0 from the
run's stored snapshots and from a retraining, which must reproduce the run bit for bit."""

from __future__ import annotations

import copy
import hashlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from landscape.io import read_json
from landscape.pipeline import prepare, probe, train
from landscape.pipeline.layout import Layout
from landscape.pipeline.probe_settings import TrajectorySettings
from landscape.pipeline.runs import load_run
from landscape.schema import ConfigError

EPOCHS = 4
OFF = {"configs": []}
PARAMS = {
    "seeds": [0, 1],
    "datasets": {"digits8": {"name": "digits", "test_fraction": 0.2, "probe_size": 200, "split_seed": 0, "normalize": True}},
    "experiments": {"h1": {"dataset": "digits8", "configs": {
        # a keeps a snapshot after every epoch, b none
        "a": {"model": {"name": "mlp", "width": 8, "depth": 1}, "train": {"epochs": EPOCHS, "batch_size": 128, "snapshot_every": 1}},
        "b": {"model": {"name": "mlp", "width": 8, "depth": 1}, "train": {"epochs": EPOCHS, "batch_size": 128}},
    }}},
    "probes": {"h1": {
        "configs": ["a", "b"], "num_examples": 200, "test_examples": 100, "batch_size": 200,
        "barriers": OFF, "bezier": OFF, "scans": OFF, "sharpness": OFF, "invariance": OFF,
        "trajectory": {"configs": "all", "plane_points": 5, "source": "auto", "min_stored": 10},
    }},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    layout = Layout(tmp_path_factory.mktemp("repo"))
    prepare.run(PARAMS, layout, "digits8")
    for config in ("a", "b"):
        for seed in PARAMS["seeds"]:
            train.run(PARAMS, layout, "h1", config, seed)
    return layout


def _with(**trajectory):
    params = copy.deepcopy(PARAMS)
    params["probes"]["h1"]["trajectory"].update(trajectory)
    return params


def _digest(layout: Layout, config: str) -> dict[str, str]:
    root = layout.config_runs("h1", config)
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.pt"))}


def test_retrained_path_reproduces_the_run_and_its_stored_snapshots(trained):
    layout = trained
    before = _digest(layout, "a")
    retrained = probe.run(_with(source="retrain"), layout, "h1", "a").results["trajectory"]
    stored = probe.run(_with(source="stored"), layout, "h1", "a").results["trajectory"]
    assert _digest(layout, "a") == before  # the runs are only read
    assert list(retrained["seeds"]) == ["seed0"]  # num_seeds: 1
    r, s = retrained["seeds"]["seed0"], stored["seeds"]["seed0"]
    assert r["status"] == s["status"] == "done" and r["source"] == "retrained" and s["source"] == "stored"
    assert r["retrain"]["reproduces_run"] is True and r["retrain"]["distance_to_run"] == 0.0
    assert r["retrain"]["state_hash"] == read_json(layout.run("h1", "a", 0).metrics)["state_hash"]
    assert r["labels"] == ["init"] + [f"epoch {e}" for e in range(1, EPOCHS + 1)]
    assert s["labels"] == [f"epoch {e}" for e in range(EPOCHS + 1)] and s["stored_snapshots"] == EPOCHS + 1  # the last is the final
    # the same path, snapshot by snapshot: the same plane, coordinates and surface
    for key in ("explained_variance_ratio", "singular_values", "coords", "residuals", "distances", "path_losses", "projected_losses"):
        assert r[key] == s[key], key
    assert r["num_snapshots"] == EPOCHS + 1 and r["coords"][-1] == [0.0, 0.0]
    assert 0 < r["explained_variance_ratio"][1] <= r["explained_variance_ratio"][0]
    assert r["plane_fraction"] == pytest.approx(sum(r["explained_variance_ratio"]), rel=1e-12)  # unnormalised: the PCA plane
    # the path's last loss is the run's loss on the probe subset
    run = load_run(layout, "h1", "a", 0)
    x, y = torch.load(layout.prepared("digits8"), weights_only=False)["probe"]
    with torch.no_grad():
        final_loss = F.cross_entropy(run.model.eval()(x[:200]), y[:200]).item()
    assert r["path_losses"][-1] == pytest.approx(final_loss, rel=1e-5)
    assert r["path_losses"][-1] < 0.75 * r["path_losses"][0]  # training went downhill (measured: 2.76 -> 1.58)
    # stage outputs: the figure the results name, the arrays, the headline numbers
    png = layout.probe_figure("h1", "a", r["figure"])
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    arrays = np.load(layout.probe_arrays("h1", "a"))
    assert arrays["trajectory.seed0.loss"].shape == (5, 5) and arrays["trajectory.seed0.coords"].shape == (EPOCHS + 1, 2)
    head = read_json(layout.probe_metrics("h1", "a"))["trajectory"]["seed0"]
    assert head["pc1"] == s["explained_variance_ratio"][0] and head["source"] == "stored"
    assert read_json(layout.probe_results("h1", "a"))["trajectory"]["settings"]["source"] == "stored"


def test_auto_takes_stored_snapshots_only_when_the_run_kept_enough(trained):
    layout = trained
    a = probe.run(_with(source="auto", min_stored=10), layout, "h1", "a").results["trajectory"]["seeds"]["seed0"]
    assert a["source"] == "retrained" and a["stored_snapshots"] == EPOCHS + 1  # 5 files + final = 6 < 10
    a = probe.run(_with(source="auto", min_stored=6), layout, "h1", "a").results["trajectory"]["seeds"]["seed0"]
    assert a["source"] == "stored"
    b = probe.run(_with(source="auto", min_stored=3), layout, "h1", "b").results["trajectory"]["seeds"]["seed0"]
    assert b["source"] == "retrained" and b["stored_snapshots"] == 0 and b["retrain"]["reproduces_run"] is True
    b = probe.run(_with(source="stored"), layout, "h1", "b").results["trajectory"]["seeds"]["seed0"]
    assert b["status"].startswith("skipped: 1 snapshots (a plane needs 3)")
    assert not layout.probe_figure("h1", "b", "trajectory_seed0").exists()  # no stale figure of an earlier run


def test_filter_normalised_plane_and_bad_settings(trained):
    layout = trained
    plain = probe.run(_with(source="stored"), layout, "h1", "a").results["trajectory"]["seeds"]["seed0"]
    filt = probe.run(_with(source="stored", normalization="filter", bias_policy="zero"), layout, "h1", "a").results["trajectory"]
    f = filt["seeds"]["seed0"]
    assert f["normalization"] == "filter" and f["explained_variance_ratio"] == plain["explained_variance_ratio"]
    assert f["plane_fraction"] < f["pca_plane_fraction"] == plain["plane_fraction"]  # another plane, holding less of the path
    with pytest.raises(ConfigError, match=r"TrajectorySettings.source='best' is not allowed; allowed: one of \['auto', 'stored', 'retrain'\]"):
        TrajectorySettings(source="best")
    with pytest.raises(ConfigError, match=r"probes.h1.trajectory.min_stored=2 is not allowed; allowed: an int >= 3"):
        probe.run(_with(min_stored=2), layout, "h1", "a")
    with pytest.raises(ConfigError, match=r"probes.h1.trajectory.normalization='pca' is not allowed"):
        probe.run(_with(normalization="pca"), layout, "h1", "a")
