"""Tests of landscape.pipeline.probe and landscape.pipeline.probe_kinds: the probe stage's
settings, the probes section of params.yaml and the profiles against dvc.yaml's probe
stages, the probe registry, loading the runs of a config, and run_landscape_probes on tiny
float64 models against dense references and closed forms."""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import yaml
from probe_helpers import classification_batches

from landscape.io import to_jsonable, torch_save, write_json
from landscape.models import build_model
from landscape.pipeline.layout import Layout
from landscape.pipeline.probe import (
    PROBES,
    BarrierSettings,
    ProbeConfig,
    ScanSettings,
    TrainedRun,
    load_trained_runs,
    run,
    run_landscape_probes,
    validate_probe_params,
)
from landscape.pipeline.probe_kinds import PLAN_ORDER, PROBE_KINDS
from landscape.probes.functional import parameter_dict
from landscape.probes.permutation import apply_permutation, permutation_spec, random_permutation
from landscape.probes.sharpness import worst_case_sharpness
from landscape.schema import ConfigError, parse_config

REPO = Path(__file__).resolve().parents[2]
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
PROBE_GROUPS = [name[len("probe_"):] for name in STAGES if name.startswith("probe_")]
PARAM_FILES = [REPO / "params.yaml", *sorted((REPO / "profiles").glob("*.yaml"))]

MLP_SPEC = {"name": "mlp", "width": 6, "depth": 2, "activation": "relu", "norm": "none"}


# ----------------------------------------------------------------------------- helpers


def _splits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """One noisy linear 3-class task (3 inputs), split like the prepared data: the probe
    subset is part of the training split."""
    x, y = classification_batches(n=192, d_in=3, classes=3, batch=192, seed=0)[0]
    return {"train": (x[:128], y[:128]), "probe": (x[:96], y[:96]), "test": (x[128:], y[128:])}


DATA = _splits()


def _mlp(seed: int, steps: int = 60, **options) -> torch.nn.Module:
    """A float64 mlp (87 parameters) trained full-batch with Adam on the probe data."""
    spec = {**MLP_SPEC, **options}
    model = build_model("mlp", num_classes=3, in_features=3, seed=seed, **{k: v for k, v in spec.items() if k != "name"}).double()
    x, y = DATA["train"]
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    return model.eval()


def _permuted_copy(model: torch.nn.Module, seed: int) -> torch.nn.Module:
    spec = permutation_spec(model, DATA["probe"][0][:2])
    state = apply_permutation(spec, random_permutation(spec, seed=seed), model.state_dict())
    other = copy.deepcopy(model)
    other.load_state_dict(state)
    return other


def _flat_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for _, p in model.named_parameters()]
    sizes = [p.numel() for _, p in model.named_parameters()]

    def f(theta: torch.Tensor) -> torch.Tensor:
        parts = {n: t.view(s) for n, t, s in zip(names, torch.split(theta, sizes), shapes)}
        return F.cross_entropy(torch.func.functional_call(model, parts, (x,)), y)

    return f


def _dense_hessian(model: torch.nn.Module, params: dict[str, torch.Tensor], x, y) -> torch.Tensor:
    """Reference Hessian by double backward (float64)."""
    theta = torch.cat([params[n].reshape(-1) for n, _ in model.named_parameters()]).detach()
    return torch.autograd.functional.hessian(_flat_loss(model, x, y), theta)


def _probe_config(**overrides) -> ProbeConfig:
    base = {
        "num_examples": 96,
        "test_examples": 64,
        "batch_size": 96,
        "recal_examples": 128,
        "recal_batch_size": 64,
        "barriers": {"num_points": 5, "align_restarts": 2},
        "bezier": {"configs": [], "steps": 5, "batch_size": 64, "train_examples": 128, "num_points": 5},
        "scans": {"line_points": 5, "plane_points": 3, "surface_plots": False},
        "sharpness": {"steps": 2, "num_samples": 3},
        "invariance": {"trace_matvecs": 8, "slq_probes": 1, "slq_steps": 6},
    }
    for key, value in overrides.items():
        base[key] = {**base[key], **value} if isinstance(value, dict) and isinstance(base.get(key), dict) else value
    return parse_config(ProbeConfig, base, "probes.test")


