"""Five-minute GPU check: does the library's GPU path work, agree with float64, and fit?

Runs with a GPU machine's own Python (torch, timm, scipy, numpy; tensorboard optional; no DVC,
no network, nothing installed)::

    PYTHONPATH=src python3 bench/gpu_check.py --out DIR                  # on a GPU, ~5 min
    PYTHONPATH=src python3 bench/gpu_check.py --out DIR --device cpu --small   # smoke run on a CPU

and writes ``DIR/gpu_check_<device>[_small].json``. Sections (each guarded: an exception is
recorded and the next section runs; a global time budget, ``--budget-s``, and a cap per
section stop whatever would overrun, recorded as ``stopped``):

1. ``hvp_agreement``: Hessian-vector products on the device (float32 and float64) against
   the CPU in float64, for small instances of every paper architecture (MLP, ResNet with BN
   in both ``bn_mode``s, timm's ResNet-18, ViT, the LM); relative errors, and whether the ViT
   needed the math attention path (fused attention has no double backward).
2. ``determinism_amp``: two identical short trainings under :func:`configure_determinism`
   give bit-identical weights (and the ops that ran without a deterministic kernel); a
   checkpointed training gives the plain one's weights; the same product twice is
   bit-identical; bf16 and fp16 AMP train without NaN.
3. ``paper_models``: a few training steps of ResNet-18/34 (timm), ViT-S/4 and the WikiText-2
   LM at paper sizes (bf16 AMP on CUDA), plain and with gradient checkpointing: step time,
   peak memory; one Hessian-vector product of each.
4. ``cost``: ResNet-18 on CIFAR-sized inputs at batch 128 and 1,024: HVP/gradient time
   ratio; top-1 and top-5 eigenvalues by ``top_eigenpairs`` at several tolerances against
   PyHessian (when importable) or else PyHessian's algorithm (deflated power iteration,
   stop on relative eigenvalue change, 100 iterations at most) at several tolerances, every
   run's error measured against a float64 Rayleigh-Ritz reference; times compared at equal
   accuracy.
5. ``memory``: peak device memory of the gradient-noise covariance (N = 512 per-sample
   gradients, the paper's ``noise_examples``) of ResNet-18/34 and ViT-S, and of SLQ's
   Lanczos bases at the paper's 8 probes x 100 steps for those parameter counts (all probes
   at once, and one probe at a time), plus one product's working memory. Uses the streamed
   covariance and the SLQ probe batch when the library has them (recorded as ``api``).

Peak memory is ``torch.cuda.max_memory_allocated`` (CUDA only; null on the CPU).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import functools
import inspect
import math
import os
import platform
import resource
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install

import landscape  # noqa: F401, I001  (first: pins PyTorch's and NumPy's CPU kernels before torch imports numpy)
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from landscape.curvature import HessianOperator, SymmetricOperator, top_eigenpairs
from landscape.curvature import covariance as covariance_module
from landscape.curvature import noise as noise_module
from landscape.curvature import slq as slq_module
from landscape.io import write_json
from landscape.models import build_model
from landscape.reproducibility import configure_determinism, device_record, record_nondeterministic_ops
from landscape.training import train_model
from landscape.training.config import TrainConfig

PIPELINE_ONLY = ("dvc", "dvclive", "tqdm", "sklearn", "mlxtend", "papermill", "nbformat", "nbconvert", "selenium")
"""Packages of the pipeline and its tooling that a GPU machine's Python may lack; none is imported here."""
SECTIONS = ("hvp_agreement", "determinism_amp", "paper_models", "cost", "memory")
CAPS_S = {"hvp_agreement": 40, "determinism_amp": 45, "paper_models": 75, "cost": 110, "memory": 60}
"""Most seconds each section may take (at full size; the global budget bounds them all)."""


# ------------------------------------------------------------------------------- budget


class BudgetExceeded(BaseException):
    """Raised (by a timer signal) in a section that runs past its cap or the global budget; a
    BaseException, so no ``except Exception`` on the way swallows it."""


