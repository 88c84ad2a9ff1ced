"""``landscape trajectory``: an optimisation path on its top principal plane, over the loss surface.

Given weight snapshots ``theta_0, ..., theta_{T-1}`` of one network in time order (the last is
the final point ``theta_f``), the plane through ``theta_f`` spanned by the top two principal
directions of the offsets ``theta_i - theta_f`` (thin SVD) holds the most of the path in the
least-squares sense; the loss is evaluated on a grid of that plane and the path drawn on top
(Li, Xu, Taylor, Studer & Goldstein 2018, *Visualizing the loss landscape of neural nets*,
section 7; :mod:`landscape.probes.trajectory`). The JSON reports the explained variance of each
direction, every snapshot's coordinates and distance off the plane, the loss at every snapshot
and at its projection, and the grid.

The snapshots are files (``model.pt`` of the train stage, its ``snapshot_epoch*.pt`` files, or
plain state_dicts), or a train-stage run directory (``--run runs/<exp>/<cfg>/seed<k>``: its kept
snapshots in epoch order, then its ``model.pt``). The architecture comes from the final file
(or ``--model``); every other snapshot must load into it.
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path
from typing import Any

from landscape.cli import _common as common

HELP = "an optimisation path (weight snapshots) on its top-2 principal plane over the loss surface (JSON + PNG)"

NORMALIZATIONS = ("none", "filter")
BIAS_POLICIES = ("zero", "keep", "normalize")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("snapshots", type=Path, nargs="*", metavar="SNAPSHOT",
                        help="weight files in time order, the last the final point (at least 3 in all)")
    parser.add_argument("--run", dest="run_dir", type=Path, metavar="DIR",
                        help="a train-stage run directory: its checkpoints/snapshot_epoch*.pt, then its model.pt")
    common.add_model_arguments(parser, checkpoint=False)
    common.add_data_arguments(parser)
    group = parser.add_argument_group("plane")
    group.add_argument("--points", type=common.positive_int, default=21, metavar="N", help="grid points per axis, >= 2 (default 21)")
    group.add_argument("--margin", type=float, default=0.2, metavar="F",
                       help="extra fraction of the path's bounding box on each side, >= 0 (default 0.2)")
    group.add_argument("--normalization", default="none", metavar="NORM",
                       help="scanned directions: none (unit principal directions, Li et al.'s choice for paths) or filter "
                            "(filter-normalised to the final point, as the random-direction scans) (default none)")
    group.add_argument("--bias-policy", default="zero", metavar="POLICY",
                       help="with --normalization filter: biases and norm-layer parameters zero, keep or normalize (default zero)")
    common.add_run_arguments(parser, bn_modes=("eval", "batch", "recalibrate"),
                             bn_help="eval (running statistics of the final network), batch (each batch's own) or recalibrate "
                                     "(fresh running statistics at every point, from the data)")
    common.add_output_arguments(parser, plot_help="draw the loss contours of the plane with the path on top as PNG")


def _snapshot_files(args: argparse.Namespace) -> list[Path]:
    """The snapshot paths in time order, from the positional files or ``--run``."""
    if args.run_dir is not None and args.snapshots:
        raise common.UsageError("give the snapshots as files or as --run DIR, not both")
    if args.run_dir is None:
        files = list(args.snapshots)
    else:
        from landscape.training.checkpoint import list_snapshots

        if not args.run_dir.is_dir():
            raise common.UsageError(f"--run {args.run_dir} is not a directory; "
                                    "expected a train-stage run directory runs/<exp>/<cfg>/seed<k>")
        final = args.run_dir / "model.pt"
        if not final.is_file():
            raise common.UsageError(f"--run {args.run_dir} has no model.pt (the train stage's final weights)")
        files = [*list_snapshots(args.run_dir / "checkpoints"), final]  # the train stage's layout (landscape.pipeline.layout)
    if len(files) < 3:
        raise common.UsageError(f"a plane needs at least 3 snapshots (the final point and two others), got {len(files)}; "
                                "pass more files, or keep snapshots in training (train.snapshot_every)")
    return files


def run(args: argparse.Namespace) -> int:
    common.check_common(args)
    files = _snapshot_files(args)
    if args.points < 2:
        raise common.UsageError(f"--points must be >= 2, got {args.points}")
    if not args.margin >= 0:
        raise common.UsageError(f"--margin must be >= 0, got {args.margin}")
    common.check_choice("--normalization", args.normalization, NORMALIZATIONS)
    common.check_choice("--bias-policy", args.bias_policy, BIAS_POLICIES)
    if args.pretrained:
        raise common.UsageError("--pretrained does not apply: the path's weights come from its snapshots")
    data = common.load_data(args)
    final = common.load_model(args, data, files[-1], role=f"final snapshot {len(files)}")
    from landscape.models import load_weights, read_checkpoint
    from landscape.probes import parameter_dict, plot_trajectory, trajectory_pca, trajectory_scan

    snapshots, labels = [], []
    for i, path in enumerate(files[:-1], start=1):
        try:
            ck = read_checkpoint(path)
            net = load_weights(copy.deepcopy(final.model), ck.state_dict, source=f"snapshot {i} {path}")
        except (ValueError, FileNotFoundError) as exc:
            raise common.UsageError(str(exc)) from None
        snapshots.append(parameter_dict(net))
        epoch = ck.meta.get("epoch")
        labels.append(f"epoch {epoch}" if epoch is not None else path.stem)
    snapshots.append(parameter_dict(final.model))
    labels.append("final")
    import torch

    try:  # a path that spans no plane stops here, before any loss is evaluated
        trajectory_pca([torch.cat([t.reshape(-1) for t in snap.values()]) for snap in snapshots])
    except ValueError as exc:
        raise common.UsageError(str(exc)) from None
    params = next(final.model.parameters())
    batches = common.batches_of(data.data, args.batch_size, params.device, params.dtype)
    recal = batches if args.bn_mode == "recalibrate" else None
    timer = common.Timer()
    total = len(batches) * (args.points**2 + 2 * len(files))
    with common.progress("trajectory", total, args.quiet, unit="batch") as bar:
        try:
            scan = trajectory_scan(final.model, snapshots, batches, num=args.points, margin=args.margin,
                                   normalization=args.normalization, bias_policy=args.bias_policy, labels=labels,
                                   loss_fn=common.counting_loss(common.loss_function(args.loss), bar),
                                   bn_mode=args.bn_mode, recal_batches=recal)
        except ValueError as exc:  # e.g. filter-normalised directions that do not span a plane
            raise common.UsageError(str(exc)) from None
    timer.tick("trajectory")
    result: dict[str, Any] = {"command": "trajectory", "model": final.record, "data": data.record, "loss": args.loss,
                              "bn_mode": args.bn_mode, "snapshots": [str(p) for p in files], "trajectory": scan.to_dict(),
                              "timings_s": timer.seconds}
    common.write_result(result, args.out)
    if args.plot is not None:
        common.write_figure(plot_trajectory(scan), args.plot)
    return 0
