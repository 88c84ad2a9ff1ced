"""Thick-restart Lanczos and the Lanczos tridiagonal against dense float64 ground truth."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch

from landscape.curvature.lanczos import lanczos_tridiagonal, top_eigenpairs
from landscape.curvature.linop import DenseOperator, SymmetricOperator

TOL = 1e-8


def reference(evals: torch.Tensor, which: str, k: int) -> torch.Tensor:
    if which == "LA":
        return evals.flip(0)[:k]
    if which == "SA":
        return evals[:k]
    return evals[torch.argsort(evals.abs(), descending=True, stable=True)][:k]


@pytest.mark.parametrize("which", ["LA", "SA", "LM"])
@pytest.mark.parametrize("case", ["known_spectrum", "random_symmetric"])
def test_top5_values_match_dense(case, which, request):
    q = request.getfixturevalue(case)
    res = top_eigenpairs(q.matrix, k=5, which=which, tol=TOL, seed=0)
    ref = reference(q.eigenvalues, which, 5)
    assert res.converged
    torch.testing.assert_close(res.values, ref, rtol=1e-6, atol=0.0)
    assert res.values.shape == (5,) and res.vectors.shape == (q.dim, 5)
    assert (res.residuals <= TOL).all()
    # The certificate from the Lanczos relation equals the residual of explicit products.
    true = torch.linalg.vector_norm(q.matrix @ res.vectors - res.vectors * res.values, dim=0) / res.values.abs()
    torch.testing.assert_close(res.true_residuals, true, rtol=1e-6, atol=1e-14)
    torch.testing.assert_close(res.residuals, true, rtol=0.05, atol=1e-12)
    torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-10)


def test_known_spectrum_values_and_vectors(known_spectrum):
    q = known_spectrum
    res = top_eigenpairs(q.matrix, k=5, which="LA", tol=TOL)
    expected = torch.tensor([50.0, 10.0 * (1 + 1e-6), 10.0, 8.0, 7.5], dtype=torch.float64)
    torch.testing.assert_close(res.values, expected, rtol=1e-9, atol=0.0)
    true_vecs = q.eigenvectors.flip(1)[:, :5]
    cos = (true_vecs.T @ res.vectors).diagonal().abs()
    for i in (0, 3, 4):  # well-separated eigenvalues: the vector itself
        assert cos[i] > 1 - 1e-10
    # The pair 10(1 + 1e-6), 10 is resolved as a subspace: principal angles ~ 0.
    sv = torch.linalg.svdvals(true_vecs[:, 1:3].T @ res.vectors[:, 1:3])
    assert sv.min() > 1 - 1e-10


def test_matches_scipy_eigsh(known_spectrum):
    from scipy.sparse.linalg import eigsh

    op = DenseOperator(known_spectrum.matrix)
    ref = np.sort(eigsh(op.to_scipy(), k=5, which="LA", tol=1e-12)[0])[::-1]
    res = top_eigenpairs(op, k=5, which="LA", tol=TOL)
    np.testing.assert_allclose(res.values.numpy(), ref, rtol=1e-9)


def test_float32_operator_with_float64_basis(known_spectrum):
    A32 = known_spectrum.matrix.to(torch.float32)
    ref = torch.linalg.eigvalsh(A32.double()).flip(0)[:3]
    res = top_eigenpairs(A32, k=3, which="LA", tol=1e-5, dtype=torch.float64)
    assert res.values.dtype == torch.float64 and res.vectors.dtype == torch.float64
    assert res.converged
    # Accuracy is limited by the float32 products: ~eps32 * ||A||.
    torch.testing.assert_close(res.values, ref, rtol=0, atol=50 * 1e-6)
    res32 = top_eigenpairs(A32, k=3, which="LA", tol=1e-4)
    assert res32.values.dtype == torch.float32
    torch.testing.assert_close(res32.values.double(), ref, rtol=0, atol=50 * 1e-5)


def test_deterministic_for_fixed_seed(random_symmetric):
    a = top_eigenpairs(random_symmetric.matrix, k=4, which="LM", tol=1e-6, seed=7)
    b = top_eigenpairs(random_symmetric.matrix, k=4, which="LM", tol=1e-6, seed=7)
    assert torch.equal(a.values, b.values) and torch.equal(a.vectors, b.vectors)
    assert a.num_matvecs == b.num_matvecs and a.num_restarts == b.num_restarts


@pytest.mark.parametrize("verify", [True, False])
def test_num_matvecs_is_exact(known_spectrum, counting, verify):
    op = counting(known_spectrum.matrix)
    res = top_eigenpairs(op, k=5, which="SA", tol=1e-8, verify=verify)
    assert res.num_restarts > 0  # the count must survive restarts
    assert op.count == res.num_matvecs
    if not verify:
        assert torch.isnan(res.true_residuals).all()


def test_budget_is_respected_and_reported(known_spectrum, counting):
    op = counting(known_spectrum.matrix)
    res = top_eigenpairs(op, k=5, which="SA", tol=1e-12, max_matvecs=40)
    assert op.count == res.num_matvecs == 40
    assert not res.converged
    assert (res.residuals > 1e-12).any()


def test_breakdown_with_repeated_eigenvalues(few_distinct, counting):
    # Any Krylov space has dimension <= 3 here: finding 5 pairs needs fresh restarts.
    op = counting(few_distinct.matrix)
    res = top_eigenpairs(op, k=5, which="LA", tol=1e-10)
    assert res.converged
    torch.testing.assert_close(res.values, torch.tensor([5.0, 5.0, 5.0, 5.0, 3.0], dtype=torch.float64), rtol=1e-10, atol=0)
    assert op.count == res.num_matvecs
    # The four vectors for 5 span the true eigenspace.
    sv = torch.linalg.svdvals(few_distinct.eigenvectors[:, -4:].T @ res.vectors[:, :4])
    assert sv.min() > 1 - 1e-10


@pytest.fixture(scope="module")
def rank_deficient():
    """P = 200 PSD matrix of rank 40 (a GGN-like null space of dimension 160)."""
    g = torch.Generator().manual_seed(0)
    X = torch.randn(200, 40, generator=g, dtype=torch.float64)
    return X @ X.T


def test_multiplicity_check_finds_null_space_copies(rank_deficient, counting):
    A = rank_deficient
    norm = float(torch.linalg.eigvalsh(A)[-1])
    op = counting(A)
    res = top_eigenpairs(op, k=4, which="SA", tol=1e-6)
    assert res.converged and op.count == res.num_matvecs
    assert (res.values.abs() < 1e-10 * norm).all()
    assert torch.linalg.vector_norm(A @ res.vectors, dim=0).max() < 1e-8 * norm
    assert (res.true_residuals <= 1e-6).all()
    torch.testing.assert_close(res.vectors.T @ res.vectors, torch.eye(4, dtype=torch.float64), rtol=0, atol=1e-10)
    # A single start vector sees one direction per distinct eigenvalue: without the
    # deflated check further copies of 0 stay hidden and positive eigenvalues take their place.
    plain = top_eigenpairs(A, k=4, which="SA", tol=1e-6, check_multiplicity=False)
    assert plain.values[-1] > 1.0


@pytest.mark.parametrize("budget", [20, 45, 70, 95, 120, 150])
def test_converged_implies_correct_under_any_budget(rank_deficient, counting, budget):
    op = counting(rank_deficient)
    res = top_eigenpairs(op, k=4, which="SA", tol=1e-6, max_matvecs=budget)
    assert op.count == res.num_matvecs <= budget
    if res.converged:
        assert (res.values.abs() < 1e-10 * float(torch.linalg.matrix_norm(rank_deficient, ord=2))).all()


def test_start_vector_in_invariant_subspace(known_spectrum):
    q = known_spectrum
    v0 = q.eigenvectors[:, -1].clone()  # the spike's eigenvector: breakdown after one step
    res = top_eigenpairs(q.matrix, k=3, which="LA", tol=TOL, v0=v0)
    torch.testing.assert_close(res.values, q.eigenvalues.flip(0)[:3], rtol=1e-9, atol=0)


def test_whole_space_small_problem(counting):
    A = torch.diag(torch.tensor([3.0, -1.0, 2.0, 0.5, -4.0, 1.0], dtype=torch.float64))
    op = counting(A)
    res = top_eigenpairs(op, k=5, which="LA", tol=1e-12)
    torch.testing.assert_close(res.values, torch.tensor([3.0, 2.0, 1.0, 0.5, -1.0], dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert res.converged and op.count == res.num_matvecs


def test_zero_matrix():
    res = top_eigenpairs(torch.zeros(20, 20, dtype=torch.float64), k=2, tol=1e-6)
    assert res.converged
    assert torch.equal(res.values, torch.zeros(2, dtype=torch.float64))


def test_lanczos_tridiagonal_relation(known_spectrum, counting):
    A = known_spectrum.matrix / 50.0
    op = counting(A)
    g = torch.Generator().manual_seed(0)
    v = torch.randn(known_spectrum.dim, generator=g, dtype=torch.float64)
    tri = lanczos_tridiagonal(op, v, 30, return_basis=True)
    assert tri.alpha.shape == (30,) and tri.beta.shape == (29,) and tri.basis.shape == (known_spectrum.dim, 30)
    assert op.count == tri.num_matvecs == 30
    V = tri.basis
    T = torch.diag(tri.alpha) + torch.diag(tri.beta, 1) + torch.diag(tri.beta, -1)
    torch.testing.assert_close(V.T @ V, torch.eye(30, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(V.T @ A @ V, T, rtol=0, atol=1e-12)
    torch.testing.assert_close(V[:, 0], v / v.norm(), rtol=0, atol=1e-14)


def test_lanczos_tridiagonal_block_equals_single(random_symmetric, counting):
    g = torch.Generator().manual_seed(1)
    V0 = torch.randn(random_symmetric.dim, 3, generator=g, dtype=torch.float64)
    op = counting(random_symmetric.matrix)
    block = lanczos_tridiagonal(op, V0, 12)
    assert block.alpha.shape == (3, 12) and block.beta.shape == (3, 11)
    assert op.count == block.num_matvecs == 36 and op.calls == 12
    for i in range(3):
        single = lanczos_tridiagonal(random_symmetric.matrix, V0[:, i], 12)
        torch.testing.assert_close(block.alpha[i], single.alpha, rtol=0, atol=1e-12)
        torch.testing.assert_close(block.beta[i], single.beta, rtol=0, atol=1e-12)


def test_lanczos_tridiagonal_breakdown_and_cap(few_distinct):
    g = torch.Generator().manual_seed(2)
    v = torch.randn(few_distinct.dim, generator=g, dtype=torch.float64)
    tri = lanczos_tridiagonal(few_distinct.matrix, v, 80, return_basis=True)  # capped at P = 50
    assert tri.alpha.shape == (50,) and tri.num_matvecs == 50
    assert tri.beta[2] == 0.0  # three distinct eigenvalues: invariant after 3 steps
    V = tri.basis
    T = torch.diag(tri.alpha) + torch.diag(tri.beta, 1) + torch.diag(tri.beta, -1)
    torch.testing.assert_close(V.T @ V, torch.eye(50, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(V.T @ few_distinct.matrix @ V, T, rtol=0, atol=1e-11)
    torch.testing.assert_close(torch.linalg.eigvalsh(T), few_distinct.eigenvalues, rtol=0, atol=1e-10)


def test_errors(known_spectrum):
    A = known_spectrum.matrix
    with pytest.raises(ValueError, match="which must be one of"):
        top_eigenpairs(A, k=2, which="BE")
    with pytest.raises(ValueError, match=r"k must be an int with 1 <= k < P = 300, got 300"):
        top_eigenpairs(A, k=300)
    with pytest.raises(ValueError, match=r"k must be an int with 1 <= k < P"):
        top_eigenpairs(A, k=0)
    with pytest.raises(ValueError, match="tol must be a finite number > 0"):
        top_eigenpairs(A, k=2, tol=0.0)
    with pytest.raises(ValueError, match=r"max_basis must be an int > k = 5"):
        top_eigenpairs(A, k=5, max_basis=5)
    with pytest.raises(ValueError, match=r"max_matvecs must be an int >= 10"):
        top_eigenpairs(A, k=5, max_matvecs=9)
    with pytest.raises(ValueError, match="dtype must be a real floating"):
        top_eigenpairs(A, k=2, dtype=torch.int64)
    with pytest.raises(ValueError, match=r"v0 must have shape \(300,\)"):
        top_eigenpairs(A, k=2, v0=torch.ones(3, dtype=torch.float64))
    with pytest.raises(ValueError, match="v0 must be a finite non-zero vector"):
        top_eigenpairs(A, k=2, v0=torch.zeros(300, dtype=torch.float64))
    with pytest.raises(ValueError, match="num_steps must be an int >= 1"):
        lanczos_tridiagonal(A, torch.ones(300, dtype=torch.float64), 0)
    with pytest.raises(ValueError, match="v0 must hold at least one finite non-zero"):
        lanczos_tridiagonal(A, torch.zeros(300, 2, dtype=torch.float64), 5)
    with pytest.raises(ValueError, match=r"v0 must have shape \(300,\) or \(300, b\)"):
        lanczos_tridiagonal(A, torch.ones(7), 5)
    with pytest.raises(TypeError, match="expected a SymmetricOperator"):
        top_eigenpairs([[1.0]], k=1)


# --------------------------------------------------------------------------------------
# stop="value": tolerance on the estimated eigenvalue error
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("k", [1, 5])
@pytest.mark.parametrize("tol", [1e-4, 1e-7])
@pytest.mark.parametrize("case", ["known_spectrum", "outliers_and_bulk"])
def test_value_stop_meets_eigenvalue_tolerance(case, tol, k, request, counting):
    q = request.getfixturevalue(case)
    ref = q.eigenvalues.flip(0)[:k]
    for seed in range(4):
        op = counting(q.matrix)
        res = top_eigenpairs(op, k=k, which="LA", tol=tol, seed=seed, stop="value")
        err = (res.values - ref).abs() / ref.abs()
        assert res.converged and res.stop == "value"
        assert op.count == res.num_matvecs
        assert (res.value_errors <= tol).all()
        assert (err <= tol).all(), (seed, err, res.value_errors)
        # The estimate is within 2x of the truth here, and the residual certificate stays
        # a bound on the distance to the nearest eigenvalue.
        assert (err <= 2 * res.value_errors + 1e-13).all()  # 1e-13: rounding of the float64 products
        assert (err <= res.residuals * (1 + 1e-6) + 1e-13).all()


def test_value_stop_costs_fewer_products(outliers_and_bulk):
    A = outliers_and_bulk.matrix
    for k, at_most in ((1, 1.0), (5, 0.98)):
        by_value = top_eigenpairs(A, k=k, tol=1e-4, seed=0, stop="value")
        by_residual = top_eigenpairs(A, k=k, tol=1e-4, seed=0)
        assert by_value.num_matvecs <= at_most * by_residual.num_matvecs
        # Residual mode reports the value estimate too, and meets it a fortiori.
        assert (by_residual.value_errors <= by_residual.residuals + 1e-15).all()


@pytest.mark.parametrize("stop", ["residual", "value"])
def test_top1_costs_fewer_products_when_less_is_asked(outliers_and_bulk, stop):
    # k = 1 tests its pair after every product in both modes, so a looser tol stops
    # earlier (with a full-basis test it spent max_basis products whatever tol asked).
    A = outliers_and_bulk.matrix
    top = outliers_and_bulk.eigenvalues.max()
    counts = []
    for tol in (1e-2, 1e-4, 1e-8):
        res = top_eigenpairs(A, k=1, tol=tol, seed=0, stop=stop)
        assert res.converged
        crit = res.value_errors if stop == "value" else res.residuals
        assert float(crit[0]) <= tol
        assert abs(float(res.values[0]) - float(top)) <= tol * float(top) * (1 + 1e-6)
        counts.append(res.num_matvecs)
    assert counts[0] < counts[1] < counts[2], counts


def test_value_stop_recovers_a_missed_eigenvalue(outliers_and_bulk, counting):
    # Seed 2's start vector is poor in the 5th eigenvector: the first pass stops with the
    # 6th eigenvalue in the set; the deflated check finds the 5th, and a short polishing
    # run converges the new set with fresh certificates.
    q = outliers_and_bulk
    op = counting(q.matrix)
    res = top_eigenpairs(op, k=5, tol=1e-4, seed=2, stop="value")
    ref = q.eigenvalues.flip(0)[:5]
    assert res.converged and op.count == res.num_matvecs
    assert ((res.values - ref).abs() / ref <= 1e-4).all()
    assert (res.value_errors <= 1e-4).all()


def test_value_errors_in_dict_and_stop_errors(known_spectrum):
    res = top_eigenpairs(known_spectrum.matrix, k=2, tol=1e-6, stop="value")
    d = res.to_dict()
    assert d["stop"] == "value" and len(d["value_errors"]) == 2
    with pytest.raises(ValueError, match=r"stop must be one of \('residual', 'value'\), got 'values'"):
        top_eigenpairs(known_spectrum.matrix, k=2, stop="values")


@pytest.mark.parametrize("stop", ["residual", "value"])
@pytest.mark.parametrize("seed", [0, 2])
def test_store_products_saves_the_verification(outliers_and_bulk, counting, stop, seed):
    # Seed 2 takes the replacement path (deflated check, Rayleigh-Ritz, polish for "value").
    q = outliers_and_bulk
    plain = top_eigenpairs(q.matrix, k=5, tol=1e-6, seed=seed, stop=stop)
    op = counting(q.matrix)
    stored = top_eigenpairs(op, k=5, tol=1e-6, seed=seed, stop=stop, store_products=True)
    assert stored.converged and op.count == stored.num_matvecs
    assert stored.num_matvecs < plain.num_matvecs
    torch.testing.assert_close(stored.values, plain.values, rtol=1e-10, atol=0)
    true = torch.linalg.vector_norm(q.matrix @ stored.vectors - stored.vectors * stored.values, dim=0) / stored.values.abs()
    torch.testing.assert_close(stored.true_residuals, true, rtol=1e-6, atol=1e-14)


def test_residual_norms_certify_the_distance_to_an_eigenvalue(known_spectrum, counting):
    res = top_eigenpairs(known_spectrum.matrix, k=4, which="LA", tol=1e-3, seed=2, verify=False)
    op = counting(known_spectrum.matrix)
    norms = res.residual_norms(op)
    assert op.count == 4  # one block product of k columns
    A, V = known_spectrum.matrix, res.vectors
    assert torch.allclose(norms, (A @ V - V * res.values).norm(dim=0), rtol=1e-12, atol=0)
    nearest = (res.values[:, None] - known_spectrum.eigenvalues[None, :]).abs().min(dim=1).values
    assert torch.all(nearest <= norms + 1e-12)


BASIS_DEVICES = [("cpu", "cpu")] + ([("cuda", "cpu")] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("op_device, basis_device", BASIS_DEVICES, ids=[f"op-{o}-basis-{b}" for o, b in BASIS_DEVICES])
def test_off_device_basis_equals_on_device(known_spectrum, op_device, basis_device):
    """The basis on ``basis_device``, products on the operator's device: the same pairs and
    tridiagonals as with the basis beside the operator (on a GPU operator, to rounding)."""
    A = known_spectrum.matrix.to(op_device)
    on = top_eigenpairs(A, k=4, tol=1e-10, seed=3)
    off = top_eigenpairs(A, k=4, tol=1e-10, seed=3, basis_device=basis_device)
    assert off.vectors.device == torch.device(basis_device) and on.vectors.device == A.device
    assert off.num_matvecs == on.num_matvecs
    torch.testing.assert_close(off.values, on.values.cpu(), rtol=1e-12, atol=0)
    torch.testing.assert_close(off.vectors, on.vectors.cpu(), rtol=0, atol=1e-8)
    v0 = torch.randn(known_spectrum.dim, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    tri_on = lanczos_tridiagonal(A, v0, 20, return_basis=True)
    tri_off = lanczos_tridiagonal(A, v0, 20, return_basis=True, basis_device=basis_device)
    assert tri_off.basis is not None and tri_off.basis.device == torch.device(basis_device)
    torch.testing.assert_close(tri_off.alpha, tri_on.alpha.cpu(), rtol=0, atol=1e-10)
    torch.testing.assert_close(tri_off.beta, tri_on.beta.cpu(), rtol=0, atol=1e-10)


def test_stated_basis_memory_matches_the_basis_held(known_spectrum):
    from landscape.curvature.lanczos import lanczos_basis_bytes, tridiagonal_basis_bytes

    v0 = torch.ones(known_spectrum.dim, 3, dtype=torch.float64)
    tri = lanczos_tridiagonal(known_spectrum.matrix, v0, 25, return_basis=True)
    assert tri.basis is not None
    assert tridiagonal_basis_bytes(300, 3, 25) == tri.basis.numel() * tri.basis.element_size() == 3 * 25 * 300 * 8
    assert tridiagonal_basis_bytes(300, 3, 1000, itemsize=4) == 3 * 300 * 300 * 4  # steps capped at P
    # default basis of k = 5: max(2k + 1, 20) = 20 rows, k locked rows, one residual row and the k pairs
    assert lanczos_basis_bytes(10**6, 5) == 8 * 10**6 * (20 + 1 + 2 * 5)
    assert lanczos_basis_bytes(10**6, 5, max_basis=40, itemsize=4, store_products=True) == 4 * 10**6 * (40 + 40 + 1 + 10)
    assert lanczos_basis_bytes(10**6, 1) == 8 * 10**6 * (20 + 1 + 2)


class _Hinted(DenseOperator):
    """A dense operator that offers a fixed start hint."""

    def __init__(self, matrix: torch.Tensor, hint: torch.Tensor):
        super().__init__(matrix)
        self.hint = hint

    def start_hint(self) -> torch.Tensor:
        return self.hint


def test_start_hint_speeds_up_the_top_end_and_cannot_hide_it(decaying_spectrum):
    q = decaying_spectrum
    top = q.eigenvectors[:, -1]
    plain = top_eigenpairs(q.matrix, k=1, tol=1e-8, seed=0)
    # A hint close to the top eigenvector: fewer products, same eigenvalue.
    noise = torch.randn(q.dim, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    good = top_eigenpairs(_Hinted(q.matrix, top + 0.05 * noise / noise.norm()), k=1, tol=1e-8, seed=0)
    assert good.converged and plain.converged
    assert good.num_matvecs < plain.num_matvecs
    torch.testing.assert_close(good.values, q.eigenvalues[-1:], rtol=1e-10, atol=0.0)
    # A hint exactly orthogonal to the top eigenvector: the random part still finds it.
    bad = q.eigenvectors[:, -2]
    res = top_eigenpairs(_Hinted(q.matrix, bad), k=1, tol=1e-8, seed=0)
    assert res.converged
    torch.testing.assert_close(res.values, q.eigenvalues[-1:], rtol=1e-10, atol=0.0)
    # The bottom end ignores the hint; a zero hint is ignored; an explicit v0 wins.
    sa = top_eigenpairs(_Hinted(q.matrix, bad), k=1, which="SA", tol=1e-8, seed=0)
    assert sa.num_matvecs == top_eigenpairs(q.matrix, k=1, which="SA", tol=1e-8, seed=0).num_matvecs
    zero = top_eigenpairs(_Hinted(q.matrix, torch.zeros(q.dim, dtype=torch.float64)), k=1, tol=1e-8, seed=0)
    assert zero.num_matvecs == plain.num_matvecs and torch.equal(zero.values, plain.values)
    v0 = torch.ones(q.dim, dtype=torch.float64)
    explicit = top_eigenpairs(_Hinted(q.matrix, top), k=1, tol=1e-8, seed=0, v0=v0)
    assert explicit.num_matvecs == top_eigenpairs(q.matrix, k=1, tol=1e-8, seed=0, v0=v0).num_matvecs


def test_start_hint_of_the_wrong_shape_is_an_error(decaying_spectrum):
    q = decaying_spectrum
    for bad in (torch.ones(3, dtype=torch.float64), torch.ones(q.dim, 1, dtype=torch.float64)):
        expected = f"start_hint() must have shape (100,) like the operator's (100, 100), got {tuple(bad.shape)}"
        with pytest.raises(ValueError, match=re.escape(expected)):
            top_eigenpairs(_Hinted(q.matrix, bad), k=1, tol=1e-8, seed=0)
    # A zero or non-finite hint (the gradient at a minimum, an overflow) is ignored, not an error.
    plain = top_eigenpairs(q.matrix, k=1, tol=1e-8, seed=0)
    for ignored in (torch.zeros(q.dim, dtype=torch.float64), torch.full((q.dim,), math.nan, dtype=torch.float64)):
        res = top_eigenpairs(_Hinted(q.matrix, ignored), k=1, tol=1e-8, seed=0)
        assert res.num_matvecs == plain.num_matvecs and torch.equal(res.values, plain.values)


@pytest.mark.parametrize("seed", [0, 1, 3])
def test_verification_from_kept_products_costs_no_product(outliers_and_bulk, counting, seed):
    # A k = 1 run that converges within max_basis // 2 products keeps its products in
    # basis rows it has not reached: the true residual needs no further product.
    q = outliers_and_bulk
    op = counting(q.matrix)
    res = top_eigenpairs(op, k=1, tol=3e-2, seed=seed)
    unverified = top_eigenpairs(q.matrix, k=1, tol=3e-2, seed=seed, verify=False)
    assert res.converged and op.count == res.num_matvecs == unverified.num_matvecs <= 9
    assert torch.equal(res.values, unverified.values)
    v = res.vectors
    explicit = torch.linalg.vector_norm(q.matrix @ v - v * res.values, dim=0) / res.values.abs()
    torch.testing.assert_close(res.true_residuals, explicit, rtol=1e-8, atol=1e-15)
    # 22 products: no spare rows left with the default basis of 20, so one explicit product;
    # a basis of 80 has room for them. Below tol = eps^(1/2) the explicit product is taken
    # whatever the room (it shows the rounding of a fresh product, which kept ones cannot).
    for tol, max_basis, extra in ((1e-6, None, 1), (1e-6, 80, 0), (1e-9, 80, 1)):
        res = top_eigenpairs(q.matrix, k=1, tol=tol, seed=seed, max_basis=max_basis)
        unverified = top_eigenpairs(q.matrix, k=1, tol=tol, seed=seed, max_basis=max_basis, verify=False)
        assert res.converged and res.num_matvecs == unverified.num_matvecs + extra > 20
        assert torch.equal(res.values, unverified.values)


class _Diagonal(SymmetricOperator):
    """diag(d) as an operator: a large spectrum at the cost of one pass per product."""

    def __init__(self, d: torch.Tensor):
        self.d, self.shape, self.dtype, self.device = d, (d.numel(), d.numel()), d.dtype, d.device

    def _matmat(self, V: torch.Tensor) -> torch.Tensor:
        return V * self.d.unsqueeze(1)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_multiplicity_check_is_not_fooled_by_the_bulk(seed):
    # A network-Hessian-like spectrum: a double top eigenvalue over a bulk of 2e5 values near 0,
    # float32. One product from a random vector gives a bulk Ritz value whose residual meets a
    # loose tol against the floor eps^(1/4) ||A||; a deflated pass that stopped there certified
    # [~1, ~0] or [~1, 0.5]. Finding nothing better must take a full basis, so the copy is found.
    g = torch.Generator().manual_seed(0)
    d = 1e-3 * torch.randn(200_000, generator=g)
    d[:4] = torch.tensor([1.0, 1.0, 0.5, 0.45])
    d = d[torch.randperm(d.numel(), generator=g)]
    res = top_eigenpairs(_Diagonal(d), k=2, tol=0.3, seed=seed)
    assert res.converged
    torch.testing.assert_close(res.values, torch.ones(2), rtol=2e-3, atol=0)
    assert (res.true_residuals <= 0.3).all()


@pytest.mark.parametrize("tol", [0.3, 0.1, 0.01])
def test_loose_top5_certificates_are_explicit_residuals_and_bound_the_errors(outliers_and_bulk, counting, tol):
    # At loose tolerances the returned pairs come from the Rayleigh-Ritz step on the first
    # run's pairs and the certifying pass's basis: their certificates, from both Lanczos
    # relations, equal the residuals of explicit products, and each value is within its
    # residual of the eigenvalue of its rank.
    q = outliers_and_bulk
    ref = q.eigenvalues.flip(0)[:5]
    norm = float(ref[0])
    for seed in range(4):
        op = counting(q.matrix)
        res = top_eigenpairs(op, k=5, tol=tol, seed=seed)
        assert res.converged and op.count == res.num_matvecs
        v = res.vectors
        explicit = torch.linalg.vector_norm(q.matrix @ v - v * res.values, dim=0) / res.values.abs()
        torch.testing.assert_close(res.residuals, explicit, rtol=1e-6, atol=1e-13)
        torch.testing.assert_close(res.true_residuals, explicit, rtol=1e-6, atol=1e-13)
        assert (res.values <= ref + 1e-13 * norm).all()  # Ritz values from below (interlacing)
        err = (ref - res.values) / ref
        assert (err <= res.residuals * (1 + 1e-6) + 1e-13).all(), (seed, err, res.residuals)
        torch.testing.assert_close(v.T @ v, torch.eye(5, dtype=torch.float64), rtol=0, atol=1e-12)


def test_union_rayleigh_ritz_is_the_projection_on_both_spaces(outliers_and_bulk):
    # The Rayleigh-Ritz step on a run's k pairs and a deflated pass's basis, from the
    # couplings alone, against the dense projection of A on the same rows.
    from landscape.curvature._gram_schmidt import _fresh_orthogonal
    from landscape.curvature._thick_restart import _thick_restart, _union_ritz
    from landscape.seeding import seeded_generator

    A = outliers_and_bulk.matrix
    op = DenseOperator(A)
    g = seeded_generator(0)
    v0 = torch.randn(A.shape[0], generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    v0 = v0 / v0.norm()
    anorm = torch.zeros((), dtype=torch.float64)
    eps = torch.finfo(torch.float64).eps
    first = _thick_restart(op, 3, "LA", 0.1, v0, None, 200, 20, g, eps, anorm, keep_f=True)
    assert first.f is not None
    torch.testing.assert_close(torch.linalg.vector_norm(first.Y @ A - first.theta[:, None] * first.Y, dim=1), first.coupling,
                               rtol=1e-8, atol=1e-14)
    check = _thick_restart(op, 1, "LA", 0.1, _fresh_orthogonal(first.Y, g), first.Y, 200, 20, g, eps, first.anorm,
                           rival=first.theta[-1], keep_basis=True)
    assert check.basis is not None
    B = check.basis.rows
    torch.testing.assert_close(B @ B.T, torch.eye(B.shape[0], dtype=torch.float64), rtol=0, atol=1e-12)
    un = _union_ritz(first.theta, check.basis, 3, "LA", b=first.b, f=first.f)
    dense = torch.linalg.eigvalsh(B @ A @ B.T).flip(0)
    torch.testing.assert_close(torch.cat([un.theta, un.others]), dense, rtol=0, atol=1e-12)
    Y, AY = un.vectors(check.basis, None)
    assert un.r is not None and AY is None
    torch.testing.assert_close(Y @ Y.T, torch.eye(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(un.r, torch.linalg.vector_norm(Y @ A - un.theta[:, None] * Y, dim=1), rtol=1e-6, atol=1e-14)
    assert (un.theta >= first.theta - 1e-14).all()  # a larger space: no worse (Cauchy interlacing)
