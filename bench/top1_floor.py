"""How fast can any top-1 eigenvalue solver built on Hessian-vector products be on the
``bench/curvature.py`` problem (timm resnet18, 128 CIFAR-sized inputs, CPU, float32)?

Measures, in one run on the same model and data:
- the wall time of one product: two intra-op threads on the whole batch (what both we and
  PyHessian use), one thread, and the batch split over two Python threads with one intra-op
  thread each; and of one gradient, for scale;
- the true relative error of the largest Lanczos Ritz value after each step from the
  gradient start vector, against the float64 reference in ``bench/results/curvature_eig_hvp.json``;
- the overlap with the top eigenvector v_1 of two start vectors: the gradient, and the top
  eigenvector of the classifier layer's own Hessian block (closed form from one forward pass);
  and how much of v_1 lies in that layer;
- PyHessian's top-1 (its defaults) and ours (the settings of ``bench/curvature.py``) in the same run, and the
  floor: products needed for relative error 1e-4 times the product time, against 0.35x
  PyHessian's wall time.

Usage: ``OMP_NUM_THREADS=2 .venv/bin/python bench/top1_floor.py`` with the ``bench`` extra
installed (about 3 min; writes ``bench/results/top1_floor.json``).
"""

from __future__ import annotations

import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from curvature import REPO, BenchConfig, machine_info, pyhessian_hessian, random_batch, seeded_global_rng  # noqa: E402  (also puts src on sys.path)

from landscape.curvature import HessianOperator, top_eigenpairs  # noqa: E402
from landscape.curvature.lanczos import lanczos_tridiagonal  # noqa: E402
from landscape.io import read_json, write_json  # noqa: E402
from landscape.models import build_model  # noqa: E402

TARGET_ERROR = 1e-4
TARGET_RATIO = 0.35


def median_time(fn: Callable[[], Any], repeats: int = 5) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def product_times(model: torch.nn.Module, x: Tensor, y: Tensor, loss_fn: torch.nn.Module) -> dict[str, float]:
    """Seconds per product (and per gradient) under three ways of using the two cores."""
    v = torch.randn(sum(p.numel() for p in model.parameters()), 1, generator=torch.Generator().manual_seed(1))
    threads = torch.get_num_threads()
    out: dict[str, float] = {}
    op = HessianOperator(model, loss_fn, [(x, y)], bn_mode="eval", hvp_mode="rev_rev_kept")
    out["product_intra_op_threads"] = median_time(lambda: op @ v)
    del op
    plain = HessianOperator(model, loss_fn, [(x, y)], bn_mode="eval", hvp_mode="rev_rev")  # keeps no graph
    out["gradient"] = median_time(plain.gradient)
    torch.set_num_threads(1)
    try:
        op = HessianOperator(model, loss_fn, [(x, y)], bn_mode="eval", hvp_mode="rev_rev_kept")
        out["product_one_thread"] = median_time(lambda: op @ v, repeats=3)
        del op
        halves = [HessianOperator(model, loss_fn, [(x[i::2], y[i::2])], bn_mode="eval", hvp_mode="rev_rev_kept") for i in (0, 1)]

        def split() -> None:
            workers = [threading.Thread(target=lambda h=h: h @ v) for h in halves]
            for w in workers:
                w.start()
            for w in workers:
                w.join()

        out["product_two_python_threads_on_halves"] = median_time(split)
    finally:
        torch.set_num_threads(threads)
    return out


def error_history(op: HessianOperator, lam1: float, steps: int) -> list[dict[str, float]]:
    """True relative error of the largest Ritz value after each Lanczos step (gradient start)."""
    tri = lanczos_tridiagonal(op, op.gradient(), steps)
    a, b = tri.alpha.double(), tri.beta.double()
    rows = []
    for j in range(1, len(a) + 1):
        T = torch.diag(a[:j]) + torch.diag(b[: j - 1], 1) + torch.diag(b[: j - 1], -1)
        theta = float(torch.linalg.eigvalsh(T)[-1])
        rows.append({"products": j, "ritz_value": theta, "relative_error": abs(theta - lam1) / abs(lam1)})
    return rows


