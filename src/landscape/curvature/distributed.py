"""Data-parallel Hessian and GGN operators under ``torch.distributed``.

Each rank holds a shard of the data and the same model; the operator is the curvature of
the loss over all shards concatenated, under ``loss_fn``'s reduction. Each rank computes
``sum_{b in r} w_b H_b V`` (its batches' products with the weights of
:class:`~landscape.curvature.losses.BatchWeights`: ``n_b`` for a mean loss, 1 for a
summed one), one ``all_reduce`` sums them and the result is divided by the global
normaliser (``N = sum_r n_r`` for a mean loss without ignored targets, 1 for a sum), so
every rank holds the single-process product of the global loss. Products are
Pearlmutter's (1994) exact Hessian-vector products, as in
:mod:`landscape.curvature.operators`.

Works with any backend (gloo on CPU, NCCL under ``torchrun`` with the model on the rank's
GPU): communication tensors live on the parameters' device. The process group must be
initialised by the caller; this module never initialises or destroys it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor, nn

from landscape.curvature.losses import REDUCTIONS, Reduction
from landscape.curvature.operators import (
    DEFAULT_BLOCK_SIZE,
    DEFAULT_GRAPH_BUDGET_BYTES,
    _CurvatureOperator,
    _Engine,
    _GGNEngine,
    _HessianEngine,
)
from landscape.functional import LossFn

__all__ = ["DistributedHessianOperator", "DistributedGGNOperator", "sharded_hessian_operator"]


def _require_initialized() -> None:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised; call torch.distributed.init_process_group first")


class _DistributedOperator(_CurvatureOperator):
    """All-reduce the example-weighted products of a local engine."""

    def _setup(self, engine: _Engine, process_group: Any, broadcast_input: bool, src: int) -> None:
        self.process_group = process_group
        self.broadcast_input = bool(broadcast_input)
        world = dist.get_world_size(process_group)
        if not isinstance(src, int) or not 0 <= src < world:
            raise ValueError(f"src must be a rank in [0, {world}), got {src!r}")
        self.src = src
        count = torch.tensor([engine.num_examples], dtype=torch.int64, device=engine.device)
        dist.all_reduce(count, op=dist.ReduceOp.SUM, group=process_group)
        code = REDUCTIONS.index(str(engine.reduction))
        dims = torch.tensor([engine.num_params, -engine.num_params, code, -code], dtype=torch.int64, device=engine.device)
        dist.all_reduce(dims, op=dist.ReduceOp.MAX, group=process_group)
        p_max, p_min = int(dims[0]), -int(dims[1])
        if p_max != p_min:
            raise RuntimeError(f"ranks disagree on the number of parameters: between {p_min} and {p_max}")
        if int(dims[2]) != -int(dims[3]):
            raise RuntimeError(f"ranks disagree on the reduction of loss_fn: this rank has {engine.reduction!r}")
        total = int(count[0])
        if total == 0:
            raise ValueError("no rank's data yielded any example; the loss over the data is undefined")
        normaliser: int | float = 1
        if engine.reduction == "mean":
            z = torch.tensor([engine.normaliser], dtype=torch.float64, device=engine.device)
            dist.all_reduce(z, op=dist.ReduceOp.SUM, group=process_group)
            normaliser = total if float(z[0]) == total else float(z[0])
        self.local_num_examples = engine.num_examples
        self.rank = dist.get_rank(process_group)
        self._init_from_engine(engine, world_size=world, num_examples=total, normaliser=normaliser)

    def _matmat(self, V: Tensor) -> Tensor:
        if self.broadcast_input:
            V = V.clone().contiguous()
            dist.broadcast(V, group=self.process_group, group_src=self.src)
        out = self._engine.weighted_sum(V).contiguous()
        dist.all_reduce(out, op=dist.ReduceOp.SUM, group=self.process_group)
        return self._normalised(out)

    def gradient(self) -> Tensor:
        """Gradient (P,) of the global loss (collective: call on every rank)."""
        g_sum, _ = self._engine.gradient_sum()
        dist.all_reduce(g_sum, op=dist.ReduceOp.SUM, group=self.process_group)
        return self._normalised(g_sum)

    def loss(self) -> Tensor:
        """Global loss, mean or sum as ``loss_fn`` reduces (collective: call on every rank)."""
        _, l_sum = self._engine.gradient_sum()
        dist.all_reduce(l_sum, op=dist.ReduceOp.SUM, group=self.process_group)
        return self._normalised(l_sum)


class DistributedHessianOperator(_DistributedOperator):
    """Hessian of the global loss over the data shards of all ranks (mean or sum, as
    ``loss_fn`` reduces; see :class:`~landscape.curvature.operators.HessianOperator`).

    Construction and every product are collective: all ranks of ``process_group`` must
    call them in the same order (as Lanczos with a common seed does). Arguments are those
    of :class:`~landscape.curvature.operators.HessianOperator`, with ``data`` this rank's
    shard (it may be empty on some ranks), plus:

    Args:
        process_group: the group to reduce over (default: the world).
        broadcast_input: broadcast each input block from rank ``src`` first, so that
            ranks whose iterates drift apart by rounding still multiply the same vectors.
        src: rank (within the group) whose input block is used.

    Attributes:
        report: an :class:`OperatorReport`; ``num_examples`` is the global count,
            ``num_batches`` this rank's, ``world_size`` the group size.
        local_num_examples: this rank's example count.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[tuple[Any, Any]],
        bn_mode: str = "eval",
        params: Sequence[str] | None = None,
        hvp_mode: str = "auto",
        graph_budget_bytes: int | None = DEFAULT_GRAPH_BUDGET_BYTES,
        block_size: int = DEFAULT_BLOCK_SIZE,
        vectorize: bool | None = None,
        reduction: Reduction | None = None,
        *,
        process_group: Any = None,
        broadcast_input: bool = True,
        src: int = 0,
    ):
        _require_initialized()
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
        self._setup(engine, process_group, broadcast_input, src)


