"""Per-sample gradients and their covariance, dense or streamed in bounded memory.

* Per-sample gradients by ``torch.func.vmap`` over ``torch.func.grad`` of a one-example
  loss (the per-example gradient trick; Goodfellow 2015, "Efficient per-example gradient
  computations"), ``chunk_size`` examples per vectorised call. :class:`PerSampleGradients`
  yields them chunk by chunk, recomputed on every pass, so no pass holds the (N, P) matrix.
* Gradient covariance ``Sigma = (1/N) sum_i g_i g_i^T - g g^T = Gc^T Gc / N`` (eq. (5) of
  the first research plan) with ``Gc`` the centred (N, P) gradients. Its nonzero
  eigenvalues are those of the centred Gram matrix ``K = Gc Gc^T / N`` (N, N), and an
  eigenvector ``u`` of K with eigenvalue ``s`` gives Sigma's ``Gc^T u / sqrt(N s)``.

:class:`GradientCovariance` holds Sigma in one of two storages:

* ``dense``: the centred (N, P) matrix (and the per-sample matrix it came from while it is
  built: peak about ``3 N P`` numbers); eigenpairs from ``eigh`` of K (N <= P) or of Sigma.
* ``streamed``: mean, diagonals and K only, never N x P. K is filled panel by panel: the
  centred gradients of up to ``panel_rows`` examples are held while every later chunk is
  recomputed and multiplied against them, so a pass computes ``N - start`` per-sample
  gradients and the whole Gram costs ``N + sum_panels (N - start)`` of them (N when one panel
  holds all, about ``N^2 / (2 panel_rows)`` when the panels are small), plus one pass for the
  mean. Peak memory ``(panel_rows + chunk_size + k) P + 2 N^2`` numbers (k: eigenvectors
  asked for). With N > P the P x P matrix Sigma is accumulated in one pass instead (P^2 <
  N^2). Products ``Sigma V`` cost one pass each. Values agree with the dense storage to
  rounding (the Gram's blocks are summed in another order: last digits move).

:func:`gradient_covariance` takes the dense storage whenever it fits ``memory_bytes``
(the results of a dense run are unchanged), else streams.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import grad, vmap
from torch.utils._pytree import tree_map

from landscape.curvature.linop import SymmetricOperator
from landscape.curvature.operators import _Engine
from landscape.functional import LossFn, curvature_mode, flatten_tensors

__all__ = [
    "COVARIANCE_STORAGES",
    "DEFAULT_COVARIANCE_MEMORY_BYTES",
    "covariance_chunk_size",
    "PerSampleGradients",
    "per_sample_gradients",
    "CovarianceEigenpairs",
    "GradientCovariance",
    "gradient_covariance",
    "dense_covariance_bytes",
    "streamed_covariance_bytes",
]

COVARIANCE_STORAGES: tuple[str, ...] = ("auto", "dense", "streamed")
DEFAULT_COVARIANCE_MEMORY_BYTES: int = 2 * 1024**3
"""Default budget (2 GiB) for the per-sample gradients a covariance holds at once."""


def dense_covariance_bytes(num_samples: int, num_params: int, itemsize: int) -> int:
    """Peak bytes of the dense storage: per-sample matrix, centred copy and one temporary
    of the same size (3 N P), plus the Gram or P x P matrix and its eigenvectors."""
    n, p = num_samples, num_params
    return itemsize * (3 * n * p + 2 * min(n, p) ** 2 + (n * p if n <= p else 0))


def streamed_covariance_bytes(num_samples: int, num_params: int, itemsize: int, *, panel_rows: int,
                              chunk_size: int, num_vectors: int = 0) -> int:
    """Peak bytes of the streamed storage: ``(panel_rows + 2 chunk_size + k) P`` gradient
    numbers (the panel, a chunk and its per-parameter gradients while they are flattened, k
    eigenvectors), four (P,) vectors (mean, two diagonals, an accumulator) and two N x N
    matrices (Gram and its eigenvectors; with N > P two P x P ones). Activations of the
    vectorised per-sample pass (``chunk_size`` examples) come on top."""
    n, p = num_samples, num_params
    return itemsize * ((min(panel_rows, n) + 2 * chunk_size + num_vectors + 4) * p + 2 * min(n, p) ** 2)


def _check_positive(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


# --------------------------------------------------------------------------------------
# Per-sample gradients
# --------------------------------------------------------------------------------------


class PerSampleGradients:
    """Per-sample gradients of a model's loss, computed chunk by chunk on every pass.

    The model runs in eval mode (dropout off, BatchNorm with running statistics, attention
    on its math path), since a per-example loss must not depend on the other examples of its
    batch. The example loss is ``loss_fn(model(x_i[None]), y_i[None])`` (the loss of a batch
    of one, so the same for a mean and a summed loss without sequence outputs); with
    ``bn_mode="eval"`` the mean of the rows is the gradient of a mean loss over the examples,
    their sum the gradient of a summed one. The model is snapshotted here and never modified.

    Args:
        model: the network.
        loss_fn: ``loss_fn(outputs, targets)`` returning a batch's loss (mean or sum).
        data: iterable of ``(inputs, targets)`` batches, iterated once here and once per
            pass (it must yield the same examples each time).
        params: parameter names (default: all trainable), flattened in
            ``named_parameters()`` order as in :class:`HessianOperator`.
        chunk_size: examples per vectorised call (a chunk never spans two batches); None:
            a whole batch at once.

    Attributes:
        num_samples: N. num_params: P. dtype, device: those of the parameters.
        spans: ``(start, stop)`` example rows of each chunk, in pass order.
    """

    def __init__(self, model: nn.Module, loss_fn: LossFn, data: Iterable[tuple[Any, Any]],
                 params: Sequence[str] | None = None, chunk_size: int | None = 64) -> None:
        if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
        self._engine = engine = _Engine(model, loss_fn, data, "eval", params, block_size=1, weighted=False)
        self.model, self.loss_fn, self.chunk_size = model, loss_fn, chunk_size
        self.num_params, self.dtype, self.device = engine.num_params, engine.dtype, engine.device
        self.names = engine.names
        self.spans: list[tuple[int, int]] = []
        total = 0
        for _, _, n in engine.batches():
            step = n if chunk_size is None else chunk_size
            self.spans += [(total + s, total + min(s + step, n)) for s in range(0, n, step)]
            total += n
        if total == 0:
            raise ValueError("data yielded no examples")
        self.num_samples = total

        def one_loss(theta: dict[str, Tensor], x: Any, y: Any) -> Tensor:
            xb = tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, x)
            yb = tree_map(lambda t: t.unsqueeze(0) if isinstance(t, Tensor) else t, y)
            return loss_fn(engine.forward(theta, xb), yb)

        self._per_example = vmap(grad(one_loss), in_dims=(None, 0, 0))

    @property
    def num_chunks(self) -> int:
        return len(self.spans)

    def chunks(self, first: int = 0, last: int | None = None) -> Iterator[tuple[int, Tensor]]:
        """``(index, gradients (rows, P))`` of chunks ``first .. last - 1`` in order; the
        chunks outside are skipped without computing them (one pass over the data)."""
        stop = self.num_chunks if last is None else last
        index, total = 0, 0
        for inputs, targets, n in self._engine.batches():
            step = n if self.chunk_size is None else self.chunk_size
            for s in range(0, n, step):
                if first <= index < stop:
                    e = min(s + step, n)
                    x = tree_map(lambda t, s=s, e=e: t[s:e] if isinstance(t, Tensor) else t, inputs)
                    y = tree_map(lambda t, s=s, e=e: t[s:e] if isinstance(t, Tensor) else t, targets)
                    with curvature_mode(self.model, "eval"):
                        grads = self._per_example(self._engine.theta, x, y)
                    flat = flatten_tensors([grads[k] for k in self.names], batch_dims=1).detach()
                    del grads  # one (rows, P) copy in flight, not two
                    yield index, flat
                index += 1
                if index >= stop:
                    return
            total += n
        if total != self.num_samples:
            raise RuntimeError(f"the data yielded {total} examples in this pass but {self.num_samples} at construction; "
                               "per-sample gradients need the same data on every pass")

    def matrix(self) -> Tensor:
        """All per-sample gradients stacked, (N, P): the dense route."""
        return torch.cat([g for _, g in self.chunks()], dim=0)


def per_sample_gradients(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[tuple[Any, Any]],
    params: Sequence[str] | None = None,
    chunk_size: int | None = 64,
) -> Tensor:
    """Gradients of each example's loss, stacked (N, P) (see :class:`PerSampleGradients`).

    Returns:
        Tensor (N, P) in the parameters' dtype and device.
    """
    return PerSampleGradients(model, loss_fn, data, params=params, chunk_size=chunk_size).matrix()


# --------------------------------------------------------------------------------------
# Covariance
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class CovarianceEigenpairs:
    """Leading eigenpairs of a gradient covariance.

    Attributes:
        values: (k,) eigenvalues, descending (>= 0).
        vectors: (P, k) orthonormal eigenvectors.
        numerical_rank: eigenvalues above ``max(N, P) * eps * lambda_max``.
    """

    values: Tensor
    vectors: Tensor
    numerical_rank: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (vectors left out)."""
        return {"values": self.values.tolist(), "numerical_rank": self.numerical_rank}