# ------------------------------------------------------------------------- settings


def test_probe_config_parses_nested_blocks_and_selects_probes_per_config():
    cfg = parse_config(
        ProbeConfig,
        {"bezier": {"configs": ["mlp_none"], "objectives": ["minimax"]}, "invariance": {"configs": ["mlp_none", "b64"]}, "scans": {"configs": "all"}},
        "probes.h2_arch",
    )
    assert cfg.bezier.configs == ("mlp_none",) and cfg.bezier.objectives == ("minimax",)
    assert cfg.probes_for("mlp_none") == ("barriers", "bezier", "scans", "sharpness", "invariance")
    assert cfg.probes_for("resnet_skip_bn") == ("barriers", "scans", "sharpness")
    cfg.check_configs(["mlp_none", "b64", "resnet_skip_bn"])
    with pytest.raises(ConfigError, match=r"probes.h2_arch.invariance.configs names unknown config 'b64'"):
        cfg.check_configs(["mlp_none", "resnet_skip_bn"], "probes.h2_arch")
    json.dumps(to_jsonable(cfg))  # the resolved config is JSON-ready


@pytest.mark.parametrize(
    ("values", "match"),
    [
        ({"bn_mode": "eval"}, r"probes.x.bn_mode='eval' is not allowed; allowed: one of \['recalibrate', 'batch'\]"),
        ({"colour": 1}, r"unknown key probes.x.colour"),
        ({"barriers": {"num_points": 2}}, r"probes.x.barriers.num_points=2 is not allowed; allowed: an int >= 3"),
        ({"bezier": {"objectives": ["expected", "fastest"]}}, r"probes.x.bezier.objectives=.*allowed: a non-empty list"),
        ({"scans": {"configs": 3}}, r"probes.x.scans.configs=3 is not allowed; allowed: 'all' or a list of config names"),
        ({"scans": {"line_min": 0.2}}, r"line_min < 0 and line_max > 1"),
        ({"scans": {"plane_points": 10}}, r"probes.x.scans.plane_points=10 is not allowed; allowed: an odd int >= 3"),
        ({"bezier": {"surrogate": "topk", "top_k": 4, "minimax_points": 3}}, r"top_k=4 must be <= minimax_points=3"),
        ({"sharpness": {"eps_l2": -1.0}}, r"probes.x.sharpness.eps_l2=-1.0 is not allowed"),
    ],
)
def test_probe_config_rejects_bad_values(values, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(ProbeConfig, values, "probes.x")


def test_settings_built_in_code_are_validated_too():
    with pytest.raises(ConfigError, match=r"BarrierSettings.num_points=1 is not allowed"):
        BarrierSettings(num_points=1)
    with pytest.raises(ConfigError, match=r"line_min < 0 and line_max > 1"):
        ScanSettings(line_max=0.9)


# ------------------------------------------------------------------ landscape probes


def test_barriers_vanish_after_aligning_a_permuted_copy_and_diverged_runs_are_skipped():
    a = _mlp(0)
    b = _permuted_copy(a, seed=3)
    runs = [TrainedRun(0, "completed", a, test_error=0.1), TrainedRun(1, "completed", b), TrainedRun(2, "diverged", None)]
    cfg = _probe_config(scans={"configs": []}, sharpness={"configs": []}, invariance={"configs": []})
    before = {n: t.clone() for n, t in a.state_dict().items()}
    report = run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=MLP_SPEC)
    res = report.results
    assert res["runs"]["seed2"] == {"status": "diverged", "probed": False, "test_error": math.nan, "state_hash": None}
    assert report.summary["seeds_completed"] == 2 and report.summary["seeds_skipped"] == 1
    assert list(res["barriers"]["pairs"]) == ["s0-s1"] and res["barriers"]["alignment"] == "done"
    for split in ("train", "test"):
        pair = res["barriers"]["pairs"]["s0-s1"][split]
        assert pair["raw"]["barrier"] > 1e-2  # the permuted copy sits in another basin of the same function
        assert abs(pair["aligned"]["barrier"]) < 1e-12 and abs(pair["aligned"]["barrier_interp"]) < 1e-12
        assert pair["aligned_end_loss_change"] < 1e-12 and pair["raw"]["bn_mode"] == "eval"
    assert report.arrays["barriers.train.raw.s0-s1.losses"].shape == (5,)
    assert all(torch.equal(before[n], t) for n, t in a.state_dict().items())  # the caller's model is untouched
    json.dumps(to_jsonable(res))


