"""The hypotheses stage on a synthetic output tree: planted effects are found, missing
inputs are reported as not tested (naming the path looked for), Holm runs within each family."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from landscape.pipeline.hypotheses import HYPOTHESES, HypothesesConfig, evaluate_family
from landscape.pipeline.layout import Layout
from landscape.pipeline.tables import hypothesis_tables
from landscape.schema import ConfigError, parse_config
from landscape.stats.family import headline

SEEDS = list(range(6))
H1_SEEDS = list(range(10))  # 0-5 primary (the top-level seeds), 6-9 replication
H1_GRID = [(b, r) for b in (16, 64, 256) for r in (1, 2, 4)]  # batch size, eta/B in units of 1/1024
EXPERIMENTS = {
    "h1_equal_loss": {"dataset": "d", "seeds": H1_SEEDS, "configs": {
        f"b{b}_s{r}": {"model": {"name": "mlp"}, "train": {"batch_size": b, "lr": b * r / 1024, "momentum": 0.9}} for b, r in H1_GRID}},
    "h1_batch": {"dataset": "d", "configs": {f"b{b}": {"model": {"name": "mlp"}, "train": {"batch_size": b}} for b in (16, 64, 256, 1024)}},
    "h2_arch": {"dataset": "d", "configs": {
        f"resnet_{'skip' if s else 'noskip'}_{n}": {"model": {"name": "resnet_small", "skip": s, "norm": n}, "train": {}}
        for s in (True, False) for n in ("bn", "none")} | {"mlp_none": {"model": {"name": "mlp", "norm": "none"}, "train": {}}}},
    # H2's factorial (seeds 0-5 primary, 6-9 replication) and its normalisation arm at depth 4
    "h2_depth": {"dataset": "d", "seeds": list(range(10)), "configs": {
        f"d{d}_{'skip' if s else 'plain'}": {"model": {"name": "resmlp", "depth": d, "skip": s, "norm": "ln"}, "train": {"lr": 0.01}}
        for d in (1, 2, 4, 8) for s in (True, False)} | {
        f"norm_{n}": {"model": {"name": "resmlp", "depth": 4, "skip": True, "norm": n}, "train": {"lr": 0.02}} for n in ("none", "bn", "ln")}},
}
H2_INTERACTION = -0.3  # planted: the skip effect on log lambda_max falls by 0.3 per doubling of depth
H2_NORM = {"none": 1.0, "bn": 0.5, "ln": 0.6}  # planted lambda_max ratios of the normalisation arm


def run_family(root: Path, experiments, seeds, config: HypothesesConfig):
    layout = Layout(root)
    return evaluate_family(hypothesis_tables(layout, experiments, seeds), config, layout)


def _write(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


H1_BETA = {"lambda_max": -0.5, "test_error": -0.004}  # planted per doubling of eta/B (log2 lambda_max; error)


def _h1_tree(root: Path, rng: np.random.Generator, seeds=H1_SEEDS, capped=("b16_s1", 3)):
    """Train-to-target runs with planted noise-scale effects; one run hits its step cap."""
    for seed in seeds:
        u = rng.normal(0, 0.05)
        for b, r in H1_GRID:
            log2_noise = np.log2(r / 1024)
            log2_lam = 1.0 + H1_BETA["lambda_max"] * log2_noise + u + rng.normal(0, 0.1)
            err = 0.05 + H1_BETA["test_error"] * log2_noise + 0.1 * u + rng.normal(0, 0.002)
            hit = (f"b{b}_s{r}", seed) == capped
            _write(root / f"runs/h1_equal_loss/b{b}_s{r}/seed{seed}/metrics.json",
                   {"status": "completed", "test_error": err, "train_loss": 0.02 if hit else 0.0095 + rng.uniform(0, 0.0005),
                    "along_training": {"reached": not hit, "hit_cap": hit, "stop_step": 100, "lambda_max_final": float(2.0**log2_lam)}})


def _tree(root: Path, rng: np.random.Generator, *, barriers=False, bounds=False, escape=False, missing_curvature=(), h1_seeds=H1_SEEDS):
    """Runs and curvature with a planted chain B -> lambda_max -> test error and skip < no-skip."""
    _h1_tree(root, rng, h1_seeds)
    for seed in SEEDS:
        u = rng.normal(0, 0.05)  # seed effect
        for b in (16, 64, 256, 1024):
            log_lam = 1.0 + 0.5 * np.log(b) + u + rng.normal(0, 0.4)
            err = 0.05 + 0.02 * log_lam + rng.normal(0, 0.003)
            loss = 0.01 + rng.normal(0, 0.001)
            _write(root / f"runs/h1_batch/b{b}/seed{seed}/metrics.json",
                   {"status": "completed", "test_error": err, "train_loss": loss, "gen_gap": err * 2, "train_error": 0.0})
            if f"b{b}" not in missing_curvature:
                _write(root / f"measure/h1_batch/b{b}/seeds/seed{seed}/curvature.json",
                       {"status": "measured", "lambda_max": float(np.exp(log_lam)), "spectral_norm": float(np.exp(log_lam)),
                        "trace": float(np.exp(log_lam)) * 5, "logdet": -1e5 + rng.normal(0, 50.0), "logdet_curvature": 10.0 * log_lam, "rmt": {"outlier_count": 3}, "noise": {"kappa": 0.2 + rng.uniform(0, 0.1), "difficulty_index": 1.0}})
            if bounds:
                base = 0.3 + rng.normal(0, 0.01)
                _write(root / f"bounds/runs/h1_batch/b{b}/seed{seed}/bounds.json",
                       {"status": "bounded", "bounds": {"occam": base + 0.5 + rng.normal(0, 0.02), "isotropic": base + 0.1 + rng.normal(0, 0.02), "curvature": base}})
        for cfg, spec in EXPERIMENTS["h2_arch"]["configs"].items():
            skip = spec["model"].get("skip")
            lam = 20.0 * (0.6 if skip else 1.0) * math.exp(rng.normal(0, 0.1))
            _write(root / f"runs/h2_arch/{cfg}/seed{seed}/metrics.json", {"status": "completed", "test_error": 0.05, "train_loss": 0.01, "gen_gap": 0.1})
            _write(root / f"measure/h2_arch/{cfg}/seeds/seed{seed}/curvature.json",
                   {"status": "measured", "lambda_max": lam, "spectral_norm": lam, "trace": lam * 10, "logdet": 1.0, "logdet_curvature": 1.0, "rmt": {"outlier_count": 5 - 2 * bool(skip) + seed % 2}})
    for seed in range(10):
        u = rng.normal(0, 0.2)
        for cfg, spec in EXPERIMENTS["h2_depth"]["configs"].items():
            m = spec["model"]
            x = math.log2(m["depth"]) - 1.5
            log_lam = 2.0 + 0.2 * x + m["skip"] * (-0.2 + H2_INTERACTION * x) + math.log(H2_NORM[m["norm"]]) + u + rng.normal(0, 0.1)
            err = 0.05 + 0.02 * log_lam + rng.normal(0, 0.003)  # the regressions' planted chain, as h1_batch's
            _write(root / f"runs/h2_depth/{cfg}/seed{seed}/metrics.json",
                   {"status": "completed", "test_error": err, "train_loss": 0.2 + 0.01 * seed, "gen_gap": err * 2})
            _write(root / f"measure/h2_depth/{cfg}/seeds/seed{seed}/curvature.json",
                   {"status": "measured", "lambda_max": math.exp(log_lam), "spectral_norm": math.exp(log_lam), "trace": 10 * math.exp(log_lam), "logdet": 1.0, "logdet_curvature": 1.0})
    if barriers:
        for cfg in ("d8_skip", "d8_plain"):
            a = {k: rng.normal(0, 0.1) for k in range(10)}
            pairs = {f"s{i}-s{j}": {"test": {"raw": {"barrier": (0.1 if cfg == "d8_skip" else 0.5) + a[i] + a[j] + rng.normal(0, 0.02)}}}
                     for i in range(10) for j in range(10) if i < j}
            _write(root / f"probes/h2_depth/{cfg}/results.json", {"barriers": {"pairs": pairs}})
        for cfg, spec in EXPERIMENTS["h2_arch"]["configs"].items():
            pairs = {f"s{a}-s{b}": {"test": {"raw": {"barrier": (0.1 if spec["model"].get("skip") else 0.5) + rng.normal(0, 0.02)}}}
                     for a in SEEDS for b in SEEDS if a < b}
            _write(root / f"probes/h2_arch/{cfg}/results.json", {"barriers": {"pairs": pairs}})
        _write(root / "probes/h2_arch/mlp_none/metrics.json", {"invariance": {"lambda_max": "not invariant", "trace": "not invariant"}})
    if escape:  # planted dose-response: hazard 0.01 exp(4 a) per step, censored at 150; seeds 0-2 primary, 3-5 replication
        trials = []
        for seed in SEEDS:
            for r in range(6):
                for scale, a in ((None, 0.0), (0.0, 0.0), (0.5, 0.25), (1.0, 0.5), (4.0, 0.9)):
                    t = rng.exponential(1 / (0.01 * math.exp(4.0 * a))) if scale is not None else 1e9
                    trials.append({"seed": seed, "seed_set": "primary" if seed < 3 else "replication",
                                   "noise_type": "isotropic" if scale is None else "scaled", "scale": scale, "restart": r,
                                   "alignment": a + (rng.uniform(0, 0.01) if scale else 0.0), "trace_h_sigma": a + rng.normal(0, 0.2),
                                   "escape": int(t < 150), "escape_step": min(150, math.ceil(t)), "loss_start": 0.003,
                                   "grad_norm_start": 0.02})
        _write(root / "escape/trials.json", {"trials": trials})


def _by_name(results):
    return {e["name"]: e for e in [*results["hypotheses"], *results["regressions"]]}


def test_planted_effects_found_with_all_inputs(tmp_path):
    _tree(tmp_path, np.random.default_rng(0), barriers=True, bounds=True, escape=True)
    cfg = HypothesesConfig(n_boot=500)
    res = run_family(tmp_path, EXPERIMENTS, SEEDS, cfg)
    r = _by_name(res)
    assert all(e["status"] == "tested" for e in res["hypotheses"]), [e["status"] for e in res["hypotheses"]]
    for outcome, beta in H1_BETA.items():
        h1 = r[f"H1[{outcome}]"]
        assert h1["n_runs"] == 6 * 9 - 1 and h1["n_groups"] == 6  # primary seeds; the capped run left out
        assert h1["ci_low"] <= beta <= h1["ci_high"] and h1["supported"] and h1["verdict"] == "supported", h1
        assert h1["replication"]["n_runs"] == 4 * 9 and h1["replication"]["ci_low"] <= beta <= h1["replication"]["ci_high"]
        assert h1["extra"]["n_hit_cap"] == 1 and h1["extra"]["hit_cap_runs"] == ["b16_s1/seed3"]
        assert h1["extra"]["train_loss_at_stop"]["max"] <= 0.01
        assert 0 <= h1["extra"]["power_at_literature_effect"] <= 1
    for m in ("lambda_max", "trace", "barrier", "norm"):
        assert r[f"H2[{m}]"]["effect"] < 0 and r[f"H2[{m}]"]["supported"], m
        assert r[f"H2[{m}]"]["extra"]["replication_rule"]["verdict"] == "supported", m
    for m in ("lambda_max", "trace"):  # the interaction, on the primary seeds 0-5 (8 cells x 6 seeds) and replicated on 6-9
        e = r[f"H2[{m}]"]  # one draw: within 3 standard errors of the planted value (coverage: tests/stats)
        assert abs(e["effect"] - H2_INTERACTION) < 3 * e["extra"]["se"] and e["n_runs"] == 48
        rep = e["extra"]["replication"]
        assert rep["ci_low"] < rep["effect"] < rep["ci_high"] < 0 and abs(rep["effect"] - H2_INTERACTION) < 0.1 and rep["n_runs"] == 32
    for arm in ("bn", "ln"):  # the planted ratios against none
        assert abs(r["H2[norm]"]["extra"]["arms"][arm]["mean"] - math.log(H2_NORM[arm])) < 0.15, arm
    assert r["H2[barrier]"]["n_runs"] == 15 and r["H2[barrier]"]["n_groups"] == 6  # pairs within seeds 0-5
    assert r["H2[barrier]"]["extra"]["replication"]["n_runs"] == 6  # pairs within seeds 6-9
    assert r["H3"]["effect"] > 1 and r["H3"]["n_runs"] == 72  # 3 primary seeds x 6 restarts x 4 doses
    assert r["H3"]["ci_low"] <= math.exp(0.4) <= r["H3"]["ci_high"]  # planted hazard ratio per 0.1 alignment
    rep = r["H3"]["replication"]
    assert rep["n_runs"] == 72 and rep["ci_low"] <= math.exp(0.4) <= rep["ci_high"] and r["H3"]["verdict"] == "supported"
    assert {a["arm"] for a in r["H3"]["extra"]["arms"]} == {"isotropic", "projected", "s=0.5", "sgd", "s=4"}
    assert r["H4"]["supported"] and r["H4"]["extra"]["binding_baseline"] == "bound_isotropic"
    assert r["H4"]["ci_low"] <= -0.1 <= r["H4"]["ci_high"]
    m = len(res["hypotheses"])
    assert all(e["extra"]["holm_family_size"] == m for e in res["hypotheses"])
    assert r["tau[lambda_max,test_error]"]["effect"] > 0.3 and r["tau[lambda_max,test_error]"]["supported"]
    assert r["tau[lambda_max,test_error]"]["extra"]["invariance_verdict"] == "not invariant"
    assert r["tau[kappa,test_error]"]["extra"]["invariance_verdict"] == "not audited"
    # the log-det enters the rankings by its curvature part (planted 10 log lambda_max), not the raw value
    assert r["tau[logdet_curvature,test_error]"]["effect"] > 0.3 and r["tau[logdet_curvature,test_error]"]["supported"]
    assert not any(name.startswith("tau[logdet,") for name in r)
    flat = headline(res)
    assert flat["H1[test_error]"]["tested"] and flat["H1[test_error]"]["supported"] is True
    from landscape.pipeline.hypotheses import h1_headline_row

    row = h1_headline_row(r["H1[lambda_max]"])
    assert row["verdict"] == "supported" and row["train_loss_at_comparison"]["max"] <= 0.01 and row["n_hit_cap"] == 1
    assert row["replication_ci"][0] <= H1_BETA["lambda_max"] <= row["replication_ci"][1]
    json.dumps(row)
    json.dumps(flat)


def test_missing_inputs_are_not_tested_never_raised(tmp_path):
    _tree(tmp_path, np.random.default_rng(1))
    res = run_family(tmp_path, EXPERIMENTS, SEEDS, HypothesesConfig(n_boot=200))
    r = _by_name(res)
    assert r["H1[lambda_max]"]["status"] == "tested" and r["H2[lambda_max]"]["status"] == "tested"
    for name in ("H2[barrier]", "H3", "H4"):
        assert r[name]["status"].startswith("not tested: input missing"), name
        assert r[name]["null"] and r[name]["alternative"] and r[name]["supported"] is False
    assert res["inputs"] == {"runs": 164 + 90, "curvature": 164, "bounds": 0, "probes": 0, "escape_trials": 0}  # + the H1 grid (not measured)
    assert "bounds/runs/*/*/seed*/bounds.json" in r["H4"]["status"]  # the path the bounds stage writes (Layout.bounds_run)
    assert "probes/h2_depth/*/results.json" in r["H2[barrier]"]["status"] and "escape/trials.json" in r["H3"]["status"]
    assert headline(res)["H3"] == {"tested": False}
    assert r["H1[test_error]"]["extra"]["holm_family_size"] == 5  # two H1 outcomes + H2's two interactions and its normalisation arm
    assert r["H3"]["verdict"] == "not tested"


def test_too_few_runs_is_a_reason_not_a_crash(tmp_path):
    _tree(tmp_path, np.random.default_rng(2), missing_curvature=("b16", "b64", "b256"), h1_seeds=SEEDS[:1])
    tables = hypothesis_tables(Layout(tmp_path), EXPERIMENTS, SEEDS[:1])
    res = evaluate_family(tables, HypothesesConfig(n_boot=200))
    r = _by_name(res)
    assert r["H1[lambda_max]"]["status"].startswith("not tested: h1_noise_scale[lambda_max_final] primary: too few seeds")
    assert r["H2[lambda_max]"]["status"].startswith("not tested: depth_skip_interaction: too few seeds")  # one primary seed


def test_nothing_at_all(tmp_path):
    res = run_family(tmp_path, EXPERIMENTS, SEEDS, HypothesesConfig())
    assert all(e["status"].startswith("not tested") for e in [*res["hypotheses"], *res["regressions"]])


@pytest.mark.parametrize("over, match", [
    ({"alpha": 1.5}, "hypotheses.alpha=1.5"),
    ({"h2_measures": ["lambda_max", "depth"]}, "hypotheses.h2_measures"),
    ({"h2_factorial_norm": "gn"}, "hypotheses.h2_factorial_norm"),
    ({"paired_test": "z"}, "paired_test='z'"),
    ({"h4_bound": "occam"}, "cannot also be one of h4_baselines"),
])
def test_config_errors(over, match):
    with pytest.raises(ConfigError, match=match):
        parse_config(HypothesesConfig, over, "hypotheses")
    with pytest.raises(ConfigError, match=match.replace("hypotheses.", "HypothesesConfig.") if match.startswith("hypotheses.") else match):
        HypothesesConfig(**over)


def test_family_registry_lists_the_preregistered_hypotheses():
    assert list(HYPOTHESES) == ["H1", "H2", "H3", "H4"]


@pytest.mark.parametrize("name", list(HYPOTHESES))
def test_every_hypothesis_without_input_is_not_tested_with_its_statements(name, tmp_path):
    layout = Layout(tmp_path)
    members = HYPOTHESES[name](hypothesis_tables(layout, EXPERIMENTS, SEEDS), HypothesesConfig(), layout)
    assert members and all(m["name"].split("[")[0] == name and m["status"].startswith("not tested: input missing") for m in members)
    assert all(m["null"] and m["alternative"] for m in members)


def test_h3_headline_section_applies_the_replication_rule(tmp_path):
    """The planted dose-response is found on both seed sets: reports/headline.json's h3 says
    supported; with the replication's escapes removed it cannot be tested there: inconclusive."""
    from landscape.io import write_json
    from landscape.pipeline import report

    _tree(tmp_path, np.random.default_rng(0), escape=True)
    layout = Layout(tmp_path)
    res = run_family(tmp_path, EXPERIMENTS, SEEDS, HypothesesConfig(n_boot=200))
    write_json(layout.results("hypotheses"), res)
    section = report.headline_sections({"hypotheses": {}}, layout)["h3"]
    assert section["verdict"] == "supported" and section["ci"][0] <= math.exp(0.4) <= section["ci"][1]
    assert section["replication"]["n_runs"] == 72 and section["start_points"]["loss_max"] == pytest.approx(0.003)
    assert section["replication"]["ci_low"] <= math.exp(0.4) <= section["replication"]["ci_high"]
    trials = json.loads((tmp_path / "escape/trials.json").read_text())["trials"]
    for t in trials:
        if t["seed_set"] == "replication":
            t.update(escape=0, escape_step=150)
    (tmp_path / "escape/trials.json").write_text(json.dumps({"trials": trials}))
    write_json(layout.results("hypotheses"), run_family(tmp_path, EXPERIMENTS, SEEDS, HypothesesConfig(n_boot=200)))
    section = report.headline_sections({"hypotheses": {}}, layout)["h3"]
    assert section["verdict"] == "supported (no replication)" and "no trial escaped" in section["replication"]["status"]


