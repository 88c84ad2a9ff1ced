"""H3 as a dose-response: time to escape a minimum against the noise's Hessian alignment.

The escape trials vary one thing, the share ``a`` of the noise energy in the top-k Hessian
subspace (the dose), at a fixed total noise variance; the response is the step at which the
trial left the basin, censored at the step cap. The model is Cox's proportional hazards
(Cox 1972, JRSS-B 34(2)),

    h(t | a, stratum) = h_stratum(t) exp(beta a),

stratified by start point and restart (each stratum: one minimum and one stream of minibatch
draws shared by every dose), Efron ties, model-based standard errors (statsmodels
``PHReg``). The effect is the hazard ratio per ``per`` units of alignment,
``exp(beta per)``. Beside it: a conditional logistic regression of escape-by-the-cap on
the dose (same strata), and the same Cox model on Zhu et al.'s (2019, ICML) escape
indicator ``tr(H Sigma)`` standardised, with both models' partial log-likelihoods (one
covariate each, the same rows and strata: the larger one predicts escape better).

:func:`simulate_dose_response` plants this model (exponential times, a gamma frailty per
stratum, censoring at the cap) for the recovery test and for :func:`dose_response_power`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats as sps
from statsmodels.discrete.conditional_models import ConditionalLogit

from landscape.stats._common import as_frame, check_level, finite_rows, require_columns
from landscape.stats.intervals import wilson_bounds
from landscape.stats.result import HypothesisResult

__all__ = [
    "POWER_HAZARD_RATIOS",
    "arm_name",
    "cox_slope",
    "dose_response_power",
    "dose_response_power_at",
    "escape_arms",
    "h3_dose_response",
    "simulate_dose_response",
]

#: Hazard ratios per 0.1 alignment at which the power of the design is stated. Zhu et al.
#: (2019) report no effect size on a hazard or probability scale (their escape experiments are
#: single trajectories per noise type), so the power is given at these stated effects.
POWER_HAZARD_RATIOS: tuple[float, ...] = (1.1, 1.2, 1.5)


def _strata_codes(df: pd.DataFrame, strata: Sequence[str]) -> np.ndarray:
    keys = df[list(strata)].astype(str).agg("/".join, axis=1)
    return pd.factorize(keys, sort=True)[0]


def _efron_terms(beta: float, groups: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> tuple[float, float, float]:
    """Log partial likelihood (Efron ties), its gradient and the observed information at ``beta``."""
    llf = grad = info = 0.0
    for t, e, x in groups:
        w = np.exp(beta * x)
        for tau in np.unique(t[e == 1]):
            risk, dead = t >= tau, (t == tau) & (e == 1)
            d = int(dead.sum())
            r0, r1, r2 = w[risk].sum(), (w * x)[risk].sum(), (w * x * x)[risk].sum()
            d0, d1, d2 = w[dead].sum(), (w * x)[dead].sum(), (w * x * x)[dead].sum()
            llf += beta * x[dead].sum()
            grad += x[dead].sum()
            for ell in range(d):
                f = ell / d
                s0, s1, s2 = r0 - f * d0, r1 - f * d1, r2 - f * d2
                llf -= np.log(s0)
                grad -= s1 / s0
                info += s2 / s0 - (s1 / s0) ** 2
    return float(llf), float(grad), float(info)


def _cox_newton(time: np.ndarray, event: np.ndarray, x: np.ndarray, strata: np.ndarray) -> tuple[float, float, float]:
    """Stratified one-covariate Cox fit by Newton's method with step halving: (beta, se, llf).

    The partial likelihood is Efron's (Efron 1977, JASA 72(359)); it is concave in beta, so
    Newton with halving converges from 0. NaNs when the information vanishes or beta diverges
    (every event at the largest dose of its stratum: the estimate is infinite)."""
    nan = float("nan")
    groups = [(time[strata == k], event[strata == k], x[strata == k]) for k in np.unique(strata)]
    groups = [g for g in groups if g[1].sum() > 0 and np.ptp(g[2]) > 0]
    if not groups:
        return nan, nan, nan
    beta = 0.0
    llf, grad, info = _efron_terms(beta, groups)
    for _ in range(100):
        if not info > 0:
            return nan, nan, nan
        step = grad / info
        while True:
            cand = _efron_terms(beta + step, groups)
            if cand[0] >= llf - 1e-12 or abs(step) < 1e-12:
                break
            step /= 2
        beta += step
        llf, grad, info = cand
        if abs(beta) > 1e3:
            return nan, nan, nan
        if abs(step) < 1e-10 * max(1.0, abs(beta)):
            break
    return (beta, 1.0 / np.sqrt(info), llf) if info > 0 else (nan, nan, nan)


def cox_slope(time: np.ndarray, event: np.ndarray, x: np.ndarray, strata: np.ndarray, *, ci_level: float = 0.95,
              per: float = 1.0) -> dict[str, float]:
    """Stratified Cox fit of ``time`` (censored where ``event`` is 0) on one covariate ``x``
    (Efron ties, model-based SE; agrees with statsmodels ``PHReg``, tested).

    Args:
        time: Event or censoring times, > 0, shape (n,).
        event: 1 where ``time`` is an event, 0 where it is censored, shape (n,).
        x: The covariate, shape (n,).
        strata: Integer stratum of each row, shape (n,).
        ci_level: Coverage of the interval.
        per: Units of ``x`` the hazard ratio refers to.

    Returns:
        ``beta`` (log hazard ratio per unit), ``se``, ``hazard_ratio`` and its interval
        ``hr_ci_low``/``hr_ci_high`` per ``per`` units, two-sided ``p`` and one-sided
        ``p_greater`` (normal reference), ``llf`` (partial log-likelihood), ``n_events``.
        NaN everywhere but ``n_events`` when no stratum holds an event and a spread of ``x``.

    Raises:
        ValueError: Times not positive, or arrays of different lengths.
    """
    time, event, x = np.asarray(time, float), np.asarray(event, float), np.asarray(x, float)
    if not (len(time) == len(event) == len(x) == len(strata)):
        raise ValueError(f"time, event, x and strata must have one length, got {len(time)}, {len(event)}, {len(x)}, {len(strata)}")
    if np.any(time <= 0):
        raise ValueError(f"times must be > 0, got {time[time <= 0][0]!r}")
    nan = float("nan")
    out = {"beta": nan, "se": nan, "hazard_ratio": nan, "hr_ci_low": nan, "hr_ci_high": nan, "p": nan, "p_greater": nan,
           "llf": nan, "n_events": int(event.sum())}
    if event.sum() == 0 or np.ptp(x) == 0:
        return out
    beta, se, llf = _cox_newton(time, event, x, np.asarray(strata))
    if not (np.isfinite(beta) and np.isfinite(se) and se > 0):
        return out
    q = float(sps.norm.ppf(0.5 + ci_level / 2))
    z = beta / se
    out.update(beta=beta, se=se, hazard_ratio=float(np.exp(beta * per)), hr_ci_low=float(np.exp((beta - q * se) * per)),
               hr_ci_high=float(np.exp((beta + q * se) * per)), p=float(2 * sps.norm.sf(abs(z))),
               p_greater=float(sps.norm.sf(z)), llf=float(llf))
    return out


def _logit_by_cap(event: np.ndarray, x: np.ndarray, strata: np.ndarray, ci_level: float, per: float) -> dict[str, float]:
    """Conditional logistic regression of escape-by-the-cap on the dose given the stratum."""
    nan = float("nan")
    informative = pd.Series(event).groupby(strata).transform(lambda s: s.min() != s.max()).to_numpy()
    out = {"odds_ratio": nan, "or_ci_low": nan, "or_ci_high": nan, "p": nan, "n_informative_strata": len(np.unique(strata[informative]))}
    if not informative.any():
        return out
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = ConditionalLogit(event[informative], x[informative, None], groups=strata[informative]).fit(disp=False)
    b, se = float(np.asarray(res.params)[0]), float(np.asarray(res.bse)[0])
    if not (np.isfinite(b) and np.isfinite(se) and se > 0):
        return out
    q = float(sps.norm.ppf(0.5 + ci_level / 2))
    out.update(odds_ratio=float(np.exp(b * per)), or_ci_low=float(np.exp((b - q * se) * per)),
               or_ci_high=float(np.exp((b + q * se) * per)), p=float(2 * sps.norm.sf(abs(b / se))))
    return out


def h3_dose_response(
    data: pd.DataFrame | Sequence[Mapping[str, Any]],
    *,
    dose: str = "alignment",
    time: str = "escape_step",
    event: str = "escape",
    strata: Sequence[str] = ("seed", "restart"),
    group: str = "seed",
    indicator: str | None = "trace_h_sigma",
    per: float = 0.1,
    name: str = "H3",
    alpha: float = 0.05,
    ci_level: float = 0.95,
) -> HypothesisResult:
    """Test H3: more of the noise in the top Hessian subspace, faster escape (module docstring).

    Args:
        data: One row per escape trial of the dose-response family.
        dose: Alignment column (share of noise energy in the top-k subspace, in [0, 1]).
        time: Escape step (the cap for trials that did not escape), > 0.
        event: 0/1 escape column.
        strata: Columns whose combination is one stratum (start point, restart).
        group: Column of the independent units (start points), counted in ``n_groups``.
        indicator: Column of Zhu et al.'s ``tr(H Sigma)`` compared with ``dose``; None skips it.
        per: Alignment units of the reported hazard and odds ratios.
        name: Name of the result.
        alpha: Level of the verdict; ``ci_level``: coverage of the intervals.

    Returns:
        Effect = hazard ratio of escape per ``per`` alignment, its interval and the one-sided
        p-value of ``beta <= 0``; ``extra`` holds the two-sided p, the logistic view, the
        indicator's Cox fit and both partial log-likelihoods, and escape counts per dose level.

    Raises:
        ValueError: Missing columns, no rows, a non-0/1 event, or no escape at all.
    """
    where = "h3_dose_response"
    check_level("alpha", alpha)
    check_level("ci_level", ci_level)
    if not per > 0:
        raise ValueError(f"{where}: per must be > 0, got {per}")
    df = as_frame(data)
    require_columns(df, [dose, time, event, group, *strata] + ([indicator] if indicator else []), where)
    df, dropped = finite_rows(df, [dose, time, event], [group, *strata])
    if len(df) == 0:
        raise ValueError(f"{where}: no rows with finite {[dose, time, event]}")
    y = df[event].to_numpy(dtype=float)
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError(f"{where}: column {event!r} must be 0/1, got {y[~np.isin(y, (0.0, 1.0))][0]!r}")
    if y.sum() == 0:
        raise ValueError(f"{where}: no trial escaped ({len(df)} trials); the dose-response is not identified")
    codes = _strata_codes(df, strata)
    x, t = df[dose].to_numpy(dtype=float), df[time].to_numpy(dtype=float)
    fit = cox_slope(t, y, x, codes, ci_level=ci_level, per=per)
    if not np.isfinite(fit["beta"]):
        raise ValueError(f"{where}: the Cox fit is not identified ({int(y.sum())} escapes; dose spread {np.ptp(x):.3g})")
    method = f"Cox proportional hazards (efron ties), stratified by {'x'.join(strata)}, model-based SEs"
    per_unit = {"log_hazard_ratio": fit["beta"], "se": fit["se"], "hazard_ratio": float(np.exp(fit["beta"])),
                "hr_ci_low": fit["hr_ci_low"] ** (1 / per), "hr_ci_high": fit["hr_ci_high"] ** (1 / per),
                "p_two_sided": fit["p"], "p_greater": fit["p_greater"]}
    extra: dict[str, Any] = {"cox": {**fit, "method": method, "coefficients": {dose: per_unit}}, "per": per,
                             "p_two_sided": fit["p"], "n_events": int(y.sum()),
                             "n_strata": int(codes.max() + 1), "logistic": _logit_by_cap(y, x, codes, ci_level, per),
                             "n_dropped_nonfinite": dropped}
    if indicator:
        z = df[indicator].to_numpy(dtype=float)
        ok = np.isfinite(z)
        sd = float(np.std(z[ok], ddof=1)) if ok.sum() > 1 else float("nan")
        if ok.sum() > 1 and sd > 0:
            zi = cox_slope(t[ok], y[ok], (z[ok] - z[ok].mean()) / sd, codes[ok], ci_level=ci_level)
            al = cox_slope(t[ok], y[ok], x[ok], codes[ok], ci_level=ci_level)
            extra["indicator"] = {"column": indicator, "sd": sd, "cox_per_sd": zi, "llf": zi["llf"], "llf_dose": al["llf"],
                                  "better": "dose" if al["llf"] > zi["llf"] else ("indicator" if zi["llf"] > al["llf"] else "tie"),
                                  "spearman_with_dose": float(sps.spearmanr(x[ok], z[ok]).statistic)}
    if "scale" in df:
        levels = df.groupby("scale")
        extra["by_scale"] = [{"scale": float(s), "trials": len(g), "escapes": int(g[event].sum()),
                              "alignment_mean": float(g[dose].mean()), "median_escape_step": float(g[time].median())}
                             for s, g in levels]
    return HypothesisResult.build(
        name=name,
        null=f"The hazard of escape does not rise with {dose}: log hazard ratio <= 0.",
        alternative=f"More of the noise in the top Hessian subspace ({dose}) means faster escape: hazard ratio > 1.",
        test=f"Cox proportional hazards of {time} on {dose}, stratified by {'x'.join(strata)}, Efron ties, model-based SEs",
        n_runs=len(df), n_groups=int(df[group].nunique()),
        effect=fit["hazard_ratio"], ci_low=fit["hr_ci_low"], ci_high=fit["hr_ci_high"], p_value=fit["p_greater"],
        alpha=alpha, ci_level=ci_level, side="greater", null_value=1.0,
        effect_name=f"hazard ratio of escape per {per:g} of {dose}", extra=extra,
    )


def simulate_dose_response(doses: Sequence[float], *, beta: float, base_hazard: float, horizon: float, n_strata: int,
                           frailty_var: float = 0.0, seed: int = 0) -> pd.DataFrame:
    """Escape times from a known proportional-hazards dose response (planted truth).

    Each of ``n_strata`` strata has a frailty ``w ~ Gamma(1/v, v)`` (mean 1, variance ``v``;
    ``w = 1`` when ``v = 0``) and one trial per dose ``a`` with an exponential time of rate
    ``base_hazard w exp(beta a)``, censored at ``horizon``.

    Returns:
        Columns ``stratum``, ``seed`` (= stratum), ``restart`` (0), ``alignment``,
        ``escape_step`` and ``escape``.
    """
    if not (base_hazard > 0 and horizon > 0 and n_strata >= 1 and frailty_var >= 0):
        raise ValueError(f"need base_hazard > 0, horizon > 0, n_strata >= 1, frailty_var >= 0; got "
                         f"{base_hazard}, {horizon}, {n_strata}, {frailty_var}")
    rng = np.random.default_rng(seed)
    a = np.tile(np.asarray(doses, dtype=float), n_strata)
    stratum = np.repeat(np.arange(n_strata), len(doses))
    w = rng.gamma(1 / frailty_var, frailty_var, n_strata) if frailty_var > 0 else np.ones(n_strata)
    t = rng.exponential(1.0 / (base_hazard * w[stratum] * np.exp(beta * a)))
    return pd.DataFrame({"stratum": stratum, "seed": stratum, "restart": 0, "alignment": a,
                         "escape_step": np.minimum(t, horizon), "escape": (t < horizon).astype(int)})


def dose_response_power(doses: Sequence[float], *, beta: float, base_hazard: float, horizon: float, n_strata: int,
                        frailty_var: float = 0.0, alpha: float = 0.05, reps: int = 200, seed: int = 0) -> float:
    """Share of ``reps`` simulated data sets (:func:`simulate_dose_response`) in which the
    stratified Cox slope is significant at two-sided ``alpha`` with a positive sign."""
    check_level("alpha", alpha)
    hits = 0
    for r in range(reps):
        sim = simulate_dose_response(doses, beta=beta, base_hazard=base_hazard, horizon=horizon, n_strata=n_strata,
                                     frailty_var=frailty_var, seed=seed * 100_003 + r)
        fit = cox_slope(sim["escape_step"].to_numpy(), sim["escape"].to_numpy(), sim["alignment"].to_numpy(), sim["stratum"].to_numpy())
        hits += bool(np.isfinite(fit["p"]) and fit["p"] <= alpha and fit["beta"] > 0)
    return hits / reps


def arm_name(noise_type: str, scale: float | None) -> str:
    """The arm of a trial: ``sgd`` (scaled, s = 1), ``projected`` (s = 0), ``isotropic`` or ``s=<factor>``."""
    if noise_type in ("sgd", "projected", "isotropic"):
        return noise_type
    if scale is None or not np.isfinite(scale):
        raise ValueError(f"a {noise_type!r} trial needs a finite scale, got {scale!r}")
    return {1.0: "sgd", 0.0: "projected"}.get(float(scale), f"s={float(scale):g}")


def escape_arms(data: pd.DataFrame | Sequence[Mapping[str, Any]], *, event: str = "escape", ci_level: float = 0.95) -> list[dict[str, Any]]:
    """Per arm (:func:`arm_name`) and seed set: trials, escapes, escape rate with its Wilson
    interval, mean alignment, mean ``tr(H Sigma)`` and median escape step (descriptive)."""
    df = as_frame(data)
    require_columns(df, ["noise_type", "scale", event, "alignment", "escape_step"], "escape_arms")
    df = df.assign(arm=[arm_name(k, None if pd.isna(s) else float(s)) for k, s in zip(df["noise_type"], df["scale"], strict=True)])
    if "seed_set" not in df:
        df = df.assign(seed_set="all")
    out = []
    for (arm, part), g in df.groupby(["arm", "seed_set"], sort=False):
        n, k = len(g), int(g[event].sum())
        lo, hi = wilson_bounds(k, n, ci_level)
        ths = pd.to_numeric(g.get("trace_h_sigma"), errors="coerce") if "trace_h_sigma" in g else pd.Series(dtype=float)
        out.append({"arm": arm, "seed_set": part, "scale": None if pd.isna(g["scale"].iloc[0]) else float(g["scale"].iloc[0]),
                    "trials": n, "escapes": k, "rate": k / n, "rate_ci_low": float(lo), "rate_ci_high": float(hi),
                    "alignment_mean": float(g["alignment"].mean()),
                    "trace_h_sigma_mean": float(ths.mean()) if ths.notna().any() else float("nan"),
                    "median_escape_step": float(g["escape_step"].median())})
    return out


def dose_response_power_at(data: pd.DataFrame, *, hazard_ratios: Sequence[float] = POWER_HAZARD_RATIOS, per: float = 0.1,
                           strata: Sequence[str] = ("seed", "restart"), reps: int = 100, frailty_var: float = 0.5,
                           alpha: float = 0.05, seed: int = 0) -> dict[str, Any]:
    """Power of this data set's design (its doses, strata and step cap) at given effects.

    The doses are the mean alignment per ``scale``, the strata those of ``data``, the cap its
    largest ``escape_step``, and the baseline hazard the one that gives the observed escape
    share by the cap (clipped to [0.05, 0.95]); the effect is a hazard ratio per ``per``
    alignment (:data:`POWER_HAZARD_RATIOS`), simulated ``reps`` times with a gamma frailty of
    variance ``frailty_var`` per stratum (:func:`dose_response_power`).
    """
    doses = data.groupby("scale")["alignment"].mean().to_numpy(dtype=float)
    n_strata = len(data.groupby(list(strata)))
    horizon = float(data["escape_step"].max())
    share = float(np.clip(data["escape"].mean(), 0.05, 0.95))
    base = -np.log1p(-share) / horizon
    power = {f"{hr:g}": dose_response_power(doses, beta=float(np.log(hr) / per), base_hazard=base, horizon=horizon,
                                             n_strata=n_strata, frailty_var=frailty_var, alpha=alpha, reps=reps, seed=seed)
             for hr in hazard_ratios}
    return {"per": per, "power_by_hazard_ratio": power, "n_strata": n_strata, "doses": doses.tolist(), "horizon": horizon,
            "base_hazard": float(base), "reps": reps, "frailty_var": frailty_var,
            "effect_source": "Zhu et al. (2019) give no hazard-scale effect; power at stated hazard ratios per 0.1 alignment"}
