"""Measured per-product costs of a model on this CPU: the planner's unit prices.

For one model (architecture, options, input shape, classes) three operations are timed and
their peak memory measured, each at two small batch sizes ``b1 < b2``, in a forked child
process of a single-threaded parent (``fork`` keeps imports out of the measurement):

* ``forward``: logits of a batch without a graph (evaluation passes);
* ``gradient``: forward and backward of the batch-mean cross-entropy (one SGD step's
  products; the optimizer's state is added by the planner from the parameter count);
* ``hvp``: a :class:`~landscape.curvature.HessianOperator` over the batch (its kept
  gradient graph, ``rev_rev_kept``) and one Hessian-vector product, with attention on its
  math path (timm's ``fused_attn`` off: the fused kernels have no double backward).

Memory is the rise of the child's peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs`` before the operation) over its resident set just before it;
everything the operation allocates counts, model and data excluded (the planner adds those
from their sizes). It is measured in a child of its own whose glibc malloc hands freed blocks
back at once (:func:`return_freed_memory`; the timed child keeps the defaults, under which a
freed block is reused), so the figure is what the operation holds at its peak, as a GPU's
``max_memory_allocated`` counts it, not what the allocator keeps for reuse: with glibc's
defaults the same measurement of one training entry varied by a fifth between runs. Time is
the best of ``repeats`` calls. Both are fitted as ``a + b * batch`` from the two batch sizes.

Models above ``max_params`` parameters whose size is set by ``width`` (the MLP grid's width
4096) are measured at a reduced width and scaled to the full parameter count P: time and the
fixed memory term by ``P / P_measured`` (work and per-parameter buffers grow with P), the
per-example memory by ``sqrt(P / P_measured)`` (activations grow with the width, P with
its square). The scale is recorded.
"""

from __future__ import annotations

import functools
import json
import math
import os
import pickle
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["ModelSpec", "OpCost", "ModelCost", "measure_model", "matvec_bandwidth", "peak_rss_rise", "return_freed_memory", "CostCache",
           "BATCHES"]

#: The two batch sizes of every measurement.
BATCHES = (8, 64)
#: Models above this many parameters are measured at a reduced width (when they have one).
MAX_PARAMS = 30_000_000


