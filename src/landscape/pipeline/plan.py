"""Plan a profile before running it: every stage entry's peak device memory and GPU time.

Usage::

    python -m landscape.pipeline.plan --profile profiles/paper.yaml --device-memory 80GiB \\
        [--gpu-throughput 100] [--costs .dvc/tmp/plan_costs.json] [--json plan.json]

prints one line per ``dvc.yaml`` entry (``train_<group>@<config>-<seed>``, ``measure_...``,
``probe_...``, ``bounds``, ...) with its estimated peak device memory, GPU hours and the
products it spends, then per-stage totals and the total GPU-hours, and exits with status 1,
naming each entry and its need against the stated memory, when one cannot fit.

How an estimate is made:

* **Unit prices, measured.** For every distinct network of the profile, the time and peak
  memory of a forward pass, a gradient and a Hessian-vector product at two small batch sizes
  on this CPU (:mod:`~landscape.pipeline.plan_costs`, cached in ``--costs``), linear in the
  batch size and scaled by parameter count where the network is measured at a reduced width.
* **Counts from the settings.** Each entry's products come from its params: training
  ``epochs * floor(n / batch)`` gradients (plus the curvature-aware optimizers' power
  steps, and a tracked run's records: a forward pass over the training split and
  ``power_steps`` products on its fixed batch every ``track_every`` steps, and the converged
  lambda_max at the stop, ``FINAL_MAX_HVPS`` at most; a train-to-target run is priced at its
  step cap, an upper bound); measure: Lanczos (``LANCZOS_RESTARTS`` thick restarts of a ``max(2k + 1, 20)``
  basis), the bottom pass at its budget ``bottom_max_matvecs`` (an upper bound), Hutch++ probes,
  SLQ probes x steps, per-layer Lanczos and trace per module,
  Hutchinson diagonal probes, per-sample gradients, at init and at every snapshot; probes,
  bounds, escape, Phi search, intrinsic dimension and the class-structure spectra and
  diagonals likewise (see each ``_<stage>``).
* **Memory by phase.** Peak = what stays resident (parameters, the data on the device,
  optimizer state, the kept gradient graphs of the HVP operator) + the largest phase: an
  operation's measured working memory, the Lanczos basis and Ritz vectors ``(2k + m + 1) P``
  (:func:`~landscape.curvature.lanczos.lanczos_basis_bytes`), the Hutch++
  sketch, the SLQ bases ``probes * steps * P``, the gradient covariance (dense, about
  ``3 N P`` float32, when that fits the estimator's default budget; else streamed, a panel of
  rows and the ``N x N`` Gram matrix), the dense intrinsic-dimension projection ``P d``. On a
  GPU block products are vectorised over up to ``GPU_VECTOR_BLOCK`` vectors (their working
  memory multiplies) and ``CUDA_OVERHEAD`` (context, cuBLAS/cuDNN workspaces) is added.
* **GPU time** = CPU time of the same products / ``--gpu-throughput`` (default
  ``GPU_THROUGHPUT``: an assumption, not a measurement; ``bench/gpu_check.py`` measures the
  ratio on a GPU). Stages that only read results (``validate``, ``prepare``, ``sde``,
  ``optimizers``, ``spectra_scaling``, ``hypotheses``, ``report``) run on the CPU: listed
  with no GPU memory or time.

Data sizes come from ``data/prepared/<key>/meta.json`` when the data set is prepared, else
from the published sizes in ``KNOWN_SIZES``. On a CPU (``--device cpu``) the same model gives
the entry's expected peak resident-set rise in bytes held, freed blocks handed back to the OS
(:func:`~landscape.pipeline.plan_costs.return_freed_memory`), tested within 1.4x of measured
peaks at small sizes.
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from landscape.pipeline.params import seeds_of
from landscape.pipeline.plan_costs import CostCache, ModelCost, ModelSpec, OpCost

__all__ = ["DataShape", "EntryEstimate", "Plan", "PlanOptions", "plan_profile", "parse_bytes", "format_bytes", "main"]

F32 = 4
GiB = 1024**3
GPU_THROUGHPUT = 100.0
GPU_VECTOR_BLOCK = 16  # HessianOperator's DEFAULT_BLOCK_SIZE, vectorised on accelerators
CUDA_OVERHEAD = 1 * GiB
LANCZOS_RESTARTS = 3
PER_LAYER_LANCZOS = 20  # products of one module's top eigenvalue at per_layer_tol (one basis of 20)
PER_SAMPLE_COST = 2.0  # per-sample gradients (vmap, chunks of 64) vs one batched gradient, per example
#: Streamed covariance: about a + n / (b * panel_rows) passes over the n examples (mean, Gram panels,
#: diagonals, eigenvectors), fitted to the passes of bench/results/memory.md (3.9-17.7 passes, within 10%).
STREAMED_PASSES = (3.5, 2.0)
CPU_ONLY = ("validate", "prepare", "sde", "optimizers", "spectra_scaling", "hypotheses", "report")

#: Published sizes: (official train, official test, input shape, classes).
KNOWN_SIZES: dict[str, tuple[int, int, tuple[int, ...], int]] = {
    "cifar10": (50_000, 10_000, (3, 32, 32), 10),  # Krizhevsky 2009
    "cifar100": (50_000, 10_000, (3, 32, 32), 100),
    "mnist": (60_000, 10_000, (1, 28, 28), 10),  # LeCun et al. 1998
    "fashion_mnist": (60_000, 10_000, (1, 28, 28), 10),
    "tiny_imagenet": (100_000, 10_000, (3, 64, 64), 200),  # train 500 x 200, val 50 x 200
    "digits": (1_797, 0, (1, 8, 8), 10),
    "mnist5k": (5_000, 0, (1, 28, 28), 10),
}
#: WikiText-2 tokens per split with <eos> (Merity et al. 2017) and its vocabulary.
WIKITEXT2_TOKENS = {"train": 2_088_628, "test": 245_569, "vocab": 33_278}


@dataclass(frozen=True)
class DataShape:
    """A prepared data set's size: train and test examples, probe subset, input shape, classes."""

    n_train: int
    n_test: int
    n_probe: int
    input_shape: tuple[int, ...]
    num_classes: int

    def bytes(self, n: int) -> float:
        return float(n) * (math.prod(self.input_shape) * F32 + 8)


