"""The ``sde`` stage: basin occupancy of SGD and of its SDE on synthetic 2D surfaces.

For every surface of ``probes.sde.surfaces``, every method (``sde``: Euler-Maruyama of
eq. (6); ``sgd``: plain SGD with exactly isotropic gradient noise) and every ``(eta, B)``
of ``probes.sde.settings``: simulated basin probabilities with Wilson intervals against
eq. (7) of the first research plan and the exact Gibbs masses (Li, Tai & E 2017;
Jastrzebski et al. 2017; the mathematics is :mod:`landscape.dynamics.sde`). No trained run
is read. Writes ``probes/sde/``: metrics.json (verdict counts and where eq. (7) breaks),
results.json (full studies), table.json and table.md (one row per surface x method x
setting), figures/*.png, config.json.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from landscape.dynamics.sde import (
    GaussianWells,
    OccupancyStudy,
    Surface2D,
    TiltedDoubleWell,
    occupancy_study,
)
from landscape.io import write_json, write_text
from landscape.pipeline.figures import new_figure, write_figures
from landscape.pipeline.layout import Layout
from landscape.pipeline.parallel import map_forked
from landscape.pipeline.params import section
from landscape.pipeline.runtime import configure_torch, cpu_workers, pick_device
from landscape.schema import (
    Checked,
    ConfigError,
    int_at_least,
    number_above_zero,
    one_of,
    parse_config,
    rule,
    subset_of,
)

__all__ = ["SURFACES", "SdeConfig", "SdeReport", "build_surface", "run_sde_study", "run"]

#: Surface kinds of the SDE study, by the name used in ``params.yaml``.
SURFACES: dict[str, type[Surface2D]] = {"tilted_double_well": TiltedDoubleWell, "gaussian_wells": GaussianWells}


def build_surface(spec: Mapping[str, Any]) -> Surface2D:
    """A surface from ``{"kind": name, **options}`` (kinds: :data:`SURFACES`).

    Raises:
        ValueError: Unknown kind (the message lists them) or bad options.
    """
    kind = spec.get("kind")
    if kind not in SURFACES:
        raise ValueError(f"surface kind must be one of {sorted(SURFACES)}, got {kind!r}")
    options = {k: v for k, v in spec.items() if k != "kind"}
    try:
        return SURFACES[kind](**options)
    except TypeError as exc:
        raise ValueError(f"bad options for surface kind {kind!r}: {exc}") from None


def _settings_ok(x: Any) -> bool:
    if not isinstance(x, (list, tuple)) or len(x) == 0:
        return False
    for pair in x:
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            return False
        eta, b = pair
        if isinstance(eta, bool) or not isinstance(eta, (int, float)) or not eta > 0:
            return False
        if isinstance(b, bool) or not isinstance(b, int) or b < 1:
            return False
    return True


@dataclass(frozen=True)
class SdeConfig(Checked):
    """Settings of the ``sde`` stage (``probes.sde``).

    Attributes:
        surfaces: ``{name: {"kind": ..., **options}}`` (see :func:`build_surface`).
        settings: ``[eta, batch_size]`` pairs.
        methods: Subset of ``["sde", "sgd"]`` (Euler-Maruyama of eq. (6); plain SGD on a
            data set with exactly isotropic gradient noise).
        noise_scale: ``s`` of ``Sigma = s^2 I`` (``T_eff = eta s^2 / (2 B)``).
        dt: Euler-Maruyama step.
        horizon: Simulated time per run.
        num_runs: Independent runs per setting.
        dataset_size: Size of the synthetic data set of ``"sgd"``.
        init: ``"minima"`` (runs split over the minima; mixing is checked) or ``"uniform"``.
        confidence: Level of the Wilson intervals.
        quadrature_grid: Grid of the exact Gibbs masses.
        seed: Base seed.
    """

    surfaces: Mapping[str, Any] = field(
        default_factory=lambda: {
            "double_well": {"kind": "tilted_double_well", "height": 1.0, "tilt": 0.25, "kappa_left": 1.0, "kappa_right": 4.0}
        },
        metadata=rule(
            "a non-empty mapping name -> {kind, options}",
            lambda x: isinstance(x, Mapping) and len(x) > 0 and all(isinstance(v, Mapping) for v in x.values()),
        ),
    )
    settings: tuple[tuple[float, int], ...] = field(
        default=((0.05, 1), (0.05, 2), (0.05, 4)), metadata=rule("a non-empty list of [eta > 0, batch_size >= 1] pairs", _settings_ok)
    )
    methods: tuple[str, ...] = field(default=("sde", "sgd"), metadata=subset_of(("sde", "sgd")))
    noise_scale: float = field(default=4.0, metadata=number_above_zero())
    dt: float = field(default=0.01, metadata=number_above_zero())
    horizon: float = field(default=50.0, metadata=number_above_zero())
    num_runs: int = field(default=1000, metadata=int_at_least(10))
    dataset_size: int = field(default=1000, metadata=int_at_least(3))
    init: str = field(default="minima", metadata=one_of(("minima", "uniform")))
    confidence: float = field(default=0.95, metadata=rule("a number in (0, 1)", lambda x: 0 < x < 1))
    quadrature_grid: int = field(default=201, metadata=int_at_least(10))
    seed: int = 0

    def _extra_checks(self) -> None:
        for name, spec in self.surfaces.items():
            try:
                build_surface(spec)
            except ValueError as exc:
                raise ConfigError(f"SdeConfig.surfaces.{name}: {exc}") from None


@dataclass(frozen=True)
class SdeReport:
    """Results of :func:`run_sde_study`.

    Attributes:
        studies: ``{(surface name, method): OccupancyStudy}``.
        table: One flat row per (surface, method, eta, B) with predicted, Gibbs and
            simulated occupancy of each basin, Wilson bounds, ``barrier / T`` and the verdict.
        summary: Counts of verdicts and the regime where eq. (7) breaks, per surface and method.
        settings: The resolved settings.
    """

    studies: dict[tuple[str, str], OccupancyStudy]
    table: tuple[dict[str, Any], ...]
    summary: dict[str, Any]
    settings: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {
            "studies": {f"{s}.{m}": st.to_dict() for (s, m), st in self.studies.items()},
            "table": list(self.table),
            "summary": self.summary,
            "settings": self.settings,
        }

    def markdown(self) -> str:
        """The table as Markdown (probabilities of each basin as ``pred / gibbs / sim [lo, hi]``)."""
        lines = ["| surface | method | eta | B | T | barrier/T | basin | eq.(7) | Gibbs | simulated [95% Wilson] | verdict |",
                 "|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in self.table:
            for k in range(len(r["predicted"])):
                head = (f"| {r['surface']} | {r['method']} | {r['eta']:g} | {r['batch_size']} | {r['temperature']:.4g} "
                        f"| {r['barrier_over_t']:.3g}")
                sim = f"{r['simulated'][k]:.3f} [{r['ci_low'][k]:.3f}, {r['ci_high'][k]:.3f}]"
                lines.append(f"{head} | {k} | {r['predicted'][k]:.3f} | {r['gibbs'][k]:.3f} | {sim} | {r['verdict']} |")
        return "\n".join(lines) + "\n"

    def figures(self) -> dict[str, Any]:
        """Per surface: the surface with its minima, and predicted vs simulated occupancy of
        basin 0 against ``barrier / T`` (Wilson bars)."""
        from matplotlib.ticker import NullFormatter

        figs = {}
        for name in sorted({s for s, _ in self.studies}):
            surface = build_surface(self.settings["surfaces"][name])
            fig = new_figure((10.0, 4.0))
            ax0, ax1 = fig.add_subplot(1, 2, 1), fig.add_subplot(1, 2, 2)
            x0, x1, y0, y1 = surface.box
            xs, ys = np.linspace(x0, x1, 161), np.linspace(y0, y1, 161)
            X, Y = np.meshgrid(xs, ys)
            pts = torch.as_tensor(np.stack([X.ravel(), Y.ravel()], axis=1))
            Z = surface.loss(pts).numpy().reshape(X.shape)
            cs = ax0.contourf(X, Y, Z, levels=30, cmap="viridis")
            fig.colorbar(cs, ax=ax0, label="L")
            for k, b in enumerate(surface.minima()):
                ax0.plot(*b.center, "rx")
                ax0.annotate(f"basin {k}", b.center, color="red", xytext=(4, 4), textcoords="offset points")
            ax0.set_title(name)
            for j, method in enumerate(sorted({m for s, m in self.studies if s == name})):
                rows = [r for r in self.table if r["surface"] == name and r["method"] == method]
                bt = np.array([r["barrier_over_t"] for r in rows])
                sim = np.array([r["simulated"][0] for r in rows])
                err = np.array([[r["simulated"][0] - r["ci_low"][0], r["ci_high"][0] - r["simulated"][0]] for r in rows]).T
                ax1.errorbar(bt * (1 + 0.02 * j), sim, yerr=err, fmt="o", capsize=3, label=f"simulated ({method})")
                if j == 0:
                    order = np.argsort(bt)
                    ax1.plot(bt[order], np.array([r["predicted"][0] for r in rows])[order], "k--", label="eq. (7)")
                    ax1.plot(bt[order], np.array([r["gibbs"][0] for r in rows])[order], "k:", label="Gibbs (exact)")
            ax1.set_xscale("log")
            ax1.xaxis.set_minor_formatter(NullFormatter())
            ax1.set_xlabel("barrier / T")
            ax1.set_ylabel("P(basin 0)")
            ax1.legend(fontsize=7)
            fig.tight_layout()
            figs[f"sde_{name}"] = fig
        return figs


def run_sde_study(config: SdeConfig, *, device: torch.device | str = "cpu", workers: int = 1) -> SdeReport:
    """Basin occupancy across ``(eta, B)`` for every surface and method of ``config``.

    Each row's verdict (from ``occupancy_study``) is ``"agrees"`` (eq. (7) inside every
    Wilson interval), ``"disagrees"``, or ``"not mixed"`` (runs started in different
    minima still differ: no stationary prediction can be judged). The summary names where
    eq. (7) breaks: the rows that disagree while the exact Gibbs masses agree (Laplace
    error, high ``T``), those where neither agrees (discretisation or non-stationarity),
    and the unmixed rows (low ``T``, horizon below the Kramers time).

    Every (surface, method, setting) is simulated as its own task with seed
    ``config.seed + j`` for setting ``j`` (as ``occupancy_study`` seeds a whole sweep), spread
    over ``workers`` forked processes: the same rows for any count.

    Args:
        config: Stage settings.
        device: Simulation device.
        workers: Forked CPU worker processes (1 on an accelerator).
    """
    pairs = [(float(e), int(b)) for e, b in config.settings]
    surfaces = {name: build_surface(spec) for name, spec in config.surfaces.items()}
    common: dict[str, Any] = {"noise_scale": config.noise_scale, "dt": config.dt, "horizon": config.horizon, "num_runs": config.num_runs,
                              "dataset_size": config.dataset_size, "init": config.init, "confidence": config.confidence,
                              "quadrature_grid": config.quadrature_grid, "device": device}
    tasks = [(name, method, j) for name in surfaces for method in config.methods for j in range(len(pairs))]

    def simulate(task: tuple[str, str, int]) -> tuple[OccupancyStudy, float]:
        name, method, j = task
        t0 = time.perf_counter()
        study = occupancy_study(surfaces[name], [pairs[j]], method=method, seed=config.seed + j, **common)
        return study, time.perf_counter() - t0

    done = dict(zip(tasks, map_forked(simulate, tasks, workers), strict=True))
    studies: dict[tuple[str, str], OccupancyStudy] = {}
    table: list[dict[str, Any]] = []
    summary: dict[str, Any] = {}
    for name in surfaces:
        for method in config.methods:
            parts = [done[(name, method, j)] for j in range(len(pairs))]
            first = parts[0][0]
            study = OccupancyStudy(first.basins, tuple(p[0].rows[0] for p in parts), {**first.settings, "seed": config.seed})
            studies[(name, method)] = study
            rows = [{"surface": name, **r.to_dict()} for r in study.rows]
            table.extend(rows)
            laplace = [r for r in rows if r["verdict"] == "disagrees" and r["gibbs_agrees"]]
            neither = [r for r in rows if r["verdict"] == "disagrees" and not r["gibbs_agrees"]]
            frozen = [r for r in rows if r["verdict"] == "not mixed"]
            summary[f"{name}.{method}"] = {
                "agrees": sum(r["verdict"] == "agrees" for r in rows),
                "disagrees": sum(r["verdict"] == "disagrees" for r in rows),
                "not_mixed": len(frozen),
                "breaks_laplace": [[r["eta"], r["batch_size"], r["barrier_over_t"]] for r in laplace],
                "breaks_other": [[r["eta"], r["batch_size"], r["barrier_over_t"]] for r in neither],
                "breaks_not_mixed": [[r["eta"], r["batch_size"], r["barrier_over_t"]] for r in frozen],
                "task_time_s": sum(p[1] for p in parts),
            }
    return SdeReport(studies, tuple(table), summary, dataclasses.asdict(config))


def run(params: Mapping[str, Any], layout: Layout) -> SdeReport:
    """The ``sde`` stage: read ``probes.sde``, simulate every task, write ``layout.sde_dir``."""
    cfg = parse_config(SdeConfig, section(params, "probes", "sde"), "probes.sde")
    configure_torch()
    device = pick_device()
    report = run_sde_study(cfg, device=device, workers=cpu_workers(device))
    out = layout.sde_dir
    write_figures(report.figures(), out / "figures")
    write_json(out / "results.json", report.to_dict())
    write_json(out / "table.json", list(report.table))
    write_text(out / "table.md", report.markdown())
    write_json(out / "config.json", dataclasses.asdict(cfg))
    write_json(out / "metrics.json", report.summary)
    for key, s in report.summary.items():
        print(f"sde {key}: {s['agrees']} agree, {s['disagrees']} disagree, {s['not_mixed']} not mixed ({s['task_time_s']:.1f}s simulated)")
    return report
