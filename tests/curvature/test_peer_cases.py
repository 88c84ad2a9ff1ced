"""The operator test cases of the peer library curvlinops (its ``test/cases.py``), as data.

Small MLPs and a CNN; softmax cross-entropy, soft-label BCE-with-logits and MSE; mean and
sum reductions; two batches of unequal size; sequence outputs (N, T, C) (cross-entropy
over every position, classes moved to dim 1 as ``nn.CrossEntropyLoss`` wants them, or
flattened by a plain function that states its reduction); inputs inside a ``dict`` and a
``collections.UserDict``. Inputs and float targets are made in float32, the models are
float64: the operators cast batches to the parameters' dtype.

The reference is the loss of the CONCATENATED data (``models.flat_loss``: one call of
``loss_fn`` on all examples under its own reduction), its dense Hessian by double
backward and its GGN as ``J^T H_z J`` from the Jacobian of all outputs and the Hessian of
the loss in them. Everything is compared in float64: products, loss, gradient and the
top three eigenvalues (Lanczos on the operator) within 1e-10 relative to the reference's
largest entry. Losses the operators cannot take are refused with a message naming the
accepted reductions.
"""

from __future__ import annotations

import dataclasses
import functools
from collections import UserDict
from collections.abc import Callable, Mapping
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from models import DTYPE, flat_loss, reference_ggn, reference_gradient, reference_hessian
from torch import Tensor, nn

from landscape.curvature.lanczos import top_eigenpairs
from landscape.curvature.operators import GGNOperator, HessianOperator

TOL = 1e-10  # max |error| / max(1, max |reference|), float64


# ------------------------------------------------------------------------------ models


class DictInput(nn.Module):
    """An MLP reading its input from a mapping: ``net(data["x"])`` (10 -> 5 -> C)."""

    def __init__(self, num_outputs: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(10, 5), nn.ReLU(), nn.Linear(5, num_outputs))

    def forward(self, data: Mapping[str, Tensor]) -> Tensor:
        return self.net(data["x"])


class ClassesFirst(nn.Module):
    """(N, T, C) -> (N, C, T): sequence logits in the layout ``nn.CrossEntropyLoss`` takes."""

    def forward(self, z: Tensor) -> Tensor:
        return z.movedim(-1, 1)


def _float64(model: nn.Module, seed: int) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    model = model.to(DTYPE)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(0.5 * torch.randn(p.shape, generator=g, dtype=DTYPE))
    return model


def mlp(d_in: int, d_out: int, *tail: nn.Module) -> nn.Module:
    return nn.Sequential(nn.Linear(d_in, 5), nn.ReLU(), nn.Linear(5, d_out), *tail)


