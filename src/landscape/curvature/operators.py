"""Hessian and generalized Gauss-Newton operators of a model's loss over a data set.

Hessian-vector products use Pearlmutter's exact trick (B. A. Pearlmutter, "Fast exact
multiplication by the Hessian", Neural Computation 1994): a second differentiation of the
gradient along a direction, either reverse-over-reverse (double backward through a kept
or recomputed gradient graph) or forward-over-reverse (``torch.func.jvp`` of
``torch.func.grad``). The Gauss-Newton operator ``J^T H_out J`` follows N. N. Schraudolph,
"Fast curvature matrix-vector products for second-order gradient descent", Neural
Computation 2002.

Every product goes through ``torch.func.functional_call`` on a snapshot of the model's
parameters and buffers taken at construction, so the operator is a fixed matrix (the
curvature at that point) and the caller's model is never modified: its parameters,
buffers (BatchNorm running statistics), train/eval flags and ``.grad`` fields are the
same afterwards.

Traps this module is tested against (torch 2.14.1): ``torch.func.hessian`` and
``jacrev(jacrev(f))`` are silently wrong through LayerNorm and through batch-statistics
BatchNorm, so no path here uses them; every ``hvp_mode`` is compared with dense
double-backward Hessians on such models in ``tests/curvature/test_operators.py``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from landscape.curvature.linop import SymmetricOperator
from landscape.curvature.losses import (
    REDUCTIONS,
    BatchWeights,
    Reduction,
    closed_form_output_hessian,
    output_hvp_closed_form,
    resolve_reduction,
)
from landscape.functional import (
    POINT_BN_MODES,
    Batch,
    LossFn,
    check_bn_mode,
    curvature_mode,
    flatten_tensors,
    has_batchnorm,
    has_dropout,
    iter_batches,
    select_parameter_names,
    unflatten_vector,
)
from landscape.io import to_jsonable

__all__ = [
    "HVP_MODES",
    "OUTPUT_HESSIAN_MODES",
    "DEFAULT_GRAPH_BUDGET_BYTES",
    "REDUCTIONS",
    "OperatorReport",
    "HessianOperator",
    "GGNOperator",
]


HVP_MODES: tuple[str, ...] = ("auto", "rev_rev_kept", "rev_rev", "fwd_rev")
"""Hessian-vector product variants; see :class:`HessianOperator`."""

OUTPUT_HESSIAN_MODES: tuple[str, ...] = ("auto", "autodiff")
"""How :class:`GGNOperator` multiplies by the loss Hessian with respect to the outputs."""

DEFAULT_GRAPH_BUDGET_BYTES: int = 2 * 1024**3
"""Default memory budget (bytes of saved tensors) for keeping the gradient graph (2 GiB)."""

DEFAULT_BLOCK_SIZE: int = 16
"""Default number of vectors multiplied in one vectorised pass."""


# --------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class OperatorReport:
    """What a curvature operator measures and how.

    Attributes:
        kind: "hessian" or "ggn".
        num_params: P, the operator's dimension.
        num_examples: examples in the data (all ranks for a distributed operator).
        num_batches: batches in the data (this rank's for a distributed operator).
        bn_mode: BatchNorm policy ("eval" or "batch").
        has_batchnorm: the model has BatchNorm layers.
        has_dropout: the model has dropout layers (always disabled for the operator).
        batch_order_dependent: True when bn_mode="batch" and BatchNorm exists, so the
            loss (and the operator) depends on how examples are grouped into batches.
        product_mode: "rev_rev_kept", "rev_rev" or "fwd_rev" for the Hessian (resolved
            from "auto"), "jvp_vjp" for the GGN.
        requested_mode: the mode asked for.
        graph_bytes: bytes of tensors saved by the kept gradient graphs (None when the
            graph is not kept or not measured).
        graph_budget_bytes: the budget "auto" compared ``graph_bytes`` against.
        output_hessian: for the GGN, "closed_form_cross_entropy", "closed_form_mse" or
            "autodiff"; None for the Hessian.
        dtype: operator dtype.
        device: operator device.
        param_names: the parameters spanned, in flattening order.
        world_size: number of processes (1 unless distributed).
    """

    kind: str
    num_params: int
    num_examples: int
    num_batches: int
    bn_mode: str
    has_batchnorm: bool
    has_dropout: bool
    batch_order_dependent: bool
    product_mode: str
    requested_mode: str
    graph_bytes: int | None
    graph_budget_bytes: int | None
    output_hessian: str | None
    dtype: str
    device: str
    param_names: tuple[str, ...]
    world_size: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {f.name: to_jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}


# --------------------------------------------------------------------------------------
# Engines: weighted sums over batches, shared with the distributed operator
# --------------------------------------------------------------------------------------


class _Engine:
    """Model snapshot, data and the per-batch sum ``sum_b w_b M_b V`` of a curvature matrix.

    ``M_b`` is the curvature of batch b's loss ``loss_fn(model(x_b), y_b)`` and ``w_b`` its
    weight in the loss over the data set (:class:`~landscape.curvature.losses.BatchWeights`:
    ``n_b`` for a mean loss, 1 for a summed one); dividing the sum by ``normaliser``
    (``sum_b w_b`` for a mean, 1 for a sum) gives the curvature of the loss of all batches
    concatenated. ``weighted=False`` (per-example uses) skips the reduction and leaves the
    weighted sums unavailable.
    """

    kind = "base"
    mode: str  # product mode in use (set by the subclass)
    requested_mode: str

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[Batch],
        bn_mode: str,
        params: Sequence[str] | None,
        block_size: int,
        reduction: str | None = None,
        weighted: bool = True,
    ):
        check_bn_mode(bn_mode, allowed=POINT_BN_MODES)
        if not callable(loss_fn):
            raise ValueError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        if isinstance(data, (Tensor, str, bytes)) or not isinstance(data, Iterable):
            raise ValueError(f"data must be an iterable of (inputs, targets) batches, got {type(data).__name__}")
        if not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f"block_size must be a positive int, got {block_size!r}")
        self.model = model
        self.loss_fn = loss_fn
        self.data = data
        self.bn_mode = bn_mode
        self.block_size = block_size
        self.names = select_parameter_names(model, params)
        named = dict(model.named_parameters())
        first = named[self.names[0]]
        self.dtype = first.dtype
        self.device = first.device
        for n in self.names:
            if named[n].dtype != self.dtype or named[n].device != self.device:
                raise ValueError(
                    f"all selected parameters must share one dtype and device; {n!r} is "
                    f"{named[n].dtype} on {named[n].device}, {self.names[0]!r} is {self.dtype} on {self.device}"
                )
        # Snapshot: the operator is the curvature at the parameters seen at construction.
        selected = set(self.names)
        self.theta = {n: named[n].detach().clone() for n in self.names}
        self.constants = {n: p.detach().clone() for n, p in model.named_parameters() if n not in selected}
        self.constants.update({n: b.detach().clone() for n, b in model.named_buffers()})
        self.shapes = [self.theta[n].shape for n in self.names]
        self.num_params = sum(t.numel() for t in self.theta.values())
        self.has_batchnorm = has_batchnorm(model)
        self.has_dropout = has_dropout(model)
        # resolved here, after the callable check: a wrong loss_fn is reported as such
        self.reduction = resolve_reduction(loss_fn, reduction) if weighted else None
        self._weighting = BatchWeights(loss_fn, self.reduction) if self.reduction is not None else None
        self.weights: list[int | float] = []  # w_b of every batch, from the construction pass
        self.normaliser: int | float = 1
        self.num_examples = 0
        self.num_batches = 0

    # helpers ------------------------------------------------------------------------
    def batches(self) -> Iterator[tuple[Any, Any, int]]:
        return iter_batches(self.data, self.device, self.dtype)

    def forward(self, theta: Mapping[str, Tensor], inputs: Any) -> Any:
        return functional_call(self.model, {**self.constants, **theta}, (inputs,))

    def loss(self, theta: Mapping[str, Tensor], inputs: Any, targets: Any) -> Tensor:
        return self.loss_fn(self.forward(theta, inputs), targets)

    def split(self, V: Tensor) -> dict[str, Tensor]:
        """(P, k) block -> {name: (k, *shape)}."""
        return dict(zip(self.names, unflatten_vector(V, self.shapes), strict=True))

    def join(self, tensors: Mapping[str, Tensor] | Sequence[Tensor]) -> Tensor:
        """{name: (k, *shape)} -> (P, k) block."""
        seq = [tensors[n] for n in self.names] if isinstance(tensors, Mapping) else list(tensors)
        return flatten_tensors(seq, batch_dims=1).T

    def _weight(self, targets: Any, n: int) -> int | float:
        if self._weighting is None:
            raise RuntimeError("this engine was built without a reduction; weighted sums need one")
        return self._weighting.weight(targets, n)

    def _finish_count(self, n_total: int, weights: list[int | float]) -> None:
        self.num_examples, self.num_batches, self.weights = n_total, len(weights), weights
        if self._weighting is not None:
            self.normaliser = self._weighting.normaliser(weights)

    def _count_pass(self) -> None:
        n_total, weights = 0, []
        for _, targets, n in self.batches():
            n_total += n
            weights.append(self._weight(targets, n) if self._weighting is not None else n)
        self._finish_count(n_total, weights)

    def _check_count(self, n_total: int, n_batches: int) -> None:
        if n_total != self.num_examples or n_batches != self.num_batches:
            raise RuntimeError(
                f"the data yielded {n_total} examples in this pass but {self.num_examples} at construction ({n_batches} "
                f"batches now, {self.num_batches} then); the operator needs the same data on every pass"
            )

    def weighted_batches(self) -> Iterator[tuple[Any, Any, int | float]]:
        """``(inputs, targets, w_b)`` of every batch with a nonzero weight, checking on the way
        that the data are those seen at construction (same batch and example counts)."""
        n_total, i = 0, 0
        for inputs, targets, n in self.batches():
            if i >= self.num_batches:
                self._check_count(n_total + n, i + 1)
            w = self.weights[i]
            n_total, i = n_total + n, i + 1
            if w != 0:  # a batch whose targets are all ignored adds no loss term
                yield inputs, targets, w
        self._check_count(n_total, i)

    def weighted_sum(self, V: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @torch.enable_grad()
    def gradient_sum(self) -> tuple[Tensor, Tensor]:
        """``(sum_b w_b g_b, sum_b w_b L_b)``: weighted gradient and loss sums."""
        g_sum = torch.zeros(self.num_params, dtype=self.dtype, device=self.device)
        l_sum = torch.zeros((), dtype=self.dtype, device=self.device)
        with curvature_mode(self.model, self.bn_mode):
            for inputs, targets, w in self.weighted_batches():
                leaves = {k: t.detach().requires_grad_(True) for k, t in self.theta.items()}
                loss = self.loss(leaves, inputs, targets)
                grads = torch.autograd.grad(loss, [leaves[k] for k in self.names])
                g_sum += _scaled(w, flatten_tensors([g.detach() for g in grads]))
                l_sum += _scaled(w, loss.detach())
        return g_sum, l_sum


def _scaled(w: int | float, t: Tensor) -> Tensor:
    """``w * t``, skipped for ``w == 1`` (a sum loss's weight: one pass over P less)."""
    return t if w == 1 else w * t


class _HessianEngine(_Engine):
    kind = "hessian"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[Batch],
        bn_mode: str = "eval",
        params: Sequence[str] | None = None,
        hvp_mode: str = "auto",
        graph_budget_bytes: int | None = DEFAULT_GRAPH_BUDGET_BYTES,
        block_size: int = DEFAULT_BLOCK_SIZE,
        vectorize: bool | None = None,
        reduction: str | None = None,
    ):
        if hvp_mode not in HVP_MODES:
            raise ValueError(f"unknown hvp_mode {hvp_mode!r}; allowed values are {list(HVP_MODES)}")
        if graph_budget_bytes is not None and (not isinstance(graph_budget_bytes, int) or graph_budget_bytes < 0):
            raise ValueError(f"graph_budget_bytes must be a non-negative int or None, got {graph_budget_bytes!r}")
        super().__init__(model, loss_fn, data, bn_mode, params, block_size, reduction)
        self.requested_mode = hvp_mode
        self.vectorize = _resolve_vectorize(vectorize, self.device)
        self.graph_budget_bytes = graph_budget_bytes
        self.graph_bytes: int | None = None
        self._kept: list[tuple[int | float, list[Tensor], list[Tensor]]] = []
        self._sums: tuple[Tensor, Tensor] | None = None  # gradient and loss sums from the kept pass
        if hvp_mode in ("auto", "rev_rev_kept"):
            budget = graph_budget_bytes if hvp_mode == "auto" else None
            kept = self._build_kept_graphs(budget)
            self.mode = "rev_rev_kept" if kept else "rev_rev"
        else:
            self._count_pass()
            self.mode = hvp_mode

    # graph building -------------------------------------------------------------------
    def _gradient_graph(self, inputs: Any, targets: Any, with_loss: bool = False) -> tuple[Any, ...]:
        leaves = [self.theta[n].detach().requires_grad_(True) for n in self.names]
        loss = self.loss(dict(zip(self.names, leaves, strict=True)), inputs, targets)
        grads = list(torch.autograd.grad(loss, leaves, create_graph=True))
        return (leaves, grads, loss) if with_loss else (leaves, grads)

    @torch.enable_grad()
    def _build_kept_graphs(self, budget: int | None) -> bool:
        """One pass: count examples, weigh batches and keep each batch's gradient graph while
        within budget."""
        storages: dict[int, int] = {}

        def pack(t: Tensor) -> Tensor:
            try:
                s = t.untyped_storage()
                storages[s.data_ptr()] = s.nbytes()
            except (RuntimeError, NotImplementedError):  # tensors without a plain storage
                storages[-id(t)] = t.numel() * t.element_size()
            return t

        keep = True
        n_total, weights = 0, []
        g_sum = torch.zeros(self.num_params, dtype=self.dtype, device=self.device)
        l_sum = torch.zeros((), dtype=self.dtype, device=self.device)
        with curvature_mode(self.model, self.bn_mode):
            for inputs, targets, n in self.batches():
                n_total += n
                w = self._weight(targets, n)
                weights.append(w)
                if not keep or w == 0:
                    continue
                with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                    leaves, grads, loss = self._gradient_graph(inputs, targets, with_loss=True)
                self._kept.append((w, leaves, grads))
                g_sum += _scaled(w, flatten_tensors([g.detach() for g in grads]))
                l_sum += _scaled(w, loss.detach())
                if budget is not None and sum(storages.values()) > budget:
                    keep = False
                    self._kept.clear()
        self._finish_count(n_total, weights)
        if keep:
            self.graph_bytes = sum(storages.values())
            self._sums = (g_sum, l_sum)
        return keep

    def gradient_sum(self) -> tuple[Tensor, Tensor]:
        """As :meth:`_Engine.gradient_sum`; free with kept graphs (computed when they were built)."""
        if self._sums is not None:
            return self._sums[0].clone(), self._sums[1].clone()
        return super().gradient_sum()

    # products -------------------------------------------------------------------------
    def _graph_products(self, leaves: list[Tensor], grads: list[Tensor], V: Tensor, retain_last: bool) -> Tensor:
        """H_b V for a (P, k) block by double backward through a gradient graph."""
        k = V.shape[1]
        # H V = sum_i J_{g_i}^T v_i over gradient blocks g_i (H is symmetric). A block that
        # does not depend on the parameters (loss linear in them) has no graph and
        # contributes nothing, so it is left out of the outputs.
        live = [i for i, g in enumerate(grads) if g.requires_grad]
        if not live:
            return torch.zeros_like(V)
        grads = [grads[i] for i in live]
        out = []
        for start in range(0, k, self.block_size):
            block = V[:, start : start + self.block_size]
            kb = block.shape[1]
            last = start + self.block_size >= k
            if self.vectorize and kb > 1:
                block_parts = unflatten_vector(block, self.shapes)
                raw_parts = torch.autograd.grad(
                    grads,
                    leaves,
                    grad_outputs=[block_parts[i] for i in live],
                    retain_graph=retain_last or not last,
                    is_grads_batched=True,
                    allow_unused=True,
                )
                parts = [torch.zeros_like(p).expand(kb, *p.shape) if h is None else h for h, p in zip(raw_parts, leaves, strict=True)]
                out.append(self.join(parts))
            else:
                for j in range(kb):
                    parts_j = unflatten_vector(block[:, j], self.shapes)
                    vj = [parts_j[i] for i in live]
                    raw_hv = torch.autograd.grad(
                        grads, leaves, grad_outputs=vj, retain_graph=retain_last or not (last and j == kb - 1), allow_unused=True
                    )
                    hv = [torch.zeros_like(p) if h is None else h for h, p in zip(raw_hv, leaves, strict=True)]
                    out.append(flatten_tensors(hv).unsqueeze(1))
        # One piece (a single vector): no concatenation copy; every pass over a P-vector
        # costs ~10% of a product on CPU at P ~ 1e7 (bench/curvature.py).
        return (out[0] if len(out) == 1 else torch.cat(out, dim=1)).detach()

    def _fwd_rev_products(self, inputs: Any, targets: Any, V: Tensor) -> Tensor:
        """H_b V by forward-over-reverse: jvp of torch.func.grad, vmapped over columns."""
        if isinstance(targets, Tensor) and targets.is_floating_point():
            # Floating targets enter as primals with a materialised zero tangent: with the
            # implicit (ZeroTensor) tangent, forward-mode AD of mse_loss's backward fails
            # in torch 2.14 ("ZeroTensors are immutable").
            grad_fn2 = grad(lambda th, yy: self.loss(th, inputs, yy))
            zero = torch.zeros_like(targets)

            def hvp(tangent: dict[str, Tensor]) -> dict[str, Tensor]:
                return jvp(grad_fn2, (self.theta, targets), (tangent, zero))[1]

        else:
            grad_fn = grad(lambda th: self.loss(th, inputs, targets))

            def hvp(tangent: dict[str, Tensor]) -> dict[str, Tensor]:
                return jvp(grad_fn, (self.theta,), (tangent,))[1]

        k = V.shape[1]
        out = []
        for start in range(0, k, self.block_size):
            block = V[:, start : start + self.block_size]
            kb = block.shape[1]
            if self.vectorize and kb > 1:
                out.append(self.join(vmap(hvp)(self.split(block))))
            else:
                for j in range(kb):
                    tangent = dict(zip(self.names, unflatten_vector(block[:, j], self.shapes), strict=True))
                    hv = hvp(tangent)
                    out.append(flatten_tensors([hv[n] for n in self.names]).unsqueeze(1))
        return torch.cat(out, dim=1)

    @torch.enable_grad()
    def weighted_sum(self, V: Tensor) -> Tensor:
        if self.mode == "rev_rev_kept" and len(self._kept) == 1:  # one batch: scale in place, no accumulator
            w, leaves, grads = self._kept[0]
            out = self._graph_products(leaves, grads, V, retain_last=True)
            return out if w == 1 else out.mul_(w)
        acc = torch.zeros_like(V)
        if self.mode == "rev_rev_kept":
            for w, leaves, grads in self._kept:
                acc += _scaled(w, self._graph_products(leaves, grads, V, retain_last=True))
            return acc
        with curvature_mode(self.model, self.bn_mode):
            for inputs, targets, w in self.weighted_batches():
                if self.mode == "rev_rev":
                    leaves, grads = self._gradient_graph(inputs, targets)
                    acc += _scaled(w, self._graph_products(leaves, grads, V, retain_last=False))
                else:
                    acc += _scaled(w, self._fwd_rev_products(inputs, targets, V))
        return acc


def _resolve_vectorize(vectorize: bool | None, device: torch.device) -> bool:
    """None -> vectorise on accelerators only: on CPU a loop over the block's columns
    (sharing one gradient graph) measured 1.3-1.6x faster per vector than
    ``is_grads_batched``/``vmap`` (bench/hvp_variants.py)."""
    if vectorize is None:
        return device.type != "cpu"
    if not isinstance(vectorize, bool):
        raise ValueError(f"vectorize must be True, False or None, got {vectorize!r}")
    return vectorize


class _GGNEngine(_Engine):
    kind = "ggn"

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[Batch],
        bn_mode: str = "eval",
        params: Sequence[str] | None = None,
        output_hessian: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE,
        vectorize: bool | None = None,
        reduction: str | None = None,
    ):
        if output_hessian not in OUTPUT_HESSIAN_MODES:
            raise ValueError(f"unknown output_hessian {output_hessian!r}; allowed values are {list(OUTPUT_HESSIAN_MODES)}")
        super().__init__(model, loss_fn, data, bn_mode, params, block_size, reduction)
        self.vectorize = _resolve_vectorize(vectorize, self.device)
        self.mode = "jvp_vjp"
        self.requested_mode = "jvp_vjp"
        self.output_hessian = closed_form_output_hessian(loss_fn) if output_hessian == "auto" else "autodiff"
        self.graph_bytes = None
        self.graph_budget_bytes = None
        self._count_pass()

    def _output_hvp(self, z: Tensor, targets: Any, U: Tensor) -> Tensor:
        """H_out U for a block U (k, *z.shape), H_out the Hessian of the loss in the outputs."""
        closed = output_hvp_closed_form(self.output_hessian, self.loss_fn, z, targets, U)
        if closed is not None:
            return closed
        # Generic: double backward in the outputs (reverse-over-reverse on the small
        # output space; correct through any loss, unlike nested torch.func in torch 2.14).
        with torch.enable_grad():
            zz = z.detach().requires_grad_(True)
            (gz,) = torch.autograd.grad(self.loss_fn(zz, targets), zz, create_graph=True)
            if not gz.requires_grad:  # loss linear in the outputs: zero Hessian
                return torch.zeros_like(U)
            if U.shape[0] == 1 or not self.vectorize:
                cols = [torch.autograd.grad(gz, zz, grad_outputs=u, retain_graph=True, allow_unused=True)[0] for u in U]
                cols = [torch.zeros_like(z) if c is None else c for c in cols]
                return torch.stack(cols).detach()
            (hu,) = torch.autograd.grad(gz, zz, grad_outputs=U, is_grads_batched=True, allow_unused=True)
        return torch.zeros_like(U) if hu is None else hu.detach()

    def _products(self, inputs: Any, targets: Any, V: Tensor) -> Tensor:
        def out_fn(th: dict[str, Tensor]) -> Tensor:
            return self.forward(th, inputs)

        z, vjp_fn = vjp(out_fn, self.theta)  # type: ignore[misc]  # has_aux=False: two values
        if not isinstance(z, Tensor):
            raise ValueError(f"GGNOperator needs a model that returns one tensor, got {type(z).__name__}")
        z = z.detach()

        def jv(tangent: dict[str, Tensor]) -> Tensor:
            return jvp(out_fn, (self.theta,), (tangent,))[1]

        k = V.shape[1]
        out = []
        for start in range(0, k, self.block_size):
            block = V[:, start : start + self.block_size]
            kb = block.shape[1]
            if self.vectorize and kb > 1:
                JV = vmap(jv)(self.split(block))
                HJV = self._output_hvp(z, targets, JV)
                out.append(self.join(vmap(vjp_fn)(HJV)[0]))
            else:
                for j in range(kb):
                    tangent = dict(zip(self.names, unflatten_vector(block[:, j], self.shapes), strict=True))
                    Jv = jv(tangent)
                    HJv = self._output_hvp(z, targets, Jv.unsqueeze(0))[0]
                    res = vjp_fn(HJv)[0]
                    out.append(flatten_tensors([res[n] for n in self.names]).unsqueeze(1))
        return torch.cat(out, dim=1).detach()

    @torch.enable_grad()
    def weighted_sum(self, V: Tensor) -> Tensor:
        acc = torch.zeros_like(V)
        with curvature_mode(self.model, self.bn_mode):
            for inputs, targets, w in self.weighted_batches():
                acc += _scaled(w, self._products(inputs, targets, V))
        return acc


