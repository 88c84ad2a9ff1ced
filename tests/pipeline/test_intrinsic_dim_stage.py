"""Tests of landscape.pipeline.intrinsic_dim: the stage's settings, the toy task of known
intrinsic dimension against an exact least-squares reference, and the model task."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from probe_helpers import classification_batches

from landscape.models import build_model
from landscape.pipeline.cli import StageError
from landscape.pipeline.intrinsic_dim import ChunkSumToy, IntrinsicDimConfig, ToyTaskSettings, run, run_intrinsic_dim
from landscape.pipeline.layout import Layout
from landscape.probes.intrinsic_dim import make_projection, search_intrinsic_dim
from landscape.schema import ConfigError, parse_config

MLP_SPEC = {"name": "mlp", "width": 6, "depth": 2, "activation": "relu", "norm": "none"}


def test_settings_built_in_code_are_validated_too():
    with pytest.raises(ConfigError, match=r"num_params=100 must be a multiple of num_constraints=3"):
        ToyTaskSettings(num_params=100, num_constraints=3)
    with pytest.raises(ConfigError, match=r"probes.intrinsic_dim.seeds=\[0\] is not allowed; allowed: a list of >= 2 distinct ints"):
        parse_config(IntrinsicDimConfig, {"seeds": [0]}, "probes.intrinsic_dim")
    with pytest.raises(ConfigError, match=r"projections=.*allowed: a non-empty list of \['dense', 'sparse'\]"):
        parse_config(IntrinsicDimConfig, {"projections": ["identity"]}, "probes.intrinsic_dim")


def test_chunk_sum_toy_loss_and_errors():
    toy = ChunkSumToy(12, 3, seed=0)
    theta = torch.arange(12, dtype=torch.float64)
    sums = torch.tensor([0 + 1 + 2 + 3, 4 + 5 + 6 + 7, 8 + 9 + 10 + 11], dtype=torch.float64)
    assert float(toy.loss_at(theta)) == pytest.approx(float(((sums - torch.tensor([1.0, 2.0, 3.0])) ** 2).sum()))
    assert toy(torch.zeros(2, 1)).shape == (2, 3)
    with pytest.raises(ValueError, match="num_params=10 must be a multiple of num_constraints=3"):
        ChunkSumToy(10, 3, seed=0)


def _toy_reference_d_int(num_params: int, m: int, seed: int, kind: str, d_max: int, threshold: float = 0.9) -> float:
    """d_int of the toy with the subspace problem solved exactly (least squares on A P z = r):
    what the search must find when training converges."""
    A = torch.zeros(m, num_params, dtype=torch.float64)
    for k in range(m):
        A[k, k * (num_params // m) : (k + 1) * (num_params // m)] = 1.0
    toy = ChunkSumToy(num_params, m, seed)
    r = toy.targets()[0] - A @ toy.theta.detach()

    def perf(d: int) -> float:
        P = make_projection(num_params, d, kind=kind, seed=seed, dtype=torch.float64).matrix
        AP = A @ (P.to_dense() if P.is_sparse else P)
        z = torch.linalg.lstsq(AP, r[:, None]).solution[:, 0]
        return math.exp(-float(((AP @ z - r) ** 2).sum()))

    return search_intrinsic_dim(perf, 1.0, threshold=threshold, d_min=1, d_max=d_max).d_int


def test_toy_intrinsic_dimension_matches_the_exact_least_squares_reference():
    cfg = parse_config(
        IntrinsicDimConfig,
        {"seeds": [0, 1, 2], "num_bootstrap": 200,
         "toy": {"num_params": 120, "num_constraints": 3, "steps": 250, "d_max": 6},
         "model": {"enabled": False}},
        "probes.intrinsic_dim",
    )
    report = run_intrinsic_dim(cfg)
    for proj in ("dense", "sparse"):
        ci = report.results["toy"][proj]
        reference = [_toy_reference_d_int(120, 3, seed, proj, 6) for seed in (0, 1, 2)]
        assert ci["values"] == reference
        assert all(v >= 2 for v in reference) and reference.count(3.0) >= 2  # d < 3 passes only by a small residual
        assert ci["ci_low"] <= ci["mean"] <= ci["ci_high"] and ci["mean"] == pytest.approx(np.mean(reference))
        assert report.summary[f"toy.{proj}"]["known"] == 3
    assert sorted(report.figures()) == ["intrinsic_dim_toy"]


def test_model_task_uses_identity_baseline_and_reports_ordered_interval():
    batches = classification_batches(n=128, d_in=3, classes=3, batch=128, seed=0)
    x, y = batches[0]
    cfg = parse_config(
        IntrinsicDimConfig,
        {"seeds": [0, 1], "projections": ["dense"], "num_bootstrap": 100, "toy": {"enabled": False},
         "model": {"dataset": "toy", "model": MLP_SPEC, "train_examples": 96, "eval_examples": 32, "batch_size": 32,
                   "epochs": 8, "lr": 0.05, "d_min": 2, "d_max": 400}},
        "probes.intrinsic_dim",
    )

    def factory(seed: int) -> torch.nn.Module:
        return build_model("mlp", num_classes=3, in_features=3, seed=seed, width=6, depth=2).double()

    report = run_intrinsic_dim(cfg, model_factory=factory, train_data=(x[:96], y[:96]), eval_data=(x[96:], y[96:]))
    task = report.results["model"]
    assert task["num_params"] == 87 and task["d_max_used"] == 87  # capped at D
    assert task["baseline"] == pytest.approx(np.mean(list(task["baselines"].values())))
    ci = task["dense"]
    reached = [v for v in ci["values"] if v is not None]
    assert all(2 <= v <= 87 for v in reached)
    for s in ci["searches"]:  # the reported d_int is the smallest evaluated d that passes
        passing = [d for d, p in zip(s["dims"], s["performances"]) if p >= s["target"]]
        assert (s["d_int"] is None and not passing) or s["d_int"] == min(passing)
    if reached:
        assert ci["ci_low"] <= ci["mean"] <= ci["ci_high"]
    with pytest.raises(ValueError, match="the model task is enabled: pass model_factory, train_data and eval_data"):
        run_intrinsic_dim(cfg)


def test_stage_run_needs_the_prepared_data_of_the_model_task(tmp_path):
    params = {"datasets": {"digits8": {"name": "digits"}}, "probes": {"intrinsic_dim": {"model": {"dataset": "digits8"}}}}
    missing = Layout(tmp_path).prepared("digits8")
    with pytest.raises(StageError, match=rf"prepared data {missing} is missing; run `dvc repro prepare@digits8` first"):
        run(params, Layout(tmp_path))
    with pytest.raises(ConfigError, match=r"missing key datasets.mnist14 in params.yaml"):
        run({**params, "probes": {"intrinsic_dim": {}}}, Layout(tmp_path))
