"""The streamed gradient covariance equals the dense one (float64, 1e-10), holds no N x P
matrix, spends the per-sample gradients its docstring states, and the figures built on it
(rank, alignment, kappa) agree between the two storages."""

from __future__ import annotations

import pytest
import torch
from models import bn_cnn, classification_batches, rel_err, tanh_mlp
from torch import nn

from landscape.curvature.covariance import (
    GradientCovariance,
    PerSampleGradients,
    covariance_chunk_size,
    dense_covariance_bytes,
    gradient_covariance,
    per_sample_gradients,
    streamed_covariance_bytes,
)
from landscape.curvature.noise import gradient_rank, noise_alignment, noise_curvature_correlation

CE = nn.CrossEntropyLoss()
F64 = torch.float64
TOL = 1e-10

# (model, batch sizes, input shape): N < P (the Gram route) and N > P (the P x P route)
CASES = {
    "N<P": (lambda: bn_cnn(5), (9, 8, 6), (1, 5, 5)),  # N = 23, P = 51
    "N>P": (lambda: tanh_mlp(6), (30, 27, 20), (4,)),  # N = 77, P = 51
}


def _pair(case: str, chunk_size: int, panel_rows: int) -> tuple[GradientCovariance, GradientCovariance]:
    make, sizes, shape = CASES[case]
    model = make()
    data = classification_batches(sizes, shape, seed=7)
    dense = GradientCovariance(per_sample_gradients(model, CE, data, chunk_size=chunk_size))
    streamed = GradientCovariance(PerSampleGradients(model, CE, data, chunk_size=chunk_size), panel_rows=panel_rows)
    return dense, streamed


def _close(a: torch.Tensor, b: torch.Tensor, scale: float | None = None) -> bool:
    """Max-abs difference within TOL of ``scale`` (default: b's largest magnitude)."""
    s = float(b.abs().max()) if scale is None else scale
    return float((a - b).abs().max()) <= TOL * s


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("chunk_size, panel_rows", [(4, 5), (3, 1), (64, 1000)], ids=["panels", "chunk-panels", "one-panel"])
def test_streamed_equals_dense(case, chunk_size, panel_rows):
    dense, streamed = _pair(case, chunk_size, panel_rows)
    assert streamed.storage == "streamed" and streamed.centred is None and dense.storage == "dense"
    N, P = dense.num_samples, dense.shape[0]
    assert (streamed.num_samples, streamed.shape) == (N, (P, P))
    assert _close(streamed.mean, dense.mean)
    assert _close(streamed.second_moment_diagonal(), dense.second_moment_diagonal())
    assert _close(streamed.diagonal(), dense.diagonal())
    assert streamed.trace() == pytest.approx(dense.trace(), rel=TOL)
    V = torch.randn(P, 3, generator=torch.Generator().manual_seed(1), dtype=F64)
    assert rel_err(streamed @ V, dense @ V) < TOL
    # spectrum: every eigenvalue within 1e-10 of lambda_max, the same numerical rank
    lam = dense.eigenvalues()
    assert _close(streamed.eigenvalues(), lam, float(lam[0]))
    assert streamed.numerical_rank == dense.numerical_rank
    assert streamed.frobenius_norm_sq() == pytest.approx(dense.frobenius_norm_sq(), rel=TOL)
    # top eigenvectors (distinct eigenvalues here): equal up to sign
    k = 4
    assert float((lam[: k + 1].diff().abs() / lam[0]).min()) > 1e-3
    vs, vd = streamed.eigenpairs(k).vectors, dense.eigenpairs(k).vectors
    signs = torch.sign((vs * vd).sum(0))
    assert rel_err(vs * signs, vd) < 1e-8  # eigenvector error ~ eps * lambda_max / gap
    # the figures built on Sigma
    rs, rd = gradient_rank(streamed).to_dict(), gradient_rank(dense).to_dict()
    assert rs.keys() == rd.keys()
    for key in rd:
        assert rs[key] == (rd[key] if isinstance(rd[key], str) else pytest.approx(rd[key], rel=TOL)), key
    H = torch.linalg.qr(torch.randn(P, 3, generator=torch.Generator().manual_seed(2), dtype=F64))[0]
    na_s, na_d = noise_alignment(H, streamed), noise_alignment(H, dense)
    assert na_s.kappa == pytest.approx(na_d.kappa, rel=TOL) and na_s.kappa_max == pytest.approx(na_d.kappa_max, rel=TOL)
    assert na_s.alignment is not None and na_d.alignment is not None
    assert torch.allclose(na_s.alignment.principal_angles, na_d.alignment.principal_angles, rtol=0, atol=1e-8)
    h = torch.rand(P, generator=torch.Generator().manual_seed(3), dtype=F64)
    cs, cd = noise_curvature_correlation(h, streamed), noise_curvature_correlation(h, dense)
    assert cs.pearson_covariance == pytest.approx(cd.pearson_covariance, rel=TOL)
    assert cs.spearman_second_moment == pytest.approx(cd.spearman_second_moment, rel=TOL)


