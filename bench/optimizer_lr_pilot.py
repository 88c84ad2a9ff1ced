"""Pilot that fixes the LARGE learning rate of the `optimizers` experiment group.

Rule (stated before looking at any optimizer comparison): the large rate is the smallest
rate on a grid at which plain SGD with momentum (the group's training recipe) diverges on
at least one and at most four of five pilot seeds. The pilot seeds (100-104) are disjoint
from the pipeline's seeds, the pilot reads the training split only (no test error is used),
and only SGD is run: the curvature-aware optimizers play no part in the choice.

Usage: PYTHONPATH=src python bench/optimizer_lr_pilot.py [--data data/prepared/mnist14/splits.pt]
       [--lrs 0.2 0.3 ...] [--epochs 12] [--seeds 100 101 102 103 104]
Prints one line per rate (diverged seeds, divergence step) and the chosen rate.
"""

from __future__ import annotations

import argparse
import time

import torch

from landscape.training.config import TrainConfig
from landscape.models import build_model
from landscape.training import train_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/prepared/mnist14/splits.pt")
    parser.add_argument("--lrs", type=float, nargs="+", default=[0.1, 0.2, 0.3, 0.4, 0.5, 0.7, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101, 102, 103, 104])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = torch.load(args.data, map_location="cpu", weights_only=False)
    x, y = data["train"]
    shape = tuple(x.shape[1:])
    kwargs = {"in_chans": shape[0], "img_size": shape[1]} if len(shape) == 3 else {"in_features": shape[0]}
    # the train split is also passed as the "test" split: the loop's per-epoch evaluation then
    # never touches the held-out data
    chosen = None
    for lr in args.lrs:
        cfg = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, optimizer="sgd", lr=lr, momentum=0.9,
                          weight_decay=0.0005, schedule="cosine")
        started = time.perf_counter()
        diverged = {}
        for seed in args.seeds:
            torch.manual_seed(seed)
            model = build_model("mlp", num_classes=data["num_classes"], width=128, depth=2, activation="relu", norm="none", **kwargs)
            res = train_model(model, (x, y), (x, y), cfg, seed=seed)
            if res.status == "diverged":
                diverged[seed] = res.diverged_step
        k = len(diverged)
        print(f"lr={lr:g}: diverged on {k}/{len(args.seeds)} pilot seeds {diverged} ({time.perf_counter() - started:.1f} s)")
        if chosen is None and 1 <= k <= len(args.seeds) - 1:
            chosen = lr
    print(f"chosen large lr: {chosen}")


if __name__ == "__main__":
    main()