def cnn() -> nn.Module:
    """Conv -> ReLU -> MaxPool, twice, -> Linear (the peer's CNN at 1x14x14, 129 parameters)."""
    return nn.Sequential(
        nn.Conv2d(1, 2, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(2, 3, 3), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(12, 4),
    )


# -------------------------------------------------------------------------------- data


def _classes(shape: tuple[int, ...], num_classes: int) -> Callable[[torch.Generator], Tensor]:
    return lambda g: torch.randint(0, num_classes, shape, generator=g)


def _uniform(shape: tuple[int, ...]) -> Callable[[torch.Generator], Tensor]:
    return lambda g: torch.rand(shape, generator=g)  # float32, like the peer's rand


def _ignored(shape: tuple[int, ...], num_classes: int) -> Callable[[torch.Generator], Tensor]:
    """Class indices with about a third of the targets set to the ignore index -100."""

    def make(g: torch.Generator) -> Tensor:
        y = torch.randint(0, num_classes, shape, generator=g)
        return torch.where(torch.rand(shape, generator=g) < 0.35, -100, y)

    return make


@dataclasses.dataclass(frozen=True)
class PeerCase:
    """One case: model and loss factories, per-batch input shapes and target makers.

    Attributes:
        inputs: input shape of each batch (the first entry is the batch size).
        targets: per batch, ``generator -> targets``.
        wrap: how each batch's input is wrapped (tensor, dict, UserDict).
        reduction: passed to the operator (None: read from the loss).
    """

    model: Callable[[], nn.Module]
    loss: Callable[[], Any]
    inputs: tuple[tuple[int, ...], ...]
    targets: tuple[Callable[[torch.Generator], Tensor], ...]
    wrap: tuple[Callable[[Tensor], Any], ...] = (lambda x: x, lambda x: x)
    reduction: str | None = None

    def build(self) -> tuple[nn.Module, Any, list[tuple[Any, Tensor]]]:
        g = torch.Generator().manual_seed(0)
        data = [(w(torch.rand(shape, generator=g)), t(g)) for shape, t, w in zip(self.inputs, self.targets, self.wrap, strict=True)]
        return _float64(self.model(), seed=1), self.loss(), data


def _ce_flat(reduction: str) -> Callable[[Tensor, Tensor], Tensor]:
    """Cross-entropy over the flattened sequence of (N, T, C) logits; a plain function."""
    return lambda z, y: F.cross_entropy(z.flatten(0, 1), y.flatten(), reduction=reduction)


def _mapping_inputs(kind: str) -> tuple[Callable[[Tensor], Any], ...]:
    return (lambda x: UserDict({"x": x}), lambda x: {"x": x}) if kind == "mixed" else (lambda x: UserDict({"x": x}),) * 2


def _cases() -> dict[str, PeerCase]:
    cases: dict[str, PeerCase] = {}
    for r in ("mean", "sum"):
        cases[f"mlp-ce-{r}"] = PeerCase(lambda: mlp(10, 3), lambda r=r: nn.CrossEntropyLoss(reduction=r),
                                        ((3, 10), (4, 10)), (_classes((3,), 3), _classes((4,), 3)))
        cases[f"mlp-bce1-{r}"] = PeerCase(lambda: mlp(10, 1), lambda r=r: nn.BCEWithLogitsLoss(reduction=r),
                                          ((3, 10), (4, 10)), (_uniform((3, 1)), _uniform((4, 1))))
        cases[f"mlp-bce2-{r}"] = PeerCase(lambda: mlp(10, 2), lambda r=r: nn.BCEWithLogitsLoss(reduction=r),
                                          ((3, 10), (4, 10)), (_uniform((3, 2)), _uniform((4, 2))))
        cases[f"mlp-mse-{r}"] = PeerCase(lambda: mlp(8, 3), lambda r=r: nn.MSELoss(reduction=r),
                                         ((2, 8), (6, 8)), (_uniform((2, 3)), _uniform((6, 3))))
        cases[f"dict-ce-{r}"] = PeerCase(lambda: DictInput(2), lambda r=r: nn.CrossEntropyLoss(reduction=r),
                                         ((3, 10), (4, 10)), (_classes((3,), 2), _classes((4,), 2)), _mapping_inputs("mixed"))
        cases[f"dict-bce-{r}"] = PeerCase(lambda: DictInput(1), lambda r=r: nn.BCEWithLogitsLoss(reduction=r),
                                          ((3, 10), (4, 10)), (_uniform((3, 1)), _uniform((4, 1))), _mapping_inputs("mixed"))
        cases[f"dict-mse-{r}"] = PeerCase(lambda: DictInput(2), lambda r=r: nn.MSELoss(reduction=r),
                                          ((3, 10), (4, 10)), (_uniform((3, 2)), _uniform((4, 2))), _mapping_inputs("userdict"))
        cases[f"seq-ce-{r}"] = PeerCase(lambda: mlp(10, 3, ClassesFirst()), lambda r=r: nn.CrossEntropyLoss(reduction=r),
                                        ((3, 5, 10), (4, 5, 10)), (_classes((3, 5), 3), _classes((4, 5), 3)))
        cases[f"seq-ce-flat-{r}"] = PeerCase(lambda: mlp(10, 3), lambda r=r: _ce_flat(r),
                                             ((3, 5, 10), (4, 5, 10)), (_classes((3, 5), 3), _classes((4, 5), 3)), reduction=r)
        cases[f"seq-bce-{r}"] = PeerCase(lambda: mlp(10, 2), lambda r=r: nn.BCEWithLogitsLoss(reduction=r),
                                         ((3, 5, 10), (4, 5, 10)), (_uniform((3, 5, 2)), _uniform((4, 5, 2))))
        cases[f"seq-mse-{r}"] = PeerCase(lambda: mlp(8, 3), lambda r=r: nn.MSELoss(reduction=r),
                                         ((2, 5, 8), (6, 5, 8)), (_uniform((2, 5, 3)), _uniform((6, 5, 3))))
        cases[f"cnn-ce-{r}"] = PeerCase(cnn, lambda r=r: nn.CrossEntropyLoss(reduction=r),
                                        ((5, 1, 14, 14), (3, 1, 14, 14)), (_classes((5,), 4), _classes((3,), 4)))
    # Beyond the peer's table: a mean over counted targets (ignored ones, class weights),
    # and nn.KLDivLoss's "batchmean" (a mean over examples).
    weights = torch.tensor([0.5, 1.0, 2.0], dtype=DTYPE)
    cases["seq-ce-weighted-ignored-mean"] = PeerCase(
        lambda: mlp(10, 3, ClassesFirst()), lambda: nn.CrossEntropyLoss(weight=weights, ignore_index=-100),
        ((3, 5, 10), (4, 5, 10)), (_ignored((3, 5), 3), _ignored((4, 5), 3)))
    cases["mlp-kldiv-batchmean"] = PeerCase(
        lambda: mlp(10, 3, nn.LogSoftmax(dim=1)), lambda: nn.KLDivLoss(reduction="batchmean"),
        ((3, 10), (4, 10)), (lambda g: torch.rand(3, 3, generator=g).softmax(1), lambda g: torch.rand(4, 3, generator=g).softmax(1)))
    return cases


CASES = _cases()


# ------------------------------------------------------------------------- references


def _float64_batches(data: list[tuple[Any, Tensor]]) -> list[tuple[Any, Tensor]]:
    """The batches as the reference sees them: float tensors in float64, mappings as dicts."""

    def cast(t: Tensor) -> Tensor:
        return t.to(DTYPE) if t.is_floating_point() else t

    return [({k: cast(v) for k, v in x.items()} if isinstance(x, Mapping) else cast(x), cast(y)) for x, y in data]


@functools.cache
def case(name: str) -> tuple[nn.Module, Any, list, dict[str, Tensor]]:
    model, loss_fn, data = CASES[name].build()
    ref_data = _float64_batches(data)
    f, theta = flat_loss(model, loss_fn, ref_data)
    H = reference_hessian(model, loss_fn, ref_data)
    refs = {
        "H": H,
        "G": reference_ggn(model, loss_fn, ref_data),
        "loss": f(theta).detach(),
        "grad": reference_gradient(model, loss_fn, ref_data),
    }
    return model, loss_fn, data, refs


def _err(a: Tensor, ref: Tensor) -> float:
    """max |a - ref| relative to max(1, max |ref|)."""
    return float((a - ref).abs().max()) / max(1.0, float(ref.abs().max()))


def _top3(M: Tensor) -> Tensor:
    return torch.linalg.eigvalsh(0.5 * (M + M.T)).flip(0)[:3]


def _probe_block(P: int) -> Tensor:
    return torch.randn(P, 4, generator=torch.Generator().manual_seed(7), dtype=DTYPE)


# ------------------------------------------------------------------------------ tests


def test_cases_cover_the_peer_table():
    """Mean and sum of every loss, unequal batches, sequence outputs and mapping inputs."""
    names = set(CASES)
    for family in ("mlp-ce", "mlp-bce1", "mlp-bce2", "mlp-mse", "dict-ce", "dict-bce", "dict-mse",
                   "seq-ce", "seq-ce-flat", "seq-bce", "seq-mse", "cnn-ce"):
        assert {f"{family}-mean", f"{family}-sum"} <= names
    for c in CASES.values():
        assert len(c.inputs) == 2 and c.inputs[0][0] != c.inputs[1][0]  # two batches of unequal size
    _, _, data, _ = case("dict-ce-mean")
    assert isinstance(data[0][0], UserDict) and type(data[1][0]) is dict and data[0][0]["x"].dtype == torch.float32


@pytest.mark.parametrize("hvp_mode", ["auto", "rev_rev", "fwd_rev"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_hessian_matches_concatenated_loss(name, hvp_mode):
    model, loss_fn, data, ref = case(name)
    op = HessianOperator(model, loss_fn, data, hvp_mode=hvp_mode, reduction=CASES[name].reduction)
    assert op.reduction == ("sum" if name.endswith("-sum") else "mean")
    V = _probe_block(op.shape[0])
    assert _err(op @ V, ref["H"] @ V) <= TOL
    assert _err(op @ V[:, 0], ref["H"] @ V[:, 0]) <= TOL
    assert _err(op.loss(), ref["loss"]) <= TOL
    assert _err(op.gradient(), ref["grad"]) <= TOL
    if hvp_mode == "auto":
        eig = top_eigenpairs(op, k=3, which="LA", tol=1e-12, seed=0)
        assert _err(eig.values, _top3(ref["H"])) <= TOL


@pytest.mark.parametrize("output_hessian", ["auto", "autodiff"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_ggn_matches_concatenated_loss(name, output_hessian):
    model, loss_fn, data, ref = case(name)
    op = GGNOperator(model, loss_fn, data, output_hessian=output_hessian, reduction=CASES[name].reduction)
    V = _probe_block(op.shape[0])
    assert _err(op @ V, ref["G"] @ V) <= TOL
    assert _err(op.loss(), ref["loss"]) <= TOL
    assert _err(op.gradient(), ref["grad"]) <= TOL
    if output_hessian == "auto":
        eig = top_eigenpairs(op, k=3, which="LA", tol=1e-12, seed=0)
        assert _err(eig.values, _top3(ref["G"])) <= TOL


def test_closed_forms_are_used_for_sum_and_mean():
    for r in ("mean", "sum"):
        model, loss_fn, data, _ = case(f"seq-ce-{r}")
        assert GGNOperator(model, loss_fn, data).report.output_hessian == "closed_form_cross_entropy"
        model, loss_fn, data, _ = case(f"mlp-mse-{r}")
        assert GGNOperator(model, loss_fn, data).report.output_hessian == "closed_form_mse"


def test_sum_is_the_mean_times_the_number_of_terms():
    """Same data, same model: the sum-reduction operator is N*T times the mean one (CE over
    N examples of T positions), whatever the batching."""
    model, mean_loss, data, _ = case("seq-ce-mean")
    sum_loss = nn.CrossEntropyLoss(reduction="sum")
    terms = sum(int(y.numel()) for _, y in data)
    V = _probe_block(sum(p.numel() for p in model.parameters()))
    for Op in (HessianOperator, GGNOperator):
        mean_op, sum_op = Op(model, mean_loss, data), Op(model, sum_loss, data)
        assert _err(sum_op @ V, terms * (mean_op @ V)) <= TOL
        assert _err(sum_op.loss(), terms * mean_op.loss()) <= TOL


REFUSED: dict[str, tuple[Any, str | None, str]] = {
    "module-none": (nn.CrossEntropyLoss(reduction="none"), None,
                    r"reduction 'none' \(its reduction attribute\).*accepted reductions are 'mean' and 'sum'"),
    "mse-none": (nn.MSELoss(reduction="none"), None, r"reduction 'none'.*accepted reductions are 'mean' and 'sum'"),
    "functional-none": (functools.partial(F.mse_loss, reduction="none"), None,
                        r"reduction 'none' \(the default of its reduction keyword\).*accepted reductions are 'mean' and 'sum'"),
    "callable-unstated": (lambda z, y: ((z - y) ** 2).sum(), None,
                          r"cannot tell how loss_fn .*<lambda> reduces a batch.*pass reduction='mean'.*or reduction='sum'"),
    "explicit-none": (lambda z, y: ((z - y) ** 2).sum(), "none", r"unknown reduction 'none'; accepted reductions are 'mean' and 'sum'"),
    "explicit-batchmean": (nn.MSELoss(), "batchmean", r"unknown reduction 'batchmean'; accepted reductions are 'mean' and 'sum'"),
    "contradiction": (nn.MSELoss(reduction="sum"), "mean", r"reduction='mean' contradicts loss_fn MSELoss, whose reduction is 'sum'"),
}


@pytest.mark.parametrize("Op", [HessianOperator, GGNOperator])
@pytest.mark.parametrize("kind", sorted(REFUSED))
def test_losses_without_an_accepted_reduction_are_refused(kind, Op):
    loss_fn, reduction, message = REFUSED[kind]
    model, _, data, _ = case("mlp-mse-mean")
    with pytest.raises(ValueError, match=message):
        Op(model, loss_fn, data, reduction=reduction)


def test_functional_losses_declare_their_reduction():
    """``torch.nn.functional`` losses and partials of them need no ``reduction`` argument."""
    model, _, data, ref = case("mlp-ce-sum")
    assert HessianOperator(model, F.cross_entropy, data).reduction == "mean"
    op = HessianOperator(model, functools.partial(F.cross_entropy, reduction="sum"), data)
    V = _probe_block(op.shape[0])
    assert op.reduction == "sum" and _err(op @ V, ref["H"] @ V) <= TOL


def test_all_targets_ignored_is_refused():
    model, _, data, _ = case("mlp-ce-mean")
    ignored = [(x, torch.full_like(y, -100)) for x, y in data]
    with pytest.raises(ValueError, match="every target of the data is ignored"):
        HessianOperator(model, nn.CrossEntropyLoss(), ignored)


def test_a_batch_with_every_target_ignored_adds_nothing():
    model, loss_fn, data, _ = case("mlp-ce-mean")
    x_extra = torch.rand(2, 10, generator=torch.Generator().manual_seed(3))
    padded = [*data, (x_extra, torch.full((2,), -100))]
    ref_data = _float64_batches(data)
    H = reference_hessian(model, loss_fn, ref_data)
    for hvp_mode in ("auto", "rev_rev"):
        op = HessianOperator(model, loss_fn, padded, hvp_mode=hvp_mode)
        V = _probe_block(op.shape[0])
        assert _err(op @ V, H @ V) <= TOL
        assert op.num_examples == 9 and op.report.num_batches == 3