# --------------------------------------------------------------------------------------
# Public operators
# --------------------------------------------------------------------------------------


class _CurvatureOperator(SymmetricOperator):
    """Shared surface of the Hessian and GGN operators."""

    _engine: _Engine
    report: OperatorReport

    def _init_from_engine(
        self, engine: _Engine, world_size: int = 1, num_examples: int | None = None, normaliser: int | float | None = None
    ) -> None:
        self._engine = engine
        self._normaliser = engine.normaliser if normaliser is None else normaliser
        if self._normaliser == 0:  # mean reduction, every class-index target ignored
            raise ValueError("every target of the data is ignored by loss_fn; the mean loss is undefined")
        self.shape = (engine.num_params, engine.num_params)
        self.dtype = engine.dtype
        self.device = engine.device
        self.param_names = tuple(engine.names)
        total = engine.num_examples if num_examples is None else num_examples
        self.report = OperatorReport(
            kind=engine.kind,
            num_params=engine.num_params,
            num_examples=total,
            num_batches=engine.num_batches,
            bn_mode=engine.bn_mode,
            has_batchnorm=engine.has_batchnorm,
            has_dropout=engine.has_dropout,
            batch_order_dependent=engine.bn_mode == "batch" and engine.has_batchnorm,
            product_mode=engine.mode,
            requested_mode=engine.requested_mode,
            graph_bytes=getattr(engine, "graph_bytes", None),
            graph_budget_bytes=getattr(engine, "graph_budget_bytes", None),
            output_hessian=getattr(engine, "output_hessian", None),
            dtype=str(engine.dtype),
            device=str(engine.device),
            param_names=tuple(engine.names),
            world_size=world_size,
        )

    @property
    def num_examples(self) -> int:
        """Number of examples in the data."""
        return self.report.num_examples

    @property
    def reduction(self) -> str:
        """How the loss reduces over a batch and the data set: ``"mean"`` or ``"sum"``."""
        return str(self._engine.reduction)

    def _normalised(self, total: Tensor, in_place: bool = False) -> Tensor:
        """``total / Z``: ``Z`` the sum of the batch weights (mean) or 1 (sum, no division)."""
        if self._normaliser == 1:
            return total
        return total.div_(self._normaliser) if in_place else total / self._normaliser

    def parameter_vector(self) -> Tensor:
        """The parameters the operator was built at, flat (P,)."""
        return flatten_tensors([self._engine.theta[n] for n in self._engine.names]).clone()

    def split(self, vector: Tensor) -> dict[str, Tensor]:
        """Split a flat (P,) vector into ``{parameter name: tensor of its shape}``."""
        return dict(zip(self._engine.names, unflatten_vector(vector, self._engine.shapes), strict=True))

    def gradient(self) -> Tensor:
        """Gradient (P,) of the data-set loss (mean or sum, as ``loss_fn`` reduces) at the
        operator's parameters (same modes); no extra pass for a Hessian operator with kept
        graphs (computed when they were built)."""
        g_sum, _ = self._engine.gradient_sum()
        return self._normalised(g_sum)

    def loss(self) -> Tensor:
        """The data-set loss (scalar tensor: mean or sum, as ``loss_fn`` reduces) at its parameters."""
        _, l_sum = self._engine.gradient_sum()
        return self._normalised(l_sum)

    def start_hint(self) -> Tensor:
        """:meth:`gradient`, which lies mostly in the top eigenspace of the Hessian and the GGN."""
        return self.gradient()


