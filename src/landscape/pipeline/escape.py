"""escape stage: continue training from sharp minima under three noise models (H3's experiment).

For each seed of ``h1_batch``/``escape.config`` (a large-batch run: a sharp minimum) the
trained network and the measure stage's top Ritz vectors (``krylov.pt``) start
:func:`landscape.dynamics.escape.escape_study` on the first ``num_examples`` examples of the
fixed probe subset. Outputs (paths from :class:`~landscape.pipeline.layout.Layout`):
``escape/results.json`` (every trial with its checks), ``escape/trials.json`` (one row per
trial, read by the hypotheses stage) and ``escape/metrics.json`` (escape rate with its
Wilson interval, alignment and lambda_max ratio per noise type). A diverged or unmeasured
run is recorded as skipped. Seeds run in forked workers on the CPU.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch

from landscape.dynamics.escape import (
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
from landscape.pipeline.params import experiment_dataset, group_seeds, section
from landscape.pipeline.runs import load_run, run_status
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.schema import (
    Checked,
    int_at_least,
    number_above_zero,
    one_of,
    parse_config,
)
from landscape.schema import (
    rule as _rule,  # the field named ``rule`` below would shadow it
)
from landscape.stats.intervals import wilson_bounds

__all__ = ["SOURCE_EXPERIMENT", "EscapeConfig", "run"]

SOURCE_EXPERIMENT = "h1_batch"  # the batch-size sweep: its largest batch gives the sharp minima


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
        rule: Which criterion is escape: ``any``, ``all``, ``lambda`` or ``barrier``.
    """

    num_examples: int = field(default=1000, metadata=int_at_least(2))
    chunk_size: int = field(default=1000, metadata=int_at_least(1))
    steps: int = field(default=100, metadata=int_at_least(1))
    step_size: float = field(default=1.0, metadata=number_above_zero())
    batch_size: int = field(default=16, metadata=int_at_least(1))
    noise_types: tuple[str, ...] = field(
        default=NOISE_TYPES,
        metadata=_rule(f"a non-empty list of distinct names from {list(NOISE_TYPES)}",
                      lambda x: isinstance(x, (list, tuple)) and len(x) > 0 and len(set(x)) == len(x) and all(v in NOISE_TYPES for v in x)),
    )
    restarts: int = field(default=2, metadata=int_at_least(1))
    top_k: int = field(default=5, metadata=int_at_least(1))
    check_every: int = field(default=50, metadata=int_at_least(1))
    lambda_drop: float = field(default=0.3, metadata=_rule("a number in (0, 1)", _in_unit_interval))
    barrier_tol: float = field(default=0.01, metadata=number_above_zero())
    barrier_points: int = field(default=9, metadata=int_at_least(3))
    eig_tol: float = field(default=1e-2, metadata=_rule("a number in (0, 1)", _in_unit_interval))
    eig_matvecs: int = field(default=40, metadata=int_at_least(4))
    rule: str = field(default="any", metadata=one_of(RULES))

    def study_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of ``escape_study`` (every field but the landscape's)."""
        return {k: v for k, v in self.__dict__.items() if k not in ("num_examples", "chunk_size")}

    def to_dict(self) -> dict[str, Any]:
        """Plain-Python fields for JSON, in field order."""
        return self.__dict__ | {"noise_types": list(self.noise_types)}


def _seed_study(layout: Layout, experiment: str, config: str, cfg: EscapeConfig, data: tuple, device: torch.device,
                seed: int) -> tuple[int, str, EscapeStudy | None]:
    """One seed's study (or the reason it was skipped)."""
    status = run_status(layout, experiment, config, seed)
    krylov_file = layout.krylov(experiment, config, seed)
    if status != "completed":
        return seed, f"skipped: run {status}", None
    if not krylov_file.is_file():
        return seed, f"skipped: {layout.relative(krylov_file)} missing", None
    model = load_run(layout, experiment, config, seed, device).model
    assert model is not None  # a completed run carries its model
    basis = torch.load(krylov_file, map_location=device, weights_only=False)["ritz_vectors"]
    x, y = data
    landscape = ModelLandscape(model, (x.to(device), y.to(device)), chunk_size=cfg.chunk_size)
    study = escape_study(landscape, landscape.theta0, basis=basis, seed=seed, **cfg.study_kwargs())
    rates = {k: sum(t.escaped for t in study.trials if t.noise_type == k) for k in cfg.noise_types}
    print(f"{experiment}/{config}/seed{seed}: lambda_max={study.lambda_start:.4g} lr={study.lr:.4g} escapes={rates} "
          f"({study.wall_time_s:.1f}s)", flush=True)
    return seed, "studied", study


def _summary(values: list[float]) -> dict[str, float]:
    finite = [v for v in values if math.isfinite(v)]
    return {"mean": statistics.fmean(finite) if finite else float("nan"),
            "sd": statistics.stdev(finite) if len(finite) > 1 else float("nan"), "n": len(finite)}


def _per_type(rows: list[dict[str, Any]], noise_types: tuple[str, ...]) -> dict[str, dict[str, Any]]:
    """Escape counts and rates (Wilson 95% interval), alignment and lambda_max ratio per noise type."""
    per_type = {}
    for kind in noise_types:
        sub = [r for r in rows if r["noise_type"] == kind]
        escapes = sum(r["escape"] for r in sub)
        lo, hi = wilson_bounds(escapes, len(sub), 0.95) if sub else (float("nan"), float("nan"))
        per_type[kind] = {"trials": len(sub), "escapes": escapes, "escape_rate": _summary([float(r["escape"]) for r in sub])["mean"],
                          "escape_rate_ci95": [float(lo), float(hi)],
                          "escape_lambda_rate": _summary([float(r["escape_lambda"]) for r in sub])["mean"],
                          "escape_barrier_rate": _summary([float(r["escape_barrier"]) for r in sub])["mean"],
                          "alignment": _summary([r["alignment"] for r in sub]), "lambda_ratio": _summary([r["lambda_ratio"] for r in sub])}
    return per_type


def run(params: Mapping[str, Any], layout: Layout) -> dict[str, Any]:
    """Escape studies from every seed of ``h1_batch``/``escape.config``; write escape/.

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

    studies = [(seed, study) for seed, _, study in done if study is not None]
    rows = trial_rows(studies)
    meta = {"experiment": experiment, "config": config, "settings": cfg.to_dict()}
    write_json(layout.escape_results,
               {**meta, "seeds": {f"seed{s}": {"status": st, **(study.to_dict() if study else {})} for s, st, study in done}})
    write_json(layout.escape_trials, {**meta, "trials": rows})
    metrics = {"seeds_studied": len(studies), "seeds_skipped": len(done) - len(studies),
               "noise_types": _per_type(rows, cfg.noise_types), "wall_time_s": time.perf_counter() - started}
    write_json(layout.escape_metrics, metrics)
    return metrics
