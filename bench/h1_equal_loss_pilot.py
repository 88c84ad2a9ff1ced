"""Pilot that fixes the eta x B grid, the target train loss and the step caps of `h1_equal_loss`.

Rule (stated before any test error is looked at): pilot seeds 100-101 (disjoint from the
pipeline's 0-9), the training split only (it is also passed as the "test" split, so no
held-out data is read). For each (batch size, eta) cell: steps to reach the target loss on
the full training split, whether the run diverged, and CPU seconds. A grid is usable when
every cell reaches the target on every pilot seed within its cap.

Usage: PYTHONPATH=src python bench/h1_equal_loss_pilot.py [--target 0.05] [--ratios 3.90625e-4 ...]
       [--batches 16 64 256] [--seeds 100 101] [--epochs 40] [--track-every 25]
"""

from __future__ import annotations

import argparse
import time

import torch

from landscape.models import build_model
from landscape.training import train_model
from landscape.training.config import TrainConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="data/prepared/mnist14/splits.pt")
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--ratios", type=float, nargs="+", default=[0.4 / 1024, 0.4 / 512, 0.4 / 256])
    parser.add_argument("--batches", type=int, nargs="+", default=[16, 64, 256])
    parser.add_argument("--seeds", type=int, nargs="+", default=[100, 101])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--track-every", type=int, default=25)
    parser.add_argument("--sharpness", action="store_true")
    parser.add_argument("--power-steps", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = torch.load(args.data, map_location="cpu", weights_only=False)
    x, y = data["train"]
    for b in args.batches:
        for r in args.ratios:
            lr = r * b
            for seed in args.seeds:
                torch.manual_seed(seed)
                model = build_model("mlp", num_classes=10, in_features=x[0].numel(), width=128, depth=2, activation="relu", norm="none")
                cfg = TrainConfig(epochs=args.epochs, batch_size=b, lr=lr, momentum=0.9, weight_decay=0.0, schedule="constant",
                                  target_loss=args.target, track_every=args.track_every, track_sharpness=args.sharpness,
                                  power_steps=args.power_steps, sharpness_examples=512)
                t0 = time.process_time()
                res = train_model(model, (x, y), (x[:10], y[:10]), cfg, seed=seed)
                cpu = time.process_time() - t0
                a = res.along_training or {}
                lam = a.get("lambda_max_final", float("nan"))
                print(f"B={b:5d} eta={lr:.5f} eta/B={r:.2e} seed={seed} status={res.status} reached={a.get('reached')} "
                      f"steps={res.steps} loss={res.final.get('train_loss', float('nan')):.4f} lam={lam:.2f} cpu={cpu:.2f}s", flush=True)


if __name__ == "__main__":
    main()
