"""Pilot that picks the learning rate of every arm of H2's `h2_depth` group, one rule for all.

Rule (fixed before any curvature was measured): train with the group's recipe at every
rate of a grid on pilot seeds disjoint from the pipeline's (100, 101), on 80% of the
training split, and score each run by its loss on the other 20% (a diverged run: +inf); the
test split is never read. An *arm* is a set of cells that share one rate; the arm's rate is
the one with the lowest worst-cell mean validation loss (for a one-cell arm: the lowest mean
validation loss).

- ``--mode norm``: one arm per normalisation (none / bn / ln), each one cell (skip on, one
  depth): each normalisation gets its own best rate.
- ``--mode factorial``: one arm, every (depth, skip) cell of the depth x skip factorial
  (norm ln): one rate for all cells, the one at which the worst cell trains best, so that
  the plain deep nets are not left untrained by a rate that only suits the residual ones.

Usage: PYTHONPATH=src python bench/h2_lr_pilot.py --mode norm|factorial [--lrs ...]
       [--depths 1 2 4 8] [--width 32] [--epochs 8] [--out bench/results/h2_lr_pilot_<mode>.json]
Prints one line per (arm, rate) and the chosen rates; writes them with the machine and
versions to ``--out``.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time

import torch

from landscape.io import write_json
from landscape.models import build_model
from landscape.training import train_model
from landscape.training.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/prepared/mnist14/splits.pt")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.005, 0.01, 0.02, 0.05, 0.1, 0.2])
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    parser.add_argument("--mode", choices=["norm", "factorial"], required=True)
    parser.add_argument("--norms", nargs="+", default=["none", "bn", "ln"])
    parser.add_argument("--depths", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--norm-depth", type=int, default=4)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--val-fraction", type=float, default=0.2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = torch.load(args.data, map_location="cpu", weights_only=False)
    x, y = data["train"]
    perm = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))
    n_val = int(round(args.val_fraction * len(y)))
    val, fit = perm[:n_val], perm[n_val:]
    shape = tuple(x.shape[1:])
    kwargs = {"in_chans": shape[0], "img_size": shape[1]} if len(shape) == 3 else {"in_features": shape[0]}
    if args.mode == "norm":
        arms = {norm: [(args.norm_depth, True, norm)] for norm in args.norms}
    else:
        arms = {"factorial": [(d, sk, "ln") for d in args.depths for sk in (True, False)]}
    rows, chosen = [], {}
    started_all = time.perf_counter()
    for arm, cells in arms.items():
        best = (math.inf, None)
        for lr in args.lrs:
            cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=lr, momentum=0.9,
                              weight_decay=0.0005, schedule="cosine")
            worst = -math.inf
            for depth, skip, norm in cells:
                started = time.perf_counter()
                losses, train_losses = [], []
                for seed in args.seeds:
                    model = build_model("resmlp", num_classes=data["num_classes"], width=args.width, depth=depth,
                                        norm=norm, skip=skip, seed=seed, **kwargs)
                    res = train_model(model, (x[fit], y[fit]), (x[val], y[val]), cfg, seed=seed)
                    ok = res.status == "completed" and math.isfinite(res.final.get("test_loss", math.nan))
                    losses.append(res.final["test_loss"] if ok else math.inf)
                    train_losses.append(res.final["train_loss"] if ok else math.inf)
                mean = sum(losses) / len(losses)
                worst = max(worst, mean)
                rows.append({"arm": arm, "depth": depth, "skip": skip, "norm": norm, "lr": lr, "val_loss": losses,
                             "train_loss": train_losses, "mean_val_loss": mean, "seconds": time.perf_counter() - started})
                print(f"{arm} depth={depth} skip={skip} norm={norm} lr={lr:g}: val loss {['%.4f' % v for v in losses]} "
                      f"train {['%.4f' % v for v in train_losses]} ({time.perf_counter() - started:.1f} s)", flush=True)
            if worst < best[0]:
                best = (worst, lr)
        chosen[arm] = best[1]
        print(f"chosen lr for {arm}: {best[1]} (worst-cell mean val loss {best[0]:.4f})", flush=True)
    out = args.out or f"bench/results/h2_lr_pilot_{args.mode}.json"
    write_json(out, {
        "rule": ("per arm, the rate with the lowest worst-cell mean validation loss over the pilot seeds (diverged = inf); "
                 "80/20 split of the training split"),
        "command": " ".join(["python", *sys.argv]), "chosen": chosen, "rows": rows,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "python": platform.python_version(),
                    "torch": torch.__version__, "threads": torch.get_num_threads()},
        "total_seconds": time.perf_counter() - started_all,
    })


if __name__ == "__main__":
    main()
