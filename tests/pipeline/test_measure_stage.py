"""The measure stage's execution paths give the same curvature: forked CPU workers (any count)
and ``torchrun`` ranks (2 gloo processes, the probe batches sharded) against one process, in
float64; the precision and the runtime settings are recorded."""

from __future__ import annotations

import math
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from landscape.io import read_json, torch_save, write_json
from landscape.models import build_model
from landscape.pipeline import measure
from landscape.pipeline.layout import Layout
from landscape.training.checkpoint import save_snapshot

SPEC = {"name": "mlp", "width": 6, "depth": 2, "norm": "bn"}
KWARGS = {"num_classes": 3, "in_features": 4}
CURVATURE = {"num_examples": 40, "batch_size": 10, "at_init": True, "top_k": 4, "bottom_k": 2, "eig_tol": 1e-6, "trace_matvecs": 12,
             "slq_probes": 2, "slq_steps": 10, "per_layer": True, "per_layer_matvecs": 4, "noise_examples": 16,
             "diag_probes": 4, "along_training_matvecs": 8, "dtype": "float64"}
PARAMS = {
    "seeds": [0, 1, 2],
    "datasets": {"toy": {"name": "gaussian_mixture"}},
    "experiments": {"exp": {"dataset": "toy", "configs": {"a": {"model": SPEC, "train": {}}}}},
    "curvature": {"exp": CURVATURE},
}


def _write_inputs(layout: Layout) -> None:
    """A prepared data set, two completed runs (seed 0 with a training snapshot) and a diverged one."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(60, 4, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
    torch_save(layout.prepared("toy"), {"probe": (x, y), "train": (x, y), "test": (x, y), "num_classes": 3})
    for seed in (0, 1):
        paths = layout.run("exp", "a", seed)
        model = build_model("mlp", seed=seed + 10, **KWARGS, **{k: v for k, v in SPEC.items() if k != "name"})
        with torch.no_grad():  # non-trivial running statistics, so eval-mode BN is not the identity
            for m in model.modules():
                if isinstance(m, torch.nn.BatchNorm1d):
                    m.running_mean.uniform_(-0.5, 0.5, generator=g)
                    m.running_var.uniform_(0.5, 2.0, generator=g)
        write_json(paths.metrics, {"status": "completed"})
        torch_save(paths.model, {"model": dict(SPEC), "model_kwargs": dict(KWARGS), "state_dict": model.state_dict()})
        if seed == 0:
            paths.checkpoints.mkdir(parents=True, exist_ok=True)
            save_snapshot(paths.checkpoints, 1, {k: v * 0.9 if v.is_floating_point() else v for k, v in model.state_dict().items()})
    write_json(layout.run("exp", "a", 2).metrics, {"status": "diverged"})


def _figures(summary: dict) -> dict[str, float]:
    """Every curvature number of a seed's curvature.json (no timings)."""
    out = {f"eig{i}": v for i, v in enumerate(summary["eigenvalues"]["values"])}
    out |= {k: summary[k] for k in ("trace", "trace_stderr", "logdet", "logdet_stderr", "logdet_curvature", "lambda_min", "spectral_norm")}
    out |= {f"bottom{i}": v for i, v in enumerate(summary["bottom_eigenvalues"]["values"])}
    out |= {f"negative_{k}": summary["negative_mass"][k] for k in ("below_zero", "below_minus_tau")}
    out |= {f"density_moment{i}": v for i, v in enumerate(summary["density"]["moments"])}
    out |= {f"layer_{d['name']}_{k}": d[k] for d in summary["per_layer"] for k in ("lambda_max", "trace")}
    out |= {f"init_{k}": summary["at_init"][k] for k in ("lambda_max", "lambda_min", "spectral_norm", "trace", "logdet", "logdet_curvature")}
    out |= {f"along{d['epoch']}_{k}": d[k] for d in summary.get("along_training", []) for k in ("lambda_max", "trace")}
    out |= {f"noise_{k}": summary["noise"][k] for k in ("kappa", "trace_sigma")}
    return out


def _close(a: dict[str, float], b: dict[str, float], rtol: float) -> list[str]:
    assert a.keys() == b.keys()
    return [k for k in a if not (math.isclose(a[k], b[k], rel_tol=rtol, abs_tol=rtol) or (math.isnan(a[k]) and math.isnan(b[k])))]


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    layout = Layout(tmp_path_factory.mktemp("single"))
    _write_inputs(layout)
    os.environ["LANDSCAPE_WORKERS"] = "1"
    try:
        measure.run(PARAMS, layout, "exp", "a")
    finally:
        del os.environ["LANDSCAPE_WORKERS"]
    return layout


