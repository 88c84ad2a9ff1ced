"""DistributedHessianOperator / DistributedGGNOperator: 2 CPU processes (gloo) vs one process.

One spawn runs every distributed case (spawning is the slow part); each rank saves its
products and the parent compares them with the single-process operators on all data.
"""

from __future__ import annotations

import datetime
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from models import bn_mlp, classification_batches, reference_ggn, reference_gradient, reference_hessian, rel_err
from torch import nn

from landscape.curvature.distributed import DistributedGGNOperator, DistributedHessianOperator, sharded_hessian_operator
from landscape.curvature.operators import GGNOperator, HessianOperator

CE = nn.CrossEntropyLoss()
CE_SUM = nn.CrossEntropyLoss(reduction="sum")
SIZES = (5, 3, 4, 6)
SHARDS = {0: [0, 1], 1: [2, 3]}  # rank 0: 8 examples, rank 1: 10 examples
CASES = [  # (name, bn_mode, hvp_mode)
    ("eval-auto", "eval", "auto"),
    ("eval-rev_rev", "eval", "rev_rev"),
    ("batch-fwd_rev", "batch", "fwd_rev"),
    ("batch-rev_rev_kept", "batch", "rev_rev_kept"),
]
NUM_VECTORS = 3


def _probe(P: int) -> torch.Tensor:
    return torch.randn(P, NUM_VECTORS, generator=torch.Generator().manual_seed(11), dtype=torch.float64)


def _worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world,
                            timeout=datetime.timedelta(seconds=120))
    try:
        model = bn_mlp(8, dropout=0.2)
        data = classification_batches(SIZES, seed=8)
        shard = [data[i] for i in SHARDS[rank]]
        P = sum(p.numel() for p in model.parameters())
        V = _probe(P)
        if rank == 1:
            V = V + 1.0  # a rank whose input drifted: broadcast_input makes rank 0's block win
        out = {}
        for name, bn_mode, hvp_mode in CASES:
            op = DistributedHessianOperator(model, CE, shard, bn_mode=bn_mode, hvp_mode=hvp_mode)
            out[name] = op @ V
            out[f"{name}-report"] = op.report.to_dict()
        op = DistributedHessianOperator(model, CE, shard, bn_mode="eval")
        out["gradient"] = op.gradient()
        out["loss"] = op.loss()
        out["local_num_examples"] = op.local_num_examples
        ggn = DistributedGGNOperator(model, CE, shard, bn_mode="batch")
        out["ggn"] = ggn @ V
        # a rank with an empty shard still takes part in the collectives
        empty = DistributedHessianOperator(model, CE, data if rank == 0 else [], bn_mode="eval")
        out["empty-shard"] = empty @ V
        # without broadcasting, each rank multiplies its own block (same on both here)
        same = DistributedHessianOperator(model, CE, shard, bn_mode="eval", broadcast_input=False)
        out["no-broadcast"] = same @ _probe(P)
        # the summed loss over all shards, and a mean over the targets that are not ignored
        ignored = [(x, torch.where(torch.arange(len(y)) % (2 + rank) == 0, -100, y)) for x, y in shard]
        for key, loss_fn, shard_data in (("sum", CE_SUM, shard), ("ignored", CE, ignored)):
            hop = DistributedHessianOperator(model, loss_fn, shard_data, bn_mode="eval")
            gop = DistributedGGNOperator(model, loss_fn, shard_data, bn_mode="eval")
            out[key] = (hop @ V, gop @ V, hop.loss(), hop.gradient(), hop.reduction)
        try:  # ranks that disagree on the reduction both stop (after the same collectives)
            DistributedHessianOperator(model, CE_SUM if rank == 0 else CE, shard, bn_mode="eval")
        except RuntimeError as exc:
            out["disagree"] = str(exc)
        # every rank passes all batches; the factory keeps batches rank, rank + 2, ... (whole batches)
        sharded = sharded_hessian_operator(model, CE, data, bn_mode="batch", params=["0.weight", "1.weight"])
        out["sharded"] = sharded @ _probe(sharded.shape[0])
        out["sharded-local"] = sharded.local_num_examples
        torch.save(out, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def distributed_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("dist")
    mp.spawn(_worker, args=(2, str(tmp / "init"), str(tmp)), nprocs=2, join=True)
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(2)]