def test_headline_h1_section_from_the_stage_output(tmp_path):
    """reports/headline.json's h1 section: read from hypotheses/results.json (a missing file names it)."""
    from landscape.io import write_json
    from landscape.pipeline import report

    layout = Layout(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"hypotheses/results\.json"):
        report.headline_sections({"hypotheses": {}}, layout)
    _h1_tree(tmp_path, np.random.default_rng(7))
    res = evaluate_family(hypothesis_tables(layout, EXPERIMENTS, SEEDS), HypothesesConfig(n_boot=200), layout)
    write_json(layout.results("hypotheses"), res)
    rows = report.headline_sections({"hypotheses": {}}, layout)["h1"]
    assert [r["name"] for r in rows] == ["H1[lambda_max]", "H1[test_error]"]
    for row in rows:
        assert row["verdict"] == "supported" and row["n_runs"] == 53 and row["replication_n_runs"] == 36
        assert row["ci_low"] <= H1_BETA[row["name"][3:-1]] <= row["ci_high"]
        assert 0.0095 <= row["train_loss_at_comparison"]["min"] <= row["train_loss_at_comparison"]["max"] <= 0.01
        assert row["n_hit_cap"] == 1 and row["literature_source"] and 0 <= row["power_primary"] <= 1
    assert "h1" not in report.headline_sections({}, layout)  # no hypotheses stage, no section