def test_single_process_records_precision_runtime_and_skips(single):
    summary = read_json(single.curvature("exp", "a", 0))
    assert summary["dtype"] == "float64" and summary["settings"]["dtype"] == "float64"
    rt = summary["runtime"]
    assert rt["deterministic_algorithms"] is True and rt["cudnn_benchmark"] is False and rt["tf32_matmul"] is False
    assert rt["device"] == "cpu" and rt["world_size"] == 1 and rt["threads"] >= 1
    assert read_json(single.curvature("exp", "a", 2)) == {"status": "skipped: run diverged"}
    metrics = read_json(single.measure_dir("exp", "a") / "metrics.json")
    assert metrics["seeds_measured"] == 2 and metrics["dtype"] == "float64"
    assert metrics["spectral_norm"]["n"] == 2 and metrics["logdet_curvature"]["n"] == 2 and metrics["lambda_min"]["n"] == 2
    for s in (summary, summary["at_init"]):  # both ends, at init as after training
        assert s["spectral_norm"] == max(abs(s["lambda_max"]), abs(s["lambda_min"])) and s["spectral_norm_end"] in ("top", "bottom")
        assert s["logdet_curvature"] == pytest.approx(s["logdet"] - summary["operator"]["num_params"] * math.log(s["logdet_eps"]))
    assert metrics["runtime"]["devices"] == ["cpu"] and metrics["runtime"]["world_size"] == 1
    assert [d["epoch"] for d in summary["along_training"]] == [1] and "along_training" not in read_json(single.curvature("exp", "a", 1))
    assert torch.load(single.krylov("exp", "a", 0), weights_only=False)["ritz_values"].dtype == torch.float64


def test_results_do_not_depend_on_the_worker_count(single, tmp_path, monkeypatch):
    layout = Layout(tmp_path)
    _write_inputs(layout)
    monkeypatch.setenv("LANDSCAPE_WORKERS", "2")
    measure.run(PARAMS, layout, "exp", "a")
    for seed in (0, 1):
        assert _figures(read_json(layout.curvature("exp", "a", seed))) == _figures(read_json(single.curvature("exp", "a", seed)))


def _rank(rank: int, world: int, port: int, root: str) -> None:
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), LANDSCAPE_THREADS="1")
    measure.run(PARAMS, Layout(Path(root)), "exp", "a")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_two_gloo_ranks_give_the_single_process_results(single, tmp_path):
    """WORLD_SIZE=2: each rank multiplies with half of the 4 probe batches, products all-reduced;
    top eigenvalues, trace, SLQ, per-layer, at-init and along-training figures agree with
    the single process within 1e-10 (float64). Only rank 0 writes."""
    layout = Layout(tmp_path)
    _write_inputs(layout)
    mp.spawn(_rank, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for seed in (0, 1):
        dist_summary = read_json(layout.curvature("exp", "a", seed))
        assert dist_summary["runtime"]["world_size"] == 2 and dist_summary["operator"]["world_size"] == 2
        assert dist_summary["operator"]["num_examples"] == 40 and dist_summary["operator"]["num_batches"] == 2
        ours, ref = _figures(dist_summary), _figures(read_json(single.curvature("exp", "a", seed)))
        assert _close(ours, ref, 1e-10) == []
    metrics = read_json(layout.measure_dir("exp", "a") / "metrics.json")
    assert metrics["runtime"]["world_size"] == 2 and metrics["seeds_measured"] == 2


@pytest.mark.parametrize(("over", "match"), [
    ({"bottom_k": -1}, r"curvature\.exp\.bottom_k=-1 .*an int >= 0"),
    ({"negative_tau": -0.5}, r"curvature\.exp\.negative_tau=-0\.5 .*a float >= 0"),
    ({"logdet_eps_relative": 0.0}, r"curvature\.exp\.logdet_eps_relative=0\.0 .*a float > 0"),
    ({"logdet_eps": 1e-3}, r"logdet_eps"),  # the absolute eps is gone: eps follows lambda_max
])
def test_new_settings_are_validated(over, match):
    from landscape.schema import ConfigError, parse_config

    with pytest.raises(ConfigError, match=match):
        parse_config(measure.CurvatureConfig, {**CURVATURE, **over}, "curvature.exp")
