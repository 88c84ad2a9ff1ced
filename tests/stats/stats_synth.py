"""Synthetic per-run metric tables with planted effects, and binomial checks of rates."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats as sps

BATCH_SIZES = np.array([16.0, 32.0, 64.0, 128.0, 256.0])


def assert_rate_near(hits: int, repeats: int, p: float, conf: float = 0.99) -> None:
    """Assert ``hits`` lies in the central ``conf`` binomial(repeats, p) interval."""
    lo, hi = sps.binom.interval(conf, repeats, p)
    assert lo <= hits <= hi, f"{hits}/{repeats} = {hits / repeats:.3f}, expected {p} (band [{lo}, {hi}])"


def assert_rate_at_most(hits: int, repeats: int, p: float, conf: float = 0.99) -> None:
    """Assert ``hits`` does not exceed the upper ``conf`` binomial(repeats, p) bound."""
    hi = sps.binom.ppf(conf, repeats, p)
    assert hits <= hi, f"{hits}/{repeats} = {hits / repeats:.3f} exceeds {p} (bound {hi})"


def h1_table(
    rng: np.random.Generator,
    n_seeds: int,
    a: float,
    b: float,
    direct: float = 0.0,
    noise_y: float = 0.01,
    seed_sd_y: float = 0.01,
) -> pd.DataFrame:
    """Runs from the mediation model of H1 with seed random intercepts.

    log lambda = 1 + a log B + 2 train_loss + u_seed + N(0, 0.3^2)
    test_error = 0.1 + b log lambda + direct log B + 0.5 train_loss + w_seed + N(0, noise_y^2)
    with u_seed ~ N(0, 0.3^2) and w_seed ~ N(0, seed_sd_y^2).
    The true indirect effect is a * b.
    """
    seed = np.repeat(np.arange(n_seeds), BATCH_SIZES.size)
    log_b = np.tile(np.log(BATCH_SIZES), n_seeds)
    n = seed.size
    train_loss = 0.05 + rng.normal(0.0, 0.01, n)
    log_lam = 1.0 + a * log_b + 2.0 * train_loss + rng.normal(0.0, 0.3, n_seeds)[seed] + rng.normal(0.0, 0.3, n)
    err = (
        0.1 + b * log_lam + direct * log_b + 0.5 * train_loss
        + rng.normal(0.0, seed_sd_y, n_seeds)[seed] + rng.normal(0.0, noise_y, n)
    )
    return pd.DataFrame(
        {
            "experiment": "batch",
            "seed": seed,
            "batch_size": np.exp(log_b),
            "lambda_max": np.exp(log_lam),
            "test_error": err,
            "train_loss": train_loss,
        }
    )


def h2_table(
    rng: np.random.Generator,
    n_seeds: int,
    effect: float,
    norms: tuple[str, ...] = ("none", "batchnorm", "layernorm"),
    noise: float = 0.2,
) -> pd.DataFrame:
    """Skip/no-skip pairs: log measure = level(norm) + pair effect + effect * skip + noise.

    ``effect`` is the true mean paired difference on the log scale (negative: skip flattens).
    The pair effect (shared initialisation) is large, so unpaired tests would lose it.
    """
    rows = []
    level = dict(zip(norms, np.linspace(2.0, 4.0, len(norms))))
    for norm in norms:
        pair = rng.normal(0.0, 1.0, n_seeds)
        for skip in (False, True):
            log_m = level[norm] + pair + effect * skip + rng.normal(0.0, noise, n_seeds)
            for s in range(n_seeds):
                rows.append({"norm": norm, "seed": s, "skip": skip, "lambda_max": float(np.exp(log_m[s]))})
    return pd.DataFrame(rows)


def h3_table(
    rng: np.random.Generator,
    n_seeds: int,
    per_seed: int,
    beta: float,
    seed_sd: float = 0.0,
) -> pd.DataFrame:
    """Escape trials: logit P(escape) = -1 + beta * alignment + 0.5 [sgd] + u_seed."""
    n = n_seeds * per_seed
    seed = np.repeat(np.arange(n_seeds), per_seed)
    align = rng.uniform(0.0, 1.0, n)
    noise = rng.choice(np.array(["gaussian", "sgd"]), n)
    eta = -1.0 + beta * align + 0.5 * (noise == "sgd") + rng.normal(0.0, seed_sd, n_seeds)[seed]
    escape = (rng.random(n) < 1.0 / (1.0 + np.exp(-eta))).astype(int)
    return pd.DataFrame({"seed": seed, "alignment": align, "noise_type": noise, "escape": escape})


def h4_table(
    rng: np.random.Generator, n_runs: int, d_naive: float, d_iso: float, noise: float = 0.05
) -> pd.DataFrame:
    """Per-run bounds; bound_hessian - bound_naive has mean d_naive, - bound_iso mean d_iso."""
    base = rng.uniform(0.3, 0.7, n_runs)
    hess = base + rng.normal(0.0, noise, n_runs)
    return pd.DataFrame(
        {
            "seed": np.arange(n_runs) % 5,
            "bound_hessian": hess,
            "bound_naive": base - d_naive + rng.normal(0.0, noise, n_runs),
            "bound_iso": base - d_iso + rng.normal(0.0, noise, n_runs),
        }
    )


def scaling_table(
    rng: np.random.Generator,
    alpha: float,
    beta: float,
    noise: float,
    log_a: float = 0.5,
    widths: tuple[float, ...] = (8, 16, 32, 64, 128),
    depths: tuple[float, ...] = (1, 2, 3, 4, 6, 8),
    power_law_gamma: float | None = None,
) -> pd.DataFrame:
    """Grid of (width, depth) with log||H|| = log A + alpha log n + beta L + N(0, noise^2).

    With ``power_law_gamma`` the depth term is gamma log L instead of beta L.
    """
    n, L = (g.ravel() for g in np.meshgrid(np.asarray(widths, float), np.asarray(depths, float)))
    depth_term = beta * L if power_law_gamma is None else power_law_gamma * np.log(L)
    log_h = log_a + alpha * np.log(n) + depth_term + rng.normal(0.0, noise, n.size)
    return pd.DataFrame({"width": n, "depth": L, "lambda_max": np.exp(log_h), "seed": np.arange(n.size) % 3})
