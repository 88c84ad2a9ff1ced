"""The ``eos`` stage: full-batch gradient descent at the edge of stability (Cohen et al. 2021).

On the first ``num_examples`` training examples of the prepared data set ``eos.dataset``,
one network (``eos.model``, built with ``eos.seed``) is trained by full-batch gradient
descent at each step size of ``eos.lrs`` (heavy ball with ``eos.momentum``), recording the
train loss at every step and ``lambda_max`` of the full-batch Hessian every ``eig_every``
steps (:func:`landscape.dynamics.eos.gradient_descent`). Per step size,
:func:`landscape.dynamics.eos.edge_of_stability` finds the plateau (from the first
measurement at ``onset_fraction`` of ``2 (1 + beta) / eta`` after one below it, to the end)
and reports its mean ``lambda_max * eta / (2 (1 + beta))`` with a batch-means interval,
whether progressive sharpening preceded it and whether the loss kept falling,
non-monotonically. Writes ``eos/``: results.json (trajectories and analyses),
metrics.json (the plateau ratio with its interval per step size), config.json and
figures/eos.png.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from landscape.dynamics.eos import EdgeOfStability, GDTrajectory, edge_of_stability, gradient_descent
from landscape.dynamics.escape import ModelLandscape
from landscape.functional import LossFn
from landscape.io import write_json
from landscape.models import build_model
from landscape.pipeline.cli import StageError
from landscape.pipeline.figures import new_figure, write_figures
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import section
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.schema import Checked, ConfigError, int_at_least, one_of, parse_config, rule

__all__ = ["LOSSES", "EosConfig", "EosReport", "run", "run_eos_study", "square_loss"]


def square_loss(outputs: Tensor, targets: Tensor) -> Tensor:
    """``1/N sum_i 1/2 ||f(x_i) - e_{y_i}||^2``: the square loss against one-hot targets that
    Cohen et al. (2021) train with; outputs (N, C), targets (N,) class indices."""
    onehot = F.one_hot(targets, outputs.shape[1]).to(outputs.dtype)
    return 0.5 * (outputs - onehot).square().sum(dim=1).mean()


#: Losses of the stage by the name used in params.yaml (both batch means).
LOSSES: dict[str, LossFn] = {"mse": square_loss, "cross_entropy": F.cross_entropy}


def _lrs_ok(x: Any) -> bool:
    return (isinstance(x, (list, tuple)) and len(x) > 0 and len(set(x)) == len(x)
            and all(not isinstance(v, bool) and isinstance(v, (int, float)) and v > 0 for v in x))


def _in_unit_interval(x: Any) -> bool:
    return not isinstance(x, bool) and isinstance(x, (int, float)) and 0 < x < 1


@dataclass(frozen=True)
class EosConfig(Checked):
    """Settings of the ``eos`` stage (``eos`` in params.yaml).

    Attributes:
        dataset: Key of ``datasets``; its prepared training split is used.
        num_examples: First examples of that split: the fixed training set of GD.
        model: ``{"name": ..., **options}`` for ``build_model`` (input shape and class
            count come from the data).
        loss: ``"mse"`` (:func:`square_loss`) or ``"cross_entropy"``.
        lrs: Step sizes eta (distinct, > 0).
        momentum: Heavy-ball beta in [0, 1) (0: plain GD; the line is 2 (1 + beta) / eta).
        steps: GD steps per step size.
        eig_every: Steps between ``lambda_max`` measurements.
        eig_tol: Relative residual of each warm-started Lanczos solve.
        eig_matvecs: Hessian-vector products per solve at most.
        dtype: ``"float32"`` or ``"float64"``.
        onset_fraction: The plateau starts at ``onset_fraction * 2 (1 + beta) / eta``.
        sharpening_min: Rise of ``lambda_max`` before the onset that counts as progressive
            sharpening.
        min_points: Fewest measurements in the plateau window for a ratio.
        num_batches: Batches of the batch-means interval.
        ci_level: Its level.
        seed: Seed of the network's initialisation (the same network for every step size)
            and of the first Lanczos start vector.
    """

    dataset: str = "mnist14"
    num_examples: int = field(default=1000, metadata=int_at_least(2))
    model: Mapping[str, Any] = field(
        default_factory=lambda: {"name": "mlp", "width": 32, "depth": 2, "activation": "tanh", "norm": "none", "init_scale": 0.2},
        metadata=rule("a mapping with a model 'name' and its options", lambda x: isinstance(x, Mapping) and isinstance(x.get("name"), str)),
    )
    loss: str = field(default="mse", metadata=one_of(tuple(LOSSES)))
    lrs: tuple[float | int, ...] = field(default=(0.15, 0.25, 0.4), metadata=rule("a non-empty list of distinct numbers > 0", _lrs_ok))
    momentum: float = field(default=0.0, metadata=rule("a number in [0, 1)", lambda x: x == 0 or _in_unit_interval(x)))
    steps: int = field(default=2000, metadata=int_at_least(1))
    eig_every: int = field(default=10, metadata=int_at_least(1))
    eig_tol: float = field(default=1e-2, metadata=rule("a number in (0, 1)", _in_unit_interval))
    eig_matvecs: int = field(default=10, metadata=int_at_least(2))
    dtype: str = field(default="float32", metadata=one_of(("float32", "float64")))
    onset_fraction: float = field(default=0.9, metadata=rule("a number in (0, 1]", lambda x: x == 1 or _in_unit_interval(x)))
    sharpening_min: float = field(default=1.25, metadata=rule("a number > 1", lambda x: isinstance(x, (int, float)) and x > 1))
    min_points: int = field(default=20, metadata=int_at_least(4))
    num_batches: int = field(default=10, metadata=int_at_least(2))
    ci_level: float = field(default=0.95, metadata=rule("a number in (0, 1)", _in_unit_interval))
    seed: int = field(default=0, metadata=int_at_least(0))

    def _extra_checks(self) -> None:
        if self.min_points < 2 * self.num_batches:
            raise ConfigError(f"eos.min_points={self.min_points} must be >= 2 * eos.num_batches = {2 * self.num_batches}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self) | {"model": dict(self.model), "lrs": list(self.lrs)}


@dataclass(frozen=True)
class EosReport:
    """Results of :func:`run_eos_study`: per step size its trajectory and plateau analysis."""

    trajectories: tuple[GDTrajectory, ...]
    analyses: tuple[EdgeOfStability, ...]
    settings: dict[str, Any]
    num_params: int
    wall_time_s: float

    def metrics(self) -> dict[str, Any]:
        """Per step size (keyed ``lr=<eta>``): status, plateau ratio ``lambda_max * eta / (2 (1 + beta))``
        with its interval, onset step, sharpening and the loss's behaviour on the plateau."""
        per_lr = {}
        for tr, an in zip(self.trajectories, self.analyses, strict=True):
            iv = an.ratio
            per_lr[f"lr={tr.lr:g}"] = {
                "lr": tr.lr, "threshold": tr.threshold, "status": an.status,
                "ratio": None if iv is None else iv.mean, "ratio_ci": None if iv is None else [iv.low, iv.high],
                "onset_step": an.onset_step, "plateau_points": an.num_points, "sharpening": an.sharpening,
                "sharpening_factor": an.sharpening_factor, "initial_ratio": an.initial_ratio,
                "loss_onset": an.loss_onset, "loss_final": an.loss_final, "loss_decreased": an.loss_decreased,
                "loss_increase_fraction": an.increase_fraction,
            }
        return {"per_lr": per_lr, "ci_level": self.settings["ci_level"], "num_params": self.num_params,
                "at_edge": sum(a.status == "plateau" for a in self.analyses), "wall_time_s": self.wall_time_s}

    def to_dict(self) -> dict[str, Any]:
        runs = [{"trajectory": t.to_dict(), "analysis": a.to_dict()} for t, a in zip(self.trajectories, self.analyses, strict=True)]
        return {"settings": self.settings, "num_params": self.num_params, "wall_time_s": self.wall_time_s, "runs": runs}

    def figures(self) -> dict[str, Any]:
        """``eos``: train loss (left) and ``lambda_max`` (right) against the step for every
        step size, with its line ``2 (1 + beta) / eta`` dashed and the plateau onset marked."""
        fig = new_figure((11.0, 4.0))
        ax_loss, ax_sharp = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
        beta = self.settings["momentum"]
        line = "2/eta" if beta == 0 else "2(1+beta)/eta"
        for i, (tr, an) in enumerate(zip(self.trajectories, self.analyses, strict=True)):
            color = f"C{i}"
            ax_loss.plot(range(len(tr.losses)), tr.losses, color=color, lw=0.8, label=f"eta = {tr.lr:g} ({tr.status})")
            ax_sharp.plot(tr.sharpness_steps, tr.sharpness, color=color, lw=0.9, label=f"eta = {tr.lr:g}")
            ax_sharp.axhline(tr.threshold, color=color, ls="--", lw=0.8)
            if an.onset_step is not None:
                ax_sharp.axvline(an.onset_step, color=color, ls=":", lw=0.6)
        ax_loss.set_yscale("log")
        ax_loss.set_xlabel("step")
        ax_loss.set_ylabel(f"train loss ({self.settings['loss']})")
        ax_loss.legend(fontsize=7)
        ax_sharp.set_xlabel("step")
        ax_sharp.set_ylabel("lambda_max (full-batch Hessian)")
        ax_sharp.set_title(f"dashed: {line}; dotted: plateau onset", fontsize=8)
        ax_sharp.legend(fontsize=7)
        tops = [t.threshold for t in self.trajectories] + [max(t.sharpness) for t in self.trajectories if t.status == "completed"]
        top = max(tops)
        ax_sharp.set_ylim(0, 1.25 * top)
        fig.tight_layout()
        return {"eos": fig}


