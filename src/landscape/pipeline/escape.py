"""escape stage: H3's dose-response experiment, escape from converged minima.

For each seed of ``h3_minima``/``escape.config`` (a large-batch MLP trained to a converged
minimum; the group's own seed list, primary and replication alike) the trained network
starts :func:`landscape.dynamics.escape.escape_study` on the first ``num_examples``
examples of the fixed probe subset (rows of the training split). The top-k Hessian basis is
computed there by Lanczos. A start counts as a minimum when its loss on those examples is at
most ``max_start_loss`` and its gradient norm at most ``max_start_grad_norm``; a start that
fails either is recorded as skipped (``not a minimum``), with both numbers.

Trials per start and restart: the ``scales`` family (SGD noise whose top-k component is
multiplied by ``s`` and renormalised to the SGD draw's norm: the dose-response arms, from
``s = 0``, the projected noise, to ``s = 1``, plain SGD, and above) and the other
``noise_types`` (isotropic noise of the same energy: a descriptive control). Escape (rule
``basin``): a loss barrier above ``barrier_tol`` on the segment from the start, held at every
later check. Outputs (paths from :class:`~landscape.pipeline.layout.Layout`):
``escape/results.json`` (every trial with its checks), ``escape/trials.json`` (one row per
trial, read by the hypotheses stage) and ``escape/metrics.json`` (escape counts with Wilson
intervals per arm, the start points' loss and gradient norm). Seeds run in forked workers.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from landscape.dynamics.escape import (
    NOISE_AT,
    NOISE_TYPES,
    RULES,
    EscapeStudy,
    ModelLandscape,
    escape_study,
    trial_rows,
)
from landscape.io import write_json
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import experiment_dataset, group_seeds, replication_split, section
from landscape.pipeline.runs import load_run, run_status
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.pipeline.seed_summary import mean_sd
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    number_above_zero,
    one_of,
    parse_config,
)
from landscape.schema import (
    rule as _rule,  # the field named ``rule`` below would shadow it
)
from landscape.stats.dose_response import arm_name
from landscape.stats.intervals import wilson_bounds

__all__ = ["SOURCE_EXPERIMENT", "EscapeConfig", "run"]

SOURCE_EXPERIMENT = "h3_minima"  # large-batch MLPs trained to converged (sharp) minima


def _in_unit_interval(x: Any) -> bool:
    return number_above_zero()["check"](x) and x < 1


@dataclass(frozen=True)
class EscapeConfig(Checked):
    """Settings of the ``escape`` stage (``escape.settings`` in params.yaml).

    ``num_examples`` and ``chunk_size`` define the landscape; the other fields are the
    keyword arguments of :func:`~landscape.dynamics.escape.escape_study`
    (:meth:`study_kwargs`).

    Attributes:
        num_examples: Examples of the fixed probe subset that define the landscape.
        chunk_size: Examples per forward pass of full-batch quantities.
        max_start_loss: Largest loss (nats) of a start point that counts as a minimum.
        max_start_grad_norm: Largest ``||grad L||_2`` of a start point that counts as a minimum.
        steps: Steps T of each trial.
        step_size: ``eta * lambda_max(theta_0)``; below 2 the noise-free iteration is
            stable at the minimum, so escapes are due to the noise.
        batch_size: Minibatch size B of the SGD noise (which sets the noise scale).
        noise_types: Subset of :data:`~landscape.dynamics.escape.NOISE_TYPES`.
        restarts: Independent trials per noise type and start point.
        top_k: Dimension of the top Hessian subspace (alignment and projection).
        check_every: Steps between escape checks (the end is always checked).
        lambda_drop: Relative drop of lambda_max that counts as escape, in (0, 1).
        barrier_tol: Loss barrier (nats) on the segment from theta_0 that counts as escape.
        barrier_points: Points of that segment, including both ends.
        eig_tol: Relative Ritz residual tolerance of the lambda_max estimates.
        eig_matvecs: Hessian-vector product budget per lambda_max estimate.
        rule: Which criterion is escape: ``basin`` (the design's), ``any``, ``all``,
            ``lambda`` or ``barrier``.
        scales: Factors s of the top-k component of the SGD noise (dose-response arms).
        noise_scale: Multiplier of every noise draw (a temperature common to all arms).
        indicator_every: Steps between samples of Zhu et al.'s ``xi^T H_0 xi`` (0: none).
        noise_at: Where the minibatch noise is drawn: ``start`` (at the minimum: a fixed
            covariance, so every arm has exactly SGD's noise energy) or ``current``.
    """

    num_examples: int = field(default=1000, metadata=int_at_least(2))
    chunk_size: int = field(default=1000, metadata=int_at_least(1))
    max_start_loss: float = field(default=0.05, metadata=number_above_zero())
    max_start_grad_norm: float = field(default=0.05, metadata=number_above_zero())
    steps: int = field(default=100, metadata=int_at_least(1))
    step_size: float = field(default=1.0, metadata=number_above_zero())
    batch_size: int = field(default=16, metadata=int_at_least(1))
    noise_types: tuple[str, ...] = field(
        default=("isotropic",),
        metadata=_rule(f"a list of distinct names from {[k for k in NOISE_TYPES if k != 'scaled']}",
                      lambda x: isinstance(x, (list, tuple)) and len(set(x)) == len(x)
                      and all(v in NOISE_TYPES and v != "scaled" for v in x)),
    )
    restarts: int = field(default=2, metadata=int_at_least(1))
    top_k: int = field(default=5, metadata=int_at_least(1))
    check_every: int = field(default=50, metadata=int_at_least(1))
    lambda_drop: float = field(default=0.3, metadata=_rule("a number in (0, 1)", _in_unit_interval))
    barrier_tol: float = field(default=0.01, metadata=number_above_zero())
    barrier_points: int = field(default=9, metadata=int_at_least(3))
    eig_tol: float = field(default=1e-2, metadata=_rule("a number in (0, 1)", _in_unit_interval))
    eig_matvecs: int = field(default=40, metadata=int_at_least(4))
    rule: str = field(default="basin", metadata=one_of(RULES))
    scales: tuple[int | float, ...] = field(
        default=(),
        metadata=_rule("a list of distinct numbers >= 0",
                      lambda x: isinstance(x, (list, tuple)) and len(set(x)) == len(x)
                      and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in x)),
    )
    noise_scale: float = field(default=1.0, metadata=number_above_zero())
    indicator_every: int = field(default=0, metadata=int_at_least(0))
    noise_at: str = field(default="start", metadata=one_of(NOISE_AT))

    def _extra_checks(self) -> None:
        if not self.noise_types and not self.scales:
            raise ConfigError("escape.settings needs at least one arm: noise_types and scales are both empty")

    def study_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``escape_study`` (every field but the landscape's and the start criterion)."""
        return {k: v for k, v in self.__dict__.items() if k not in _NOT_STUDY}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON, in field order."""
        return self.__dict__ | {"noise_types": list(self.noise_types), "scales": [float(v) for v in self.scales]}


_NOT_STUDY = ("num_examples", "chunk_size", "max_start_loss", "max_start_grad_norm")


def _seed_study(layout: Layout, experiment: str, config: str, cfg: EscapeConfig, data: tuple, device: torch.device,
                seed: int) -> tuple[int, str, EscapeStudy | None, dict[str, float]]:
    """One seed's study (or the reason it was skipped) and its start point's loss and gradient norm."""
    status = run_status(layout, experiment, config, seed)
    if status != "completed":
        return seed, f"skipped: run {status}", None, {}
    run = load_run(layout, experiment, config, seed, device)
    assert run.model is not None  # a completed run carries its model
    x, y = data
    landscape = ModelLandscape(run.model, (x.to(device), y.to(device)), chunk_size=cfg.chunk_size)
    start = {"loss": landscape.loss(landscape.theta0), "grad_norm": float(landscape.gradient(landscape.theta0).norm()),
             "train_loss": float(run.metrics.get("final", {}).get("train_loss", float("nan")))}
    if start["loss"] > cfg.max_start_loss or start["grad_norm"] > cfg.max_start_grad_norm:
        return seed, (f"skipped: not a minimum (loss {start['loss']:.3g} > {cfg.max_start_loss} or gradient norm "
                      f"{start['grad_norm']:.3g} > {cfg.max_start_grad_norm})"), None, start
    study = escape_study(landscape, landscape.theta0, basis=None, seed=seed, **cfg.study_kwargs())
    rates = {k: sum(t.escaped for t in study.trials if t.noise_type == k) for k in {t.noise_type for t in study.trials}}
    print(f"{experiment}/{config}/seed{seed}: loss={start['loss']:.3g} |g|={start['grad_norm']:.3g} "
          f"lambda_max={study.lambda_start:.4g} lr={study.lr:.4g} escapes={rates} ({study.wall_time_s:.1f}s)", flush=True)
    return seed, "studied", study, start


def _per_type(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Escape counts and rates (Wilson 95% interval), alignment and lambda_max ratio per arm."""
    per_type = {}
    def arm(r: Mapping[str, Any]) -> str:
        return arm_name(r["noise_type"], r["scale"])

    for kind in dict.fromkeys(arm(r) for r in rows):
        sub = [r for r in rows if arm(r) == kind]
        escapes = sum(r["escape"] for r in sub)
        lo, hi = wilson_bounds(escapes, len(sub), 0.95) if sub else (float("nan"), float("nan"))
        per_type[kind] = {"trials": len(sub), "escapes": escapes, "escape_rate": mean_sd([float(r["escape"]) for r in sub])["mean"],
                          "escape_rate_ci95": [float(lo), float(hi)],
                          "escape_lambda_rate": mean_sd([float(r["escape_lambda"]) for r in sub])["mean"],
                          "escape_barrier_rate": mean_sd([float(r["escape_barrier"]) for r in sub])["mean"],
                          "alignment": mean_sd([r["alignment"] for r in sub]), "lambda_ratio": mean_sd([r["lambda_ratio"] for r in sub]),
                          "trace_h_sigma": mean_sd([r["trace_h_sigma"] for r in sub if r["trace_h_sigma"] is not None]),
                          "escape_step": mean_sd([float(r["escape_step"]) for r in sub])}
    return per_type


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Escape studies from every seed of ``h3_minima``/``escape.config``; write escape/.

    Returns:
        The contents of ``escape/metrics.json``.

    Raises:
        ConfigError: A bad ``escape`` section or an unknown ``escape.config``.
    """
    started = time.perf_counter()
    experiment, config = SOURCE_EXPERIMENT, section(params, "escape", "config")
    section(params, "experiments", experiment, "configs", config)
    cfg = parse_config(EscapeConfig, section(params, "escape", "settings"), "escape.settings")
    dataset_key = experiment_dataset(params, experiment)
    seeds = group_seeds(params, experiment)
    configure_torch()
    device = pick_device()
    x, y = torch.load(layout.prepared(dataset_key), map_location="cpu", weights_only=False)["probe"]
    data = (x[: cfg.num_examples], y[: cfg.num_examples])
    # seeds are independent and seeded: same results in any order
    done = map_forked(lambda s: _seed_study(layout, experiment, config, cfg, data, device, s), seeds, cpu_workers(device, len(seeds)))

    studies = [(seed, study) for seed, _, study, _ in done if study is not None]
    primary = set(replication_split(params, experiment)[0])
    rows = [{**row, "seed_set": "primary" if row["seed"] in primary else "replication"} for row in trial_rows(studies)]
    meta = {"experiment": experiment, "config": config, "seeds": seeds, "settings": cfg.to_dict()}
    write_json(layout.escape_results,
               {**meta, "seeds": {f"seed{s}": {"status": st, "start": start, **(study.to_dict() if study else {})}
                                  for s, st, study, start in done}})
    write_json(layout.escape_trials, {**meta, "trials": rows})
    metrics = {"seeds_studied": len(studies), "seeds_skipped": len(done) - len(studies),
               "skipped": {f"seed{s}": st for s, st, study, _ in done if study is None},
               "start_points": {f"seed{s}": start for s, _, _, start in done},
               "noise_types": _per_type(rows), "wall_time_s": time.perf_counter() - started}
    write_json(layout.escape_metrics, metrics)
    return metrics
