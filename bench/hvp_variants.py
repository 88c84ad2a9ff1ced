"""Time a gradient against each Hessian-vector product variant of HessianOperator.

Models: a small CNN (conv-BN-ReLU x2, linear head) and a timm-free ResNet-like network
(three stages of basic residual blocks with BatchNorm), CIFAR-shaped random data, float32.
Reports the median time of ``repeats`` runs (process CPU time by default, robust to other
jobs on a shared machine with ``--threads 1``; use ``--clock wall`` on a GPU) of: one
gradient (forward + backward), one product per variant (``rev_rev_kept`` excludes the
one-off graph build, reported separately), and the per-vector cost of a block of ``k``
vectors, batched (``vectorize=True``) and column by column (``vectorize=False``); ratios
are to the gradient time.

Usage: PYTHONPATH=src python bench/hvp_variants.py [--batch 64] [--repeats 7] [--k 8] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from landscape.curvature.operators import HessianOperator


def small_cnn(num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * 8 * 8, num_classes),
    )


class BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.short = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.short = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + self.short(x))


def resnet_like(width: int = 16, num_classes: int = 10) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU(),
        BasicBlock(width, width, 1), BasicBlock(width, 2 * width, 2), BasicBlock(2 * width, 4 * width, 2),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4 * width, num_classes),
    )


CLOCK = time.process_time


def median_time(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = CLOCK()
        fn()
        times.append(CLOCK() - t0)
    return statistics.median(times)


def bench_model(name: str, model: nn.Module, batch: int, repeats: int, k: int, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    data = [(torch.randn(batch, 3, 32, 32, generator=g), torch.randint(0, 10, (batch,), generator=g))]
    loss_fn = nn.CrossEntropyLoss()
    P = sum(p.numel() for p in model.parameters())
    v = torch.randn(P, generator=g)
    V = torch.randn(P, k, generator=g)
    res: dict = {"model": name, "num_params": P, "batch": batch, "k": k}
    base = HessianOperator(model, loss_fn, data, hvp_mode="rev_rev")
    t_grad = median_time(base.gradient, repeats)
    res["gradient_s"] = t_grad
    t0 = CLOCK()
    HessianOperator(model, loss_fn, data, hvp_mode="rev_rev_kept")
    res["rev_rev_kept_build_s"] = CLOCK() - t0
    block_repeats = max(3, repeats // 2)
    for mode in ("rev_rev_kept", "rev_rev", "fwd_rev"):
        batched = HessianOperator(model, loss_fn, data, hvp_mode=mode, vectorize=True)
        loop = HessianOperator(model, loss_fn, data, hvp_mode=mode, vectorize=False)
        if mode == "rev_rev_kept":
            res["graph_MiB"] = batched.report.graph_bytes / 2**20
        t1 = median_time(lambda: loop @ v, repeats)
        res[f"{mode}_s"] = t1
        res[f"{mode}_ratio"] = t1 / t_grad
        res[f"{mode}_block_vectorized_per_vec_ratio"] = median_time(lambda: batched @ V, block_repeats) / k / t_grad
        res[f"{mode}_block_loop_per_vec_ratio"] = median_time(lambda: loop @ V, block_repeats) / k / t_grad
        del batched, loop
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: leave the default)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--clock", choices=("process", "wall"), default="process",
                    help="process CPU time (robust on a shared machine with --threads 1) or wall time")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "process" else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)  # model initialisation only
    results = [
        bench_model("small_cnn", small_cnn(), args.batch, args.repeats, args.k, args.seed),
        bench_model("resnet_like", resnet_like(), args.batch, args.repeats, args.k, args.seed),
    ]
    for r in results:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in r.items()}))


if __name__ == "__main__":
    main()