@dataclass(frozen=True)
class PlanOptions:
    """Device and price assumptions (module docstring)."""

    device: str = "cuda"
    gpu_throughput: float = GPU_THROUGHPUT
    root: Path = Path(".")

    @property
    def block(self) -> int:
        return GPU_VECTOR_BLOCK if self.device == "cuda" else 1

    @property
    def overhead(self) -> float:
        return CUDA_OVERHEAD if self.device == "cuda" else 0.0


@dataclass
class EntryEstimate:
    """One entry: peak device bytes (and its largest part), CPU seconds of its products, GPU seconds."""

    entry: str
    stage: str
    peak_bytes: float = 0.0
    peak_part: str = ""
    cpu_seconds: float = 0.0
    gpu_seconds: float = 0.0
    products: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    """Every entry's estimate and the device it was planned for."""

    entries: list[EntryEstimate]
    device_memory: float
    options: PlanOptions

    @property
    def gpu_hours(self) -> float:
        return sum(e.gpu_seconds for e in self.entries) / 3600

    @property
    def cpu_hours(self) -> float:
        """Single-thread CPU hours of the same products (the measured prices, unscaled)."""
        return sum(e.cpu_seconds for e in self.entries) / 3600

    def too_big(self) -> list[EntryEstimate]:
        return [e for e in self.entries if e.peak_bytes > self.device_memory]

    def by_stage(self) -> dict[str, dict[str, float]]:
        out: dict[str, dict[str, float]] = {}
        for e in self.entries:
            s = out.setdefault(e.stage, {"entries": 0, "peak_bytes": 0.0, "gpu_hours": 0.0})
            s["entries"] += 1
            s["peak_bytes"] = max(s["peak_bytes"], e.peak_bytes)
            s["gpu_hours"] += e.gpu_seconds / 3600
        return out


# ------------------------------------------------------------------------------ sizes


def parse_bytes(text: str) -> float:
    """``"80GiB"``, ``"80GB"``, ``"80G"``, ``"512MiB"``, ``"1e9"`` -> bytes (binary units for G/M/K)."""
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][0-9]+)?)\s*([KMGT]?)(i?B)?\s*", str(text))
    if not m:
        raise ValueError(f"device memory must look like '80GiB', '80GB' or '512MiB', got {text!r}")
    unit: float = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]
    if m.group(3) == "B" and m.group(2):  # decimal GB, MB
        unit = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}[m.group(2)]
    return float(m.group(1)) * unit