def run_eos_study(config: EosConfig, data: tuple[Tensor, Tensor], num_classes: int, *, device: torch.device | str = "cpu",
                  workers: int = 1) -> EosReport:
    """GD at every step size of ``config`` on ``data`` (all of it: slice before calling).

    Every step size starts from the same network (``build_model(seed=config.seed)``) and
    runs as its own task in ``workers`` forked processes (the same results for any count).

    Raises:
        ConfigError: A model that cannot be built from ``config.model`` for this data.
    """
    started = time.perf_counter()
    dtype = getattr(torch, config.dtype)
    x, y = data
    options = {k: v for k, v in config.model.items() if k != "name"}
    shape = tuple(x.shape[1:])
    if len(shape) == 3:  # images (C, H, W), as in the train stage
        options.update(in_chans=shape[0], img_size=shape[1])
    else:
        options["in_features"] = shape[0]
    try:
        model = build_model(config.model["name"], num_classes=num_classes, seed=config.seed, **options)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"eos.model: {exc}") from None
    model = model.to(device=device, dtype=dtype).eval()
    landscape = ModelLandscape(model, (x.to(device=device, dtype=dtype), y.to(device)), loss_fn=LOSSES[config.loss],
                               chunk_size=int(x.shape[0]))

    def one(lr: float) -> tuple[GDTrajectory, EdgeOfStability]:
        traj, _ = gradient_descent(landscape, landscape.theta0, lr=lr, steps=config.steps, momentum=config.momentum,
                                   eig_every=config.eig_every, eig_tol=config.eig_tol, eig_matvecs=config.eig_matvecs, seed=config.seed)
        analysis = edge_of_stability(traj, onset_fraction=config.onset_fraction, sharpening_min=config.sharpening_min,
                                     min_points=config.min_points, num_batches=config.num_batches, ci_level=config.ci_level)
        return traj, analysis

    done = map_forked(one, [float(v) for v in config.lrs], workers)
    return EosReport(tuple(d[0] for d in done), tuple(d[1] for d in done), config.to_dict(), int(landscape.theta0.numel()),
                     time.perf_counter() - started)