def test_hessian_plane_curvatures_match_dense_eigenvalues_and_invariance_audit_matches_dense_lambda_max():
    model = _mlp(0)
    x, y = DATA["probe"]
    H = _dense_hessian(model, parameter_dict(model), x, y)
    evals, evecs = torch.linalg.eigh(H)
    lam, vecs = evals.flip(0)[:2], evecs.flip(1)[:, :2]
    runs = [TrainedRun(0, "completed", model, ritz_values=lam, ritz_vectors=vecs)]
    h = 1e-4
    cfg = _probe_config(
        scans={"hessian_span": h, "plane_points": 3},
        sharpness={"configs": []},
        invariance={"eig_tol": 1e-8, "alpha": 4.0, "slq_probes": 8, "slq_steps": 87},
    )
    report = run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=MLP_SPEC)
    Z = report.arrays["scans.hessian_plane.loss"]  # Z[i, j] at (xs[j], ys[i]), xs = ys = (-h, 0, h)
    curv_1 = (Z[1, 2] + Z[1, 0] - 2 * Z[1, 1]) / h**2
    curv_2 = (Z[2, 1] + Z[0, 1] - 2 * Z[1, 1]) / h**2
    np.testing.assert_allclose([curv_1, curv_2], lam.numpy(), rtol=1e-4)
    assert report.results["scans"]["line"] == {"status": "skipped: fewer than 2 completed runs"}
    assert report.results["barriers"] == {"status": "skipped: fewer than 2 completed runs"}
    inv = report.results["invariance"]
    entries = {e["name"]: e for e in inv["audit"]["entries"]}
    np.testing.assert_allclose(entries["lambda_max"]["before"], float(lam[0]), rtol=1e-6)
    from landscape.probes.invariance import rescale_layers

    after = rescale_layers(parameter_dict(model), "layers.0.linear", "layers.1.linear", 4.0)
    lam_after = torch.linalg.eigvalsh(_dense_hessian(model, after, x, y))[-1]
    np.testing.assert_allclose(entries["lambda_max"]["after"], float(lam_after), rtol=1e-6)
    assert entries["lambda_max"]["verdict"] == "not invariant" and entries["adaptive_sharpness_l2"]["verdict"] == "invariant"
    assert inv["audit"]["output_change"] < 1e-12
    assert report.summary["invariance"]["lambda_max"] == "not invariant"
    # the log-det enters the audit by its curvature part sum ln(1 + max(lambda_i, 0) / eps), eps = 1e-3 lambda_max at each point
    from landscape.curvature import logdet

    for key, prm in (("before", parameter_dict(model)), ("after", after)):
        Hp = _dense_hessian(model, prm, x, y)
        ev = torch.linalg.eigvalsh(Hp)
        eps = 1e-3 * float(ev[-1])
        exact = float(torch.log1p(ev.clamp_min(0) / eps).sum())
        assert entries["logdet_curvature"][key] == pytest.approx(logdet(Hp, eps=eps, seed=0, num_probes=8, num_steps=87).curvature_part,
                                                                 rel=1e-6)
        assert entries["logdet_curvature"][key] == pytest.approx(exact, rel=0.25)


