"""``landscape connect``: mode connectivity between two networks of one architecture.

The straight line ``theta_a + t (theta_b - theta_a)``, ``t in [0, 1]``, with its loss and
error barriers (Frankle, Dziugaite, Roy & Carbin 2020); with ``--bezier``, a Bezier curve
whose interior control points are trained on the data (Garipov, Izmailov, Podoprikhin,
Vetrov & Wilson 2018), evaluated on the same grid (:mod:`landscape.probes.connectivity`).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from landscape.cli import _common as common

HELP = "mode connectivity between two checkpoints: linear-path barrier, optional Bezier curve (JSON + PNG)"

OBJECTIVES = ("expected", "minimax")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint_a", type=Path, metavar="A", help="first network's weights (model.pt or a state_dict)")
    parser.add_argument("checkpoint_b", type=Path, metavar="B", help="second network's weights, same architecture")
    common.add_model_arguments(parser, checkpoint=False)
    common.add_data_arguments(parser)
    group = parser.add_argument_group("path")
    group.add_argument("--points", type=common.positive_int, default=21, metavar="N",
                       help="grid points on t in [0, 1], >= 2 (default 21)")
    group.add_argument("--bezier", action="store_true", help="also train and evaluate a Bezier curve between A and B")
    group.add_argument("--bends", type=common.positive_int, default=1, metavar="N",
                       help="interior control points of the curve (default 1: quadratic)")
    group.add_argument("--steps", type=common.positive_int, default=200, metavar="N", help="Adam steps of the curve (default 200)")
    group.add_argument("--lr", type=common.positive_float, default=1e-2, help="Adam learning rate of the curve (default 1e-2)")
    group.add_argument("--objective", default="expected", metavar="OBJ",
                       help="curve objective: expected (E_t L, Garipov et al.) or minimax (smooth max_t L) (default expected)")
    common.add_run_arguments(parser, bn_modes=("eval", "batch", "recalibrate"),
                             bn_help="eval (running statistics of A), batch (each batch's own) or recalibrate (fresh running "
                                     "statistics at every point, from the data; recommended with BatchNorm)")
    common.add_output_arguments(parser, plot_help="draw loss against t for the line (and the curve) as PNG")


def run(args: argparse.Namespace) -> int:
    common.check_common(args)
    if args.points < 2:
        raise common.UsageError(f"--points must be >= 2, got {args.points}")
    common.check_choice("--objective", args.objective, OBJECTIVES)
    if args.pretrained:
        raise common.UsageError("--pretrained does not apply: connect reads both networks from checkpoints A and B")
    data = common.load_data(args)
    net_a = common.load_model(args, data, args.checkpoint_a, role="checkpoint A")
    net_b = common.load_model(args, data, args.checkpoint_b, role="checkpoint B")
    spec_a = (net_a.record["name"], net_a.record["kwargs"])
    spec_b = (net_b.record["name"], net_b.record["kwargs"])
    if spec_a != spec_b:
        raise common.UsageError(f"A and B are different architectures: A is {spec_a[0]} {spec_a[1]}, B is {spec_b[0]} {spec_b[1]}")
    from landscape.models import load_weights
    from landscape.probes import fit_bezier, linear_path, parameter_dict, plot_paths

    try:  # same name and options; the tensors must match too (a hand-edited state_dict may not)
        load_weights(copy.deepcopy(net_a.model), net_b.model.state_dict(), source=f"checkpoint B {args.checkpoint_b}")
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    import numpy as np

    params = next(net_a.model.parameters())
    batches = common.batches_of(data.data, args.batch_size, params.device, params.dtype)
    recal = batches if args.bn_mode == "recalibrate" else None
    theta_a, theta_b = parameter_dict(net_a.model), parameter_dict(net_b.model)
    ts = np.linspace(0.0, 1.0, args.points)
    timer = common.Timer()
    loss_fn = common.loss_function(args.loss)
    with common.progress("linear path", args.points * len(batches), args.quiet, unit="batch") as bar:
        line = linear_path(net_a.model, theta_a, theta_b, batches, ts=ts, loss_fn=common.counting_loss(loss_fn, bar),
                           bn_mode=args.bn_mode, recal_batches=recal)
    timer.tick("linear")
    result: dict[str, Any] = {"command": "connect", "model_a": net_a.record, "model_b": net_b.record, "data": data.record,
                              "loss": args.loss, "bn_mode": args.bn_mode, "seed": args.seed,
                              "distance": float(sum(((theta_b[n] - theta_a[n]) ** 2).sum() for n in theta_a) ** 0.5),
                              "linear": line.to_dict()}
    paths = {"linear": line}
    if args.bezier:
        per_step = 1 if args.objective == "expected" else 9  # fit_bezier's default minimax grid has 9 points
        with common.progress("bezier", args.steps * per_step + args.points * len(batches), args.quiet, unit="batch") as bar:
            curve = fit_bezier(net_a.model, theta_a, theta_b, batches, num_bends=args.bends, objective=args.objective, steps=args.steps,
                               lr=args.lr, seed=args.seed, eval_ts=ts, loss_fn=common.counting_loss(loss_fn, bar),
                               bn_mode=args.bn_mode, recal_batches=recal)
        result["bezier"] = curve.to_dict()
        paths["bezier"] = curve.train
        timer.tick("bezier")
    result["timings_s"] = timer.seconds
    common.write_result(result, args.out)
    if args.plot is not None:
        common.write_figure(plot_paths(paths), args.plot)
    return 0
