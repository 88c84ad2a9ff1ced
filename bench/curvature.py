"""Benchmark of ``landscape.curvature`` against PyHessian 0.1 and curvlinops 3.0.1.

One run, one model and one batch of data per section, every tool on the same inputs:

1. ``eig``: top-1 and top-5 Hessian eigenvalues of timm's ResNet-18 (float32, eval-mode
   BatchNorm, 128 seeded random CIFAR-sized inputs and labels; no data set is read).
   Ours: thick-restart Lanczos (Wu & Simon, SIAM J. Matrix Anal. Appl. 2000) stopped on
   the estimated eigenvalue error (``stop="value"``). PyHessian:
   power iteration with deflation, its defaults ``maxIter=100, tol=1e-3`` (Yao, Gholami,
   Keutzer & Mahoney, "PyHessian: Neural networks through the lens of the Hessian",
   IEEE BigData 2020). curvlinops: ``HessianLinearOperator`` driven by
   ``scipy.sparse.linalg.eigsh`` (ARPACK's implicitly restarted Lanczos, Lehoucq,
   Sorensen & Yang 1998). Reference: Rayleigh-Ritz with float64 Hessian-vector products
   on the span of the float32 solvers' Ritz vectors, with float64 residual norms; cached
   in ``bench/results/curvature_reference.json`` keyed by the problem (configuration and
   a content hash of parameters and data), so later runs skip it.
2. ``hvp``: time of one Hessian-vector product (Pearlmutter, Neural Computation 1994)
   relative to one gradient, for each of our ``hvp_mode`` and the peers' products.
3. ``trace``: Hutchinson (1990), Hutch++ (Meyer, Musco, Musco & Woodruff, SOSA 2021) and
   XTrace (Epperly, Tropp & Webber, SIAM J. Matrix Anal. Appl. 2024) at equal product
   budgets on a float64 MLP trained on scikit-learn's real 8x8 digits, whose exact trace
   is computed with P unit-vector products; plus a diagnostic on an untrained MLP with
   random data (flat spectrum, where no low-rank estimator can gain).
4. ``slq``: spectral density by stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017;
   Ghorbani, Krishnan & Xiao, ICML 2019); records whether each tool runs on this torch.

Times are wall-clock (``time.perf_counter``) and process CPU (``time.process_time``);
the machine may be shared, so CPU time is reported beside wall time and the load average
is recorded per section. Writes JSON and a Markdown table atomically (``landscape.io``).

Usage::

    .venv/bin/python bench/curvature.py                 # full run (~15 min on 2 idle cores) -> bench/results/curvature.{json,md}
    .venv/bin/python bench/curvature.py --quick         # smoke run (~1 min) -> bench/.work/curvature_quick.{json,md}
    .venv/bin/python bench/curvature.py --sections eig hvp --out /tmp/x.json
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import datetime
import importlib.metadata
import math
import os
import platform
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # run from a checkout without install

from landscape.curvature import HessianOperator, SymmetricOperator, spectral_density, top_eigenpairs  # noqa: E402
from landscape.curvature.operators import DEFAULT_GRAPH_BUDGET_BYTES  # noqa: E402
from landscape.curvature.trace import trace  # noqa: E402
from landscape.data.base import content_hash  # noqa: E402
from landscape.io import read_json, write_json, write_text  # noqa: E402
from landscape.models import build_model  # noqa: E402
from landscape.reproducibility import cpu_info  # noqa: E402

SECTIONS = ("eig", "hvp", "trace", "slq")
REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------------------
# Configuration
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """What the benchmark runs.

    Attributes:
        name: "default" or "quick".
        model: registered model name for the eig and hvp sections.
        model_kwargs: extra ``build_model`` options for it.
        num_examples: examples in the single batch (CIFAR-sized random tensors).
        img_size: input side length in pixels.
        ks: numbers of top eigenvalues to compute.
        tol: eigsh's ``tol`` (ARPACK: relative residual).
        eig_tol: our ``top_eigenpairs`` tolerance (its meaning set by ``stop`` in
            ``eig_options``).
        eig_options: further ``top_eigenpairs`` keyword arguments.
        eig_start: "random" (``top_eigenpairs``' seeded Gaussian start) or "gradient"
            (``v0=op.gradient()``, free with the kept gradient graph).
        ref_dtype: dtype of the reference products.
        hvp_repeats: timed rounds (after one warm-up round) for the HVP/gradient ratios.
        mlp_kwargs: ``build_model("mlp", ...)`` options for the trace and slq sections.
        mlp_examples: examples in the MLP's Hessian.
        mlp_data: "digits" (trained on real digits) or "random" (see :func:`build_mlp`).
        mlp_train_epochs: SGD epochs on the digits before the Hessian is taken.
        mlp_lr: SGD learning rate.
        trace_diag_random: also run the trace comparison on the random-data MLP at
            initialisation (flat spectrum; diagnostic, no target).
        trace_diag_seeds: seeds per estimator for that diagnostic.
        trace_budgets: product budgets (divisible by 6 for curvlinops' Hutch++/XTrace).
        trace_target_budget: budget the trace target is judged at.
        trace_seeds: seeds per estimator and budget.
        slq_steps: Lanczos steps per probe (PyHessian's ``iter``).
        slq_probes: probes (PyHessian's ``n_v``).
        check_pyhessian_top1: also run PyHessian's ``top_n=1`` on its own to confirm that
            its top-1 result equals the first phase of ``top_n=5`` (used for top-1).
        seed: seed of the data, model and solvers.
    """

    name: str
    model: str = "resnet18"
    model_kwargs: tuple[tuple[str, Any], ...] = ()
    num_examples: int = 128
    img_size: int = 32
    ks: tuple[int, ...] = (1, 5)
    tol: float = 1e-3
    eig_tol: float = 1e-4
    # stop="value": tol bounds the estimated eigenvalue error (the target's quantity), not the
    # residual; store_products: the verification residuals come from the kept products (no
    # k extra products); check_multiplicity=False: the deflated pass that guards against
    # exactly repeated eigenvalues (default on) is left out, as PyHessian and eigsh have
    # none; on this problem it costs 22 more products for k=5 (development run, 2026-11-23).
    eig_options: tuple[tuple[str, Any], ...] = (("stop", "value"), ("store_products", True), ("check_multiplicity", False))
    eig_start: str = "gradient"
    ref_dtype: str = "float64"
    hvp_repeats: int = 3
    mlp_kwargs: tuple[tuple[str, Any], ...] = (("in_chans", 1), ("img_size", 8), ("width", 32), ("depth", 2))
    mlp_examples: int = 256
    mlp_data: str = "digits"
    mlp_train_epochs: int = 5
    mlp_lr: float = 0.1
    trace_diag_random: bool = True
    trace_diag_seeds: int = 30
    trace_budgets: tuple[int, ...] = (30, 90)
    trace_target_budget: int = 90
    trace_seeds: int = 60
    slq_steps: int = 100
    slq_probes: int = 1
    check_pyhessian_top1: bool = False
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["model_kwargs"] = dict(self.model_kwargs)
        d["mlp_kwargs"] = dict(self.mlp_kwargs)
        d["eig_options"] = dict(self.eig_options)
        return d


DEFAULT = BenchConfig(name="default")
QUICK = BenchConfig(
    name="quick",
    model="resnet_small",
    model_kwargs=(("width", 8), ("norm", "bn")),
    num_examples=16,
    tol=1e-3,
    hvp_repeats=2,
    mlp_kwargs=(("in_chans", 1), ("img_size", 8), ("width", 8), ("depth", 2)),
    mlp_train_epochs=2,
    trace_diag_seeds=5,
    mlp_examples=64,
    trace_budgets=(12,),
    trace_target_budget=12,
    trace_seeds=10,
    slq_steps=20,
    check_pyhessian_top1=True,
)


# --------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------

T_START = time.perf_counter()


def log(msg: str) -> None:
    """Progress line on stderr with the elapsed wall time."""
    print(f"[{time.perf_counter() - T_START:8.1f}s] {msg}", file=sys.stderr, flush=True)


class Clock:
    """Wall and process-CPU stopwatch."""

    def __init__(self) -> None:
        self.wall0 = time.perf_counter()
        self.cpu0 = time.process_time()

    def read(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


class Counted(SymmetricOperator):
    """Wrap a symmetric operator and count the vectors it multiplies."""

    def __init__(self, op: SymmetricOperator):
        self.op = op
        self.shape, self.dtype, self.device = op.shape, op.dtype, op.device
        self.count = 0

    def _matmat(self, V: Tensor) -> Tensor:
        self.count += V.shape[1]
        return self.op._matmat(V)

    def start_hint(self) -> Tensor | None:
        return self.op.start_hint()


def count_curvlinops(linop: Any) -> list[int]:
    """Count the columns a curvlinops operator multiplies (patches the instance's ``_matmat``)."""
    counter = [0]
    inner = linop._matmat

    def matmat(M: list[Tensor]) -> list[Tensor]:
        counter[0] += M[0].shape[-1]
        return inner(M)

    linop._matmat = matmat
    return counter


@contextlib.contextmanager
def seeded_global_rng(seed: int) -> Iterator[None]:
    """Seed torch's global RNG for a peer library that draws from it; restore it after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def pyhessian_module() -> Any:
    """The ``pyhessian.hessian`` module (the package re-exports a class of the same name)."""
    import importlib

    return importlib.import_module("pyhessian.hessian")


@contextlib.contextmanager
def pyhessian_instrumented() -> Iterator[dict[str, list]]:
    """Count PyHessian's Hessian-vector products and mark its power-iteration phases.

    ``pyhessian.hessian`` calls ``normalization`` once when a phase (one eigenvalue)
    starts and once after every product, so a ``normalization`` call that follows another
    one (or comes first) starts a phase. Events are (kind, wall, cpu) tuples.
    """
    ph = pyhessian_module()
    events: list[tuple[str, float, float]] = []
    orig_hvp, orig_norm = ph.hessian_vector_product, ph.normalization

    def hvp(gradsH, params, v):
        out = orig_hvp(gradsH, params, v)
        events.append(("hvp", time.perf_counter(), time.process_time()))
        return out

    def norm(v):
        kind = "start" if not events or events[-1][0] != "hvp" else "norm"
        events.append((kind, time.perf_counter(), time.process_time()))
        return orig_norm(v)

    ph.hessian_vector_product, ph.normalization = hvp, norm
    try:
        yield {"events": events}
    finally:
        ph.hessian_vector_product, ph.normalization = orig_hvp, orig_norm


@contextlib.contextmanager
def pyhessian_dataloader_counted() -> Iterator[list[int]]:
    """Count products of PyHessian's ``density``/``trace`` (single-batch path)."""
    ph = pyhessian_module()
    counter = [0]
    orig = ph.hessian_vector_product

    def hvp(gradsH, params, v):
        counter[0] += 1
        return orig(gradsH, params, v)

    ph.hessian_vector_product = hvp
    try:
        yield counter
    finally:
        ph.hessian_vector_product = orig


def pyhessian_hessian(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor) -> Any:
    """PyHessian's ``hessian`` object on one batch (CPU). Clears ``.grad`` first: its
    constructor accumulates a graph-holding gradient into the parameters' ``.grad``."""
    from pyhessian import hessian

    model.zero_grad(set_to_none=True)
    return hessian(model, loss_fn, data=(x, y), cuda=False)


def release_grads(model: nn.Module) -> None:
    """Drop the graph-holding ``.grad`` tensors PyHessian leaves on the model."""
    model.zero_grad(set_to_none=True)


def loadavg() -> list[float]:
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return []


def cpu_model() -> str:
    return cpu_info("model name") or platform.processor() or "unknown"


def version(dist: str) -> str:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def machine_info(threads: int) -> dict[str, Any]:
    """CPU, core and thread counts, library versions and the date."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu_model": cpu_model(),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "torch_threads": threads,
        "device": "cpu",
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch": torch.__version__,
        "pyhessian": version("pyhessian"),
        "curvlinops": version("curvlinops-for-pytorch"),
        "scipy": version("scipy"),
        "numpy": np.__version__,
        "timm": version("timm"),
        "date_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "loadavg_start": loadavg(),
    }


def random_batch(n: int, shape: Sequence[int], num_classes: int, seed: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
    """Seeded standard-normal inputs (n, *shape) and uniform labels (no data set)."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=g, dtype=torch.float32).to(dtype)
    y = torch.randint(0, num_classes, (n,), generator=g)
    return x, y


def rel_errors(values: Sequence[float], ref: Sequence[float]) -> list[float]:
    """|v_i - r_i| / |r_i| with both sorted in descending order."""
    v = sorted(values, reverse=True)
    r = sorted(ref, reverse=True)[: len(v)]
    return [abs(a - b) / abs(b) for a, b in zip(v, r)]


# --------------------------------------------------------------------------------------
# 1. Top eigenvalues
# --------------------------------------------------------------------------------------


def ours_eig_call(cfg: "BenchConfig", k: int) -> str:
    """The library call the eig section times, as text (also the JSON's ``call``)."""
    opts = "".join(f", {key}={val!r}" for key, val in cfg.eig_options)
    v0 = ", v0=op.gradient()" if cfg.eig_start == "gradient" else ""
    return (f"top_eigenpairs(op := HessianOperator(model, loss_fn, data, bn_mode='eval'), k={k}, which='LA', "
            f"tol={cfg.eig_tol}, seed={cfg.seed}{v0}{opts})")


def run_ours_eig(cfg: "BenchConfig", model: nn.Module, loss_fn: nn.Module, data: list, k: int) -> tuple[dict, Tensor]:
    """Our operator (``hvp_mode="auto"``) and ``top_eigenpairs``; set-up included in the time.

    With ``cfg.eig_start == "gradient"`` the Lanczos start vector is the loss gradient,
    which the operator computed when it built its kept gradient graph (no extra pass).
    """
    clock = Clock()
    op = HessianOperator(model, loss_fn, data, bn_mode="eval")
    setup_wall, setup_cpu = clock.read()
    counted = Counted(op)
    v0 = op.gradient() if cfg.eig_start == "gradient" else None
    res = top_eigenpairs(counted, k=k, which="LA", tol=cfg.eig_tol, seed=cfg.seed, v0=v0, **dict(cfg.eig_options))
    wall, cpu = clock.read()
    out = {
        "method": "ours",
        "k": k,
        "call": ours_eig_call(cfg, k),
        "product_mode": op.report.product_mode,
        "values": res.values.tolist(),
        "residuals": res.residuals.tolist(),
        "true_residuals": res.true_residuals.tolist(),
        "value_errors": None if res.value_errors is None else res.value_errors.tolist(),
        "stop": res.stop,
        "converged": res.converged,
        "num_restarts": res.num_restarts,
        "num_hvps": counted.count,
        "num_matvecs_reported": res.num_matvecs,
        "setup_wall_s": setup_wall,
        "setup_cpu_s": setup_cpu,
        "total_wall_s": wall,
        "total_cpu_s": cpu,
    }
    del op, counted
    return out, res.vectors.detach()


def run_pyhessian_eig(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, top_n: int, seed: int) -> list[dict]:
    """PyHessian ``eigenvalues(top_n)`` with its defaults; one entry per prefix 1..top_n.

    Power iteration finds the eigenvalues one after another and the j-th phase does not
    depend on ``top_n``, so the first j phases of one ``top_n`` run are exactly a
    ``top_n=j`` run (same seed); each prefix is reported with its products and time.
    """
    clock = Clock()
    with pyhessian_instrumented() as rec:
        H = pyhessian_hessian(model, loss_fn, x, y)
        setup_wall, setup_cpu = clock.read()
        t_solve = (time.perf_counter(), time.process_time())
        try:
            with seeded_global_rng(seed):
                values, _ = H.eigenvalues(top_n=top_n)  # maxIter=100, tol=1e-3
        finally:
            del H
            release_grads(model)
    wall, cpu = clock.read()
    events = rec["events"]
    # Phase boundaries: a phase ends at the last event before the next "start".
    starts = [i for i, e in enumerate(events) if e[0] == "start"]
    ends = [s - 1 for s in starts[1:]] + [len(events) - 1]
    out = []
    for j in range(1, top_n + 1):
        last = ends[j - 1]
        hvps = sum(1 for e in events[: last + 1] if e[0] == "hvp")
        phase_wall = events[last][1] - t_solve[0] if j < top_n else wall - setup_wall
        phase_cpu = events[last][2] - t_solve[1] if j < top_n else cpu - setup_cpu
        per_phase = [sum(1 for e in events[starts[i] : ends[i] + 1] if e[0] == "hvp") for i in range(j)]
        out.append(
            {
                "method": "pyhessian",
                "k": j,
                "call": f"hessian(model, loss_fn, data=(x, y), cuda=False).eigenvalues(top_n={top_n}) [defaults maxIter=100, tol=1e-3], "
                + ("all phases" if j == top_n else f"first {j} phase(s), identical to top_n={j}"),
                "values": list(values[:j]),
                "num_hvps": hvps,
                "hvps_per_eigenvalue": per_phase,
                "hit_maxIter": [n >= 100 for n in per_phase],
                "setup_wall_s": setup_wall,
                "setup_cpu_s": setup_cpu,
                "total_wall_s": setup_wall + phase_wall,
                "total_cpu_s": setup_cpu + phase_cpu,
            }
        )
    return out


def run_curvlinops_eig(model: nn.Module, loss_fn: nn.Module, data: list, k: int, tol: float, seed: int) -> tuple[dict, Tensor]:
    """curvlinops ``HessianLinearOperator`` + ``scipy.sparse.linalg.eigsh(which="LA", tol)``."""
    from curvlinops import HessianLinearOperator
    from scipy.sparse.linalg import eigsh

    clock = Clock()
    params = [p for p in model.parameters() if p.requires_grad]
    H = HessianLinearOperator(model, loss_fn, params, data, check_deterministic=False)
    counter = count_curvlinops(H)
    A = H.to_scipy()
    setup_wall, setup_cpu = clock.read()
    v0 = np.random.default_rng(seed).standard_normal(A.shape[0])
    vals, vecs = eigsh(A, k=k, which="LA", tol=tol, v0=v0)
    wall, cpu = clock.read()
    order = np.argsort(vals)[::-1]
    out = {
        "method": "curvlinops+eigsh",
        "k": k,
        "call": f"eigsh(HessianLinearOperator(model, loss_fn, params, data, check_deterministic=False).to_scipy(), k={k}, which='LA', tol={tol}, v0=N(0,I) seed {seed})",
        "values": [float(vals[i]) for i in order],
        "num_hvps": counter[0],
        "setup_wall_s": setup_wall,
        "setup_cpu_s": setup_cpu,
        "total_wall_s": wall,
        "total_cpu_s": cpu,
    }
    return out, torch.from_numpy(np.ascontiguousarray(vecs[:, order]))


def reference_eigs(model: nn.Module, loss_fn: nn.Module, x: Tensor, y: Tensor, bases: list[Tensor], k: int, dtype: torch.dtype) -> dict:
    """Rayleigh-Ritz with ``dtype`` Hessian products on the span of the given Ritz vectors.

    Each reference value ``theta_i`` has an eigenvalue of the exact (``dtype``) Hessian
    within ``r_i = ||H u_i - theta_i u_i||`` (u_i unit); its error is estimated by
    ``r_i^2 / delta_i`` (Kato-Temple form) with ``delta_i`` the distance to the nearest
    other reference value among the top k (an estimate of the spectral gap).
    """
    clock = Clock()
    S = torch.cat([b.to(torch.float64) for b in bases], dim=1)
    Q, R = torch.linalg.qr(S)
    keep = R.diagonal().abs() > 1e-12 * R.diagonal().abs().max()  # drop exact duplicates only
    Q = Q[:, keep]
    m64 = copy.deepcopy(model).to(dtype)
    op = HessianOperator(m64, loss_fn, [(x.to(dtype), y)], bn_mode="eval")
    AQ = op.matmat(Q.to(dtype)).to(torch.float64)
    G = Q.T @ AQ
    theta, U = torch.linalg.eigh(0.5 * (G + G.T))
    order = torch.argsort(theta, descending=True)
    theta, U = theta[order], U[:, order]
    resid = torch.linalg.vector_norm(AQ @ U - (Q @ U) * theta, dim=0)
    top = theta[:k]
    gaps = []
    for i in range(k):
        others = torch.cat([top[:i], top[i + 1 :]])
        gaps.append(float((others - top[i]).abs().min()) if others.numel() else math.nan)
    wall, cpu = clock.read()
    del op, m64
    return {
        "method": f"Rayleigh-Ritz with {dtype} Hessian-vector products (our HessianOperator on a {dtype} copy of the model) "
        "on the span of the float32 Ritz vectors of ours (k=max) and eigsh (k=max)",
        "subspace_dim": int(Q.shape[1]),
        "values": top.tolist(),
        "residual_norms": resid[:k].tolist(),
        "relative_residuals": (resid[:k] / top.abs()).tolist(),
        "gap_estimates": gaps,
        "estimated_relative_error": [float(r) ** 2 / g / abs(float(t)) for r, g, t in zip(resid[:k], gaps, top)],
        "num_hvps": int(Q.shape[1]),
        "total_wall_s": wall,
        "total_cpu_s": cpu,
    }


REF_CACHE = REPO / "bench/results/curvature_reference.json"


def problem_key(cfg: "BenchConfig", model: nn.Module, x: Tensor, y: Tensor) -> dict[str, Any]:
    """What the float64 reference depends on: the configuration and a hash of the bytes of
    the parameters, buffers and data (so a different torch that initialises differently
    misses the cache instead of reusing a wrong reference)."""
    tensors = [t.detach() for t in model.parameters()] + [t.detach() for t in model.buffers()] + [x, y]
    return {
        "model": cfg.model,
        "model_kwargs": dict(cfg.model_kwargs),
        "num_examples": cfg.num_examples,
        "img_size": cfg.img_size,
        "seed": cfg.seed,
        "k": max(cfg.ks),
        "ref_dtype": cfg.ref_dtype,
        "content_sha256": content_hash(*tensors),
    }


def cached_reference(key: dict[str, Any]) -> dict | None:
    if not REF_CACHE.exists():
        return None
    for entry in read_json(REF_CACHE).get("entries", []):
        if entry["key"] == key:
            return entry["reference"]
    return None


def store_reference(key: dict[str, Any], ref: dict) -> None:
    entries = read_json(REF_CACHE).get("entries", []) if REF_CACHE.exists() else []
    entries = [e for e in entries if e["key"] != key] + [{"key": key, "reference": ref}]
    write_json(REF_CACHE, {"about": "float64 reference eigenvalues of bench/curvature.py's eig section, keyed by problem "
                           "(configuration and content hash of parameters, buffers and data)", "entries": entries})


def eig_section(cfg: BenchConfig, model: nn.Module, x: Tensor, y: Tensor) -> dict:
    """Top-k eigenvalues: ours, PyHessian, curvlinops + eigsh, against a float64 reference.

    Order: ours k=1, ours k=max, PyHessian top_n=max (its first phase is its top-1 run),
    ours k=1 again (the k=1 wall time is the median of both, bracketing PyHessian's run),
    then curvlinops. The float64 reference is read from ``REF_CACHE`` when the problem's
    key matches, else computed (Rayleigh-Ritz on the span of our and eigsh's Ritz vectors)
    and stored there.
    """
    loss_fn = nn.CrossEntropyLoss()
    data = [(x, y)]
    kmax = max(cfg.ks)
    rows: list[dict] = []
    ours_vecs: dict[int, Tensor] = {}
    eigsh_vecs: dict[int, Tensor] = {}
    repeats: dict[int, list[dict]] = {k: [] for k in cfg.ks}

    def ours(k: int) -> None:
        log(f"eig: ours k={k}")
        row, ours_vecs[k] = run_ours_eig(cfg, model, loss_fn, data, k)
        repeats[k].append(row)
        log(f"eig: ours k={k}: {row['num_hvps']} HVPs, {row['total_wall_s']:.1f}s, values {row['values']}")

    for k in cfg.ks:
        ours(k)
    log(f"eig: pyhessian top_n={kmax}")
    ph_rows = run_pyhessian_eig(model, loss_fn, x, y, kmax, cfg.seed)
    rows += [r for r in ph_rows if r["k"] in cfg.ks]
    log(f"eig: pyhessian: {ph_rows[-1]['hvps_per_eigenvalue']} HVPs per eigenvalue, {ph_rows[-1]['total_wall_s']:.1f}s")
    for k in cfg.ks:
        if k != kmax:
            ours(k)
    for k in cfg.ks:
        runs = repeats[k]
        row = dict(runs[0])
        for field in ("setup_wall_s", "setup_cpu_s", "total_wall_s", "total_cpu_s"):
            row[field] = statistics.median(r[field] for r in runs)
            row[f"all_{field}"] = [r[field] for r in runs]
        row["identical_repeats"] = all(r["values"] == runs[0]["values"] and r["num_hvps"] == runs[0]["num_hvps"] for r in runs)
        rows.append(row)
    consistency = None
    if cfg.check_pyhessian_top1:
        alone = run_pyhessian_eig(model, loss_fn, x, y, 1, cfg.seed)[0]
        consistency = {
            "top_n=1 alone": {"values": alone["values"], "num_hvps": alone["num_hvps"]},
            "first phase of top_n=max": {"values": ph_rows[0]["values"], "num_hvps": ph_rows[0]["num_hvps"]},
            "identical": alone["values"] == ph_rows[0]["values"] and alone["num_hvps"] == ph_rows[0]["num_hvps"],
        }
    for k in cfg.ks:
        log(f"eig: curvlinops + eigsh k={k}")
        row, eigsh_vecs[k] = run_curvlinops_eig(model, loss_fn, data, k, cfg.tol, cfg.seed)
        rows.append(row)
        log(f"eig: curvlinops k={k}: {row['num_hvps']} HVPs, {row['total_wall_s']:.1f}s")
    key = problem_key(cfg, model, x, y)
    ref = cached_reference(key)
    if ref is not None:
        ref = {**ref, "cached": True, "cache_file": str(REF_CACHE.relative_to(REPO))}
        log(f"eig: float64 reference from {REF_CACHE.name} (computed {ref.get('computed_utc', '?')})")
    else:
        log("eig: float64 reference")
        ref = reference_eigs(model, loss_fn, x, y, [ours_vecs[kmax], eigsh_vecs[kmax]], kmax, getattr(torch, cfg.ref_dtype))
        ref["computed_utc"] = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        store_reference(key, ref)
        ref = {**ref, "cached": False, "cache_file": str(REF_CACHE.relative_to(REPO))}
    log(f"eig: reference {ref['values']} rel. residuals {ref['relative_residuals']}")
    for row in rows:
        row["rel_errors"] = rel_errors(row["values"], ref["values"])
        row["max_rel_error"] = max(row["rel_errors"])
    targets = []
    for k in cfg.ks:
        ours_row = next(r for r in rows if r["method"] == "ours" and r["k"] == k)
        ph = next(r for r in rows if r["method"] == "pyhessian" and r["k"] == k)
        ratio_wall = ours_row["total_wall_s"] / ph["total_wall_s"]
        ratio_cpu = ours_row["total_cpu_s"] / ph["total_cpu_s"]
        targets.append(
            {
                "k": k,
                "time_ratio_ours_over_pyhessian_wall": ratio_wall,
                "time_ratio_ours_over_pyhessian_cpu": ratio_cpu,
                "hvp_count_ratio": ours_row["num_hvps"] / ph["num_hvps"],
                "time_target": 0.35,
                "time_pass": ratio_wall <= 0.35,
                "ours_max_rel_error": ours_row["max_rel_error"],
                "pyhessian_max_rel_error": ph["max_rel_error"],
                "error_target": 1e-4,
                "error_pass": ours_row["max_rel_error"] <= 1e-4,
                "pass": ratio_wall <= 0.35 and ours_row["max_rel_error"] <= 1e-4,
            }
        )
    return {
        "setup": {
            "model": cfg.model,
            "model_kwargs": dict(cfg.model_kwargs),
            "num_params": sum(p.numel() for p in model.parameters()),
            "num_examples": cfg.num_examples,
            "input_shape": [3, cfg.img_size, cfg.img_size],
            "data": f"random N(0,1) inputs and uniform labels from torch.Generator seed {cfg.seed} (no data set)",
            "loss": "CrossEntropyLoss (mean)",
            "bn_mode": "eval",
            "dtype": "float32",
            "ours_call": ours_eig_call(cfg, kmax),
            "eigsh_tol": cfg.tol,
            "order": "ours k=1, ours k=max, PyHessian top_n=max, ours k=1 again, curvlinops k=1, k=max",
        },
        "rows": rows,
        "reference": ref,
        "problem_key": key,
        "pyhessian_top1_consistency": consistency,
        "targets": targets,
    }


# --------------------------------------------------------------------------------------
# 2. HVP cost relative to a gradient
# --------------------------------------------------------------------------------------


class EvalBNAffine(nn.Module):
    """Eval-mode BatchNorm written as a per-channel affine map (same parameters and buffers,
    same function): ``x * w / sqrt(var + eps) + (b - mean * w / sqrt(var + eps))``."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.eps = bn.eps

    def forward(self, x: Tensor) -> Tensor:
        scale = self.weight * torch.rsqrt(self.running_var + self.eps)
        shift = self.bias - self.running_mean * scale
        view = (1, -1) + (1,) * (x.ndim - 2)
        return x * scale.view(view) + shift.view(view)


def bn_as_affine(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` with every BatchNorm replaced by :class:`EvalBNAffine`."""
    model = copy.deepcopy(model)

    def swap(module: nn.Module) -> None:
        for name, child in module.named_children():
            if isinstance(child, nn.modules.batchnorm._BatchNorm):
                setattr(module, name, EvalBNAffine(child))
            else:
                swap(child)

    swap(model)
    return model.eval()


def hvp_section(cfg: BenchConfig, model: nn.Module, x: Tensor, y: Tensor) -> dict:
    """Median over interleaved rounds of one gradient and one product of each kind."""
    from curvlinops import HessianLinearOperator
    from pyhessian.utils import hessian_vector_product

    loss_fn = nn.CrossEntropyLoss()
    data = [(x, y)]
    params = [p for p in model.parameters() if p.requires_grad]
    P = sum(p.numel() for p in params)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    v = torch.randn(P, generator=g)
    v_list = [c.reshape(p.shape) for c, p in zip(v.split([p.numel() for p in params]), params)]

    builds: dict[str, dict[str, float]] = {}

    def build(name: str, fn: Callable[[], Any]) -> Any:
        clock = Clock()
        obj = fn()
        wall, cpu = clock.read()
        builds[name] = {"wall_s": wall, "cpu_s": cpu}
        return obj

    ops = {mode: build(f"ours_{mode}", lambda m=mode: HessianOperator(model, loss_fn, data, bn_mode="eval", hvp_mode=m)) for mode in ("rev_rev_kept", "rev_rev", "fwd_rev")}
    # "auto" keeps the graph when its saved tensors fit the default budget (operators.py).
    auto_mode = "rev_rev_kept" if ops["rev_rev_kept"].report.graph_bytes <= DEFAULT_GRAPH_BUDGET_BYTES else "rev_rev"
    ph = build("pyhessian", lambda: pyhessian_hessian(model, loss_fn, x, y))
    cl = build("curvlinops", lambda: HessianLinearOperator(model, loss_fn, params, data, check_deterministic=False))
    affine = bn_as_affine(model)
    affine_params = [p for p in affine.parameters() if p.requires_grad]
    op_affine = build("ours_rev_rev_kept_bn_affine", lambda: HessianOperator(affine, loss_fn, data, bn_mode="eval", hvp_mode="rev_rev_kept"))

    def gradient(net: nn.Module, ps: list[Tensor]) -> Callable[[], Any]:
        def fn() -> Any:
            with torch.enable_grad():
                return torch.autograd.grad(loss_fn(net(x), y), ps)

        return fn

    was_training = model.training
    model.eval()
    tasks: dict[str, Callable[[], Any]] = {
        "gradient": gradient(model, params),
        "ours_rev_rev_kept": lambda: ops["rev_rev_kept"] @ v,
        "ours_rev_rev": lambda: ops["rev_rev"] @ v,
        "ours_fwd_rev": lambda: ops["fwd_rev"] @ v,
        "pyhessian": lambda: hessian_vector_product(ph.gradsH, ph.params, v_list),
        "curvlinops": lambda: cl @ v,
        "diag_gradient_bn_affine": gradient(affine, affine_params),
        "diag_ours_rev_rev_kept_bn_affine": lambda: op_affine @ v,
    }
    times: dict[str, list[tuple[float, float]]] = {name: [] for name in tasks}
    results: dict[str, Tensor] = {}
    try:
        for rnd in range(cfg.hvp_repeats + 1):  # round 0 is a warm-up
            for name, fn in tasks.items():
                clock = Clock()
                out = fn()
                wall, cpu = clock.read()
                if rnd > 0:
                    times[name].append((wall, cpu))
                elif name != "gradient" and not name.startswith("diag_gradient"):
                    results[name] = (out if isinstance(out, Tensor) else torch.cat([t.reshape(-1) for t in out])).detach()
            log(f"hvp: round {rnd} done")
    finally:
        del ph
        release_grads(model)
        model.train(was_training)
    med = {name: (statistics.median(t[0] for t in ts), statistics.median(t[1] for t in ts)) for name, ts in times.items()}
    gw, gc = med["gradient"]
    ref = results["ours_rev_rev_kept"]
    rows = []
    for name, (w, c) in med.items():
        row = {
            "product": name,
            "median_wall_s": w,
            "median_cpu_s": c,
            "ratio_to_gradient_wall": w / gw,
            "ratio_to_gradient_cpu": c / gc,
            "all_wall_s": [t[0] for t in times[name]],
            "all_cpu_s": [t[1] for t in times[name]],
        }
        if name == "diag_ours_rev_rev_kept_bn_affine":
            aw, ac = med["diag_gradient_bn_affine"]
            row["ratio_to_bn_affine_gradient_wall"], row["ratio_to_bn_affine_gradient_cpu"] = w / aw, c / ac
        if name in results:
            row["rel_diff_to_ours_rev_rev_kept"] = float(torch.linalg.vector_norm(results[name] - ref) / torch.linalg.vector_norm(ref))
        rows.append(row)
    by = {r["product"]: r for r in rows}
    auto = by[f"ours_{auto_mode}"]
    return {
        "setup": {"model": cfg.model, "num_examples": cfg.num_examples, "dtype": "float32", "bn_mode": "eval", "repeats": cfg.hvp_repeats,
                  "clock": "median over interleaved rounds after one warm-up round; one vector per product",
                  "gradient": "torch.autograd.grad of the mean loss (forward + backward), model in eval mode"},
        "auto_resolves_to": auto_mode,
        "graph_bytes_rev_rev_kept": ops["rev_rev_kept"].report.graph_bytes,
        "builds": builds,
        "rows": rows,
        "target": {
            "ours_auto_ratio_wall": auto["ratio_to_gradient_wall"],
            "ours_auto_ratio_cpu": auto["ratio_to_gradient_cpu"],
            "ours_best_ratio_wall": min(by[f"ours_{m}"]["ratio_to_gradient_wall"] for m in ("rev_rev_kept", "rev_rev", "fwd_rev")),
            "target": 2.2,
            "pass": auto["ratio_to_gradient_wall"] <= 2.2,
        },
    }


# --------------------------------------------------------------------------------------
# 3. Trace at equal budget; 4. SLQ density
# --------------------------------------------------------------------------------------


def train_sgd(model: nn.Module, X: Tensor, Y: Tensor, epochs: int, lr: float, g: torch.Generator) -> float:
    """Seeded SGD (momentum 0.9, batch 64, cross-entropy) on all of (X, Y); leaves the model in
    eval mode without gradients and returns its train loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(len(Y), generator=g)
        for i in range(0, len(Y), 64):
            b = perm[i : i + 64]
            opt.zero_grad(set_to_none=True)
            nn.functional.cross_entropy(model(X[b]), Y[b]).backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    model.eval()
    with torch.no_grad():
        return float(nn.functional.cross_entropy(model(X), Y))


def build_mlp(cfg: BenchConfig, data: str) -> tuple[nn.Module, Tensor, Tensor, str]:
    """The float64 MLP of the trace and slq sections and the batch its Hessian is taken on.

    ``data="digits"``: scikit-learn's 1,797 real 8x8 digits (bundled, no download); the MLP
    is trained on all of them for ``cfg.mlp_train_epochs`` epochs of SGD (seeded) and the
    Hessian is that of the mean loss on ``cfg.mlp_examples`` of them: the spectrum of a
    trained network, a few outliers over a bulk near zero. ``data="random"``: N(0,1)
    inputs and uniform labels at initialisation, a flat spectrum (the hard case for
    low-rank trace estimators, kept as a diagnostic).
    """
    kw = dict(cfg.mlp_kwargs)
    model = build_model("mlp", num_classes=10, seed=cfg.seed, **kw).to(torch.float64)
    if data == "random":
        x, y = random_batch(cfg.mlp_examples, (kw["in_chans"], kw["img_size"], kw["img_size"]), 10, cfg.seed + 2, torch.float64)
        return model.eval(), x, y, f"random N(0,1) inputs and uniform labels (seed {cfg.seed + 2}), MLP at initialisation"
    if data != "digits":
        raise ValueError(f"unknown MLP data {data!r}; choose 'digits' or 'random'")
    from landscape.data import load_dataset

    ds = load_dataset("digits")
    X, Y = ds.x.to(torch.float64), ds.y
    g = torch.Generator().manual_seed(cfg.seed + 2)
    train_loss = train_sgd(model, X, Y, cfg.mlp_train_epochs, cfg.mlp_lr, g)
    idx = torch.randperm(len(Y), generator=g)[: cfg.mlp_examples]
    return model, X[idx], Y[idx], (
        f"scikit-learn digits (1,797 real 8x8 images); MLP trained {cfg.mlp_train_epochs} epochs of SGD (lr {cfg.mlp_lr}, "
        f"momentum 0.9, batch 64, seed {cfg.seed + 2}; train loss {train_loss:.3f}); Hessian of the mean loss on "
        f"{cfg.mlp_examples} of the training images"
    )


def summarize(errors: list[float]) -> dict[str, float]:
    a = np.asarray(errors)
    return {"median": float(np.median(a)), "mean": float(a.mean()), "p90": float(np.quantile(a, 0.9)), "max": float(a.max())}


def mlp_reference(op: SymmetricOperator, budgets: Sequence[int]) -> dict[str, Any]:
    """Dense Hessian (P unit-vector products, column blocks) and its eigenvalues.

    Gives the exact trace ``sum_i e_i^T H e_i`` and lambda_max for the trace and slq
    sections, and the spectral quantities that decide the trace estimators:

    Hutchinson with n Rademacher probes has relative standard deviation
    ``sqrt(2 (||H||_F^2 - sum_i H_ii^2) / n) / |tr H|``; Hutch++ and XTrace remove a
    rank-r part first (r = n/3 and n/2 test vectors), so they gain only as far as the
    top-r eigenvalues carry the Frobenius mass (the tail ``||H - H_r||_F^2`` sets their error).
    """
    clock = Clock()
    P = op.shape[0]
    H = torch.empty(P, P, dtype=op.dtype)
    for i in range(0, P, 1024):
        j = min(P, i + 1024)
        E = torch.zeros(P, j - i, dtype=op.dtype)
        E[torch.arange(i, j), torch.arange(j - i)] = 1.0
        H[:, i:j] = op.matmat(E)
    asym = float(torch.linalg.matrix_norm(H - H.T) / torch.linalg.matrix_norm(H))
    H = 0.5 * (H + H.T)
    tr = float(H.diagonal().sum())
    fro2 = float((H * H).sum())
    diag2 = float((H.diagonal() ** 2).sum())
    lam = torch.linalg.eigvalsh(H)
    del H
    mag = lam.abs().sort(descending=True).values
    out: dict[str, Any] = {
        "trace": tr,
        "asymmetry_rel": asym,
        "lambda_max": float(lam[-1]),
        "lambda_min": float(lam[0]),
        "top10": lam.flip(0)[:10].tolist(),
        "num_negative": int((lam < 0).sum()),
        "frobenius_sq": fro2,
        "stable_rank_fro2_over_lmax2": fro2 / float(mag[0]) ** 2,
        "per_budget": [],
        "num_hvps": P,
    }
    for n in budgets:
        tail = {r: float((mag[r:] ** 2).sum()) / fro2 for r in (n // 3, n // 2)}
        out["per_budget"].append({
            "budget": n,
            "hutchinson_rel_std": math.sqrt(2 * (fro2 - diag2) / n) / abs(tr),
            "frobenius_tail_fraction_after_top_n_over_3": tail[n // 3],
            "frobenius_tail_fraction_after_top_n_over_2": tail[n // 2],
        })
    out["wall_s"] = clock.read()[0]
    return out


def trace_section(cfg: BenchConfig, model: nn.Module, x: Tensor, y: Tensor, ref: dict, desc: str,
                  budgets: Sequence[int] | None = None, seeds: int | None = None) -> dict:
    from curvlinops import HessianLinearOperator, hutchinson_trace, hutchpp_trace, xtrace as cl_xtrace

    loss_fn = nn.CrossEntropyLoss()
    data = [(x, y)]
    op = HessianOperator(model, loss_fn, data, bn_mode="eval")
    P = op.shape[0]
    exact = ref["trace"]
    params = [p for p in model.parameters() if p.requires_grad]
    H_cl = HessianLinearOperator(model, loss_fn, params, data, check_deterministic=False)
    counter_cl = count_curvlinops(H_cl)
    # Cross-check of the reference with curvlinops' products: sum of diag(H E_block).
    diag_sum = 0.0
    block = 1024
    for i in range(0, P, block):
        j = min(P, i + block)
        E = torch.zeros(P, j - i, dtype=torch.float64)
        E[torch.arange(i, j), torch.arange(j - i)] = 1.0
        diag_sum += float(torch.diagonal((H_cl @ E)[i:j]).sum())
    log(f"trace: P={P}, exact trace {exact:.10g} (ours), {diag_sum:.10g} (curvlinops)")
    H_ph = pyhessian_hessian(model, loss_fn, x, y)

    def ours(method: str) -> Callable[[int, int], tuple[float, int]]:
        def fn(budget: int, seed: int) -> tuple[float, int]:
            est = trace(op, num_matvecs=budget, method=method, seed=seed)
            return est.value, est.num_matvecs

        return fn

    def curvlinops(estimator: Callable[..., Tensor]) -> Callable[[int, int], tuple[float, int]]:
        def fn(budget: int, seed: int) -> tuple[float, int]:
            before = counter_cl[0]
            with seeded_global_rng(seed):
                value = float(estimator(H_cl, budget))
            return value, counter_cl[0] - before

        return fn

    def pyhessian_trace(budget: int, seed: int) -> tuple[float, int]:
        with seeded_global_rng(seed):
            samples = H_ph.trace(maxIter=budget, tol=0.0)  # tol=0 never stops early: exactly `budget` products
        return float(np.mean(samples)), len(samples)

    methods: dict[str, Callable[[int, int], tuple[float, int]]] = {
        "ours_hutchinson": ours("hutchinson"),
        "ours_hutch++": ours("hutch++"),
        "ours_xtrace": ours("xtrace"),
        "pyhessian_hutchinson": pyhessian_trace,
        "curvlinops_hutchinson": curvlinops(hutchinson_trace),
        "curvlinops_hutch++": curvlinops(hutchpp_trace),
        "curvlinops_xtrace": curvlinops(cl_xtrace),
    }
    budgets = list(cfg.trace_budgets if budgets is None else budgets)
    seeds = cfg.trace_seeds if seeds is None else seeds
    rows = []
    try:
        for budget in budgets:
            for name, fn in methods.items():
                errs, counts, walls = [], set(), []
                for seed in range(seeds):
                    t0 = time.perf_counter()
                    value, n = fn(budget, seed)
                    walls.append(time.perf_counter() - t0)
                    errs.append(abs(value - exact) / abs(exact))
                    counts.add(n)
                rows.append({"budget": budget, "method": name, "hvps_per_estimate": sorted(counts), "median_wall_s": statistics.median(walls), **summarize(errs)})
                log(f"trace: budget {budget} {name}: median rel. error {rows[-1]['median']:.3e}")
    finally:
        del H_ph
        release_grads(model)
    target_budget = cfg.trace_target_budget if cfg.trace_target_budget in budgets else budgets[-1]
    at = {r["method"]: r for r in rows if r["budget"] == target_budget}
    best = min(("ours_hutch++", "ours_xtrace"), key=lambda m: at[m]["median"])
    improvement = at["ours_hutchinson"]["median"] / at[best]["median"]
    vs_pyhessian = at["pyhessian_hutchinson"]["median"] / at[best]["median"]
    return {
        "setup": {
            "model": "mlp",
            "model_kwargs": dict(cfg.mlp_kwargs),
            "num_params": P,
            "num_examples": cfg.mlp_examples,
            "dtype": "float64",
            "data": desc,
            "seeds": seeds,
            "budgets": budgets,
            "error": "|estimate - exact| / |exact|, exact = sum of e_i^T H e_i over all P unit vectors (our products, float64)",
            "pyhessian_call": "hessian(...).trace(maxIter=budget, tol=0.0) (tol=0 makes it spend exactly `budget` products), mean of samples",
            "curvlinops_calls": "hutchinson_trace / hutchpp_trace / xtrace(HessianLinearOperator, num_matvecs=budget), global RNG seeded per seed",
        },
        "exact_trace": exact,
        "spectrum": ref,
        "exact_trace_curvlinops_products": diag_sum,
        "rows": rows,
        "target": {
            "budget": target_budget,
            "ours_best": best,
            "hutchinson_over_best_median_error": improvement,
            "pyhessian_over_best_median_error": vs_pyhessian,
            "target": 3.0,
            "pass": improvement >= 3.0 and vs_pyhessian >= 3.0,
        },
    }


def slq_section(cfg: BenchConfig, model: nn.Module, x: Tensor, y: Tensor, ref: dict) -> dict:
    from curvlinops import HessianLinearOperator, lanczos_approximate_spectrum

    loss_fn = nn.CrossEntropyLoss()
    data = [(x, y)]
    op = HessianOperator(model, loss_fn, data, bn_mode="eval")
    P = op.shape[0]
    lam_max = ref["lambda_max"]
    rows = []

    clock = Clock()
    try:
        dens = spectral_density(op, num_probes=cfg.slq_probes, num_steps=cfg.slq_steps, seed=cfg.seed)
        wall, cpu = clock.read()
        rows.append({
            "tool": "ours",
            "call": f"spectral_density(op, num_probes={cfg.slq_probes}, num_steps={cfg.slq_steps}, seed={cfg.seed})",
            "status": "ok",
            "num_hvps": dens.num_matvecs,
            "wall_s": wall,
            "max_node_rel_error_vs_lambda_max": abs(float(dens.nodes.max()) - lam_max) / lam_max,
        })
    except Exception as exc:  # recorded, not skipped: the result says it failed and why
        rows.append({"tool": "ours", "status": "error", "exception_type": type(exc).__name__, "exception_message": str(exc)})

    H_ph = pyhessian_hessian(model, loss_fn, x, y)
    clock = Clock()
    try:
        with pyhessian_dataloader_counted() as counter, seeded_global_rng(cfg.seed):
            try:
                eigs, weights = H_ph.density(iter=cfg.slq_steps, n_v=cfg.slq_probes)
                wall, _ = clock.read()
                nodes = np.asarray(eigs, dtype=float)
                w = np.asarray(weights, dtype=float)
                rows.append({
                    "tool": "pyhessian",
                    "call": f"hessian(...).density(iter={cfg.slq_steps}, n_v={cfg.slq_probes})",
                    "status": "ok",
                    "num_hvps": counter[0],
                    "wall_s": wall,
                    "weights_sum": float(w.sum(axis=1).mean()),
                    "max_node_rel_error_vs_lambda_max": abs(float(nodes.max()) - lam_max) / lam_max,
                })
            except Exception as exc:  # the point of this section: record the failure
                wall, _ = clock.read()
                frames = traceback.extract_tb(exc.__traceback__)
                frame = frames[-1]
                own = [f for f in frames if f"{os.sep}pyhessian{os.sep}" in f.filename]
                rows.append({
                    "tool": "pyhessian",
                    "call": f"hessian(...).density(iter={cfg.slq_steps}, n_v={cfg.slq_probes})",
                    "status": "error",
                    "exception_type": type(exc).__name__,
                    "exception_message": str(exc),
                    "raised_at": f"{Path(frame.filename).name}:{frame.lineno}",
                    "pyhessian_frame": f"pyhessian/{Path(own[-1].filename).name}:{own[-1].lineno} `{own[-1].line}`" if own else None,
                    "num_hvps_before_error": counter[0],
                    "wall_s": wall,
                })
    finally:
        del H_ph
        release_grads(model)

    params = [p for p in model.parameters() if p.requires_grad]
    H_cl = HessianLinearOperator(model, loss_fn, params, data, check_deterministic=False)
    counter_cl = count_curvlinops(H_cl)
    clock = Clock()
    try:
        with seeded_global_rng(cfg.seed):
            grid, density = lanczos_approximate_spectrum(H_cl, ncv=cfg.slq_steps, num_repeats=cfg.slq_probes)
        wall, _ = clock.read()
        dx = float(grid[1] - grid[0])
        rows.append({
            "tool": "curvlinops",
            "call": f"lanczos_approximate_spectrum(HessianLinearOperator, ncv={cfg.slq_steps}, num_repeats={cfg.slq_probes})",
            "status": "ok",
            "num_hvps": counter_cl[0],
            "wall_s": wall,
            "density_mass": float(density.sum()) * dx,
        })
    except Exception as exc:  # recorded with its type and message
        rows.append({"tool": "curvlinops", "status": "error", "exception_type": type(exc).__name__, "exception_message": str(exc)})
    return {
        "setup": {"model": "mlp", "model_kwargs": dict(cfg.mlp_kwargs), "num_params": P, "num_examples": cfg.mlp_examples, "dtype": "float64",
                  "torch": torch.__version__},
        "lambda_max": lam_max,
        "rows": rows,
    }


# --------------------------------------------------------------------------------------
# Load-normalised eigenvalue cost
# --------------------------------------------------------------------------------------


PRODUCT_OF = {"ours": "ours_rev_rev_kept", "pyhessian": "pyhessian", "curvlinops+eigsh": "curvlinops"}


def add_normalized_eig_cost(result: dict) -> None:
    """Eigenvalue runs priced at the interleaved per-product times of the hvp section.

    The eig runs take minutes each, one after another, so on a shared machine their wall
    times also measure how the load changed between them. The hvp section times every
    tool's product in interleaved rounds under the same conditions; pricing each run's
    product count at those medians (``num_hvps * t_product``, wall and CPU) gives a cost
    comparison free of that drift. It leaves out the set-up (about one gradient) and the
    solvers' own arithmetic (orthogonalisation: ~4 j P flops per Lanczos step, small
    next to a product), which the measured totals include.
    """
    if "eig" not in result or "hvp" not in result:
        return
    med = {r["product"]: r for r in result["hvp"]["rows"]}
    if result["hvp"]["auto_resolves_to"] != "rev_rev_kept":
        PRODUCT_OF["ours"] = f"ours_{result['hvp']['auto_resolves_to']}"
    for row in result["eig"]["rows"]:
        prod = med[PRODUCT_OF[row["method"]]]
        row["priced_wall_s"] = row["num_hvps"] * prod["median_wall_s"]
        row["priced_cpu_s"] = row["num_hvps"] * prod["median_cpu_s"]
    for t in result["eig"]["targets"]:
        ours = next(r for r in result["eig"]["rows"] if r["method"] == "ours" and r["k"] == t["k"])
        ph = next(r for r in result["eig"]["rows"] if r["method"] == "pyhessian" and r["k"] == t["k"])
        t["priced_ratio_wall"] = ours["priced_wall_s"] / ph["priced_wall_s"]
        t["priced_ratio_cpu"] = ours["priced_cpu_s"] / ph["priced_cpu_s"]
        t["hvp_count_ratio"] = ours["num_hvps"] / ph["num_hvps"]
        t["priced_time_pass"] = t["priced_ratio_wall"] <= t["time_target"]


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


def fmt(v: Any, spec: str = ".3g") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return format(v, spec)
    return str(v)


def verdict(ok: bool) -> str:
    return "**PASS**" if ok else "**FAIL**"


def trace_markdown(tr: dict, target: bool) -> list[str]:
    s = tr["setup"]
    lines = [
        f"MLP {s['model_kwargs']} ({s['num_params']:,} parameters), float64; {s['data']}. "
        f"Exact trace {tr['exact_trace']:.10g} ({s['num_params']} unit-vector products; curvlinops' products give "
        f"{tr['exact_trace_curvlinops_products']:.10g}). Relative error over {s['seeds']} seeds. PyHessian: {s['pyhessian_call']}.",
        "",
        f"Spectrum (dense float64 Hessian): lambda_max {tr['spectrum']['lambda_max']:.4g}, lambda_min {tr['spectrum']['lambda_min']:.4g}, "
        f"{tr['spectrum']['num_negative']} negative eigenvalues, stable rank ||H||_F^2/lambda_max^2 = {tr['spectrum']['stable_rank_fro2_over_lmax2']:.1f}. "
        + "; ".join(
            f"budget {b['budget']}: Hutchinson predicted rel. std {b['hutchinson_rel_std']:.2e}, Frobenius mass outside the top "
            f"{b['budget'] // 3} / {b['budget'] // 2} eigenvalues {b['frobenius_tail_fraction_after_top_n_over_3']:.1%} / "
            f"{b['frobenius_tail_fraction_after_top_n_over_2']:.1%}"
            for b in tr["spectrum"]["per_budget"]
        )
        + " (Hutch++ and XTrace deflate a rank-budget/3 and budget/2 part; the tail mass sets their error).",
        "",
        "| budget | method | HVPs | median rel. error | mean | 90th pct | median wall s |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in tr["rows"]:
        lines.append(
            f"| {r['budget']} | {r['method']} | {','.join(map(str, r['hvps_per_estimate']))} | {r['median']:.2e} | {r['mean']:.2e} | "
            f"{r['p90']:.2e} | {r['median_wall_s']:.3f} |"
        )
    t = tr["target"]
    lines.append("")
    if target:
        lines.append(
            f"Target at budget {t['budget']}: our best ({t['ours_best']}) has {t['hutchinson_over_best_median_error']:.2f}x lower median "
            f"error than our Hutchinson and {t['pyhessian_over_best_median_error']:.2f}x lower than PyHessian's (target >= 3x both) "
            f"{verdict(t['pass'])}."
        )
    else:
        lines.append(
            f"At budget {t['budget']}: our best ({t['ours_best']}) has {t['hutchinson_over_best_median_error']:.2f}x lower median error "
            f"than our Hutchinson, {t['pyhessian_over_best_median_error']:.2f}x lower than PyHessian's: with this much mass outside any "
            "low-rank part no deflation estimator can gain much (diagnostic, no target)."
        )
    lines.append("")
    return lines


def markdown(result: dict) -> str:
    m = result["machine"]
    lines = [
        "# Curvature benchmark: landscape.curvature vs PyHessian vs curvlinops",
        "",
        f"Configuration `{result['config']['name']}`; command: `{result['command']}`.",
        "",
        f"Machine: {m['cpu_model']}, {m['logical_cpus']} logical CPUs ({m['usable_cpus']} usable), "
        f"torch threads {m['torch_threads']}, device {m['device']}; Python {m['python']}, torch {m['torch']}, "
        f"PyHessian {m['pyhessian']}, curvlinops {m['curvlinops']}, scipy {m['scipy']}, timm {m['timm']}; "
        f"date {m['date_utc']}; load average at start {m['loadavg_start']}, at end {result.get('loadavg_end')}; "
        f"total wall time {result['total_wall_s']:.0f} s.",
        "",
        "Times are wall clock; CPU is process CPU time (all threads). Load averages per section are in the JSON; "
        "a load above the thread count means contention and noisy wall times.",
        "",
    ]
    if "eig" in result:
        e = result["eig"]
        s = e["setup"]
        lines += [
            "## 1. Top Hessian eigenvalues",
            "",
            f"{s['model']} ({s['num_params']:,} parameters), {s['num_examples']} inputs of shape {s['input_shape']}, "
            f"{s['data']}; {s['loss']}, BatchNorm {s['bn_mode']} mode, {s['dtype']}. Ours: `{s['ours_call']}` "
            "(`stop='value'`: `tol` bounds the estimated relative eigenvalue error min(r, r^2/gap)/|theta|, not the residual). "
            f"eigsh: `tol={s['eigsh_tol']:g}` (relative residual). PyHessian: its defaults. Run order: {s['order']}.",
            "",
            f"Reference: {e['reference']['method']} ({e['reference']['subspace_dim']}-dimensional subspace, "
            f"{e['reference']['num_hvps']} products, {e['reference']['total_wall_s']:.0f} s"
            + (f"; read from `{e['reference']['cache_file']}`, computed {e['reference'].get('computed_utc', '?')}" if e["reference"].get("cached") else "")
            + "). Values "
            + ", ".join(f"{v:.7g}" for v in e["reference"]["values"])
            + "; float64 relative residuals "
            + ", ".join(f"{v:.1e}" for v in e["reference"]["relative_residuals"])
            + " (an exact eigenvalue lies within that relative distance); estimated relative errors r^2/gap "
            + ", ".join(f"{v:.0e}" for v in e["reference"]["estimated_relative_error"])
            + ".",
            "",
            "| k | method | HVPs | setup wall s | total wall s | total CPU s | priced wall s | max rel. error | values (descending) |",
            "|---|---|---:|---:|---:|---:|---:|---:|---|",
        ]
        for r in sorted(e["rows"], key=lambda r: (r["k"], r["method"])):
            vals = ", ".join(f"{v:.7g}" for v in sorted(r["values"], reverse=True))
            lines.append(
                f"| {r['k']} | {r['method']} | {r['num_hvps']} | {r['setup_wall_s']:.1f} | {r['total_wall_s']:.1f} | "
                f"{r['total_cpu_s']:.1f} | {fmt(r.get('priced_wall_s'), '.1f')} | {r['max_rel_error']:.1e} | {vals} |"
            )
        lines.append("")
        for r in e["rows"]:
            if r["method"] == "ours":
                lines.append(
                    f"Ours k={r['k']}: converged={r['converged']}; certificates: estimated relative eigenvalue errors "
                    f"{', '.join(f'{v:.1e}' for v in r['value_errors'])}, relative residuals (Lanczos relation) "
                    f"{', '.join(f'{v:.1e}' for v in r['residuals'])}, from explicit float32 products "
                    f"{', '.join(f'{v:.1e}' for v in r['true_residuals'])}; wall times of the repeats "
                    f"{', '.join(f'{v:.1f}' for v in r.get('all_total_wall_s', [r['total_wall_s']]))} s (median used)."
                )
            if r["method"] == "pyhessian" and r["k"] == max(result["config"]["ks"]):
                lines.append(f"PyHessian products per eigenvalue: {r['hvps_per_eigenvalue']} (maxIter=100 reached: {r['hit_maxIter']}).")
        lines.append("")
        lines += [
            "",
            "Priced wall s = HVPs x that tool's median product time from section 2 (measured interleaved, so free of the load "
            "drift between these sequential runs; it omits set-up and solver arithmetic).",
            "",
            "| k | ours / PyHessian: wall time | CPU time | priced (section 2) | HVP count | target | ours max rel. error | target | PyHessian max rel. error | verdict (wall) | verdict (priced) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---|---|",
        ]
        for t in e["targets"]:
            priced = t.get("priced_ratio_wall")
            lines.append(
                f"| {t['k']} | {t['time_ratio_ours_over_pyhessian_wall']:.2f}x | {t['time_ratio_ours_over_pyhessian_cpu']:.2f}x | "
                f"{fmt(priced, '.2f')}x | {fmt(t.get('hvp_count_ratio'), '.2f')}x | <= 0.35x | "
                f"{t['ours_max_rel_error']:.1e} | <= 1e-4 | {t['pyhessian_max_rel_error']:.1e} | {verdict(t['pass'])} "
                f"(time {verdict(t['time_pass'])}, error {verdict(t['error_pass'])}) | "
                + (f"{verdict(t['priced_time_pass'] and t['error_pass'])} |" if priced is not None else "n/a |")
            )
        lines.append("")
    if "hvp" in result:
        h = result["hvp"]
        lines += [
            "## 2. Hessian-vector product cost relative to one gradient",
            "",
            f"{h['setup']['model']}, {h['setup']['num_examples']} inputs, float32, eval-mode BN; {h['setup']['clock']} "
            f"({h['setup']['repeats']} rounds). `hvp_mode=\"auto\"` resolves to `{h['auto_resolves_to']}` "
            f"(kept graph {h['graph_bytes_rev_rev_kept'] / 2**20:.0f} MiB). Rows `diag_*` are a diagnostic: the same network with "
            "eval-mode BatchNorm written as a per-channel affine map (same parameters, same Hessian); all ratios are to the "
            "original model's gradient (the JSON also has the affine product relative to the affine gradient).",
            "",
            "| product | median wall s | median CPU s | ratio to gradient (wall) | (CPU) | rel. diff. to ours |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for r in h["rows"]:
            lines.append(
                f"| {r['product']} | {r['median_wall_s']:.2f} | {r['median_cpu_s']:.2f} | {r['ratio_to_gradient_wall']:.2f}x | "
                f"{r['ratio_to_gradient_cpu']:.2f}x | {fmt(r.get('rel_diff_to_ours_rev_rev_kept'), '.1e')} |"
            )
        t = h["target"]
        lines += [
            "",
            f"Target: ours (auto) <= 2.2x a gradient: {t['ours_auto_ratio_wall']:.2f}x wall ({t['ours_auto_ratio_cpu']:.2f}x CPU) "
            f"{verdict(t['pass'])}.",
            "",
        ]
    if "trace" in result:
        lines += ["## 3. Trace at equal product budget", ""]
        lines += trace_markdown(result["trace"], target=True)
        if "diagnostic_random" in result["trace"]:
            lines += ["### Diagnostic: flat spectrum (no target)", ""]
            lines += trace_markdown(result["trace"]["diagnostic_random"], target=False)
    if "slq" in result:
        sq = result["slq"]
        lines += [
            "## 4. Spectral density (SLQ)",
            "",
            f"MLP {sq['setup']['model_kwargs']} ({sq['setup']['num_params']:,} parameters), float64, torch {sq['setup']['torch']}. "
            f"lambda_max {sq['lambda_max']:.6g} (dense eigenvalues). One probe each (PyHessian's default n_v=1).",
            "",
            "| tool | call | status | HVPs | wall s | details |",
            "|---|---|---|---:|---:|---|",
        ]
        for r in sq["rows"]:
            if r["status"] == "ok":
                det = []
                if "max_node_rel_error_vs_lambda_max" in r:
                    det.append(f"largest Ritz node vs lambda_max: rel. error {r['max_node_rel_error_vs_lambda_max']:.1e}")
                if "density_mass" in r:
                    det.append(f"density integrates to {r['density_mass']:.3f}")
                det = "; ".join(det)
                hv = r["num_hvps"]
            else:
                msg = " ".join(r["exception_message"].split()).replace("`", "'")
                det = f"`{r['exception_type']}: {msg[:160]}{'...' if len(msg) > 160 else ''}`" + (f" raised at {r['raised_at']}" if "raised_at" in r else "")
                if "pyhessian_frame" in r:
                    det += f", called from {r['pyhessian_frame']}"
                hv = r.get("num_hvps_before_error", "n/a")
            lines.append(f"| {r['tool']} | `{r.get('call', '')}` | {r['status']} | {hv} | {fmt(r.get('wall_s'), '.2f')} | {det} |")
        lines.append("")
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small smoke configuration (minutes)")
    ap.add_argument("--out", type=Path, default=None,
                    help="JSON output path; the Markdown table goes beside it with suffix .md "
                         "(default bench/results/curvature.json, or bench/.work/curvature_quick.json with --quick)")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (recorded)")
    ap.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS), help="sections to run")
    ap.add_argument("--rerender", type=Path, default=None, metavar="JSON",
                    help="recompute the derived fields and the Markdown of an existing results JSON (no benchmarking)")
    args = ap.parse_args(argv)
    if args.rerender is not None:
        result = read_json(args.rerender)
        add_normalized_eig_cost(result)
        write_json(args.rerender, result)
        write_text(args.rerender.with_suffix(".md"), markdown(result))
        log(f"re-rendered {args.rerender} and {args.rerender.with_suffix('.md')}")
        return result
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    cfg = QUICK if args.quick else DEFAULT
    global REF_CACHE
    if args.quick:
        REF_CACHE = REPO / "bench/.work/curvature_reference_quick.json"
    out = args.out or (REPO / ("bench/.work/curvature_quick.json" if args.quick else "bench/results/curvature.json"))
    torch.set_num_threads(args.threads)
    result: dict[str, Any] = {
        "command": "python bench/curvature.py" + ("" if argv is None and len(sys.argv) == 1 else " " + " ".join(sys.argv[1:] if argv is None else argv)),
        "config": cfg.to_dict(),
        "machine": machine_info(torch.get_num_threads()),
        "sections_loadavg": {},
    }
    t0 = time.perf_counter()
    if {"eig", "hvp"} & set(args.sections):
        model = build_model(cfg.model, num_classes=10, in_chans=3, img_size=cfg.img_size, seed=cfg.seed, **dict(cfg.model_kwargs)).eval()
        x, y = random_batch(cfg.num_examples, (3, cfg.img_size, cfg.img_size), 10, cfg.seed, torch.float32)
        for name, fn in (("eig", eig_section), ("hvp", hvp_section)):
            if name in args.sections:
                before = loadavg()
                clock = Clock()
                result[name] = fn(cfg, model, x, y)
                result[name]["section_wall_s"] = clock.read()[0]
                result["sections_loadavg"][name] = {"before": before, "after": loadavg()}
        del model
    if {"trace", "slq"} & set(args.sections):
        mlp, xm, ym, desc = build_mlp(cfg, cfg.mlp_data)
        log(f"mlp: {desc}; dense float64 Hessian and its eigenvalues")
        mlp_ref = mlp_reference(HessianOperator(mlp, nn.CrossEntropyLoss(), [(xm, ym)], bn_mode="eval"), cfg.trace_budgets)
        log(f"mlp: trace {mlp_ref['trace']:.10g}, lambda_max {mlp_ref['lambda_max']:.6g}, {mlp_ref['wall_s']:.0f}s")
        if "trace" in args.sections:
            before = loadavg()
            clock = Clock()
            result["trace"] = trace_section(cfg, mlp, xm, ym, mlp_ref, desc)
            if cfg.trace_diag_random:
                rm, rx, ry, rdesc = build_mlp(cfg, "random")
                rref = mlp_reference(HessianOperator(rm, nn.CrossEntropyLoss(), [(rx, ry)], bn_mode="eval"), [cfg.trace_target_budget])
                log(f"trace diagnostic: {rdesc}")
                result["trace"]["diagnostic_random"] = trace_section(cfg, rm, rx, ry, rref, rdesc, budgets=[cfg.trace_target_budget],
                                                                     seeds=cfg.trace_diag_seeds)
            result["trace"]["section_wall_s"] = clock.read()[0]
            result["sections_loadavg"]["trace"] = {"before": before, "after": loadavg()}
        if "slq" in args.sections:
            before = loadavg()
            clock = Clock()
            result["slq"] = slq_section(cfg, mlp, xm, ym, mlp_ref)
            result["slq"]["setup"]["data"] = desc
            result["slq"]["section_wall_s"] = clock.read()[0]
            result["sections_loadavg"]["slq"] = {"before": before, "after": loadavg()}
    result["total_wall_s"] = time.perf_counter() - t0
    result["loadavg_end"] = loadavg()
    add_normalized_eig_cost(result)
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result))
    log(f"wrote {out} and {out.with_suffix('.md')}")
    return result


if __name__ == "__main__":
    main()
