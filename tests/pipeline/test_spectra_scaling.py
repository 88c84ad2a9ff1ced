"""spectra_scaling on a synthetic measure/ tree: planted scaling law, spiked Wigner spectra, noise figures."""

from __future__ import annotations

import json
import math
import zlib

import numpy as np
import pytest
import torch

from landscape.curvature.slq import spectral_density
from landscape.pipeline.layout import Layout
from landscape.pipeline.spectra_scaling import SpectraScalingConfig, spectra_scaling
from landscape.schema import ConfigError, parse_config
from landscape.stats.spectra_scaling import headline

ALPHA, BETA, LOG_A, NOISE = 0.5, 0.3, 0.2, 0.05
SIGMA, SPIKES, N = 0.2, (3.0, 5.0, 8.0), 200
SEEDS = [0, 1, 2]


def _spiked_wigner(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(N, N, generator=g, dtype=torch.float64)
    W = (X + X.T) / math.sqrt(2 * N) * SIGMA
    V, _ = torch.linalg.qr(torch.randn(N, len(SPIKES), generator=g, dtype=torch.float64))
    return W + (V * (torch.tensor(SPIKES, dtype=torch.float64) * SIGMA)) @ V.T


def _write_run(root, exp, cfg, seed, lam, trace, noise=None, at_init=None):
    W = _spiked_wigner(1000 * seed + zlib.crc32(f"{exp}/{cfg}".encode()) % 997)  # not hash(): salted per process
    dens = spectral_density(W, num_probes=4, num_steps=30, seed=seed)
    top = torch.linalg.eigvalsh(W).flip(0)[:20]
    d = root / "measure" / exp / cfg / "seeds" / f"seed{seed}"
    d.mkdir(parents=True)
    curv = {"status": "measured", "operator": {"num_params": N}, "lambda_max": lam, "spectral_norm": lam, "trace": trace,
            "eigenvalues": {"values": top.tolist()}, "density": {"sigma_broadening": float(dens.sigma)}}
    if noise is not None:
        curv["noise"] = noise
    if at_init is not None:
        curv["at_init"] = at_init
    (d / "curvature.json").write_text(json.dumps(curv))
    torch.save({"slq_alphas": dens.alphas, "slq_betas": dens.betas, "density_grid": dens.grid, "density": dens.density}, d / "krylov.pt")


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("spectra")
    rng = np.random.default_rng(0)
    experiments = {"scaling": {"configs": {}}, "h1_batch": {"configs": {}}}
    for n in (16, 64, 256):
        for L in (1, 2, 3):
            cfg = f"w{n}_d{L}"
            experiments["scaling"]["configs"][cfg] = {"model": {"width": n, "depth": L}}
            for seed in SEEDS:
                lam = math.exp(LOG_A + ALPHA * math.log(n) + BETA * L + rng.normal(0, NOISE))
                # at init the negative end attains ||H||_2: lambda_min = -3 lam, lambda_max = 2 lam
                init = {"lambda_max": 2 * lam, "lambda_min": -3 * lam, "spectral_norm": 3 * lam, "trace": 20 * lam, "rmt": {"status": "ok", "bulk_sigma": 0.1 * n ** 0.25, "outlier_count": 9}}
                _write_run(root, "scaling", cfg, seed, lam, 10 * lam * math.exp(rng.normal(0, NOISE)), at_init=init)
    for b, rank in ((16, 12), (256, 5)):
        experiments["h1_batch"]["configs"][f"b{b}"] = {"train": {"batch_size": b}}
        for seed in SEEDS:
            noise = {"energy_rank_90": rank + seed, "stable_rank_gradients": 3.0, "stable_rank_covariance": 2.0, "num_examples": 64,
                     "diag_correlation": {"pearson_covariance": 0.3, "spearman_covariance": 0.2, "num_params": N,
                                          "pvalues": {"pearson_covariance": 1e-5, "spearman_covariance": 0.2}}}
            _write_run(root, "h1_batch", f"b{b}", seed, 1.0, 10.0, noise=noise)
    cfg = parse_config(SpectraScalingConfig, {"plot_configs": ["h1_batch/b16"], "model_samples": 200}, "spectra_scaling")
    return spectra_scaling(Layout(root), experiments, SEEDS, cfg)


def test_planted_law_is_recovered_with_covering_intervals(tree):
    f = tree["scaling"]["fits"]["trained.spectral_norm"]
    assert f["status"] == "fitted" and f["fit"]["n_runs"] == 9 and f["distinct_depths"] == 3 and f["distinct_widths"] == 3
    assert f["width_range"] == [16.0, 256.0] and f["depth_range"] == [1.0, 3.0]  # printed beside each fit
    assert f["fit"]["alpha_ci"][0] < ALPHA < f["fit"]["alpha_ci"][1]
    assert f["fit"]["beta_ci"][0] < BETA < f["fit"]["beta_ci"][1]
    assert f["fit"]["preferred"] == "exponential"
    assert f["tests"]["alpha"]["supported"] and f["tests"]["beta"]["supported"]
    assert len(f["points"]) == 9 and all(p["n_seeds"] == 3 for p in f["points"])
    # the fit reads ||H||_2 (3 lam at init, from the bottom end), with lambda_max (2 lam) reported beside it
    init = tree["scaling"]["fits"]["at_init.spectral_norm"]
    assert init["fit"]["alpha"] == pytest.approx(f["fit"]["alpha"]) and init["fit"]["log_a"] == pytest.approx(f["fit"]["log_a"] + math.log(3))
    top = tree["scaling"]["fits"]["at_init.lambda_max"]
    assert top["status"] == "fitted" and top["fit"]["log_a"] == pytest.approx(f["fit"]["log_a"] + math.log(2))
    assert tree["scaling"]["fits"]["trained.lambda_max"]["fit"]["log_a"] == pytest.approx(f["fit"]["log_a"])
    # bulk sigma^2 at init was planted as 0.01 n^0.5 exactly: alpha 0.5, beta 0
    s2 = tree["scaling"]["fits"]["at_init.bulk_sigma2"]["fit"]
    assert s2["alpha"] == pytest.approx(0.5, abs=1e-9) and s2["beta"] == pytest.approx(0.0, abs=1e-9)
    assert {h["name"] for h in tree["scaling"]["families"]["confirmatory"]} == {
        "scaling[trained.spectral_norm:alpha]", "scaling[trained.spectral_norm:beta]",
        "scaling[at_init.spectral_norm:alpha]", "scaling[at_init.spectral_norm:beta]"}
    assert "scaling[at_init.lambda_max:alpha]" in {h["name"] for h in tree["scaling"]["families"]["exploratory"]}
    m = headline(tree)["trained_spectral_norm"]
    assert m["alpha_ci_low"] < m["alpha"] < m["alpha_ci_high"] and m["beta_positive_supported"] is True


def test_spikes_counted_and_bulk_recovered_for_every_run(tree):
    runs = tree["spectra"]["runs"]
    assert len(runs) == 9 * 3 + 2 * 3 and all(r["status"] == "ok" for r in runs)
    assert all(r["num_spikes"] == 3 for r in runs)
    assert np.median([r["bulk_sigma"] for r in runs]) == pytest.approx(SIGMA, rel=0.05)
    # the planted bulk (sigma 0.2) is wider than the SLQ broadening: resolved; 3 planted spikes: the test says "spiked"
    assert all(r["bulk_resolved"] and r["sigma_broadening"] < r["bulk_sigma"] for r in runs)
    assert all(r["spike_verdict"] == "spiked" and r["spike_p"] <= 0.05 and r["spike_max_detectable"] == 14 for r in runs)
    assert tree["spectra"]["overall"]["spiked"]["k"] == 33
    overall = tree["spectra"]["overall"]
    assert overall["c_minus_1"]["k"] == 0 and overall["below_c_minus_1"]["k"] == overall["n_runs"] == 33
    assert overall["below_c_minus_1"]["ci_low"] > 0.85
    # constant trained outlier count (3) -> the count fit has alpha = beta = 0
    fit = tree["scaling"]["fits"]["trained.outlier_count"]["fit"]
    assert fit["alpha"] == pytest.approx(0.0, abs=1e-9) and fit["beta"] == pytest.approx(0.0, abs=1e-9)
    curve = tree["curves"][0]
    assert curve["status"] == "ok" and len(curve["spikes"]) == 3
    x = np.asarray(curve["grid"])
    assert np.trapezoid(curve["spiked"], x) == pytest.approx(1.0, abs=0.02)


def test_gradient_subspace_table_and_trend(tree):
    gs = tree["gradient_subspaces"]
    assert gs["status"] == "tested" and [e["batch_size"] for e in gs["per_config"]] == [16, 256]
    small = gs["per_config"][0]
    assert small["energy_rank_90"]["mean"] == pytest.approx(13.0) and small["energy_rank_90"]["ci"][0] < 13 < small["energy_rank_90"]["ci"][1]
    assert small["pearson_positive_significant"] == 3 and small["spearman_positive_significant"] == 0
    assert gs["trend_in_log_batch"]["energy_rank_90"]["spearman_rho"] < -0.8


def test_config_errors():
    with pytest.raises(ConfigError, match="spectra_scaling.targets="):
        parse_config(SpectraScalingConfig, {"targets": ["width"]}, "spectra_scaling")
    with pytest.raises(ConfigError, match="entries '<experiment>/<config>'"):
        parse_config(SpectraScalingConfig, {"plot_configs": ["b16"]}, "spectra_scaling")
    with pytest.raises(ConfigError, match="unknown key spectra_scaling.colour"):
        parse_config(SpectraScalingConfig, {"colour": 1}, "spectra_scaling")


def test_a_bulk_narrower_than_the_broadening_is_unresolved_and_a_semicircle_is_not_called_spiked():
    """Pure Wigner spectra (no spike) pass the spike test; a broadening wider than the bulk hides the bulk fit."""
    import pandas as pd

    from landscape.stats.spectra_scaling import fit_spectra

    rows = []
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        X = torch.randn(N, N, generator=g, dtype=torch.float64)
        W = (X + X.T) / math.sqrt(2 * N) * SIGMA
        dens = spectral_density(W, num_probes=2, num_steps=20, seed=seed)
        rows.append({"experiment": "e", "config": "wigner", "seed": seed, "num_params": N, "top_k": 20, "lambda_max": float("nan"),
                     "eigenvalues": torch.linalg.eigvalsh(W).flip(0)[:20].tolist(), "slq_alphas": dens.alphas, "slq_betas": dens.betas,
                     "residual_bounds": None, "sigma_broadening": 10 * SIGMA if seed % 2 else float(dens.sigma)})
    fitted = fit_spectra(pd.DataFrame(rows), edge_points=5, draws=200)
    assert (fitted.status == "ok").all()
    assert (fitted.spike_verdict == "semicircle").sum() >= 16  # level 0.05: more than 4 of 20 has probability 0.003
    wide = fitted[fitted.seed % 2 == 1]
    assert not wide.bulk_resolved.any() and wide.bulk_sigma.isna().all() and wide.bulk_sigma_estimate.notna().all()
    assert fitted[fitted.seed % 2 == 0].bulk_resolved.all()