@dataclasses.dataclass
class _Spectrum:
    values: Tensor  # all min(N, P) eigenvalues, descending, clamped at 0
    rank: int
    vectors: Tensor | None  # (P, r) parameter-space eigenvectors when computed
    gram_vectors: Tensor | None  # streamed N <= P: (N, rank) eigenvectors of the Gram matrix


class GradientCovariance(SymmetricOperator):
    """``Sigma = (1/N) sum_i g_i g_i^T - g g^T`` from per-sample gradients, as an operator.

    ``Sigma V = Gc^T (Gc V) / N`` costs O(N P k) and the rank is at most N - 1.

    Args:
        per_sample: (N, P) per-sample gradients, N >= 2 (dense storage), or a
            :class:`PerSampleGradients` source (streamed storage; see the module docstring).
        panel_rows: streamed storage: examples whose centred gradients are held at once while
            the Gram matrix is filled (default: all, i.e. one pass, N P numbers).

    Attributes:
        mean: (P,) mean gradient ``g``.
        centred: (N, P) centred gradients (dense storage; None when streamed).
        num_samples: N.
        storage: "dense" or "streamed".
        per_sample_passes: per-sample gradient computations spent so far, in units of N.
    """

    def __init__(self, per_sample: Tensor | PerSampleGradients, *, panel_rows: int | None = None) -> None:
        self._eig: _Spectrum | None = None
        self._diag: Tensor | None = None
        self._gram: Tensor | None = None  # streamed, N <= P: the centred Gram matrix until decomposed
        self._sigma_pp: Tensor | None = None  # streamed, N > P: Sigma itself until decomposed
        self._source: PerSampleGradients | None = None
        self._computed = 0  # per-sample gradients computed
        if isinstance(per_sample, PerSampleGradients):
            self._init_streamed(per_sample, panel_rows)
            return
        if per_sample.ndim != 2 or per_sample.shape[0] < 2:
            raise ValueError(f"per_sample must be (N, P) with N >= 2, got shape {tuple(per_sample.shape)}")
        G = per_sample.detach()
        self.storage = "dense"
        self.num_samples = int(G.shape[0])
        self.mean = G.mean(0)
        self.centred: Tensor | None = G - self.mean
        self.second_moment_diag = (G * G).mean(0)
        self.shape = (int(G.shape[1]), int(G.shape[1]))
        self.dtype = G.dtype
        self.device = G.device
        self.panel_rows = self.num_samples

    # streamed construction ------------------------------------------------------------
    def _init_streamed(self, source: PerSampleGradients, panel_rows: int | None) -> None:
        N, P = source.num_samples, source.num_params
        if N < 2:
            raise ValueError(f"a gradient covariance needs N >= 2 examples, got {N}")
        self.panel_rows = N if panel_rows is None else _check_positive("panel_rows", panel_rows)
        self.storage, self._source, self.centred = "streamed", source, None
        self.num_samples, self.shape, self.dtype, self.device = N, (P, P), source.dtype, source.device
        total = torch.zeros(P, dtype=self.dtype, device=self.device)
        squares = torch.zeros(P, dtype=self.dtype, device=self.device)
        for _, J in self._pass():
            total += J.sum(0)
            squares += (J * J).sum(0)
        self.mean = total / N
        self.second_moment_diag = squares / N
        diag = self._diag = torch.zeros(P, dtype=self.dtype, device=self.device)  # filled by the first pass below
        if N <= P:
            self._gram = self._streamed_gram()
        else:  # P x P is the smaller side: accumulate Sigma itself in one pass
            S = torch.zeros(P, P, dtype=self.dtype, device=self.device)
            for _, C in self._centred_chunks():
                S.addmm_(C.T, C)
                diag += (C * C).sum(0)
            self._sigma_pp = S / N
        diag /= N

    def _pass(self, first: int = 0) -> Iterator[tuple[int, Tensor]]:
        assert self._source is not None
        for index, J in self._source.chunks(first):
            self._computed += J.shape[0]
            yield index, J

    def _centred_chunks(self, first: int = 0) -> Iterator[tuple[int, Tensor]]:
        """(chunk index, centred gradients of its rows); the dense storage is one chunk."""
        if self.centred is not None:
            yield 0, self.centred
            return
        for index, J in self._pass(first):
            yield index, J.sub_(self.mean)  # J is a fresh tensor of the pass: centre it in place

    def _streamed_gram(self) -> Tensor:
        """K = Gc Gc^T / N (N, N), panel by panel (module docstring)."""
        assert self._source is not None
        N, spans = self.num_samples, self._source.spans
        K = torch.empty(N, N, dtype=self.dtype, device=self.device)
        first = 0
        while first < len(spans):
            last = first + 1  # the panel: chunks first .. last - 1, at least one
            while last < len(spans) and spans[last][1] - spans[first][0] <= self.panel_rows:
                last += 1
            p0, p1 = spans[first][0], spans[last - 1][1]
            panel = torch.empty(p1 - p0, self.shape[0], dtype=self.dtype, device=self.device)
            for index, C in self._centred_chunks(first):
                if first == 0 and self._diag is not None:
                    self._diag += (C * C).sum(0)
                r0, r1 = spans[index]
                if index < last:
                    panel[r0 - p0 : r1 - p0] = C
                    if index == last - 1:
                        K[p0:p1, p0:p1] = panel @ panel.T / N
                    continue
                block = panel @ C.T / N
                K[p0:p1, r0:r1] = block
                K[r0:r1, p0:p1] = block.T
            del panel
            first = last
        return K

    # products and summaries -------------------------------------------------------------
    @property
    def per_sample_passes(self) -> float:
        """Per-sample gradients computed for this object so far, over N (0 for a dense one)."""
        return self._computed / self.num_samples

    def _matmat(self, V: Tensor) -> Tensor:
        if self.centred is not None:
            return self.centred.T @ (self.centred @ V) / self.num_samples
        out = torch.zeros(self.shape[0], V.shape[1], dtype=self.dtype, device=self.device)
        for _, C in self._centred_chunks():
            out.addmm_(C.T, C @ V)
        return out / self.num_samples

    def projected_energy(self, Q: Tensor) -> float:
        """``tr(Q^T Sigma Q) = ||Gc Q||_F^2 / N`` for a (P, k) block Q."""
        return sum(float((C @ Q).pow(2).sum()) for _, C in self._centred_chunks()) / self.num_samples

    def diagonal(self) -> Tensor:
        """diag(Sigma) (P,): per-parameter gradient variance."""
        if self._diag is None:
            assert self.centred is not None  # the streamed storage fills it at construction
            return (self.centred * self.centred).mean(0)
        return self._diag

    def second_moment_diagonal(self) -> Tensor:
        """diag(C) (P,) of the uncentred second moment ``C = (1/N) sum_i g_i g_i^T``."""
        return self.second_moment_diag

    def trace(self) -> float:
        """tr(Sigma) = ||Gc||_F^2 / N."""
        if self.centred is not None:
            return float((self.centred * self.centred).sum() / self.num_samples)
        return float(self.diagonal().sum())

    def _spectrum(self) -> _Spectrum:
        """All min(N, P) eigenvalues (descending) and the numerical rank; the dense storage
        also its eigenvectors (as before: N x P is held anyway)."""
        if self._eig is None:
            N, P = self.num_samples, self.shape[0]
            M: Tensor | None
            if self.centred is not None:
                M = self.centred @ self.centred.T / N if N <= P else self.centred.T @ self.centred / N
            else:
                M = self._gram if N <= P else self._sigma_pp
            assert M is not None
            evals, A = torch.linalg.eigh(0.5 * (M + M.T))
            evals, A = evals.flip(0), A.flip(1)
            lam_max = float(evals[0]) if evals.numel() else 0.0
            eps = torch.finfo(self.dtype).eps
            rank = int((evals > max(N, P) * eps * lam_max).sum()) if lam_max > 0 else 0
            # Eigenvalues of a PSD matrix below zero are rounding; clamp them.
            evals = evals.clamp_min(0)
            if N > P:
                self._eig = _Spectrum(evals, rank, A[:, :rank], None)
            elif self.centred is not None:
                self._eig = _Spectrum(evals, rank, self.centred.T @ A[:, :rank] / torch.sqrt(N * evals[:rank]), None)
            else:
                self._eig = _Spectrum(evals, rank, None, A[:, :rank].contiguous())
            self._gram = self._sigma_pp = None  # the eigen-decomposition replaces them
        return self._eig

    @property
    def numerical_rank(self) -> int:
        """Eigenvalues above ``max(N, P) * eps * lambda_max``."""
        return self._spectrum().rank

    def eigenvalues(self) -> Tensor:
        """All min(N, P) eigenvalues of the nonzero-capable part, descending."""
        return self._spectrum().values

    def _vectors(self, k: int) -> Tensor:
        """(P, k) top eigenvectors; streamed: ``Gc^T U_k / sqrt(N s)`` in one pass (cached)."""
        spec = self._spectrum()
        if spec.vectors is not None and spec.vectors.shape[1] >= k:
            return spec.vectors[:, :k]
        assert spec.gram_vectors is not None and self._source is not None
        U = spec.gram_vectors[:, :k]
        W = torch.zeros(self.shape[0], k, dtype=self.dtype, device=self.device)
        for index, C in self._centred_chunks():
            r0, r1 = self._source.spans[index]
            W.addmm_(C.T, U[r0:r1])
        spec.vectors = W / torch.sqrt(self.num_samples * spec.values[:k])
        return spec.vectors

    def eigenpairs(self, k: int | None = None) -> CovarianceEigenpairs:
        """Top-k eigenpairs, exact (dense ``eigh`` of the N x N Gram matrix or of Sigma).

        Args:
            k: number of pairs; default and maximum the numerical rank (eigenvectors of
                zero eigenvalues are not determined by the Gram route). Streamed storage:
                the vectors cost one pass and k P numbers.
        """
        rank = self.numerical_rank
        if k is None:
            k = rank
        if isinstance(k, bool) or not isinstance(k, int) or k < 0 or k > rank:
            raise ValueError(f"k must be an int in [0, numerical rank = {rank}], got {k!r}")
        values = self.eigenvalues()[:k].clone()
        return CovarianceEigenpairs(values=values, vectors=self._vectors(k).clone(), numerical_rank=rank)

    def frobenius_norm_sq(self) -> float:
        """||Sigma||_F^2 = sum of squared eigenvalues."""
        return float((self.eigenvalues() ** 2).sum())