class Budget:
    """The global deadline and each section's; a POSIX interval timer interrupts overruns."""

    def __init__(self, total_s: float):
        self.start = time.monotonic()
        self.deadline = self.start + total_s

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    @contextlib.contextmanager
    def section(self, cap_s: float) -> Iterator[float]:
        allowed = min(cap_s, self.remaining())
        if allowed <= 1.0:
            raise BudgetExceeded("no time left in the global budget")

        def alarm(*_: Any) -> None:
            raise BudgetExceeded(f"section stopped after its {allowed:.0f} s (cap {cap_s:.0f} s, global budget)")

        previous = signal.signal(signal.SIGALRM, alarm)
        signal.setitimer(signal.ITIMER_REAL, allowed)
        try:
            yield allowed
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)


# ------------------------------------------------------------------------------- helpers


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], Any], device: torch.device) -> tuple[Any, float]:
    sync(device)
    t0 = time.perf_counter()
    out = fn()
    sync(device)
    return out, time.perf_counter() - t0


def median_time(fn: Callable[[], Any], device: torch.device, repeats: int) -> float:
    fn()  # warm-up (kernels, autotuning off but caches, the kept graph)
    return statistics.median(timed(fn, device)[1] for _ in range(repeats))


@contextlib.contextmanager
def peak_memory(device: torch.device) -> Iterator[dict[str, Any]]:
    """``{"peak_bytes": ...}`` of the block (CUDA: max_memory_allocated since its start)."""
    out: dict[str, Any] = {"peak_bytes": None}
    if device.type == "cuda":
        sync(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    try:
        yield out
    finally:
        if device.type == "cuda":
            sync(device)
            out["peak_bytes"] = int(torch.cuda.max_memory_allocated(device))
            out["peak_above_start_bytes"] = int(torch.cuda.max_memory_allocated(device) - base)


def gib(n: int | None) -> float | None:
    return None if n is None else round(n / 2**30, 3)


def math_attention(model: nn.Module) -> int:
    """Switch timm's fused attention off (it has no double backward); returns modules switched."""
    count = 0
    for m in model.modules():
        if getattr(m, "fused_attn", False):
            setattr(m, "fused_attn", False)  # noqa: B010  (an attribute of timm's Attention, not of nn.Module)
            count += 1
    return count


def image_batch(n: int, size: int, classes: int, seed: int, device: torch.device,
                dtype: torch.dtype = torch.float32, channels: int = 3) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return x, torch.randint(0, classes, (n,), generator=g).to(device)


def token_batch(n: int, context: int, vocab: int, seed: int, device: torch.device,
                dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randint(0, vocab, (n, context), generator=g).to(device=device, dtype=dtype),
            torch.randint(0, vocab, (n,), generator=g).to(device))


def rel(a: Tensor, b: Tensor) -> float:
    return float((a.double().cpu() - b.double().cpu()).norm() / b.double().cpu().norm().clamp_min(1e-300))


def error_record(exc: BaseException) -> dict[str, Any]:
    return {"status": "error", "error": f"{type(exc).__name__}: {exc}"[:2000], "traceback": traceback.format_exc()[-4000:]}


def guarded(record: dict[str, Any], key: str, fn: Callable[[], Any]) -> Any:
    """``record[key] = fn()``; an exception (not the budget) is recorded in its place."""
    try:
        record[key] = fn()
    except BudgetExceeded:
        raise
    except Exception as exc:  # noqa: BLE001  (recorded in the JSON; the check goes on)
        record[key] = error_record(exc)
        if isinstance(exc, torch.OutOfMemoryError) and torch.cuda.is_available():
            torch.cuda.empty_cache()
    return record[key]


# ------------------------------------------------------------------------------- models


def paper_models(small: bool) -> dict[str, tuple[str, dict[str, Any], str]]:
    """name -> (registered model, build options, input kind) at paper sizes (tiny with --small)."""
    if small:  # the same architectures (timm's ResNets have a fixed width) on 8-pixel inputs
        return {
            "resnet18": ("resnet18", {"num_classes": 10, "in_chans": 3, "img_size": 8}, "image8"),
            "resnet34": ("resnet34", {"num_classes": 10, "in_chans": 3, "img_size": 8}, "image8"),
            "vit_small_32": ("vit_small_32", {"num_classes": 10, "in_chans": 3, "img_size": 16, "embed_dim": 48, "depth": 2,
                                              "num_heads": 3}, "image16"),
            "lm_transformer": ("lm_transformer", {"num_classes": 200, "in_features": 16, "embed_dim": 32, "depth": 2, "num_heads": 2,
                                                  "drop_rate": 0.1}, "tokens16"),
        }
    return {
        "resnet18": ("resnet18", {"num_classes": 10, "in_chans": 3, "img_size": 32}, "image32"),
        "resnet34": ("resnet34", {"num_classes": 10, "in_chans": 3, "img_size": 32}, "image32"),
        "vit_small_32": ("vit_small_32", {"num_classes": 10, "in_chans": 3, "img_size": 32}, "image32"),
        "lm_transformer": ("lm_transformer", {"num_classes": 10000, "in_features": 64, "embed_dim": 256, "depth": 4, "num_heads": 4,
                                              "drop_rate": 0.1}, "tokens64"),
    }


def inputs_for(kind: str, n: int, classes: int, seed: int, device: torch.device,
               dtype: torch.dtype = torch.float32) -> tuple[Tensor, Tensor]:
    if kind.startswith("image"):
        return image_batch(n, int(kind[5:]), classes, seed, device, dtype)
    return token_batch(n, int(kind[6:]), classes, seed, device, dtype)


# ------------------------------------------------------------------------------- 1. HVP agreement


def hvp_agreement(device: torch.device, small: bool, out: dict[str, Any]) -> None:
    side = 16 if small else 32
    cases: dict[str, tuple[str, dict[str, Any], str, int]] = {
        "mlp_bn": ("mlp", {"num_classes": 5, "in_features": 12, "width": 16, "depth": 2, "norm": "bn"}, "vector12", 5),
        "resnet_small_bn": ("resnet_small", {"num_classes": 5, "in_chans": 3, "img_size": 8, "width": 8, "norm": "bn"}, "image8", 5),
        "resnet18_timm": ("resnet18", {"num_classes": 5, "in_chans": 3, "img_size": side}, f"image{side}", 5),
        "vit_small_32": ("vit_small_32", {"num_classes": 5, "in_chans": 3, "img_size": 16, "embed_dim": 48, "depth": 2, "num_heads": 3},
                         "image16", 5),
        "lm_transformer": ("lm_transformer", {"num_classes": 50, "in_features": 12, "embed_dim": 32, "depth": 2, "num_heads": 2},
                           "tokens12", 50),
    }
    out["reference"] = "HessianOperator on the CPU in float64 (double-backward products), 2 random vectors, batch 8"
    for name, (arch, options, kind, classes) in cases.items():
        def one(arch: str = arch, options: dict[str, Any] = options, kind: str = kind, classes: int = classes) -> dict[str, Any]:
            model = build_model(arch, seed=0, **options).double()
            cpu = torch.device("cpu")
            if kind.startswith("vector"):
                g = torch.Generator().manual_seed(1)
                x, y = torch.randn(8, int(kind[6:]), generator=g, dtype=torch.float64), torch.randint(0, classes, (8,), generator=g)
            else:
                x, y = inputs_for(kind, 8, classes, 1, cpu, torch.float64)
            switched = math_attention(model)  # curvature through attention takes the math path
            bn_modes = ("eval", "batch") if any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules()) else ("eval",)
            res: dict[str, Any] = {"params": sum(p.numel() for p in model.parameters()), "fused_attention_modules_switched_off": switched}
            for bn_mode in bn_modes:
                ref_op = HessianOperator(model, F.cross_entropy, [(x, y)], bn_mode=bn_mode)
                V = torch.randn(ref_op.shape[0], 2, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
                ref = ref_op @ V
                row: dict[str, Any] = {"ref_norm": float(ref.norm())}
                for dtype in (torch.float32, torch.float64):
                    m = copy.deepcopy(model).to(device=device, dtype=dtype)
                    xd = x.to(device=device, dtype=dtype) if x.is_floating_point() else x.to(device)
                    op = HessianOperator(m, F.cross_entropy, [(xd, y.to(device))], bn_mode=bn_mode)
                    Vd = V.to(device=device, dtype=dtype)
                    got, secs = timed(lambda op=op, Vd=Vd: op @ Vd, device)
                    row[str(dtype).removeprefix("torch.")] = {"rel_error": rel(got, ref), "seconds": secs,
                                                              "product_mode": op.report.to_dict().get("product_mode")}
                res[f"bn_{bn_mode}"] = row
            return res

        guarded(out, name, one)
    if "vit_small_32" in out and out["vit_small_32"].get("fused_attention_modules_switched_off"):
        def fused() -> dict[str, Any]:
            model = build_model("vit_small_32", seed=0, **cases["vit_small_32"][1]).to(device)
            x, y = inputs_for("image16", 8, 5, 1, device)
            op = HessianOperator(model, F.cross_entropy, [(x, y)])
            return {"status": "ok", "norm": float((op @ torch.ones(op.shape[0], device=device)).norm())}

        guarded(out, "vit_small_32_with_fused_attention", fused)


# ------------------------------------------------------------------------------- 2. determinism and AMP


def determinism_amp(device: torch.device, small: bool, out: dict[str, Any]) -> None:
    n, size = (64, 8) if small else (1024, 32)
    x, y = image_batch(n, size, 10, 3, torch.device("cpu"))
    xt, yt = image_batch(n // 4, size, 10, 4, torch.device("cpu"))
    cfg = TrainConfig(epochs=1 if small else 2, batch_size=16 if small else 128, lr=0.05, augment=True, momentum=0.9,
                      eval_batch_size=256)

    def train(name: str, spec: dict[str, Any], train_cfg: TrainConfig) -> tuple[str, Any, list[str]]:
        model = build_model(name, seed=0, **spec).to(device)
        with record_nondeterministic_ops() as ops:
            res = train_model(model, (x, y), (xt, yt), train_cfg, seed=0)
        return res.state_hash, res, list(ops)

    for name, spec in (("resnet_small", {"num_classes": 10, "in_chans": 3, "img_size": size, "width": 16, "norm": "bn"}),
                       ("resnet18", {"num_classes": 10, "in_chans": 3, "img_size": size})):
        def repeat(name: str = name, spec: dict[str, Any] = spec) -> dict[str, Any]:
            (h1, r1, ops1), s1 = timed(lambda: train(name, spec, cfg), device)
            h2, _, _ = train(name, spec, cfg)
            hc, _, _ = train(name, spec, TrainConfig(**{**cfg.recipe(), "grad_checkpointing": True}))
            return {"steps": r1.steps, "identical_weights_on_rerun": h1 == h2, "checkpointed_equals_plain": hc == h1,
                    "final_train_loss": r1.history[-1]["train_loss"], "seconds_per_training": s1,
                    "nondeterministic_ops": ops1}

        guarded(out, f"train_twice_{name}", repeat)

    def products_repeat() -> dict[str, Any]:
        model = build_model("resnet18", seed=0, num_classes=10, in_chans=3, img_size=size).to(device)
        xb, yb = image_batch(64, size, 10, 5, device)
        op = HessianOperator(model, F.cross_entropy, [(xb, yb)], bn_mode="eval")
        v = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
        a, b = op @ v, op @ v
        fresh = HessianOperator(model, F.cross_entropy, [(xb, yb)], bn_mode="eval") @ v
        return {"same_product_twice_bitwise": bool(torch.equal(a, b)), "fresh_operator_bitwise": bool(torch.equal(a, fresh)),
                "max_abs_difference": float((a - fresh).abs().max())}

    guarded(out, "hvp_repeatable", products_repeat)
    for amp_dtype in ("bf16", "fp16"):
        def amp(amp_dtype: str = amp_dtype) -> dict[str, Any]:
            spec = {"num_classes": 10, "in_chans": 3, "img_size": size}
            amp_cfg = TrainConfig(**{**cfg.recipe(), "amp": True, "amp_dtype": amp_dtype})
            import warnings

            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                _, res, _ = train("resnet18", spec, amp_cfg)
            losses = [h["train_loss"] for h in res.history]
            return {"amp_used": res.amp, "status": res.status, "train_losses": losses, "finite": all(math.isfinite(v) for v in losses),
                    "warnings": sorted({str(w.message)[:200] for w in caught})}

        guarded(out, f"amp_{amp_dtype}", amp)


# ------------------------------------------------------------------------------- 3. paper models


def paper_model_steps(device: torch.device, small: bool, budget: Budget, out: dict[str, Any]) -> None:
    out["note"] = "train_model, 1 epoch of 5 steps (batch 4 with --small, else 128) + its evaluation; bf16 AMP on CUDA"
    batch = 4 if small else 128
    for label, (arch, options, kind) in paper_models(small).items():
        def one(arch: str = arch, options: dict[str, Any] = options, kind: str = kind) -> dict[str, Any]:
            classes = int(options["num_classes"])
            x, y = inputs_for(kind, 5 * batch, classes, 6, torch.device("cpu"))
            xt, yt = inputs_for(kind, batch, classes, 7, torch.device("cpu"))
            res: dict[str, Any] = {}
            for ckpt in (False, True):
                model = build_model(arch, seed=0, **options).to(device)
                res["params"] = sum(p.numel() for p in model.parameters())
                cfg = TrainConfig(epochs=1, batch_size=batch, optimizer="adamw" if "vit" in arch or "lm" in arch else "sgd", lr=1e-3,
                                  amp=device.type == "cuda", amp_dtype="bf16", grad_checkpointing=ckpt, eval_batch_size=batch)
                with peak_memory(device) as mem:
                    r, secs = timed(lambda model=model, cfg=cfg: train_model(model, (x, y), (xt, yt), cfg, seed=0), device)
                res["checkpointed" if ckpt else "plain"] = {
                    "status": r.status, "amp": r.amp, "train_loss": r.history[-1]["train_loss"] if r.history else None,
                    "seconds_per_step": r.history[-1]["epoch_time_s"] / max(1, r.steps) if r.history else None,
                    "wall_s": secs, "peak_gib": gib(mem["peak_bytes"])}
            model = build_model(arch, seed=0, **options).to(device)
            switched = math_attention(model)
            xb, yb = inputs_for(kind, batch, classes, 8, device)
            op = HessianOperator(model, F.cross_entropy, [(xb, yb)], bn_mode="eval")
            with peak_memory(device) as mem:
                hv, secs = timed(lambda: op @ torch.ones(op.shape[0], device=device), device)
            res["hvp"] = {"finite": bool(torch.isfinite(hv).all()), "seconds": secs, "peak_gib": gib(mem["peak_bytes"]),
                          "fused_attention_modules_switched_off": switched, "product_mode": op.report.to_dict().get("product_mode")}
            return res

        if budget.remaining() < 5:
            out[label] = {"status": "stopped: global time budget"}
            continue
        guarded(out, label, one)


# ------------------------------------------------------------------------------- 4. cost vs PyHessian


def power_iteration_deflated(op: SymmetricOperator, k: int, tol: float, seed: int, max_iter: int = 100) -> tuple[Tensor, int]:
    """PyHessian's ``eigenvalues`` (Yao et al. 2020), on our operator: for each of k values,
    power iteration from a Gaussian start orthogonalised against the found vectors, stopped
    when ``|lambda - lambda_prev| / (|lambda_prev| + 1e-6) < tol`` or after ``max_iter``."""
    g = torch.Generator(device=op.device).manual_seed(seed)
    values: list[float] = []
    vectors: list[Tensor] = []
    products = 0
    for _ in range(k):
        v = torch.randn(op.shape[0], generator=g, device=op.device, dtype=op.dtype)
        v = v / v.norm()
        value: float | None = None
        for _ in range(max_iter):
            for u in vectors:
                v = v - (v @ u) * u
            v = v / v.norm()
            hv = op @ v
            products += 1
            estimate = float(hv @ v)
            v = hv / hv.norm()
            if value is not None and abs(value - estimate) / (abs(value) + 1e-6) < tol:
                value = estimate
                break
            value = estimate
        values.append(float(value if value is not None else math.nan))
        vectors.append(v)
    return torch.tensor(sorted(values, reverse=True), dtype=torch.float64), products


def pyhessian_available() -> bool:
    try:
        import pyhessian  # noqa: F401
    except ImportError:
        return False
    return True


def cost_section(device: torch.device, small: bool, budget: Budget, out: dict[str, Any]) -> None:
    arch, options, kind = ("resnet_small", {"num_classes": 10, "in_chans": 3, "img_size": 8, "width": 8}, "image8") if small else \
        ("resnet18", {"num_classes": 10, "in_chans": 3, "img_size": 32}, "image32")
    batches = (16, 64) if small else (128, 1024)
    baseline = "pyhessian" if pyhessian_available() else "power_iteration_deflated"
    out.update({
        "model": f"{arch}, eval-mode BatchNorm, float32, seeded random inputs {kind}",
        "baseline": baseline if baseline == "pyhessian" else
        "PyHessian is not importable here: its algorithm (deflated power iteration, maxIter 100, relative-change tol) on our operator",
        "reference": "Rayleigh-Ritz with float64 products on the span of a tol=1e-6 float32 run's 5 Ritz vectors; "
                     "ref_residual bounds each reference value's error",
    })
    for n in batches:
        def one(n: int = n) -> dict[str, Any]:
            model = build_model(arch, seed=0, **options).to(device).eval()
            x, y = inputs_for(kind, n, 10, 9, device)
            params = [p for p in model.parameters() if p.requires_grad]
            grad_s = median_time(lambda: torch.autograd.grad(F.cross_entropy(model(x), y), params), device, 3)
            op = HessianOperator(model, F.cross_entropy, [(x, y)], bn_mode="eval")
            v = torch.randn(op.shape[0], generator=torch.Generator().manual_seed(0)).to(device)
            hvp_s = median_time(lambda: op @ v, device, 3)
            res: dict[str, Any] = {"params": op.shape[0], "grad_s": grad_s, "hvp_s": hvp_s, "hvp_over_grad": hvp_s / grad_s,
                                   "product_mode": op.report.to_dict().get("product_mode")}
            tight, tight_s = timed(lambda: top_eigenpairs(op, k=5, tol=1e-6, seed=0), device)
            op64 = HessianOperator(copy.deepcopy(model).double(), F.cross_entropy, [(x.double(), y)], bn_mode="eval")
            Q, _ = torch.linalg.qr(tight.vectors.to(device=device, dtype=torch.float64))
            HQ = op64 @ Q
            theta, W = torch.linalg.eigh(0.5 * (Q.T @ HQ + (Q.T @ HQ).T))
            theta, W = theta.flip(0), W.flip(1)
            residual = (HQ @ W - (Q @ W) * theta).norm(dim=0)
            ref = theta.cpu()
            res["reference"] = {"values": ref.tolist(), "ref_residual": residual.cpu().tolist(), "tight_run_s": tight_s,
                                "tight_run_products": tight.num_matvecs}

            def err(values: Tensor, k: int) -> float:
                return float(((values[:k].double().cpu() - ref[:k]).abs() / ref[:k].abs()).max())

            runs: list[dict[str, Any]] = []
            for k in (1, 5):
                for tol in (1e-2, 1e-3, 1e-4):
                    (eig, secs) = timed(lambda k=k, tol=tol: top_eigenpairs(op, k=k, tol=tol, seed=0), device)
                    runs.append({"method": "ours", "k": k, "tol": tol, "seconds": secs, "products": eig.num_matvecs,
                                 "rel_error": err(eig.values, k)})
                for tol in (1e-3, 1e-4, 1e-5):
                    if baseline == "pyhessian":
                        from pyhessian import hessian as pyhessian_hessian  # type: ignore[import-not-found]

                        def ph(k: int = k, tol: float = tol) -> tuple[Tensor, int]:
                            torch.manual_seed(0)
                            h = pyhessian_hessian(model, F.cross_entropy, data=(x, y), cuda=device.type == "cuda")
                            values, _ = h.eigenvalues(maxIter=100, tol=tol, top_n=k)
                            return torch.tensor(sorted(values, reverse=True), dtype=torch.float64), -1

                        (vals, products), secs = timed(ph, device)
                    else:
                        (vals, products), secs = timed(lambda k=k, tol=tol: power_iteration_deflated(op, k, tol, seed=0), device)
                    runs.append({"method": baseline, "k": k, "tol": tol, "seconds": secs, "products": products,
                                 "rel_error": err(vals, k)})
            res["runs"] = runs
            res["equal_accuracy"] = equal_accuracy(runs, baseline)
            return res

        if budget.remaining() < 5:
            out[f"batch_{n}"] = {"status": "stopped: global time budget"}
            continue
        guarded(out, f"batch_{n}", one)


def equal_accuracy(runs: list[dict[str, Any]], baseline: str) -> list[dict[str, Any]]:
    """For each baseline run: the fastest of our runs (same k) at least as accurate, and the time ratio."""
    rows = []
    for b in (r for r in runs if r["method"] == baseline):
        ours = [r for r in runs if r["method"] == "ours" and r["k"] == b["k"] and r["rel_error"] <= b["rel_error"]]
        best = min(ours, key=lambda r: r["seconds"]) if ours else None
        rows.append({"k": b["k"], "baseline_tol": b["tol"], "baseline_error": b["rel_error"], "baseline_s": b["seconds"],
                     "ours_tol": best["tol"] if best else None, "ours_error": best["rel_error"] if best else None,
                     "ours_s": best["seconds"] if best else None,
                     "time_ratio_ours_over_baseline": best["seconds"] / b["seconds"] if best else None})
    return rows


# ------------------------------------------------------------------------------- 5. memory


class DiagonalOperator(SymmetricOperator):
    """diag(d) as an operator: SLQ's own memory (its Lanczos bases) at a given P, for no product cost."""

    def __init__(self, d: Tensor):
        self.d = d
        self.shape = (int(d.shape[0]), int(d.shape[0]))
        self.dtype = d.dtype
        self.device = d.device

    def _matmat(self, V: Tensor) -> Tensor:
        return self.d[:, None] * V


def covariance_api() -> tuple[str, Callable[..., Any], bool]:
    """The library's streamed gradient covariance (per-sample gradients in chunks, the centred
    Gram matrix panel by panel, never N x P; landscape.curvature.covariance)."""
    return ("covariance.gradient_covariance(storage='streamed')",
            functools.partial(covariance_module.gradient_covariance, storage="streamed"), True)


def slq_probe_batch_keyword() -> str | None:
    params = inspect.signature(slq_module.spectral_density).parameters
    return next((k for k in ("probe_batch_size", "probe_batch") if k in params), None)


def memory_section(device: torch.device, small: bool, budget: Budget, out: dict[str, Any]) -> None:
    name, covariance, streamed = covariance_api()
    probe_kw = slq_probe_batch_keyword()
    N = 32 if small else 512
    probes, steps = (4, 20) if small else (8, 100)
    out.update({"api": {"covariance": f"landscape.curvature.{name}", "streamed": streamed, "slq_probe_batch_keyword": probe_kw},
                "noise_examples": N, "slq": {"probes": probes, "steps": steps}})
    if not streamed:
        out["api"]["note"] = "no streamed covariance in this library version: the dense (N x P) one is measured"
    models = paper_models(small)
    if small:  # a CPU smoke run: small stand-ins for the ResNets
        models = {"resnet_small": ("resnet_small", {"num_classes": 10, "in_chans": 3, "img_size": 8, "width": 8}, "image8"),
                  "vit_small_32": models["vit_small_32"]}
    for label, (arch, options, kind) in models.items():
        if label == "lm_transformer" or budget.remaining() < 5:
            continue

        def one(arch: str = arch, options: dict[str, Any] = options, kind: str = kind) -> dict[str, Any]:
            model = build_model(arch, seed=0, **options).to(device).eval()
            math_attention(model)
            P = sum(p.numel() for p in model.parameters())
            res: dict[str, Any] = {"params": P, "dense_NxP_float32_gib": gib(4 * N * P)}
            x, y = inputs_for(kind, N, int(options["num_classes"]), 10, device)

            def cov() -> dict[str, Any]:
                with peak_memory(device) as mem:
                    (sigma, secs) = timed(lambda: covariance(model, F.cross_entropy, [(x, y)]), device)
                    rank = noise_module.gradient_rank(sigma)
                return {"seconds": secs, "peak_gib": gib(mem["peak_bytes"]), "trace_sigma": rank.trace,
                        "energy_rank_90": rank.energy_rank}

            guarded(res, "covariance", cov)
            for batch in (None, 1):
                def slq(batch: int | None = batch) -> dict[str, Any]:
                    d = torch.linspace(-1.0, 10.0, P, device=device)
                    kwargs: dict[str, Any] = {probe_kw: batch} if (probe_kw and batch is not None) else {}
                    if batch is not None and not probe_kw:
                        return {"status": "skipped: spectral_density has no probe batch argument"}
                    with peak_memory(device) as mem:
                        dens, secs = timed(lambda: slq_module.spectral_density(DiagonalOperator(d), num_probes=probes, num_steps=steps,
                                                                               seed=0, **kwargs), device)
                    return {"seconds": secs, "peak_gib": gib(mem["peak_bytes"]),
                            "bases_float32_gib": gib(4 * (batch or probes) * steps * P),
                            "first_moment": float(dens.moments[0]) if dens.moments.numel() else None}

                guarded(res, f"slq_bases_probe_batch_{batch or 'all'}", slq)

            def product() -> dict[str, Any]:
                xb, yb = x[: min(N, 250)], y[: min(N, 250)]
                with peak_memory(device) as mem:
                    op = HessianOperator(model, F.cross_entropy, [(xb, yb)], bn_mode="eval")
                    op @ torch.ones(P, device=device)
                return {"batch": int(xb.shape[0]), "peak_gib": gib(mem["peak_bytes"]),
                        "product_mode": op.report.to_dict().get("product_mode")}

            guarded(res, "one_product_batch_250", product)
            return res

        guarded(out, label, one)


# ------------------------------------------------------------------------------- main


def environment(device: torch.device, determinism: dict[str, Any]) -> dict[str, Any]:
    versions: dict[str, str | None] = {}
    for dist in ("timm", "numpy", "scipy", "tensorboard", "pyhessian"):
        try:
            import importlib.metadata as md

            versions[dist] = md.version(dist)
        except Exception:  # noqa: BLE001  (absent package)
            versions[dist] = None
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "cuda_available": torch.cuda.is_available(),
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else [],
        "versions": versions,
        "determinism": determinism,
        "device": device_record(device),
        "threads": torch.get_num_threads(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory of the JSON result")
    parser.add_argument("--device", default=None, help="cuda (default when available), cuda:1, cpu")
    parser.add_argument("--small", action="store_true", help="reduced sizes (a smoke run, e.g. on a CPU)")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="global time budget in seconds (default 320; 1,500 for --small on a CPU)")
    parser.add_argument("--sections", nargs="*", default=list(SECTIONS), choices=SECTIONS)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    determinism = configure_determinism(warn_only=True)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if device.type == "cuda":
        torch.cuda.set_device(device)
    small_cpu = args.small and device.type == "cpu"
    budget_s = args.budget_s if args.budget_s is not None else (1500.0 if small_cpu else 320.0)
    budget = Budget(budget_s)
    result: dict[str, Any] = {
        "command": "PYTHONPATH=src python3 bench/gpu_check.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "started": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),  # noqa: UP017  (Python 3.10 too)
        "small": args.small,
        "budget_s": budget_s,
        "env": environment(device, determinism),
        "sections": {},
    }
    runners: dict[str, Callable[[dict[str, Any]], None]] = {
        "hvp_agreement": lambda out: hvp_agreement(device, args.small, out),
        "determinism_amp": lambda out: determinism_amp(device, args.small, out),
        "paper_models": lambda out: paper_model_steps(device, args.small, budget, out),
        "cost": lambda out: cost_section(device, args.small, budget, out),
        "memory": lambda out: memory_section(device, args.small, budget, out),
    }
    scale = 4.0 if small_cpu else 1.0  # section caps are set for one H100
    for name in args.sections:
        t0 = time.perf_counter()
        print(f"[gpu_check] {name} ...", flush=True)
        record: dict[str, Any] = {"status": "ok"}
        try:
            with budget.section(CAPS_S[name] * scale):
                runners[name](record)  # filled as it goes: a stopped section keeps what it measured
        except BudgetExceeded as exc:
            record["status"] = f"stopped: {exc}"
        except Exception as exc:  # noqa: BLE001  (recorded; the next section runs)
            record.update(error_record(exc))
        record["wall_s"] = time.perf_counter() - t0
        result["sections"][name] = record
        print(f"[gpu_check] {name}: {record['status']} ({record['wall_s']:.1f} s)", flush=True)
    result["pipeline_packages_imported"] = sorted(m for m in PIPELINE_ONLY if sys.modules.get(m) is not None)
    result["pipeline_packages_absent_in_this_run"] = sorted(m for m in PIPELINE_ONLY if m in sys.modules and sys.modules[m] is None)
    result["wall_time_s"] = time.perf_counter() - started
    result["max_rss_gib"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
    out = Path(args.out) / f"gpu_check_{device.type}{'_small' if args.small else ''}.json"
    write_json(out, result)
    print(f"[gpu_check] wrote {out} ({result['wall_time_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