class DistributedGGNOperator(_DistributedOperator):
    """Generalized Gauss-Newton matrix of the global loss over all ranks' shards.

    Arguments as :class:`~landscape.curvature.operators.GGNOperator` plus
    ``process_group``, ``broadcast_input`` and ``src`` as :class:`DistributedHessianOperator`.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        data: Iterable[tuple[Any, Any]],
        bn_mode: str = "eval",
        params: Sequence[str] | None = None,
        output_hessian: str = "auto",
        block_size: int = DEFAULT_BLOCK_SIZE,
        vectorize: bool | None = None,
        reduction: Reduction | None = None,
        *,
        process_group: Any = None,
        broadcast_input: bool = True,
        src: int = 0,
    ):
        _require_initialized()
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
        self._setup(engine, process_group, broadcast_input, src)


def sharded_hessian_operator(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[tuple[Any, Any]],
    bn_mode: str = "eval",
    params: Sequence[str] | None = None,
    **kwargs: Any,
) -> DistributedHessianOperator:
    """:class:`DistributedHessianOperator` of the mean loss over all of ``data``, with this
    rank's shard taken from it: the batches ``rank, rank + world_size, ...`` of the process
    group (whole batches, so ``bn_mode="batch"`` sees the batches the single-process
    :class:`~landscape.curvature.operators.HessianOperator` sees). Every rank passes the same
    ``data``; a rank beyond the number of batches holds an empty shard. Same signature as
    ``HessianOperator``, so it can stand in for it wherever an operator class is a parameter
    (``measure_curvature(hessian=...)``). Collective: call on every rank.

    Args:
        model, loss_fn, data, bn_mode, params: as :class:`HessianOperator`.
        **kwargs: further ``DistributedHessianOperator`` arguments (``hvp_mode``,
            ``graph_budget_bytes``, ``process_group``, ...).
    """
    _require_initialized()
    group = kwargs.get("process_group")
    rank, world = dist.get_rank(group), dist.get_world_size(group)
    shard = list(data)[rank::world]
    return DistributedHessianOperator(model, loss_fn, shard, bn_mode=bn_mode, params=params, **kwargs)