@dataclass(frozen=True)
class ModelSpec:
    """A network as a config builds it: registered name, options, input shape (without the
    batch axis) and number of classes (the LM's vocabulary)."""

    name: str
    options: tuple[tuple[str, Any], ...]
    input_shape: tuple[int, ...]
    num_classes: int

    @classmethod
    def of(cls, model: Mapping[str, Any], input_shape: tuple[int, ...], num_classes: int) -> ModelSpec:
        """From a config's ``model`` mapping (lists become tuples, so the spec is hashable)."""
        opts = tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in model.items() if k != "name"))
        return cls(str(model["name"]), opts, tuple(int(s) for s in input_shape), int(num_classes))

    @property
    def key(self) -> str:
        return json.dumps([self.name, self.options, self.input_shape, self.num_classes], default=str)

    @property
    def input_numel(self) -> int:
        return math.prod(self.input_shape)

    def build(self, width: int | None = None, meta: bool = False) -> nn.Module:
        """The model (float32, CPU; on the meta device with ``meta``: shapes only), optionally at ``width``."""
        from landscape.models import build_model
        from landscape.pipeline.train import input_kwargs

        model = dict(self.options, name=self.name)
        if width is not None:
            model["width"] = width
        kwargs = input_kwargs({k: list(v) if isinstance(v, tuple) else v for k, v in model.items()}, self.input_shape)
        if meta:
            with torch.device("meta"):
                return build_model(self.name, num_classes=self.num_classes, seed=0, **kwargs)
        return build_model(self.name, num_classes=self.num_classes, seed=0, **kwargs)

    def example_batch(self, batch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Random inputs of the right kind (token ids for the LM) and labels."""
        gen = torch.Generator().manual_seed(0)
        if self.name == "lm_transformer":
            x = torch.randint(0, self.num_classes, (batch, *self.input_shape), generator=gen).float()
        else:
            x = torch.randn((batch, *self.input_shape), generator=gen)
        return x, torch.randint(0, self.num_classes, (batch,), generator=gen)


@dataclass(frozen=True)
class OpCost:
    """``seconds(b) = s0 + s1 b`` and ``bytes(b) = m0 + m1 b`` of one operation on a batch of b.

    ``graph1``: bytes per example of the kept gradient graph (HVP only; 0 otherwise).
    """

    s0: float
    s1: float
    m0: float
    m1: float
    graph1: float = 0.0

    def seconds(self, batch: float) -> float:
        return max(self.s0 + self.s1 * batch, self.s1 * batch, 0.0)

    def bytes(self, batch: float) -> float:
        return max(self.m0 + self.m1 * batch, self.m1 * batch, 0.0)


@dataclass(frozen=True)
class ModelCost:
    """Measured unit costs of one :class:`ModelSpec` at its full size."""

    key: str
    num_params: int
    num_modules: int  # modules with parameters of their own (per-layer curvature runs one each)
    measured_params: int  # parameter count of the network actually measured
    forward: OpCost
    gradient: OpCost
    hvp: OpCost

    @property
    def param_bytes(self) -> int:
        return 4 * self.num_params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ModelCost:
        return cls(**{**d, **{k: OpCost(**d[k]) for k in ("forward", "gradient", "hvp")}})


# ---------------------------------------------------------------------------------- measuring


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def peak_rss_rise(fn: Callable[[], Any]) -> tuple[Any, int]:
    """``(fn(), bytes)``: the rise of this process's peak resident set while ``fn`` runs.

    Resets the peak (``VmHWM``) through ``/proc/self/clear_refs`` (Linux >= 4.0) first.
    """
    Path("/proc/self/clear_refs").write_text("5")
    before = _status_kib("VmRSS")
    out = fn()
    return out, 1024 * max(0, _status_kib("VmHWM") - before)


# mallopt(3) parameters of glibc
_M_TRIM_THRESHOLD, _M_TOP_PAD, _M_MMAP_THRESHOLD = -1, -2, -3


def return_freed_memory(mmap_threshold: int = 64 * 1024) -> bool:
    """Make glibc's malloc in this process give freed memory back to the OS at once.

    Blocks of ``mmap_threshold`` bytes or more are mapped on their own and unmapped when freed,
    and the heap keeps no trim threshold or top pad, so the resident set follows the bytes held
    (the environment's ``MALLOC_MMAP_THRESHOLD_=65536 MALLOC_TRIM_THRESHOLD_=0
    MALLOC_TOP_PAD_=0`` do the same from a process's start). Returns False, changing nothing,
    where the C library is not glibc.
    """
    import ctypes
    import ctypes.util
    import platform

    if platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((_M_MMAP_THRESHOLD, mmap_threshold), (_M_TRIM_THRESHOLD, 0), (_M_TOP_PAD, 0))
    return all(libc.mallopt(param, value) == 1 for param, value in settings)


def _in_fork(fn: Callable[[], Any]) -> Any:
    """``fn()`` computed in a forked child (its result pickled back)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # child
        os.close(read)
        try:
            payload = pickle.dumps((True, fn()))
        except BaseException as exc:  # noqa: BLE001  (reported to the parent, which raises)
            payload = pickle.dumps((False, f"{type(exc).__name__}: {exc}"))
        with os.fdopen(write, "wb") as fh:
            fh.write(payload)
        os._exit(0)
    os.close(write)
    with os.fdopen(read, "rb") as fh:
        data = fh.read()
    os.waitpid(pid, 0)
    ok, value = pickle.loads(data)
    if not ok:
        raise RuntimeError(f"cost measurement failed in the child process: {value}")
    return value


def _one(spec: ModelSpec, width: int | None, op: str, batch: int, repeats: int) -> tuple[float, int, int]:
    """(best seconds, peak bytes, kept-graph bytes) of ``op`` at ``batch``, run in a fork.

    With ``repeats`` calls: timed, glibc's malloc at its defaults (a freed block is reused, as
    in a long run), and the peak taken over them. With ``repeats=0``: one call, untimed, after
    :func:`return_freed_memory` from the child's start, so the peak counts the bytes held.
    """
    from landscape.curvature.operators import HessianOperator

    held = repeats == 0
    if held:
        return_freed_memory()
    torch.set_num_threads(1)
    model = spec.build(width).eval()
    x, y = spec.example_batch(batch)
    best, graph = math.inf, 0

    def work() -> None:
        nonlocal best, graph
        if op == "hvp":
            for module in model.modules():  # curvature takes attention's math path (fused kernels have no double backward)
                if hasattr(module, "fused_attn"):
                    setattr(module, "fused_attn", False)  # noqa: B010
            hop = HessianOperator(model, F.cross_entropy, [(x, y)])
            graph = int(hop.report.graph_bytes or 0)
            v = torch.randn(hop.shape[0])
        for _ in range(max(1, repeats)):
            started = time.perf_counter()
            if op == "forward":
                with torch.no_grad():
                    model(x)
            elif op == "gradient":
                model.zero_grad(set_to_none=True)
                F.cross_entropy(model(x), y).backward()
            else:
                hop @ v
            best = min(best, time.perf_counter() - started)

    _, peak = peak_rss_rise(work)
    return (math.nan if held else best), peak, graph


def measure_model(spec: ModelSpec, batches: tuple[int, int] = BATCHES, repeats: int = 2, max_params: int = MAX_PARAMS) -> ModelCost:
    """Measure forward, gradient and HVP costs of ``spec`` on this CPU (module docstring)."""
    meta = spec.build(meta=True)
    num_params = sum(p.numel() for p in meta.parameters())
    num_modules = sum(1 for m in meta.modules() if any(True for _ in m.parameters(recurse=False)))
    width = None
    options = dict(spec.options)
    if num_params > max_params and "width" in options:
        width = max(4, int(options["width"] * math.sqrt(max_params / num_params)))
    measured = num_params if width is None else sum(p.numel() for p in spec.build(width, meta=True).parameters())
    scale = num_params / measured
    costs = {}
    for op in ("forward", "gradient", "hvp"):
        t1, t2 = (_in_fork(functools.partial(_one, spec, width, op, b, repeats))[0] for b in batches)
        (_, m1, _), (_, m2, g2) = (_in_fork(functools.partial(_one, spec, width, op, b, 0)) for b in batches)
        db = batches[1] - batches[0]
        s1 = max(0.0, (t2 - t1) / db)
        mem1 = max(0.0, (m2 - m1) / db)
        costs[op] = OpCost(
            s0=(t1 - s1 * batches[0]) * scale, s1=s1 * scale,
            m0=(m1 - mem1 * batches[0]) * scale, m1=mem1 * math.sqrt(scale),
            graph1=(g2 / batches[1]) * math.sqrt(scale),
        )
    return ModelCost(spec.key, int(num_params), int(num_modules), int(measured), costs["forward"], costs["gradient"], costs["hvp"])


def matvec_bandwidth(rows: int = 4096, cols: int = 8192, repeats: int = 5) -> float:
    """Bytes of a dense float32 matrix read per second by a matrix-vector product on this CPU
    (one thread): the price of the dense intrinsic-dimension projection, which is memory-bound."""
    torch.set_num_threads(1)
    A, z = torch.randn(rows, cols), torch.randn(cols)
    best = math.inf
    for _ in range(repeats):
        started = time.perf_counter()
        A @ z
        best = min(best, time.perf_counter() - started)
    return rows * cols * 4 / best


class CostCache:
    """Measured :class:`ModelCost` by spec key, kept in a JSON file between planner runs
    (with the torch version, machine and way of measuring it was measured with; another
    stamp re-measures)."""

    def __init__(self, path: str | os.PathLike[str] | None) -> None:
        self.path = Path(path) if path is not None else None
        self.stamp = {"torch": torch.__version__, "machine": os.uname().machine, "batches": list(BATCHES),
                      "memory": "bytes held: freed blocks returned"}
        self.costs: dict[str, ModelCost] = {}
        self._bandwidth: float | None = None
        if self.path is not None and self.path.is_file():
            stored = json.loads(self.path.read_text())
            if stored.get("stamp") == self.stamp:
                self.costs = {k: ModelCost.from_dict(v) for k, v in stored["costs"].items()}
                self._bandwidth = stored.get("matvec_bandwidth")

    @property
    def bandwidth(self) -> float:
        """:func:`matvec_bandwidth`, measured once."""
        if self._bandwidth is None:
            self._bandwidth = matvec_bandwidth()
            self.save()
        return float(self._bandwidth)

    def get(self, spec: ModelSpec, progress: Callable[[str], None] | None = None) -> ModelCost:
        if spec.key not in self.costs:
            if progress is not None:
                progress(f"measuring {spec.name} {dict(spec.options)} on inputs {spec.input_shape} ...")
            self.costs[spec.key] = measure_model(spec)
            self.save()
        return self.costs[spec.key]

    def save(self) -> None:
        if self.path is None:
            return
        from landscape.io import write_json

        write_json(self.path, {"stamp": self.stamp, "matvec_bandwidth": self._bandwidth,
                               "costs": {k: v.to_dict() for k, v in self.costs.items()}})