def test_auto_hessian_span_missing_vectors_and_non_applicable_audit_are_recorded():
    model = _mlp(0, norm="bn", depth=1)
    spec = {**MLP_SPEC, "norm": "bn", "depth": 1}
    lam1 = 2.5
    vecs = torch.linalg.qr(torch.randn(sum(p.numel() for p in model.parameters()), 2, dtype=torch.float64, generator=torch.Generator().manual_seed(0)))[0]
    runs = [
        TrainedRun(0, "completed", model, ritz_values=torch.tensor([lam1, 1.0]), ritz_vectors=vecs, ritz_bn_mode="eval"),
        TrainedRun(1, "completed", _mlp(1, norm="bn", depth=1)),
    ]
    cfg = _probe_config(barriers={"configs": []}, sharpness={"configs": []}, scans={"hessian_rise": 0.5})
    res = run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=spec).results
    assert res["bn"] == {"policy": "recalibrate", "bn_mode": "recalibrate", "has_batchnorm": True, "recal_examples": 128}
    hp = res["scans"]["hessian_plane"]
    assert hp["span"] == pytest.approx(math.sqrt(2 * 0.5 / lam1), rel=1e-12)
    assert hp["bn_mode"] == "eval" and hp["ritz_bn_mode"] == "eval"  # "match": the policy of the cached Hessian
    assert res["scans"]["random_plane"]["bn_mode"] == "recalibrate"
    assert res["scans"]["line"]["train"]["bn_mode"] == "recalibrate"
    alphas = res["scans"]["line"]["train"]["alphas"]
    assert 0.0 in alphas and 1.0 in alphas and min(alphas) == -0.5 and max(alphas) == 1.5
    assert res["invariance"]["status"].startswith("not applicable: norm 'bn'")
    res2 = run_landscape_probes(runs[1:], DATA, cfg, config_name="c", model_spec=spec).results
    assert res2["scans"]["hessian_plane"]["status"] == "skipped: no cached Ritz vectors (k >= 2) for this run"


def test_bezier_curve_lowers_the_straight_barrier_and_sharpness_is_passed_through():
    a, b = _mlp(0, steps=150), _mlp(5, steps=150)
    runs = [TrainedRun(0, "completed", a), TrainedRun(1, "completed", b)]
    cfg = _probe_config(
        bezier={"configs": ["c"], "steps": 80, "lr": 0.05, "objectives": ["expected", "minimax"], "num_points": 11},
        barriers={"configs": []},
        scans={"configs": []},
        invariance={"configs": []},
    )
    report = run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=MLP_SPEC)
    pair = report.results["bezier"]["pairs"]["s0-s1"]
    straight = pair["straight"]["train"]
    assert straight["barrier"] > 0.05
    for objective in ("expected", "minimax"):
        curve = pair[objective]["train"]
        assert curve["end_losses"] == pytest.approx(straight["end_losses"], abs=1e-12)  # same end points
        assert curve["barrier"] < 0.5 * straight["barrier"] and curve["below_straight"] is True
    head = report.summary["bezier"]["s0-s1.minimax.test"]
    assert head["curve"] == pair["minimax"]["test"]["barrier"] and head["straight"] == pair["straight"]["test"]["barrier"]
    sharp = report.results["sharpness"]["seeds"]["seed1"]["worst_l2"]
    x, y = DATA["probe"]
    direct = worst_case_sharpness(b, parameter_dict(b), [(x, y)], eps=0.05, norm="l2", steps=2, seed=0, bn_mode="eval")
    assert sharp["value"] == pytest.approx(direct.value, rel=1e-12)
    figs = report.figures()
    assert sorted(figs) == ["bezier_s0-s1"]
    buf = io.BytesIO()
    figs["bezier_s0-s1"].savefig(buf, format="png")
    assert buf.getvalue()[:8] == b"\x89PNG\r\n\x1a\n"