def test_products_equal_single_process(distributed_results):
    model = bn_mlp(8, dropout=0.2)
    data = classification_batches(SIZES, seed=8)
    P = sum(p.numel() for p in model.parameters())
    V = _probe(P)
    for name, bn_mode, hvp_mode in CASES:
        ref = HessianOperator(model, CE, data, bn_mode=bn_mode, hvp_mode="rev_rev") @ V
        for r, res in enumerate(distributed_results):
            assert rel_err(res[name], ref) < 1e-6, (name, r)
            rep = res[f"{name}-report"]
            assert rep["num_examples"] == sum(SIZES) and rep["world_size"] == 2
            assert rep["batch_order_dependent"] == (bn_mode == "batch")
    ref_ggn = GGNOperator(model, CE, data, bn_mode="batch") @ V
    single = HessianOperator(model, CE, data, bn_mode="eval")
    for res in distributed_results:
        assert rel_err(res["ggn"], ref_ggn) < 1e-6
        assert rel_err(res["gradient"], single.gradient()) < 1e-10
        assert torch.allclose(res["loss"], single.loss(), rtol=1e-12, atol=0)
        assert rel_err(res["empty-shard"], single @ V) < 1e-6
        assert rel_err(res["no-broadcast"], single @ V) < 1e-6
    assert [res["local_num_examples"] for res in distributed_results] == [8, 10]
    block = HessianOperator(model, CE, data, bn_mode="batch", params=["0.weight", "1.weight"])
    for res in distributed_results:
        assert rel_err(res["sharded"], block @ _probe(block.shape[0])) < 1e-10
    assert [res["sharded-local"] for res in distributed_results] == [SIZES[0] + SIZES[2], SIZES[1] + SIZES[3]]


def test_size_weighting_is_global(distributed_results):
    """The plain average of the two ranks' local Hessians is a different matrix."""
    model = bn_mlp(8, dropout=0.2)
    data = classification_batches(SIZES, seed=8)
    V = _probe(sum(p.numel() for p in model.parameters()))
    local = [HessianOperator(model, CE, [data[i] for i in SHARDS[r]]) @ V for r in range(2)]
    assert rel_err(0.5 * (local[0] + local[1]), distributed_results[0]["eval-auto"]) > 1e-3


def test_requires_initialised_process_group():
    assert not dist.is_initialized()
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        DistributedHessianOperator(bn_mlp(), CE, classification_batches((3,)))
    with pytest.raises(RuntimeError, match="torch.distributed is not initialised"):
        DistributedGGNOperator(bn_mlp(), CE, classification_batches((3,)))


def _ignored(data):
    """The targets the ignore test of the workers uses: every 2nd (rank 0) / 3rd (rank 1) is ignored."""
    shards = {r: [data[i] for i in SHARDS[r]] for r in SHARDS}
    return [(x, torch.where(torch.arange(len(y)) % (2 + r) == 0, -100, y)) for r in SHARDS for x, y in shards[r]]


@pytest.mark.parametrize("key", ["sum", "ignored"])
def test_sum_and_counted_mean_match_the_concatenated_loss(distributed_results, key):
    """Summed CE over all shards, and a CE mean over the targets that are not ignored (unequal
    counts per shard), against the dense double-backward reference of the concatenated loss."""
    model = bn_mlp(8, dropout=0.2)
    data = classification_batches(SIZES, seed=8)
    loss_fn, data = (CE_SUM, data) if key == "sum" else (CE, _ignored(data))
    V = _probe(sum(p.numel() for p in model.parameters()))
    H, G = reference_hessian(model, loss_fn, data), reference_ggn(model, loss_fn, data)
    g = reference_gradient(model, loss_fn, data)
    for res in distributed_results:
        hv, gv, loss, grad, reduction = res[key]
        assert reduction == ("sum" if key == "sum" else "mean")
        assert rel_err(hv, H @ V) < 1e-10 and rel_err(gv, G @ V) < 1e-10
        assert rel_err(grad, g) < 1e-10
        f_loss = loss_fn(torch.cat([model.eval()(x) for x, _ in data]), torch.cat([y for _, y in data]))
        assert torch.allclose(loss, f_loss.detach(), rtol=1e-12, atol=0)


def test_ranks_disagreeing_on_the_reduction_stop(distributed_results):
    for res in distributed_results:
        assert "ranks disagree on the reduction of loss_fn" in res["disagree"]