class HessianOperator(_CurvatureOperator):
    """Hessian of the loss over the whole data set, as a symmetric operator.

    The loss over the data set is that of all batches concatenated, under ``loss_fn``'s
    reduction (as in curvlinops): for ``"mean"`` ``H = sum_b (n_b / N) H_b`` with ``H_b``
    the Hessian of batch b's loss ``loss_fn(model(x_b), y_b)`` and ``N = sum_b n_b``
    (class-index cross-entropy with ignored targets or class weights: weights by counted
    targets, see :mod:`landscape.curvature.losses`); for ``"sum"`` ``H = sum_b H_b``.
    With ``bn_mode="batch"`` each batch keeps its own statistics. Products are exact (no
    approximation beyond floating point).

    Product variants (``hvp_mode``):
        * ``"rev_rev_kept"``: the gradient of each batch is computed once with
          ``create_graph=True`` at construction and its graph kept; each product is one
          more backward through it (Pearlmutter, reverse-over-reverse). Fastest per product
          (measured ~2x a gradient on CPU) but holds all batches' graphs in memory.
        * ``"rev_rev"``: the same double backward, the graph rebuilt per product (one
          forward + backward + double backward per batch and block of vectors).
        * ``"fwd_rev"``: ``torch.func.jvp`` of ``torch.func.grad`` (forward-over-reverse),
          no graph held between products. Needs forward-mode AD of every op's backward
          (e.g. ``huber_loss`` lacks it in torch 2.14 and raises).
        * ``"auto"`` (default): ``rev_rev_kept`` when the kept graphs' saved tensors fit
          ``graph_budget_bytes``, else ``rev_rev``; the choice is in ``report.product_mode``.

    A block of vectors shares one gradient graph per batch (``rev_rev``: one forward and
    backward per batch and block of up to ``block_size`` vectors). With ``vectorize``
    the block's columns are multiplied in one batched pass (``is_grads_batched`` for
    reverse-over-reverse, ``torch.func.vmap`` for forward-over-reverse), else one column
    at a time; the default (None) vectorises on accelerators and loops on CPU, where the
    loop measured faster.

    Args:
        model: the network; its parameters fix the operator's dtype and device, and a
            snapshot of its parameters and buffers is taken here, so later changes to the
            model do not change the operator.
        loss_fn: ``loss_fn(outputs, targets)`` returning the scalar loss of a batch,
            averaged or summed over it (``reduction``).
        data: iterable of ``(inputs, targets)`` batches (a list, a DataLoader); iterated
            once at construction and once per product (except ``rev_rev_kept``), so it
            must yield the same examples each time. Floating tensors (also inside
            mappings, lists and tuples) are cast to the parameters' dtype and all tensors
            moved to their device.
        bn_mode: "eval" (BatchNorm running statistics) or "batch" (batch statistics,
            running statistics untouched). Dropout is always disabled.
        params: names of the parameters spanned (default: all trainable parameters);
            the others are held fixed, so the operator is the corresponding diagonal block.
        hvp_mode: one of :data:`HVP_MODES`.
        graph_budget_bytes: memory budget for ``"auto"`` (bytes of saved tensors).
        block_size: maximum number of vectors per vectorised pass.
        vectorize: multiply blocks at once (True), column by column (False), or None
            (True except on CPU).
        reduction: ``"mean"`` or ``"sum"``, how ``loss_fn`` reduces a batch; None reads
            it from ``loss_fn.reduction`` (torch loss modules) or the default of its
            ``reduction`` keyword (``torch.nn.functional`` losses), and any other
            callable must state it. ``"none"`` is refused.

    Attributes:
        report: an :class:`OperatorReport`.
        reduction: the resolved reduction.

    Raises:
        ValueError: a bad argument, a reduction that is neither "mean" nor "sum" or that
            cannot be determined, or data without examples.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[Batch],
        bn_mode: str = "eval",
        params: Sequence[str] | None = None,
        hvp_mode: str = "auto",
        graph_budget_bytes: int | None = DEFAULT_GRAPH_BUDGET_BYTES,
        block_size: int = DEFAULT_BLOCK_SIZE,
        vectorize: bool | None = None,
        reduction: Reduction | None = None,
    ):
        engine = _HessianEngine(
            model,
            loss_fn,
            data,
            bn_mode=bn_mode,
            params=params,
            hvp_mode=hvp_mode,
            graph_budget_bytes=graph_budget_bytes,
            block_size=block_size,
            vectorize=vectorize,
            reduction=reduction,
        )
        if engine.num_examples == 0:
            raise ValueError("data yielded no examples; the loss over the data is undefined")
        self._init_from_engine(engine)

    def _matmat(self, V: Tensor) -> Tensor:
        return self._normalised(self._engine.weighted_sum(V), in_place=True)  # a fresh tensor: divide in place


class GGNOperator(_CurvatureOperator):
    """Generalized Gauss-Newton matrix of the loss over the data set (PSD for convex losses).

    ``G = sum_b (n_b / N) J_b^T H_b J_b`` for a mean loss (weights as for
    :class:`HessianOperator`), ``G = sum_b J_b^T H_b J_b`` for a summed one.
    ``J_b`` is the Jacobian of the model outputs of batch b with respect to the
    parameters and ``H_b`` the Hessian of batch b's loss with respect to those
    outputs (Schraudolph 2002). Products: ``J v`` by ``torch.func.jvp``, ``H_b u`` in
    closed form for ``nn.CrossEntropyLoss`` (class-index targets, no class weights:
    ``diag(p) - p p^T`` per position, divided by the number of non-ignored positions for
    reduction "mean") and ``nn.MSELoss`` (``2/numel`` or 2), else by ``jvp`` of
    ``torch.func.grad`` of the loss in the outputs; ``J^T u`` by ``torch.func.vjp``.

    Args:
        model: the network (must return a single tensor).
        loss_fn: ``loss_fn(outputs, targets)`` returning the scalar loss of a batch
            (``reduction`` "mean" or "sum").
        data: iterable of ``(inputs, targets)`` batches; iterated once per product.
        bn_mode: "eval" or "batch", as for :class:`HessianOperator`.
        params: parameter names spanned (default all trainable).
        output_hessian: "auto" (closed form where known) or "autodiff".
        block_size: maximum vectors per vectorised pass.
        vectorize: multiply blocks at once (True), column by column (False), or None
            (True except on CPU).
        reduction: ``"mean"`` or ``"sum"``, as for :class:`HessianOperator`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[Batch],
        bn_mode: str = "eval",
        params: Sequence[str] | None = None,
        output_hessian: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE,
        vectorize: bool | None = None,
        reduction: Reduction | None = None,
    ):
        engine = _GGNEngine(
            model,
            loss_fn,
            data,
            bn_mode=bn_mode,
            params=params,
            output_hessian=output_hessian,
            block_size=block_size,
            vectorize=vectorize,
            reduction=reduction,
        )
        if engine.num_examples == 0:
            raise ValueError("data yielded no examples; the loss over the data is undefined")
        self._init_from_engine(engine)

    def _matmat(self, V: Tensor) -> Tensor:
        return self._normalised(self._engine.weighted_sum(V))