def test_run_landscape_probes_rejects_bad_arguments():
    cfg = _probe_config()
    with pytest.raises(ValueError, match="runs must contain at least one TrainedRun"):
        run_landscape_probes([], DATA, cfg, config_name="c", model_spec=MLP_SPEC)
    m = _mlp(0, steps=1)
    with pytest.raises(ValueError, match=r"runs repeat a seed: \[0, 0\]"):
        run_landscape_probes([TrainedRun(0, "completed", m), TrainedRun(0, "completed", m)], DATA, cfg, config_name="c", model_spec=MLP_SPEC)
    with pytest.raises(ValueError, match="missing 'train'"):
        run_landscape_probes([TrainedRun(0, "completed", m)], {"probe": DATA["probe"], "test": DATA["test"]}, cfg, config_name="c", model_spec=MLP_SPEC)
    res = run_landscape_probes([TrainedRun(0, "diverged", None)], DATA, cfg, config_name="c", model_spec=MLP_SPEC).results
    assert res["barriers"] == {"status": "skipped: no completed run"}


# ------------------------------------------------------------------------- validation


def _params(**probes):
    return {
        "datasets": {"digits8": {"name": "digits"}},
        "experiments": {"h1": {"dataset": "digits8", "configs": {"a": {}, "b": {}}}, "h2": {"dataset": "digits8", "configs": {"c": {}}}},
        "probes": {"h1": {"configs": ["a", "b"], "bezier": {"configs": ["a"]}}, "h2": {"configs": ["c"]}, **probes},
    }


def test_validate_probe_params_checks_every_section():
    out = validate_probe_params(_params(sde={"num_runs": 100}, intrinsic_dim={"model": {"dataset": "digits8"}}), required=["h1", "sde"])
    assert out["probe"]["h1"].probes_for("a") == ("barriers", "bezier", "scans", "sharpness", "invariance")
    assert out["sde"].num_runs == 100 and out["intrinsic_dim"].model.dataset == "digits8"
    bad = _params()
    del bad["probes"]["h2"]
    assert set(validate_probe_params(bad)["probe"]) == {"h1"}  # an experiment without probes has no probe stage
    with pytest.raises(ConfigError, match=r"missing key probes.h2: the pipeline has a stage for it \(required: \['h1', 'h2'\]\)"):
        validate_probe_params(bad, required=["h1", "h2"])
    with pytest.raises(ConfigError, match=r"missing key probes.sde"):
        validate_probe_params(_params(), required=["sde"])
    with pytest.raises(ConfigError, match=r"unknown key probes.h3; allowed: the experiments \['h1', 'h2'\]"):
        validate_probe_params(_params(h3={}))
    with pytest.raises(ConfigError, match=r"probes.h1.bezier.configs names unknown config 'c'"):
        validate_probe_params({**_params(), "probes": {"h1": {"configs": ["a"], "bezier": {"configs": ["c"]}}}})
    with pytest.raises(ConfigError, match=r"probes.h1.bezier.configs names 'b', which is not in probes.h1.configs=\['a'\]"):
        validate_probe_params({**_params(), "probes": {"h1": {"configs": ["a"], "bezier": {"configs": ["b"]}}}})
    with pytest.raises(ConfigError, match=r"probes.h2.configs names unknown config 'd'; configs of this experiment: \['c'\]"):
        validate_probe_params(_params(h2={"configs": ["d"]}))
    with pytest.raises(ConfigError, match=r"probes.h2.configs='all' is not allowed; allowed: a non-empty list of config names"):
        validate_probe_params(_params(h2={"configs": "all"}))
    with pytest.raises(ConfigError, match=r"probes.h2.configs=\[\] is not allowed"):
        validate_probe_params(_params(h2={"configs": []}))
    with pytest.raises(ConfigError, match=r"probes.intrinsic_dim.model.dataset='mnist14' is not a key of `datasets`"):
        validate_probe_params(_params(intrinsic_dim={"model": {"dataset": "mnist14"}}))
    with pytest.raises(ConfigError, match=r"probes.sde.horizon=0 is not allowed"):
        validate_probe_params(_params(sde={"horizon": 0}))
    with pytest.raises(ConfigError, match=r"params.yaml needs a `probes` mapping"):
        validate_probe_params({"experiments": {}})