def test_streamed_passes_are_as_stated():
    """Mean pass (N) + each panel's pass (N - start) for the Gram, + one pass per product and
    one for the eigenvectors; N = 23 in chunks of 4 (the last batch's chunks: 4, 2)."""
    _, streamed = _pair("N<P", chunk_size=4, panel_rows=8)
    spans = PerSampleGradients(bn_cnn(5), CE, classification_batches((9, 8, 6), (1, 5, 5), seed=7), chunk_size=4).spans
    assert spans == [(0, 4), (4, 8), (8, 9), (9, 13), (13, 17), (17, 21), (21, 23)]
    # panels: rows 0-8 (chunks 0, 1), 8-17 is 9 rows > 8 so 8-13 (chunks 2, 3), 13-21, 21-23
    gram = 23 + (23 - 8) + (23 - 13) + (23 - 21)
    assert streamed.per_sample_passes == pytest.approx((23 + gram) / 23, rel=1e-15)
    streamed.eigenpairs(2)
    streamed @ torch.ones(51, 1, dtype=F64)
    assert streamed.per_sample_passes == pytest.approx((23 + gram + 23 + 23) / 23, rel=1e-15)


def test_gradient_covariance_picks_dense_when_it_fits_and_streams_otherwise():
    model, data = tanh_mlp(1), classification_batches((7, 6), seed=1)
    N, P = 13, 51
    fits = dense_covariance_bytes(N, P, 8)
    dense = gradient_covariance(model, CE, data, chunk_size=4, memory_bytes=fits)
    streamed = gradient_covariance(model, CE, data, chunk_size=4, memory_bytes=fits - 1)
    assert dense.storage == "dense" and streamed.storage == "streamed"
    assert streamed.panel_rows == max(4, (fits - 1) // (P * 8) - 4)
    # a budget of 10 gradients: chunks of 4 would leave too little, so chunks of 10 // 4 = 2 and a panel of 8
    assert covariance_chunk_size(P, 8, 10 * P * 8, 4) == 2 and covariance_chunk_size(P, 8, 100 * P * 8, 4) == 4
    forced = gradient_covariance(model, CE, data, chunk_size=4, storage="streamed", memory_bytes=10 * P * 8)
    assert forced.storage == "streamed" and forced.panel_rows == 8
    assert _close(forced.eigenvalues(), dense.eigenvalues(), float(dense.eigenvalues()[0]))
    assert gradient_covariance(model, CE, data, storage="dense", memory_bytes=1).storage == "dense"
    # the stated bound grows with the panel, not with N x P
    assert streamed_covariance_bytes(N, P, 8, panel_rows=6, chunk_size=4) < dense_covariance_bytes(N, P, 8)


def test_streamed_covariance_errors():
    model, data = tanh_mlp(1), classification_batches((7, 6), seed=1)
    with pytest.raises(ValueError, match=r"unknown storage 'disk'; allowed values are \['auto', 'dense', 'streamed'\]"):
        gradient_covariance(model, CE, data, storage="disk")
    with pytest.raises(ValueError, match="memory_bytes must be a positive int, got 0"):
        gradient_covariance(model, CE, data, memory_bytes=0)
    with pytest.raises(ValueError, match="panel_rows must be a positive int, got 0"):
        GradientCovariance(PerSampleGradients(model, CE, data), panel_rows=0)
    with pytest.raises(ValueError, match="needs N >= 2 examples, got 1"):
        GradientCovariance(PerSampleGradients(model, CE, [(data[0][0][:1], data[0][1][:1])]))

    class Shrinking:  # yields fewer examples on later passes
        def __init__(self) -> None:
            self.calls = 0

        def __iter__(self):
            self.calls += 1
            return iter(data if self.calls == 1 else data[:1])

    with pytest.raises(RuntimeError, match="yielded 7 examples in this pass but 13 at construction"):
        GradientCovariance(PerSampleGradients(model, CE, Shrinking()))