def gradient_covariance(
    model: nn.Module,
    loss_fn: LossFn,
    data: Iterable[tuple[Any, Any]],
    params: Sequence[str] | None = None,
    chunk_size: int | None = 64,
    *,
    storage: str = "auto",
    memory_bytes: int = DEFAULT_COVARIANCE_MEMORY_BYTES,
) -> GradientCovariance:
    """:class:`GradientCovariance` of the per-sample gradients of ``data`` (eval mode).

    Args:
        model, loss_fn, data, params, chunk_size: as :class:`PerSampleGradients`.
        storage: "dense" (hold the (N, P) matrix), "streamed" (never hold it), or "auto":
            dense when :func:`dense_covariance_bytes` fits ``memory_bytes``, else streamed.
        memory_bytes: budget for per-sample gradients held at once; the streamed storage
            holds ``panel_rows = memory_bytes / (P itemsize) - chunk_size`` examples (at
            least one chunk) while filling the Gram matrix.
    """
    if storage not in COVARIANCE_STORAGES:
        raise ValueError(f"unknown storage {storage!r}; allowed values are {list(COVARIANCE_STORAGES)}")
    _check_positive("memory_bytes", memory_bytes)
    source = PerSampleGradients(model, loss_fn, data, params=params, chunk_size=chunk_size)
    N, P = source.num_samples, source.num_params
    itemsize = torch.empty((), dtype=source.dtype).element_size()
    if storage == "dense" or (storage == "auto" and dense_covariance_bytes(N, P, itemsize) <= memory_bytes):
        return GradientCovariance(source.matrix())
    fit = covariance_chunk_size(P, itemsize, memory_bytes, chunk_size)
    if fit != chunk_size:  # a chunk of per-sample gradients larger than the budget allows: smaller chunks
        source = PerSampleGradients(model, loss_fn, data, params=params, chunk_size=fit)
    chunk = max(hi - lo for lo, hi in source.spans)
    return GradientCovariance(source, panel_rows=max(chunk, memory_bytes // (P * itemsize) - chunk))


def covariance_chunk_size(num_params: int, itemsize: int, memory_bytes: int, chunk_size: int | None) -> int | None:
    """The chunk the streamed storage uses: ``chunk_size``, made small enough that the panel
    and two chunks of per-sample gradients (``4 chunk P`` numbers at least) fit ``memory_bytes``
    (a width-4096 MLP's gradient is 0.5 GB: chunks of 64 would hold 64 of them)."""
    fit = max(1, memory_bytes // (4 * num_params * itemsize))
    return fit if chunk_size is None or chunk_size > fit else chunk_size

