"""``landscape scan``: the loss around a network along filter-normalised random directions.

1D: ``L(theta + a d)``; 2D: ``L(theta + x d_1 + y d_2)`` on a grid, with ``d``, ``d_1``,
``d_2`` zero-mean Gaussian directions, each filter rescaled to the norm of the matching
filter of ``theta`` (Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the loss
landscape of neural nets*; :mod:`landscape.probes.scans`). The 1D direction is the 2D
scan's ``d_1`` for the same seed, so the line is the plane's ``y = 0`` axis.
"""

from __future__ import annotations

import argparse
from typing import Any

from landscape.cli import _common as common

HELP = "1D or 2D filter-normalised random-direction loss scan around a network (JSON + PNG)"

BIAS_POLICIES = ("zero", "keep", "normalize")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common.add_model_arguments(parser)
    common.add_data_arguments(parser)
    group = parser.add_argument_group("scan")
    group.add_argument("--dims", type=int, default=1, metavar="{1,2}", help="1 (a line) or 2 (a plane) (default 1)")
    group.add_argument("--extent", type=common.positive_float, default=1.0, metavar="A",
                       help="coordinates run over [-A, A] in units of the filter-normalised directions (default 1)")
    group.add_argument("--points", type=common.positive_int, default=21, metavar="N",
                       help="grid points per axis, >= 2 (default 21; odd N puts the network itself on the grid)")
    group.add_argument("--bias-policy", default="zero", metavar="POLICY",
                       help="biases and norm-layer parameters: zero (not moved, Li et al.), keep (raw Gaussian) or normalize")
    common.add_run_arguments(parser, bn_modes=("eval", "batch", "recalibrate"),
                             bn_help="eval (running statistics), batch (each batch's own) or recalibrate (fresh running "
                                     "statistics at every point, from the scan's data)")
    common.add_output_arguments(parser, plot_help="draw the line (1D) or a contour plot (2D) as PNG")


def run(args: argparse.Namespace) -> int:
    common.check_common(args)
    if args.dims not in (1, 2):
        raise common.UsageError(f"--dims must be 1 or 2, got {args.dims}")
    if args.points < 2:
        raise common.UsageError(f"--points must be >= 2, got {args.points}")
    common.check_choice("--bias-policy", args.bias_policy, BIAS_POLICIES)
    data = common.load_data(args)
    net = common.load_model(args, data)
    import numpy as np

    from landscape.probes import parameter_dict, plot_contour, plot_line, random_line_scan, random_plane_scan

    params = next(net.model.parameters())
    batches = common.batches_of(data.data, args.batch_size, params.device, params.dtype)
    coords = np.linspace(-args.extent, args.extent, args.points)
    theta = parameter_dict(net.model)
    recal = batches if args.bn_mode == "recalibrate" else None
    timer = common.Timer()
    total = len(batches) * args.points**args.dims
    with common.progress(f"scan {args.dims}d", total, args.quiet, unit="batch") as bar:
        loss_fn = common.counting_loss(common.loss_function(args.loss), bar)
        options: dict[str, Any] = {"seed": args.seed, "bias_policy": args.bias_policy, "loss_fn": loss_fn, "bn_mode": args.bn_mode,
                                   "recal_batches": recal}
        if args.dims == 1:
            scan: Any = random_line_scan(net.model, theta, batches, alphas=coords, **options)
        else:
            scan = random_plane_scan(net.model, theta, batches, xs=coords, ys=coords, **options)
    timer.tick("scan")
    result = {"command": "scan", "model": net.record, "data": data.record, "loss": args.loss, "bn_mode": args.bn_mode,
              "dims": args.dims, "seed": args.seed, "bias_policy": args.bias_policy,
              "directions": "filter-normalised Gaussian (Li et al. 2018); the 1D direction is the 2D scan's d_1 for the same seed",
              "scan": scan.to_dict(), "timings_s": timer.seconds}
    common.write_result(result, args.out)
    if args.plot is not None:
        common.write_figure(plot_line(scan) if args.dims == 1 else plot_contour(scan), args.plot)
    return 0
