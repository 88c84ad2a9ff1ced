"""spectra_scaling stage: the scaling law of the Hessian's norm, spectra against RMT, gradient subspaces.

Reads measure/ only (``curvature.json`` and ``krylov.pt`` of every measured run, through
:mod:`landscape.pipeline.tables`): fits ``||H||_2 = A n^alpha e^(beta L)`` over the scaling
grid at init and after training (and the same law for the trace, the bulk variance and the
spike count), compares every spectrum with a semicircle and a spiked model (spikes counted
against C - 1 and C), and tabulates the ``C ~ diag(H)`` correlations and gradient ranks
across batch size (:mod:`landscape.stats.spectra_scaling`). Writes
``spectra_scaling/results.json`` (every number with its CI and n) and
``spectra_scaling/metrics.json`` (alpha, beta and their CIs, for ``dvc metrics``).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd

from landscape.io import write_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.params import section, seeds_of
from landscape.pipeline.tables import (
    density_inputs,
    gradient_noise_runs,
    measured_spectra,
    scaling_runs,
)
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    parse_config,
    rule,
    subset_of,
)
from landscape.stats.result import plain
from landscape.stats.spectra_scaling import (
    TARGETS,
    density_curve,
    fit_scaling,
    fit_spectra,
    gradient_subspaces,
    headline,
    scaling_rows,
    spike_summary,
)

__all__ = ["SpectraScalingConfig", "spectra_scaling", "load_config", "run"]

_LEVEL = rule("a float in (0, 1)", lambda x: isinstance(x, float) and 0 < x < 1)
_NAMES = rule("a list of names", lambda x: isinstance(x, (list, tuple)) and all(isinstance(v, str) for v in x))


@dataclass(frozen=True)
class SpectraScalingConfig(Checked):
    """Settings of the spectra_scaling stage (``spectra_scaling`` in params.yaml).

    Attributes:
        scaling_experiment: Group whose configs form the width x depth grid (MLPs with
            ``model.width`` and ``model.depth``).
        batch_experiment: Group whose configs vary ``train.batch_size`` (gradient subspaces).
        num_classes: C, the number of classes the spike count is compared with.
        edge_points: Eigenvalues in the spike rule's edge regression (spikes <= top_k - edge_points).
        alpha: Family-wise level of the verdicts (Holm).
        ci_level: Coverage of every interval.
        targets: Responses of the scaling fits (subset of spectral_norm, lambda_max, trace, bulk_sigma2, outlier_count;
            spectral_norm is ||H||_2 = max(|lambda_max|, |lambda_min|), the confirmatory family).
        plot_configs: ``<experiment>/<config>`` whose density curves the page draws (seed: the first measured).
        model_samples: Quantile points used to broaden the model densities like the measured one.
        spike_draws: Planted Wigner matrices of the semicircle-vs-spiked test's null law, per top-k size
            (:func:`landscape.stats.spectra_scaling.spike_nulls`; level ``alpha``).
    """

    scaling_experiment: str = "scaling"
    batch_experiment: str = "h1_batch"
    num_classes: int = field(default=10, metadata=int_at_least(2))
    edge_points: int = field(default=5, metadata=int_at_least(3))
    alpha: float = field(default=0.05, metadata=_LEVEL)
    ci_level: float = field(default=0.95, metadata=_LEVEL)
    targets: tuple[str, ...] = field(default=TARGETS, metadata=subset_of(TARGETS))
    plot_configs: tuple[str, ...] = field(default=(), metadata=_NAMES)
    model_samples: int = field(default=2000, metadata=int_at_least(100))
    spike_draws: int = field(default=200, metadata=int_at_least(20))

    def _extra_checks(self) -> None:
        bad = [p for p in self.plot_configs if p.count("/") != 1]
        if bad:
            raise ConfigError(f"spectra_scaling.plot_configs={list(self.plot_configs)!r} is not allowed; "
                              "allowed: entries '<experiment>/<config>'")


def _density_curves(layout: Layout, spectra: pd.DataFrame, cfg: SpectraScalingConfig) -> list[dict[str, Any]]:
    """The density figure of each plot config (its first seed with a fitted spectrum)."""
    out: list[dict[str, Any]] = []
    for entry in cfg.plot_configs:
        exp, name = entry.split("/")
        ok = spectra[(spectra.experiment == exp) & (spectra.config == name) & (spectra.status == "ok")] if len(spectra) else spectra
        if not len(ok):
            out.append({"config": entry, "status": "not measured"})
            continue
        seed = int(ok.iloc[0].seed)
        curve = density_curve(density_inputs(layout, exp, name, seed), cfg.edge_points, cfg.model_samples)
        out.append({"config": entry, "status": "ok", "seed": seed, **curve})
    return out


def spectra_scaling(layout: Layout, experiments: Mapping[str, Any], seeds: Sequence[int], cfg: SpectraScalingConfig) -> dict[str, Any]:
    """Everything the stage writes to ``spectra_scaling/results.json`` (plain JSON types).

    Raises:
        ConfigError: ``scaling_experiment`` is not a group, or a grid config lacks width/depth.
    """
    spectra = fit_spectra(measured_spectra(layout, experiments, seeds), cfg.edge_points, alpha=cfg.alpha, draws=cfg.spike_draws)
    block = experiments.get(cfg.scaling_experiment)
    if block is None:
        raise ConfigError(f"spectra_scaling.scaling_experiment={cfg.scaling_experiment!r} is not an experiment group; "
                          f"have {sorted(experiments)}")
    grid = scaling_runs(layout, cfg.scaling_experiment, block.get("configs", {}), seeds_of(block, seeds))
    rows = scaling_rows(grid, spectra, cfg.scaling_experiment)
    scaling = (fit_scaling(rows, cfg.targets, cfg.alpha, cfg.ci_level) if len(rows)
               else {"fits": {}, "families": {}, "status": "not fitted: no scaling runs measured"})
    batch = experiments.get(cfg.batch_experiment)
    gradients = (gradient_subspaces(gradient_noise_runs(layout, cfg.batch_experiment, batch.get("configs", {}), seeds_of(batch, seeds)),
                                    cfg.batch_experiment, cfg.alpha, cfg.ci_level)
                 if batch is not None else {"status": f"not tested: no experiment group {cfg.batch_experiment!r}"})
    return plain({
        "settings": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "scaling": {**scaling, "rows": rows.to_dict("records")},
        "spectra": {"runs": spectra.to_dict("records"), **spike_summary(spectra, cfg.num_classes, cfg.ci_level)},
        "curves": _density_curves(layout, spectra, cfg),
        "gradient_subspaces": gradients,
    })


def load_config(params: Mapping[str, Any]) -> SpectraScalingConfig:
    """The ``spectra_scaling`` section of params, validated."""
    return parse_config(SpectraScalingConfig, section(params, "spectra_scaling"), "spectra_scaling")


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Fit, compare and tabulate; write ``spectra_scaling/{results,metrics}.json``."""
    started = time.perf_counter()
    cfg = load_config(params)
    experiments, seeds = section(params, "experiments"), section(params, "seeds")
    results = spectra_scaling(layout, experiments, seeds, cfg)
    write_json(layout.results("spectra_scaling"), {"profile": params.get("profile"), "seeds": seeds, **results})
    metrics = headline(results)
    write_json(layout.metrics("spectra_scaling"), metrics)
    for key, m in metrics.items():
        if "alpha" in m:
            print(f"{key}: alpha={m['alpha']:.3g} [{m['alpha_ci_low']:.3g}, {m['alpha_ci_high']:.3g}] "
                  f"beta={m['beta']:.3g} [{m['beta_ci_low']:.3g}, {m['beta_ci_high']:.3g}] preferred={m['preferred']} n={m['n_configs']}")
    if "spikes" in metrics:
        s = metrics["spikes"]
        print(f"spikes: {s['n_runs']} runs, share C-1 = {s['share_c_minus_1']:.2f}, share C = {s['share_c']:.2f}, "
              f"spiked (test) = {s['share_spiked']:.2f}")
    print(f"spectra_scaling: {time.perf_counter() - started:.1f} s")
    return results
