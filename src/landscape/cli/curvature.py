"""``landscape curvature``: the Hessian spectrum of a network's mean loss on fixed data.

Through the public curvature API (:mod:`landscape.curvature`), on the Hessian of the mean
loss over the chosen examples at the network's weights:

* the ``k`` largest and ``k`` smallest eigenvalues (thick-restart Lanczos), each with its
  certificate, the residual norm ``||H v - theta v||`` (some eigenvalue lies that close);
* the trace (Hutch++ by default) with its standard error and normal interval;
* the SLQ spectral density (Ubaru, Chen & Saad 2017; Ghorbani, Krishnan & Xiao 2019);
* the log-determinant's curvature part ``sum_i ln(1 + lambda_i / eps) = log det(H + eps I)
  - P ln eps`` from the same SLQ tridiagonals, with ``eps = r * lambda_max`` (``r`` is
  ``--logdet-eps``, stated in the output; negative eigenvalues count as 0);
* per layer: top eigenvalue and trace of each module's diagonal block.
"""

from __future__ import annotations

import argparse
from typing import Any

from landscape.cli import _common as common

HELP = "Hessian spectrum of a network on data: top-k at both ends, trace, density, log-det, per layer"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_model_arguments(parser)
    common.add_data_arguments(parser)
    group = parser.add_argument_group("curvature")
    group.add_argument("--top-k", type=common.positive_int, default=5, metavar="K",
                       help="eigenpairs at each end of the spectrum (default 5)")
    group.add_argument("--tol", type=common.positive_float, default=1e-3,
                       help="relative residual tolerance of the eigenpairs (default 1e-3)")
    group.add_argument("--max-matvecs", type=common.positive_int, default=2000, metavar="N",
                       help="product budget of each end's Lanczos run (default 2000); unconverged pairs are reported as such")
    group.add_argument("--trace-matvecs", type=common.positive_int, default=90, metavar="N",
                       help="product budget of the trace estimate (default 90)")
    group.add_argument("--trace-method", default="hutch++", metavar="METHOD", help="hutch++ (default), hutchinson or xtrace")
    group.add_argument("--ci-level", type=float, default=0.95, help="level of the trace interval (default 0.95)")
    group.add_argument("--slq-probes", type=common.positive_int, default=8, metavar="N", help="SLQ probe vectors (default 8)")
    group.add_argument("--slq-steps", type=common.positive_int, default=60, metavar="N",
                       help="Lanczos steps per SLQ probe (default 60; capped at the parameter count)")
    group.add_argument("--logdet-eps", type=common.positive_float, default=1e-3, metavar="R",
                       help="eps of the log-det curvature part relative to lambda_max: eps = R * lambda_max (default 1e-3)")
    group.add_argument("--per-layer-matvecs", type=common.positive_int, default=30, metavar="N",
                       help="trace budget per layer; layers of at most N parameters are solved exactly (default 30)")
    group.add_argument("--no-per-layer", action="store_true", help="skip the per-layer figures")
    common.add_run_arguments(parser, bn_modes=("eval", "batch"),
                             bn_help="eval (running statistics) or batch (each batch's own statistics)")
    common.add_output_arguments(parser, plot_help="draw the SLQ density (log scale) with the extreme eigenvalues as PNG")


def _ends(op: Any, which: str, args: argparse.Namespace) -> dict[str, Any]:
    """Lanczos at one end of the spectrum, then the explicit residual certificates."""
    from landscape.curvature import ObservedOperator, top_eigenpairs

    k = min(args.top_k, op.shape[0] - 1)
    with common.progress(f"lanczos {which}", None, args.quiet) as bar:
        pairs = top_eigenpairs(ObservedOperator(op, bar.update), k=k, which=which, tol=args.tol, seed=args.seed,
                               max_matvecs=args.max_matvecs, verify=False)
        residuals = pairs.residual_norms(ObservedOperator(op, bar.update))
    return {
        "which": which,
        "values": pairs.values.tolist(),
        "residual_norms": residuals.tolist(),
        "certificate": "some eigenvalue lies within residual_norms[i] of values[i] (||H v - theta v||, unit v)",
        "converged": bool(pairs.converged),
        "tol": args.tol,
        "num_matvecs": pairs.num_matvecs + k,
    }