def test_group_configs_limit_the_probes_of_each_config():
    cfg = parse_config(ProbeConfig, {"configs": ["a"], "scans": {"configs": ["a"]}}, "probes.h1")
    assert cfg.probes_for("a") == ("barriers", "scans", "sharpness", "invariance")  # bezier: none by default
    assert cfg.probes_for("b") == ()


def _strip_timings(results):
    return {k: v for k, v in results.items() if k not in ("timings_s", "cpu_s", "workers")}


def test_forked_workers_give_the_serial_results_and_end_points_are_shared():
    runs = [TrainedRun(s, "completed", _mlp(s, steps=40)) for s in range(3)]
    cfg = _probe_config(bezier={"configs": "all", "steps": 4, "num_pairs": 2}, scans={"hessian_plane": False})
    serial = run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=MLP_SPEC, workers=1)
    forked = run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=MLP_SPEC, workers=2)
    assert json.dumps(to_jsonable(_strip_timings(serial.results)), sort_keys=True) == json.dumps(
        to_jsonable(_strip_timings(forked.results)), sort_keys=True)
    assert list(serial.arrays) == list(forked.arrays)
    for key in serial.arrays:
        np.testing.assert_array_equal(serial.arrays[key], forked.arrays[key])
    assert forked.results["workers"] == 2 and sorted(forked.figures()) == sorted(serial.figures())
    assert {"barriers", "bezier_s0-s1", "bezier_s0-s2", "line_s0-s1", "plane_random_seed0"} <= set(serial.figures())
    res = serial.results
    assert list(res["barriers"]["pairs"]) == ["s0-s1", "s0-s2", "s1-s2"] and list(res["bezier"]["pairs"]) == ["s0-s1", "s0-s2"]
    # the shared end point evaluations are those of each seed on its own
    x, y = DATA["probe"]
    for (a, b), pair in zip([(0, 1), (0, 2), (1, 2)], res["barriers"]["pairs"].values()):
        direct = [F.cross_entropy(runs[s].model(x[:96]), y[:96]).item() for s in (a, b)]
        np.testing.assert_allclose(pair["train"]["raw"]["end_losses"], direct, rtol=1e-12)
        assert pair["train"]["aligned"]["end_losses"][0] == pair["train"]["raw"]["end_losses"][0]
    with pytest.raises(ValueError, match=r"workers must be an int >= 1, got 0"):
        run_landscape_probes(runs, DATA, cfg, config_name="c", model_spec=MLP_SPEC, workers=0)


# ------------------------------------------------- params.yaml and dvc.yaml


@pytest.mark.parametrize("path", PARAM_FILES, ids=lambda p: p.stem)
def test_every_profile_has_valid_settings_for_every_probe_stage(path):
    params = yaml.safe_load(path.read_text())
    groups = [g for g in PROBE_GROUPS if g in params["experiments"]]  # the default's probe stages this profile has a group for
    out = validate_probe_params(params, required=[*groups, "intrinsic_dim", "sde"])
    for group in groups:
        section = params["probes"][group]
        # dvc.yaml tracks each setting by name: every one must be written out
        assert set(section) == {f.name for f in dataclasses.fields(ProbeConfig)}, f"{path.name}: probes.{group}"
        assert all(out["probe"][group].probes_for(c) for c in section["configs"]), "every listed config gets a probe"


@pytest.mark.parametrize("group", PROBE_GROUPS)
def test_probe_stage_reads_every_setting_but_not_the_configs_list(group):
    stage = STAGES[f"probe_{group}"]
    tracked = {p[len(f"probes.{group}."):] for p in stage["params"] if p.startswith(f"probes.{group}.")}
    assert tracked == {f.name for f in dataclasses.fields(ProbeConfig)} - {"configs"}
    assert stage["matrix"] == {"config": f"${{probes.{group}.configs}}"}
    assert f"runs/{group}/${{item.config}}" in stage["deps"] and f"measure/{group}/${{item.config}}/seeds" in stage["deps"]