def classifier_block_start(model: torch.nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Top eigenvector of the cross-entropy Hessian block of the final linear layer,
    mean_i (diag p_i - p_i p_i^T) kron f_i f_i^T with features f_i (bias as a constant feature),
    placed in the full parameter vector; and the 0/1 mask of that layer's entries."""
    head = model.get_classifier()
    with torch.no_grad():
        feats = model.forward_head(model.forward_features(x), pre_logits=True)
        p = head(feats).softmax(1)
    f = torch.cat([feats, torch.ones(len(x), 1)], 1).double()
    c, d = p.shape[1], f.shape[1]
    block = torch.zeros(c * d, c * d, dtype=torch.float64)
    for pi, fi in zip(p.double(), f):
        block += torch.kron(torch.diag(pi) - torch.outer(pi, pi), torch.outer(fi, fi))
    u = torch.linalg.eigh(block / len(x)).eigenvectors[:, -1].reshape(c, d).float()
    placed = {id(head.weight): u[:, :-1], id(head.bias): u[:, -1]}
    parts = [placed.get(id(q), torch.zeros_like(q)).reshape(-1) for q in model.parameters()]
    mask = [torch.full((q.numel(),), float(id(q) in placed)) for q in model.parameters()]
    return torch.cat(parts), torch.cat(mask)


def main() -> None:
    cfg = BenchConfig(name="default")
    model = build_model(cfg.model, num_classes=10, in_chans=3, img_size=cfg.img_size, seed=cfg.seed).eval()
    x, y = random_batch(cfg.num_examples, (3, cfg.img_size, cfg.img_size), 10, cfg.seed, torch.float32)
    loss_fn = torch.nn.CrossEntropyLoss()
    eig = read_json(REPO / "bench" / "results" / "curvature_eig_hvp.json")["eig"]
    lam1, lam2 = eig["reference"]["values"][:2]  # float64 Rayleigh-Ritz reference of the same problem
    result: dict[str, Any] = {"command": "python bench/top1_floor.py", "machine": machine_info(torch.get_num_threads()),
                              "problem": {"model": cfg.model, "num_examples": cfg.num_examples, "img_size": cfg.img_size, "seed": cfg.seed},
                              "reference_top2": [lam1, lam2], "gap_ratio_lambda2_over_lambda1": lam2 / lam1}
    t = time.perf_counter()
    with seeded_global_rng(cfg.seed):
        values, _ = pyhessian_hessian(model, loss_fn, x, y).eigenvalues(top_n=1)  # maxIter=100, tol=1e-3
    pyhessian_top1 = time.perf_counter() - t
    result["pyhessian_top1"] = {"wall_s": pyhessian_top1, "value": float(values[0]), "relative_error": abs(values[0] - lam1) / lam1}
    t = time.perf_counter()
    op = HessianOperator(model, loss_fn, [(x, y)], bn_mode="eval")
    ours = top_eigenpairs(op, k=1, which="LA", tol=TARGET_ERROR, seed=cfg.seed, v0=op.gradient(), **dict(cfg.eig_options))
    result["ours_top1"] = {"wall_s": time.perf_counter() - t, "products": ours.num_matvecs, "value": float(ours.values[0]),
                           "relative_error": abs(float(ours.values[0]) - lam1) / lam1}
    result["ours_top1"]["ratio_to_pyhessian"] = result["ours_top1"]["wall_s"] / pyhessian_top1
    del op
    result["seconds"] = product_times(model, x, y, loss_fn)
    print("seconds:", result["seconds"], result["pyhessian_top1"], result["ours_top1"], flush=True)

    op = HessianOperator(model, loss_fn, [(x, y)], bn_mode="eval")
    history = error_history(op, lam1, steps=14)
    result["lanczos_gradient_start"] = history
    needed = next((r["products"] for r in history if r["relative_error"] <= TARGET_ERROR), None)
    vec = top_eigenpairs(op, k=1, which="LA", tol=1e-7, seed=cfg.seed, v0=op.gradient(), stop="value", check_multiplicity=False).vectors[:, 0]
    grad = op.gradient()
    start, head = classifier_block_start(model, x)
    result["start_vectors"] = {
        "gradient_overlap": float((grad @ vec).abs() / grad.norm()),
        "classifier_block_overlap": float((start @ vec).abs() / start.norm()),
        "v1_mass_in_classifier_layer": float((vec * head).pow(2).sum() / vec.pow(2).sum()),
    }
    product = result["seconds"]["product_intra_op_threads"]
    result["floor"] = {
        "products_for_1e-4": needed,
        "products_seconds": None if needed is None else needed * product,
        "pyhessian_top1_wall_s": pyhessian_top1,
        "budget_s": TARGET_RATIO * pyhessian_top1,
        "floor_ratio": None if needed is None else needed * product / pyhessian_top1,
    }
    print(result["start_vectors"], result["floor"], flush=True)
    write_json(REPO / "bench" / "results" / "top1_floor.json", result)


if __name__ == "__main__":
    main()