def run(args: argparse.Namespace) -> int:
    common.check_common(args)
    common.check_choice("--trace-method", args.trace_method, ("hutch++", "hutchinson", "xtrace"))
    if not 0 < args.ci_level < 1:
        raise common.UsageError(f"--ci-level must be in (0, 1), got {args.ci_level}")
    data = common.load_data(args)
    net = common.load_model(args, data)
    from landscape.curvature import HessianOperator, ObservedOperator, logdet_from_tridiagonals, per_layer_curvature, spectral_density
    from landscape.curvature import trace as estimate_trace

    timer = common.Timer()
    loss_fn = common.loss_function(args.loss)
    params = next(net.model.parameters())
    batches = common.batches_of(data.data, args.batch_size, params.device, params.dtype)
    op = HessianOperator(net.model, loss_fn, batches, bn_mode=args.bn_mode)
    P = op.shape[0]
    report = op.report.to_dict()
    report.pop("param_names", None)
    result: dict[str, Any] = {"command": "curvature", "model": net.record, "data": data.record, "loss": args.loss,
                              "bn_mode": args.bn_mode, "seed": args.seed, "num_params": P, "operator": report}
    timer.tick("operator")
    result["top"] = _ends(op, "LA", args)
    result["bottom"] = _ends(op, "SA", args)
    timer.tick("eigenvalues")

    with common.progress("trace", args.trace_matvecs, args.quiet) as bar:
        tr = estimate_trace(ObservedOperator(op, bar.update), num_matvecs=args.trace_matvecs, method=args.trace_method, seed=args.seed)
    lo, hi = tr.interval(args.ci_level)
    result["trace"] = tr.to_dict() | {"interval": [lo, hi], "ci_level": args.ci_level,
                                      "interval_rule": "value +- z * stderr (normal approximation)"}
    timer.tick("trace")

    steps = min(args.slq_steps, P)
    with common.progress("slq", args.slq_probes * steps, args.quiet) as bar:
        dens = spectral_density(ObservedOperator(op, bar.update), num_probes=args.slq_probes, num_steps=steps, seed=args.seed)
    result["density"] = {k: v for k, v in dens.to_dict().items() if k not in ("nodes", "weights", "alphas", "betas")}
    timer.tick("density")

    lambda_max = result["top"]["values"][0]
    logdet: dict[str, Any] = {"eps_relative": args.logdet_eps, "eps_rule": "eps = eps_relative * lambda_max",
                              "formula": "curvature_part = sum_i ln(1 + max(lambda_i, 0) / eps) = log det(H + eps I) - P ln eps"}
    if lambda_max > 0:
        ld = logdet_from_tridiagonals(dens.alphas, dens.betas, P, args.logdet_eps * lambda_max)
        logdet |= {"status": "ok", "eps": ld.eps, "curvature_part": ld.curvature_part, "logdet": ld.value, "stderr": ld.stderr,
                   "clamped_mass": ld.clamped_mass, "num_probes": ld.num_probes, "num_steps": ld.num_steps}
    else:
        logdet |= {"status": f"not computed: lambda_max = {lambda_max} is not positive", "eps": float("nan"),
                   "curvature_part": float("nan")}
    result["logdet"] = logdet

    if not args.no_per_layer:
        from landscape.curvature.per_layer import default_parameter_groups

        groups = default_parameter_groups(net.model)
        with common.progress("per-layer", len(groups), args.quiet, unit="layer") as bar:
            layers = per_layer_curvature(net.model, loss_fn, batches, groups, bn_mode=args.bn_mode, num_matvecs=args.per_layer_matvecs,
                                         exact_max_dim=args.per_layer_matvecs, tol=args.tol, seed=args.seed,
                                         on_group=lambda _: bar.update(1))
        result["per_layer"] = [layer.to_dict() for layer in layers.layers]
        timer.tick("per_layer")
    result["timings_s"] = timer.seconds
    common.write_result(result, args.out)
    if args.plot is not None:
        common.write_figure(plot_density(result), args.plot)
    return 0


def plot_density(result: dict[str, Any]) -> Any:
    """The SLQ density on a log scale, the extreme Ritz values as ticks; returns the Figure."""
    import numpy as np
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    grid, dens = np.asarray(result["density"]["grid"]), np.asarray(result["density"]["density"])
    floor = dens.max() * 1e-8 if dens.max() > 0 else 1e-300
    ax.semilogy(grid, np.maximum(dens, floor), lw=1.0, label=f"SLQ density ({result['density']['num_probes']} probes)")
    for end, color in (("top", "tab:red"), ("bottom", "tab:blue")):
        for i, v in enumerate(result[end]["values"]):
            ax.axvline(v, color=color, lw=0.7, ls="--", label=f"{end} {len(result[end]['values'])} Ritz values" if i == 0 else None)
    tr = result["trace"]
    ax.set_title(f"{result['model']['name']}: P = {result['num_params']}, trace {tr['value']:.4g} +- {tr['stderr']:.2g}", fontsize=9)
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)
    return fig