def test_validate_stage_names_the_bad_probe_key(tmp_path):
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["probes"]["h2_arch"]["bezier"]["steps"] = 0
    bad = tmp_path / "params.yaml"
    bad.write_text(yaml.safe_dump(params))
    proc = subprocess.run([sys.executable, str(REPO / "stages" / "validate.py"), str(bad)], capture_output=True, text=True)
    assert proc.returncode == 2
    assert "error: probes.h2_arch.bezier.steps=0 is not allowed; allowed: an int >= 1" in proc.stderr


# ------------------------------------------------------------------- the registry


def test_every_probe_kind_is_a_probe_config_block_and_is_planned():
    assert PROBES == ("barriers", "bezier", "scans", "sharpness", "invariance", "trajectory")
    assert sorted(PLAN_ORDER) == sorted(PROBE_KINDS)
    fields = {f.name: f for f in dataclasses.fields(ProbeConfig)}
    for name, kind in PROBE_KINDS.items():
        assert fields[name].default_factory is kind.settings  # probes.<exp>.<name> is this kind's settings


# ------------------------------------------------------------------- the stage


def _stored_run(layout: Layout, seed: int, status: str = "completed", krylov: bool = False) -> torch.nn.Module:
    """Write run ``seed`` of h1/a as the train (and measure) stages do; return its model."""
    paths = layout.run("h1", "a", seed)
    write_json(paths.metrics, {"status": status, "test_error": 0.25, "state_hash": f"hash{seed}"})
    model = build_model("mlp", num_classes=3, in_features=3, seed=seed, width=6, depth=2)
    if status == "completed":
        torch_save(paths.model, {"model": dict(MLP_SPEC), "model_kwargs": {"num_classes": 3, "in_features": 3},
                                 "state_dict": model.state_dict()})
    if krylov:
        torch_save(layout.krylov("h1", "a", seed), {"ritz_values": torch.tensor([2.0, 1.0]), "ritz_vectors": torch.eye(87)[:, :2]})
        write_json(layout.curvature("h1", "a", seed), {"status": "measured", "settings": {"bn_mode": "batch"}})
    return model


def test_load_trained_runs_reads_models_ritz_pairs_and_skips_diverged_runs(tmp_path):
    layout = Layout(tmp_path)
    first = _stored_run(layout, 0, krylov=True)
    _stored_run(layout, 1, status="diverged")
    second = _stored_run(layout, 2)
    runs, spec = load_trained_runs(layout, "h1", "a", [0, 1, 2])
    assert spec == MLP_SPEC and [r.seed for r in runs] == [0, 1, 2]
    assert runs[1] == TrainedRun(1, "diverged", None)  # no test error, state hash or Ritz pairs
    assert runs[0].test_error == 0.25 and runs[0].state_hash == "hash0" and runs[0].ritz_bn_mode == "batch"
    assert torch.equal(runs[0].ritz_values, torch.tensor([2.0, 1.0])) and runs[0].ritz_vectors.shape == (87, 2)
    assert runs[2].ritz_values is None and runs[2].ritz_vectors is None and runs[2].ritz_bn_mode is None
    for run_, model in ((runs[0], first), (runs[2], second)):
        assert all(torch.equal(a, b) for a, b in zip(run_.model.state_dict().values(), model.state_dict().values()))


def test_stage_run_rejects_unknown_and_unprobed_configs_before_reading_files(tmp_path):
    params = {
        "seeds": [0],
        "datasets": {"digits8": {"name": "digits"}},
        "experiments": {"h1": {"dataset": "digits8", "configs": {"a": {}, "b": {}}}},
        "probes": {"h1": {"configs": ["a"]}},
    }
    with pytest.raises(ConfigError, match=r"unknown config 'z' of experiment 'h1'; configs: \['a', 'b'\]"):
        run(params, Layout(tmp_path), experiment="h1", config="z")
    with pytest.raises(ConfigError, match=r"config 'b' is not in probes.h1.configs=\['a'\]: it has no probe entry"):
        run(params, Layout(tmp_path), experiment="h1", config="b")
    with pytest.raises(ConfigError, match=r"missing key probes.h2 in params.yaml"):
        run(params, Layout(tmp_path), experiment="h2", config="a")
