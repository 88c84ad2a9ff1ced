"""The eos stage end to end on a tiny setting: outputs, metrics against the trajectories,
and its settings' errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from landscape.dynamics.eos import stability_threshold
from landscape.models import build_model
from landscape.pipeline import eos, prepare
from landscape.pipeline.cli import StageError
from landscape.pipeline.layout import Layout
from landscape.schema import ConfigError, parse_config
from landscape.stats.intervals import batch_means

DATASETS = {"digits8": {"name": "digits", "test_fraction": 0.2, "probe_size": 200, "split_seed": 0, "normalize": True}}
TINY = {"dataset": "digits8", "num_examples": 200, "model": {"name": "mlp", "width": 16, "depth": 2, "activation": "tanh", "norm": "none",
        "init_scale": 0.2}, "loss": "mse", "lrs": [0.5, 1.0], "steps": 300, "eig_every": 5, "eig_tol": 0.01, "eig_matvecs": 10,
        "dtype": "float64", "min_points": 20, "num_batches": 10}


@pytest.mark.parametrize(
    "over, match",
    [({"lrs": []}, r"eos.lrs=\[\] is not allowed; allowed: a non-empty list of distinct numbers > 0"),
     ({"momentum": 1.0}, r"eos.momentum=1.0 is not allowed; allowed: a number in \[0, 1\)"),
     ({"loss": "hinge"}, r"eos.loss='hinge' is not allowed; allowed: one of \['mse', 'cross_entropy'\]"),
     ({"min_points": 10}, r"eos.min_points=10 must be >= 2 \* eos.num_batches = 20"),
     ({"steps_per_lr": 3}, r"unknown key eos.steps_per_lr")],
)
def test_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(eos.EosConfig, {**TINY, **over}, "eos")


def test_square_loss_is_half_the_summed_squared_error_against_one_hot_targets():
    out = torch.tensor([[0.5, -1.0, 2.0], [0.0, 0.0, 0.0]], dtype=torch.float64)
    y = torch.tensor([2, 0])
    assert float(eos.square_loss(out, y)) == pytest.approx(0.5 * ((0.25 + 1.0 + 1.0) + 1.0) / 2, rel=1e-15)


def test_stage_writes_trajectories_and_plateau_metrics(tmp_path):
    layout = Layout(tmp_path)
    params = {"datasets": DATASETS, "eos": TINY}
    with pytest.raises(StageError, match=r"prepared data .* is missing; run `dvc repro prepare@digits8` first"):
        eos.run(params, layout)
    prepare.run(params, layout, "digits8")
    report = eos.run(params, layout)
    results = json.loads((layout.eos_dir / "results.json").read_text())
    metrics = json.loads(layout.eos_metrics.read_text())
    assert (layout.eos_dir / "figures" / "eos.png").stat().st_size > 0
    assert json.loads((layout.eos_dir / "config.json").read_text())["lrs"] == [0.5, 1.0]
    # the first loss is that of the seeded network on the first 200 training examples
    x, y = torch.load(layout.prepared("digits8"), weights_only=False)["train"]
    assert tuple(x.shape[1:]) == (1, 8, 8)
    model = build_model("mlp", num_classes=10, in_chans=1, img_size=8, width=16, depth=2, activation="tanh", norm="none",
                        init_scale=0.2, seed=0).to(torch.float64)
    with torch.no_grad():
        l0 = float(eos.square_loss(model(x[:200].to(torch.float64)), y[:200]))
    assert set(metrics["per_lr"]) == {"lr=0.5", "lr=1"}
    for run, lr in zip(results["runs"], (0.5, 1.0), strict=True):
        traj, m = run["trajectory"], metrics["per_lr"][f"lr={lr:g}"]
        assert traj["losses"][0] == pytest.approx(l0, rel=1e-12)
        assert traj["threshold"] == m["threshold"] == stability_threshold(lr)
        assert traj["sharpness_steps"][:3] == [0, 5, 10] and len(traj["losses"]) == traj["steps_run"] + 1
        if m["status"] == "plateau":  # the metrics restate the batch-means interval of the window from the onset
            steps = np.asarray(traj["sharpness_steps"])
            window = np.asarray(traj["sharpness"])[steps >= m["onset_step"]] / m["threshold"]
            iv = batch_means(window, 0.95, 10)
            assert m["ratio"] == pytest.approx(iv.mean, rel=1e-12) and m["ratio_ci"] == pytest.approx([iv.low, iv.high], rel=1e-12)
            assert m["plateau_points"] == window.size
    assert metrics["at_edge"] == sum(a.status == "plateau" for a in report.analyses)