def run(params: Mapping[str, Any], layout: Layout) -> EosReport:
    """The ``eos`` stage: read ``eos``, run GD at every step size, write ``layout.eos_dir``."""
    cfg = parse_config(EosConfig, section(params, "eos"), "eos")
    section(params, "datasets", cfg.dataset)
    data_file = layout.prepared(cfg.dataset)
    if not data_file.is_file():
        raise StageError(f"prepared data {data_file} is missing; run `dvc repro prepare@{cfg.dataset}` first")
    configure_torch()
    device = pick_device()
    prepared = torch.load(data_file, map_location="cpu", weights_only=False)
    x, y = prepared["train"]
    if cfg.num_examples > x.shape[0]:
        raise ConfigError(f"eos.num_examples={cfg.num_examples} exceeds the {x.shape[0]} training examples of {cfg.dataset!r}")
    report = run_eos_study(cfg, (x[: cfg.num_examples], y[: cfg.num_examples]), int(prepared["num_classes"]), device=device,
                           workers=cpu_workers(device, len(cfg.lrs)))
    out = layout.eos_dir
    write_figures(report.figures(), out / "figures")
    write_json(out / "results.json", report.to_dict())
    write_json(out / "config.json", cfg.to_dict())
    metrics = report.metrics()
    write_json(out / "metrics.json", metrics)
    for key, m in metrics["per_lr"].items():
        ratio = "-" if m["ratio"] is None else f"{m['ratio']:.3f} [{m['ratio_ci'][0]:.3f}, {m['ratio_ci'][1]:.3f}]"
        print(f"eos {key}: {m['status']}, onset step {m['onset_step']}, lambda_max*eta/2 on the plateau {ratio}, "
              f"loss {m['loss_onset']:.4g} -> {m['loss_final']:.4g}")
    print(f"eos: {metrics['at_edge']}/{len(cfg.lrs)} step sizes at the edge ({report.wall_time_s:.1f}s)")
    return report