def data_shape(params: Mapping[str, Any], key: str, root: Path) -> DataShape:
    """Size of ``datasets.<key>``: its prepared ``meta.json`` if present, else ``KNOWN_SIZES``."""
    from landscape.io import read_json

    spec = params["datasets"][key]
    options = dict(spec.get("options") or {})
    probe = int(spec.get("probe_size", 1000))
    meta = root / "data" / "prepared" / key / "meta.json"
    if meta.is_file():
        m = read_json(meta)
        return DataShape(int(m["num_train"]), int(m["num_test"]), int(m.get("num_probe", probe)), tuple(m["input_shape"]),
                         int(m["num_classes"]))
    name = spec["name"]
    if name == "gaussian_mixture":
        n = int(options.get("n", 1000))
        n_test = round(n * float(spec.get("test_fraction", 0.2)))
        return _capped(spec, n - n_test, n_test, probe, (int(options.get("dim", 2)),), int(options.get("num_classes", 2)))
    if name == "wikitext2":
        context = int(options.get("context", 64))
        stride = int(options.get("stride") or context)
        windows = {s: max(0, (WIKITEXT2_TOKENS[s] - context) // stride) for s in ("train", "test")}
        cap = options.get("max_windows")
        if cap:
            windows = {s: min(w, int(cap)) for s, w in windows.items()}
        vocab = min(int(options.get("max_vocab") or WIKITEXT2_TOKENS["vocab"] + 1), WIKITEXT2_TOKENS["vocab"] + 1)
        return _capped(spec, windows["train"], windows["test"], probe, (context,), vocab)
    if name not in KNOWN_SIZES:
        raise ValueError(f"datasets.{key}: no known size for data set {name!r} (prepare it first, or add it to KNOWN_SIZES: "
                         f"{sorted(KNOWN_SIZES)})")
    n_train, n_test, shape, classes = KNOWN_SIZES[name]
    if name == "tiny_imagenet" and options.get("max_per_class"):
        n_train, n_test = (min(n, int(options["max_per_class"]) * classes) for n in (n_train, n_test))
    if options.get("image_size"):
        shape = (shape[0], int(options["image_size"]), int(options["image_size"]))
    if not spec.get("official_split") or n_test == 0:
        total = n_train + n_test
        n_test = round(total * float(spec.get("test_fraction", 0.2)))
        n_train = total - n_test
    return _capped(spec, n_train, n_test, probe, shape, classes)


def _capped(spec: Mapping[str, Any], n_train: int, n_test: int, probe: int, shape: tuple[int, ...], classes: int) -> DataShape:
    if spec.get("max_train"):
        n_train = min(n_train, int(spec["max_train"]))
    return DataShape(n_train, n_test, min(probe, n_train), shape, classes)


# ------------------------------------------------------------------------------ unit prices


class Pricer:
    """Products of one network priced by its :class:`ModelCost` (CPU seconds, bytes)."""

    def __init__(self, cost: ModelCost, options: PlanOptions) -> None:
        self.cost, self.options = cost, options
        self.P = cost.num_params

    def pass_seconds(self, op: OpCost, n: int, batch: int) -> float:
        """One pass of ``op`` over ``n`` examples in batches of ``batch``."""
        full, rest = divmod(int(n), max(1, int(batch)))
        return full * op.seconds(batch) + (op.seconds(rest) if rest else 0.0)

    def hvp_kept(self, n: int) -> bool:
        from landscape.curvature.operators import DEFAULT_GRAPH_BUDGET_BYTES

        return n * self.cost.hvp.graph1 <= DEFAULT_GRAPH_BUDGET_BYTES

    def hvp_seconds(self, n: int, batch: int) -> float:
        """One Hessian-vector product over ``n`` examples (graph recomputed when not kept)."""
        extra = 0.0 if self.hvp_kept(n) else self.pass_seconds(self.cost.gradient, n, batch)
        return self.pass_seconds(self.cost.hvp, n, batch) + extra

    def hvp_resident(self, n: int, batch: int) -> float:
        """The operator's lasting memory: kept gradient graphs of all ``n`` examples (or one batch's)."""
        return (n if self.hvp_kept(n) else min(n, batch)) * self.cost.hvp.graph1

    def hvp_transient(self, batch: int, vectors: int = 1) -> float:
        """Working memory of one product beyond the kept graphs, for a block of ``vectors``."""
        b = min(batch, batch)
        one = max(0.0, self.cost.hvp.bytes(b) - b * self.cost.hvp.graph1)
        return one * max(1, min(vectors, self.options.block))

    def basis(self, k: int) -> int:
        """The Lanczos solver's default basis for ``k`` pairs, ``max(2k + 1, 20)`` (at most P)."""
        return min(self.P, max(2 * k + 1, 20))

    def lanczos_products(self, k: int) -> int:
        m = self.basis(k)
        keep = k + (m - k) // 2
        return m + LANCZOS_RESTARTS * (m - keep)

    def bottom_products(self, k: int, budget: int | None) -> int:
        """Products of the bottom pass: its budget (default ``100`` bases), an upper bound.

        Eigenvalues near zero converge slowly, so the pass usually spends all of it."""
        if k <= 0:
            return 0
        return int(budget) if budget is not None else 100 * self.basis(k)

    def lanczos_bytes(self, k: int) -> float:
        """What ``top_eigenpairs`` with ``k`` pairs holds, as the solver states it (float32)."""
        from landscape.curvature.lanczos import lanczos_basis_bytes

        return float(lanczos_basis_bytes(self.P, k, itemsize=F32))

    def per_sample(self, n: int, budget: int | None = None) -> tuple[float, float]:
        """(seconds, bytes) of the gradient covariance of ``n`` per-sample gradients, as
        :func:`~landscape.curvature.covariance.gradient_covariance` stores it under ``budget``
        (default: its default): dense (the (n, P) matrix and its centred copy) when that fits,
        else streamed through the Gram matrix (never n x P; ``STREAMED_PASSES`` passes over the
        examples) in chunks small enough for the budget."""
        from landscape.curvature.covariance import (
            DEFAULT_COVARIANCE_MEMORY_BYTES,
            covariance_chunk_size,
            dense_covariance_bytes,
            streamed_covariance_bytes,
        )

        budget = DEFAULT_COVARIANCE_MEMORY_BYTES if budget is None else budget
        chunk = min(64, n)
        if dense_covariance_bytes(n, self.P, F32) > budget:
            chunk = min(n, covariance_chunk_size(self.P, F32, budget, chunk) or chunk)
        one_pass = PER_SAMPLE_COST * self.pass_seconds(self.cost.gradient, n, chunk)
        working = self.cost.gradient.bytes(chunk)
        if dense_covariance_bytes(n, self.P, F32) <= budget:
            return one_pass, dense_covariance_bytes(n, self.P, F32) + working
        panel = max(chunk, budget // (self.P * F32) - chunk)
        passes = STREAMED_PASSES[0] + n / (STREAMED_PASSES[1] * panel)
        return passes * one_pass, streamed_covariance_bytes(n, self.P, F32, panel_rows=panel, chunk_size=chunk) + working


def _finish(e: EntryEstimate, resident: float, phases: Mapping[str, float], options: PlanOptions) -> EntryEstimate:
    name, top = max(phases.items(), key=lambda kv: kv[1]) if phases else ("", 0.0)
    e.peak_bytes = resident + top + options.overhead
    e.peak_part = name
    e.gpu_seconds = e.cpu_seconds / options.gpu_throughput
    return e


# ------------------------------------------------------------------------------ stages


def _optimizer_state(train: Mapping[str, Any], P: int) -> float:
    opt = train.get("optimizer", "sgd")
    if opt in ("adam", "adamw", "hybrid"):
        return 2 * P * F32 + (P * F32 if opt == "hybrid" else 0)
    momentum = P * F32 if float(train.get("momentum", 0.9)) > 0 else 0
    return momentum + (P * F32 if opt == "curvature_adaptive" else 0)


def _train(entry: str, run: Mapping[str, Any], data: DataShape, pricer: Pricer, options: PlanOptions) -> EntryEstimate:
    train, cost, P = run["train"], pricer.cost, pricer.P
    B, epochs, ev = int(train.get("batch_size", 128)), int(train.get("epochs", 10)), int(train.get("eval_batch_size", 1000))
    steps = epochs * (data.n_train // B)
    e = EntryEstimate(entry, "train", products={"gradients": steps})
    e.cpu_seconds = steps * cost.gradient.seconds(B) + epochs * pricer.pass_seconds(cost.forward, data.n_test, ev)
    e.cpu_seconds += pricer.pass_seconds(cost.forward, data.n_train, ev)
    phases = {"gradient": cost.gradient.bytes(B), "evaluation": cost.forward.bytes(ev)}
    if train.get("optimizer") in ("curvature_adaptive", "hybrid"):
        hvps = steps // int(train.get("curvature_every", 10)) * int(train.get("power_steps", 3))
        e.products["hvps"] = hvps
        e.cpu_seconds += hvps * cost.hvp.seconds(B)
        phases["power step"] = cost.hvp.bytes(B)
    if int(train.get("track_every", 0) or 0) > 0:  # along-training records (landscape.training.tracking), at the cap
        records = steps // int(train["track_every"])
        e.products["tracked_records"] = records
        e.cpu_seconds += records * pricer.pass_seconds(cost.forward, data.n_train, ev)
        if train.get("track_sharpness"):
            from landscape.training.tracking import FINAL_MAX_HVPS

            S = min(int(train.get("sharpness_examples", 512)), data.n_train)
            hvps = records * int(train.get("power_steps", 3)) + FINAL_MAX_HVPS
            e.products["hvps"] = e.products.get("hvps", 0) + hvps
            e.cpu_seconds += hvps * cost.hvp.seconds(S) + records * cost.gradient.seconds(S)  # + each record's graph
            phases["lambda_max record"] = cost.hvp.bytes(S)
    resident = cost.param_bytes + _optimizer_state(train, P) + data.bytes(data.n_train)
    return _finish(e, resident, phases, options)


def _measure(entry: str, run: Mapping[str, Any], c: Mapping[str, Any], seeds: int, data: DataShape, pricer: Pricer,
             options: PlanOptions) -> EntryEstimate:
    P, cost = pricer.P, pricer.cost
    N, b = min(int(c.get("num_examples", 1000)), data.n_probe), int(c.get("batch_size", 500))
    k = min(int(c.get("top_k", 10)), P - 1)
    trace_mv, probes, steps = int(c.get("trace_matvecs", 60)), int(c.get("slq_probes", 4)), min(int(c.get("slq_steps", 40)), P)
    group = min(probes, int(c.get("probe_batch_size") or probes))  # SLQ probes multiplied (and their bases held) at once
    sketch = min(trace_mv // 3, int(c.get("probe_batch_size") or trace_mv))  # Hutch++ products vectorised at once
    on_device = c.get("basis_device") is None  # "cpu": the Lanczos bases live in host memory
    held = (steps + 2) if c.get("slq_reorthogonalize", True) else 3
    noise, diag = int(c.get("noise_examples", 256)), int(c.get("diag_probes", 20))
    per_layer = cost.num_modules * (PER_LAYER_LANCZOS + int(c.get("per_layer_matvecs", 20))) if c.get("per_layer", True) else 0
    bottom_k = min(int(c.get("bottom_k", 5)), P - 1)
    bottom = pricer.bottom_products(bottom_k, c.get("bottom_max_matvecs", 300))
    hvps = pricer.lanczos_products(k) + bottom + trace_mv + probes * steps + per_layer + (diag if noise else 0)
    if c.get("at_init"):
        hvps += pricer.lanczos_products(k) + bottom + trace_mv + probes * steps
    snap = int(run["train"].get("snapshot_every", 0) or 0)
    snapshots = int(run["train"].get("epochs", 10)) // snap + 1 if snap else 0
    hvps += snapshots * (pricer.lanczos_products(1) + int(c.get("along_training_matvecs", 20)))
    ps_seconds, ps_bytes = pricer.per_sample(min(noise, N), c.get("noise_memory_bytes")) if noise else (0.0, 0.0)
    e = EntryEstimate(entry, "measure", products={"hvps": seeds * hvps, "per_sample_gradients": seeds * noise * (1 + snapshots)})
    e.cpu_seconds = seeds * (hvps * pricer.hvp_seconds(N, b) + (1 + snapshots) * ps_seconds)
    passes = 2 + bool(c.get("at_init")) + snapshots + (cost.num_modules if c.get("per_layer", True) else 0)
    e.cpu_seconds += seeds * passes * pricer.pass_seconds(cost.gradient, N, b)  # each operator's kept-graph pass
    ritz = k * P * F32
    phases = {
        "Lanczos basis": pricer.lanczos_bytes(k) * on_device + pricer.hvp_transient(b),
        **({"bottom Lanczos basis": (pricer.lanczos_bytes(bottom_k) + ritz) * on_device + pricer.hvp_transient(b)}
           if bottom_k > 0 else {}),  # the top Ritz vectors are held meanwhile
        **({"Hutch++ sketch": trace_mv * P * F32 + ritz * on_device + pricer.hvp_transient(b, sketch)}
           if c.get("trace_method", "hutch++") != "hutchinson" else  # Hutchinson keeps one probe block and its products
           {"Hutchinson probes": 2 * min(trace_mv, int(c.get("probe_batch_size") or trace_mv)) * P * F32 + ritz * on_device
            + pricer.hvp_transient(b, min(trace_mv, int(c.get("probe_batch_size") or trace_mv)))}),
        "SLQ bases": group * held * P * F32 * on_device + ritz * on_device + pricer.hvp_transient(b, group),
        "per-sample gradients": ps_bytes + ritz * on_device,
    }
    resident = cost.param_bytes + data.bytes(N) + pricer.hvp_resident(N, b)
    return _finish(e, resident, phases, options)


def _probe(entry: str, section: Mapping[str, Any], config: str, seeds: int, data: DataShape, pricer: Pricer,
           options: PlanOptions) -> EntryEstimate:
    cost, P = pricer.cost, pricer.P

    def on(kind: str) -> Mapping[str, Any] | None:
        s = section.get(kind) or {}
        sel = s.get("configs", "all")
        return s if (sel == "all" or config in (sel or ())) else None

    n, n_test, b = int(section.get("num_examples", 1000)), int(section.get("test_examples", 1000)), int(section.get("batch_size", 500))
    n, n_test = min(n, data.n_train), min(n_test, data.n_test)
    recal = int(section.get("recal_examples", 0)) if section.get("bn_mode") == "recalibrate" else 0
    point = pricer.pass_seconds(cost.forward, n + recal, b)  # one evaluated parameter point (train split)
    pairs = seeds * (seeds - 1) // 2
    fwd_points, grads, seconds = 0, 0, 0.0
    if (s := on("barriers")) is not None:
        use = pairs if s.get("max_pairs") is None else min(pairs, int(s["max_pairs"]))
        pts = use * (2 if s.get("align", True) else 1) * int(s.get("num_points", 11))
        fwd_points += pts
        seconds += pts * (point + pricer.pass_seconds(cost.forward, n_test + recal, b))
    bezier = on("bezier")
    if bezier is not None:
        use = min(pairs, int(bezier.get("num_pairs", 1)))
        per_step = sum(int(bezier.get("ts_per_step", 1)) if o == "expected" else int(bezier.get("minimax_points", 9))
                       for o in bezier.get("objectives", ("expected", "minimax")))
        g = use * int(bezier.get("steps", 200)) * per_step
        grads += g
        seconds += g * cost.gradient.seconds(int(bezier.get("batch_size", 128)))
        seconds += use * len(bezier.get("objectives", ())) * int(bezier.get("num_points", 21)) * 2 * point
    if (s := on("scans")) is not None:
        planes = 1 + bool(s.get("hessian_plane", True))
        pts = int(s.get("line_points", 41)) * 2 + planes * int(s.get("plane_points", 11)) ** 2
        fwd_points += pts
        seconds += pts * point
    if (s := on("sharpness")) is not None:
        g = seeds * 3 * int(s.get("steps", 10)) * int(s.get("restarts", 1))
        grads += g
        seconds += g * pricer.pass_seconds(cost.gradient, n, b) + seeds * int(s.get("num_samples", 20)) * point
    e = EntryEstimate(entry, "probe", cpu_seconds=seconds, products={"evaluated_points": fwd_points, "gradients": grads})
    bends = int(bezier.get("num_bends", 1)) if bezier is not None else 0
    phases = {"evaluation": cost.forward.bytes(b) + 2 * P * F32,
              "gradients": cost.gradient.bytes(b) + 2 * P * F32}
    if bezier is not None:
        phases["Bezier curve"] = (bends + 2) * P * F32 + 2 * bends * P * F32 + cost.gradient.bytes(int(bezier.get("batch_size", 128)))
    resident = (seeds + 1) * P * F32 + data.bytes(n + n_test + recal)
    return _finish(e, resident, phases, options)


def _bounds(params: Mapping[str, Any], shapes: Callable[[str], DataShape], price: Callable[[str, str], Pricer],
            options: PlanOptions) -> EntryEstimate:
    settings = params["bounds"].get("settings") or {}
    e = EntryEstimate("bounds", "bounds", products={"gradients": 0, "network_draws": 0})
    resident, phases = 0.0, {}
    for name in params["bounds"]["runs"]:
        group, _, config = name.partition("/")
        seeds = len(seeds_of(params["experiments"][group], params["seeds"]))
        run, data, pricer = params["experiments"][group]["configs"][config], shapes(group), price(group, config)
        cost, P = pricer.cost, pricer.P
        frac = float(settings.get("prior_fraction", 0.5))
        n_prior = int(data.n_train * frac)
        B = min(int(run["train"].get("batch_size", 128)), max(1, n_prior))
        epochs = int(settings.get("prior_epochs") or run["train"].get("epochs", 10))
        steps = epochs * (n_prior // B) if frac > 0 else 0
        ev = int(settings.get("eval_batch_size", 64))
        draws = 3 * int(settings.get("mc_draws", 4000))  # isotropic, curvature, optimised posteriors
        candidates = len(settings.get("sigmas", [1])) + len(settings.get("posterior_c", [1])) * len(settings.get("eps", [1]))
        pilots = int(settings.get("pilot_draws", 8)) * int(settings.get("pilot_examples", 5000)) * candidates
        tests = 3 * int(settings.get("test_draws", 32)) * data.n_test + 2 * data.n_train  # + the quantised networks
        # arm 2's optimiser steps, and the GGN diagonal: one per-example gradient per (example, class)
        steps += int(settings.get("optimize_steps", 300)) + int(settings.get("curvature_examples", 1000)) * 10 // B
        e.products["gradients"] += seeds * steps
        e.products["network_draws"] += seeds * draws
        e.cpu_seconds += seeds * (steps * cost.gradient.seconds(B) + epochs * pricer.pass_seconds(cost.forward, data.n_test, ev))
        e.cpu_seconds += seeds * (draws + pilots + tests) * cost.forward.seconds(ev) / ev
        k = int(settings.get("top_k") or params["curvature"].get(group, {}).get("top_k", 10))
        vectors = 16 * P * F32 + k * P * 8 + int(settings.get("pilot_draws", 8)) * P * F32
        resident = max(resident, cost.param_bytes * 2 + data.bytes(data.n_train + data.n_test) + vectors)
        phases[f"prior training ({name})"] = cost.gradient.bytes(B) + _optimizer_state(run["train"], P)
        phases[f"paired draws ({name})"] = 3 * ev * P * F32 + ev * cost.forward.bytes(1)
    return _finish(e, resident, {max(phases, key=phases.__getitem__): max(phases.values())} if phases else {}, options)


def _escape(params: Mapping[str, Any], data: DataShape, pricer: Pricer, options: PlanOptions) -> EntryEstimate:
    from landscape.pipeline.escape import SOURCE_EXPERIMENT

    s, cost, P = params["escape"]["settings"], pricer.cost, pricer.P
    seeds = len((params["experiments"].get(SOURCE_EXPERIMENT) or {}).get("seeds") or params["seeds"])
    N, chunk = min(int(s.get("num_examples", 1000)), data.n_probe), int(s.get("chunk_size", 250))
    trials = (len(s.get("noise_types", ("isotropic",))) + len(s.get("scales", ()))) * int(s.get("restarts", 1))
    steps, checks = int(s.get("steps", 500)), int(s.get("steps", 500)) // int(s.get("check_every", 100))
    lambda_checks = 1 if s.get("rule", "basin") == "basin" else checks
    indicator = steps // int(s["indicator_every"]) if s.get("indicator_every") else 0
    hvps = seeds * trials * (lambda_checks * int(s.get("eig_matvecs", 60)) + indicator) + seeds * 4 * int(s.get("top_k", 20))
    grads = seeds * trials * steps
    e = EntryEstimate("escape", "escape", products={"gradients": grads, "hvps": hvps})
    e.cpu_seconds = grads * cost.gradient.seconds(int(s.get("batch_size", 128))) + hvps * pricer.hvp_seconds(N, chunk)
    e.cpu_seconds += seeds * trials * checks * int(s.get("barrier_points", 11)) * pricer.pass_seconds(cost.forward, N, chunk)
    phases = {"SGD steps": cost.gradient.bytes(int(s.get("batch_size", 128))),
              "curvature checks": pricer.hvp_resident(N, chunk) + pricer.hvp_transient(chunk) + pricer.lanczos_bytes(1)}
    resident = cost.param_bytes * 3 + int(s.get("top_k", 20)) * P * F32 + data.bytes(N)
    return _finish(e, resident, phases, options)


def _class_structure(params: Mapping[str, Any], shapes: Callable[[str], DataShape], price: Callable[[str, str], Pricer],
                     options: PlanOptions) -> EntryEstimate:
    """Top-k Lanczos of G and H per spectrum run and seed (each at most ``max_matvecs`` products,
    basis of :func:`~landscape.curvature.lanczos.lanczos_basis_bytes`), and per diagonal run the
    ``1 + C`` per-example gradient passes and ``diag_probes`` (H, G) product pairs."""
    c = params["class_structure"]
    e = EntryEstimate("class_structure", "class_structure", products={"hvps": 0, "per_sample_gradients": 0})
    resident, phases = 0.0, {}
    for name in c["spectrum_runs"]:
        group, _, config = name.partition("/")
        curv, data, pricer = params["curvature"][group], shapes(group), price(group, config)
        N, b, k = min(int(curv.get("num_examples", 1000)), data.n_probe), int(curv.get("batch_size", 500)), int(c.get("top_k", 100))
        products = 2 * min(int(c.get("max_matvecs", 1000)), pricer.lanczos_products(k))  # G and H
        seeds = len(c.get("spectrum_seeds", [0]))
        e.products["hvps"] += seeds * products
        e.cpu_seconds += seeds * (products * pricer.hvp_seconds(N, b) + 2 * pricer.pass_seconds(pricer.cost.gradient, N, b))
        resident = max(resident, pricer.cost.param_bytes + data.bytes(N) + pricer.hvp_resident(N, b))
        phases[f"top-{k} Lanczos basis ({name})"] = pricer.lanczos_bytes(k) + pricer.hvp_transient(b)
    group = c.get("diag_experiment", "h1_batch")
    configs = list(params["experiments"][group]["configs"]) if c.get("diag_configs", "all") == "all" else list(c["diag_configs"])
    data, curv = shapes(group), params["curvature"][group]
    n, b, chunk = min(int(c.get("diag_examples", 500)), data.n_probe), int(curv.get("batch_size", 500)), int(c.get("chunk_size", 64))
    probes, seeds = int(c.get("diag_probes", 20)), len(c.get("diag_seeds", [0]))
    for config in configs:
        pricer = price(group, config)
        passes = 1 + data.num_classes
        e.products["per_sample_gradients"] += seeds * passes * n
        e.products["hvps"] += seeds * 2 * probes
        e.cpu_seconds += seeds * (passes * PER_SAMPLE_COST * pricer.pass_seconds(pricer.cost.gradient, n, chunk)
                                  + 2 * probes * pricer.hvp_seconds(n, b) + 2 * pricer.pass_seconds(pricer.cost.gradient, n, b))
        resident = max(resident, pricer.cost.param_bytes + data.bytes(n) + 2 * pricer.hvp_resident(n, b))
        block = min(probes, GPU_VECTOR_BLOCK)  # Hutchinson's probe block and its products, the diagonals and their squares
        phases[f"diagonals ({group}/{config})"] = max(chunk * pricer.P * F32 + pricer.cost.gradient.bytes(chunk) + 6 * pricer.P * F32,
                                                      2 * block * pricer.P * F32 + pricer.hvp_transient(b, block))
    top = max(phases, key=phases.__getitem__) if phases else ""
    return _finish(e, resident, {top: phases[top]} if phases else {}, options)


def _phi(params: Mapping[str, Any], shapes: Callable[[str], DataShape], cache: CostCache, options: PlanOptions,
         progress: Callable[[str], None] | None) -> EntryEstimate:
    phi = params["phi"]
    search = phi["search"]
    grid, probe, training = search["grid"], search["probe"], search["training"]
    mnist = shapes(phi["dataset"]) if phi.get("dataset") in params.get("datasets", {}) else None
    inputs = [(d, int(search.get("mixture_classes", 8))) for d in search.get("mixture_dims", [])]
    if mnist is not None:
        inputs.append((math.prod(mnist.input_shape), mnist.num_classes))
    seeds = len(search.get("seeds", [0]))
    e = EntryEstimate("phi_search", "phi_search", products={"hvps": 0, "gradients": 0, "per_sample_gradients": 0})
    worst: tuple[str, float] = ("", 0.0)
    N, noise = int(probe.get("num_examples", 1000)), int(probe.get("noise_examples", 256))
    for depth in grid["depths"]:
        for dim, classes in inputs:
            for width in grid["widths"]:
                spec = ModelSpec.of({"name": "mlp", "width": width, "depth": depth, "activation": grid.get("activation", "relu")},
                                    (dim,), classes)
                pricer = Pricer(cache.get(spec, progress), options)
                evals = 1 + bool(probe.get("also_trained", False))
                hvps = evals * (pricer.lanczos_products(1) + int(probe.get("trace_matvecs", 60)))
                steps = int(training.get("epochs", 1)) * (int(training.get("train_examples", 1000)) // int(training.get("batch_size", 128)))
                ps_seconds, ps_bytes = pricer.per_sample(min(noise, N))
                e.products["hvps"] += seeds * hvps
                e.products["gradients"] += seeds * steps
                e.products["per_sample_gradients"] += seeds * evals * noise
                B = int(training["batch_size"])
                e.cpu_seconds += seeds * (hvps * pricer.hvp_seconds(N, N) + steps * pricer.cost.gradient.seconds(B) + evals * ps_seconds)
                need = pricer.cost.param_bytes * 2 + max(ps_bytes, pricer.hvp_resident(N, N) + pricer.lanczos_bytes(1)
                                                         + pricer.hvp_transient(N), pricer.cost.gradient.bytes(int(training["batch_size"])))
                if need > worst[1]:
                    worst = (f"per-sample gradients of the width-{width} depth-{depth} MLP on {dim} inputs", need)
    return _finish(e, 0.0, {worst[0]: worst[1]}, options)


def _intrinsic_dim(params: Mapping[str, Any], shapes: Callable[[str], DataShape], cache: CostCache, options: PlanOptions,
                   progress: Callable[[str], None] | None) -> EntryEstimate:
    section = params["probes"]["intrinsic_dim"]
    e = EntryEstimate("intrinsic_dim", "intrinsic_dim", products={"gradients": 0})
    m = section.get("model") or {}
    if not m.get("enabled", False):
        return _finish(e, 0.0, {}, options)
    data = shapes(m["dataset"])
    pricer = Pricer(cache.get(ModelSpec.of(m["model"], data.input_shape, data.num_classes), progress), options)
    d_values, d = [], int(m.get("d_min", 1))
    while d <= int(m.get("d_max", d)):
        d_values.append(d)
        d = max(d + 1, int(d * float(m.get("factor", 2.0))))
    runs = len(section.get("seeds", [0])) * len(m.get("projections") or section.get("projections", ["dense"]))
    steps = int(m.get("epochs", 1)) * (int(m.get("train_examples", 1000)) // int(m.get("batch_size", 128)))
    g = runs * (len(d_values) + 1) * steps
    e.products["gradients"] = g
    B = int(m.get("batch_size", 128))
    projections = runs * steps * sum(d_values)  # two projection products per step, each reading P x d floats
    e.cpu_seconds = g * pricer.cost.gradient.seconds(B) + 2 * projections * pricer.P * F32 / cache.bandwidth
    dense = "dense" in (m.get("projections") or section.get("projections", []))
    phases = {"dense projection": pricer.P * max(d_values, default=0) * F32 if dense else 0.0,
              "gradient": pricer.cost.gradient.bytes(B)}
    resident = pricer.cost.param_bytes * 3 + data.bytes(int(m.get("train_examples", 1000)) + int(m.get("eval_examples", 1000)))
    return _finish(e, resident, phases, options)


# ------------------------------------------------------------------------------ the profile


def plan_profile(params: Mapping[str, Any], device_memory: float, options: PlanOptions | None = None,
                 cache: CostCache | None = None, progress: Callable[[str], None] | None = None) -> Plan:
    """Estimate every entry of ``params`` (a loaded profile) against ``device_memory`` bytes.

    Entries are named as in the ``dvc.yaml`` generated for ``params``. Networks are measured
    on this CPU the first time they are seen (``cache`` keeps them between calls).

    Raises:
        ValueError: A data set of unknown size, or ``device_memory`` not positive.
    """
    if not device_memory > 0:
        raise ValueError(f"device_memory must be > 0 bytes, got {device_memory!r}")
    options = options or PlanOptions()
    cache = cache or CostCache(None)
    seeds = list(params["seeds"])
    experiments = params["experiments"]
    shape_of: dict[str, DataShape] = {}

    def shapes(group_or_key: str) -> DataShape:
        key = experiments[group_or_key]["dataset"] if group_or_key in experiments else group_or_key
        if key not in shape_of:
            shape_of[key] = data_shape(params, key, options.root)
        return shape_of[key]

    def price(group: str, config: str) -> Pricer:
        data, model = shapes(group), experiments[group]["configs"][config]["model"]
        return Pricer(cache.get(ModelSpec.of(model, data.input_shape, data.num_classes), progress), options)

    entries = [EntryEstimate("validate", "validate")] + [EntryEstimate(f"prepare@{k}", "prepare") for k in params.get("datasets", {})]
    for group, spec in experiments.items():
        for config, run in (spec.get("configs") or {}).items():
            pricer = price(group, config)
            entries.extend(_train(f"train_{group}@{config}-{seed}", run, shapes(group), pricer, options) for seed in seeds_of(spec, seeds))
    for group, c in (params.get("curvature") or {}).items():
        for config, run in (experiments[group].get("configs") or {}).items():
            entries.append(_measure(f"measure_{group}@{config}", run, c, len(seeds_of(experiments[group], seeds)), shapes(group),
                                    price(group, config), options))
    for group, section in (params.get("probes") or {}).items():
        if group in ("intrinsic_dim", "sde"):
            continue
        entries.extend(_probe(f"probe_{group}@{config}", section, config, len(seeds_of(experiments[group], seeds)), shapes(group),
                              price(group, config), options)
                       for config in section.get("configs", []))
    probes = params.get("probes") or {}
    if "intrinsic_dim" in probes:
        entries.append(_intrinsic_dim(params, shapes, cache, options, progress))
    if "sde" in probes:
        entries.append(EntryEstimate("sde", "sde"))
    if "bounds" in params:
        entries.append(_bounds(params, shapes, price, options))
    if "escape" in params:
        from landscape.pipeline.escape import SOURCE_EXPERIMENT

        entries.append(_escape(params, shapes(SOURCE_EXPERIMENT), price(SOURCE_EXPERIMENT, params["escape"]["config"]), options))
    if "phi" in params:
        entries.append(_phi(params, shapes, cache, options, progress))
    if "class_structure" in params:
        entries.append(_class_structure(params, shapes, price, options))
    entries += [EntryEstimate(name, name) for name in ("optimizers", "spectra_scaling", "hypotheses", "report") if name in params]
    return Plan(entries, float(device_memory), options)


def _gib(x: float) -> str:
    return f"{x / GiB:8.2f}"


def format_plan(plan: Plan) -> str:
    """The plan as text: one line per entry, then per stage, then the total."""
    lines = [f"{'entry':<44} {'peak GiB':>8} {'GPU h':>8}  products / peak part"]
    for e in plan.entries:
        if e.stage in CPU_ONLY:
            lines.append(f"{e.entry:<44} {'-':>8} {'-':>8}  CPU only")
            continue
        prods = ", ".join(f"{k} {v:,.0f}" for k, v in e.products.items() if v)
        flag = "  DOES NOT FIT" if e.peak_bytes > plan.device_memory else ""
        lines.append(f"{e.entry:<44} {_gib(e.peak_bytes)} {e.gpu_seconds / 3600:8.2f}  {prods}; peak: {e.peak_part}{flag}")
    lines += ["", f"{'stage':<20} {'entries':>7} {'max peak GiB':>12} {'GPU h':>9}"]
    for stage, s in plan.by_stage().items():
        if stage in CPU_ONLY:
            continue
        lines.append(f"{stage:<20} {s['entries']:>7} {s['peak_bytes'] / GiB:>12.2f} {s['gpu_hours']:>9.2f}")
    lines.append(f"total: {plan.gpu_hours:,.2f} GPU-hours on one device with {format_bytes(plan.device_memory)} "
                 f"(GPU time = CPU time / {plan.options.gpu_throughput:g}; {plan.cpu_hours:,.2f} single-thread CPU hours)")
    return "\n".join(lines)


def format_bytes(n: float) -> str:
    """``n`` bytes as GiB with one decimal, or MiB below 1 GiB (``"1.5 GiB"``, ``"12.3 MiB"``)."""
    return f"{n / GiB:.1f} GiB" if n >= GiB else f"{n / 2**20:.1f} MiB"


def main(argv: list[str] | None = None, prog: str = "python -m landscape.pipeline.plan") -> int:
    """Print the plan of ``--profile``; exit code 0, 1 (an entry does not fit) or 2 (bad input).

    Args:
        argv: the arguments (``sys.argv[1:]`` when None).
        prog: the name errors and ``--help`` print (``landscape plan`` from the CLI).
    """
    parser = argparse.ArgumentParser(prog=prog, description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="params.yaml", help="params file or profile (default: %(default)s)")
    parser.add_argument("--device-memory", default="80GiB", help="memory of one device, e.g. 80GiB, 141GB (default: %(default)s)")
    parser.add_argument("--gpu-throughput", type=float, default=GPU_THROUGHPUT,
                        help="GPU time = measured CPU time / this ratio (default: %(default)s, an assumption)")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda", help="plan for a GPU (default) or this CPU")
    parser.add_argument("--costs", default=".dvc/tmp/plan_costs.json", help="cache of measured unit costs (default: %(default)s)")
    parser.add_argument("--json", default=None, help="also write the plan as JSON here")
    args = parser.parse_args(argv)
    import torch

    from landscape.pipeline.params import load_params

    torch.set_num_threads(1)  # unit prices are single-thread CPU times, as every stage runs
    try:
        memory = parse_bytes(args.device_memory)
        if not args.gpu_throughput > 0:
            raise ValueError(f"--gpu-throughput must be > 0, got {args.gpu_throughput}")
        params = load_params(args.profile)
        plan = plan_profile(params, memory, PlanOptions(args.device, args.gpu_throughput, Path(".")), CostCache(args.costs),
                            progress=lambda msg: print(msg, file=sys.stderr, flush=True))
    except (ValueError, FileNotFoundError) as exc:
        print(f"{prog}: error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    print(format_plan(plan))
    if args.json:
        from landscape.io import write_json

        write_json(args.json, {"device_memory": memory, "gpu_throughput": args.gpu_throughput, "gpu_hours": plan.gpu_hours,
                               "cpu_hours": plan.cpu_hours,
                               "by_stage": plan.by_stage(), "entries": [e.to_dict() for e in plan.entries]})
    too_big = plan.too_big()
    if too_big:
        for e in too_big:
            print(f"{prog}: error: {e.entry} needs about {format_bytes(e.peak_bytes)} of device memory (peak: {e.peak_part}), "
                  f"more than the stated {format_bytes(memory)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
