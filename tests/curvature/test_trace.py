"""Hutchinson, Hutch++ and XTrace: unbiasedness, variance, stderr and exact budgets."""

from __future__ import annotations

import math

import pytest
import torch

from landscape.curvature.trace import TRACE_METHODS, exact_trace, probe_blocks, random_probes, trace

METHODS = sorted(TRACE_METHODS)
SEEDS = range(200)
BUDGET = 30


def estimates(A: torch.Tensor, method: str, budget: int = BUDGET) -> tuple[torch.Tensor, torch.Tensor]:
    res = [trace(A, budget, method, seed) for seed in SEEDS]
    return (
        torch.tensor([r.value for r in res], dtype=torch.float64),
        torch.tensor([r.stderr for r in res], dtype=torch.float64),
    )


@pytest.fixture(scope="module")
def indefinite(known_spectrum):
    """The 300-dim known spectrum (indefinite, trace ~ 88)."""
    return known_spectrum


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("case", ["decaying_spectrum", "indefinite"])
def test_unbiased_over_seeds(method, case, request):
    q = request.getfixturevalue(case)
    exact = float(q.eigenvalues.sum())
    values, _ = estimates(q.matrix, method)
    se = float(values.std()) / math.sqrt(len(values))
    assert abs(float(values.mean()) - exact) < 3 * se


@pytest.mark.parametrize(("method", "low", "high"), [("hutchinson", 0.8, 1.25), ("hutch++", 0.7, 1.4), ("xtrace", 0.5, 2.0)])
def test_reported_stderr_matches_spread(decaying_spectrum, method, low, high):
    values, stderrs = estimates(decaying_spectrum.matrix, method)
    ratio = float(stderrs.pow(2).mean().sqrt()) / float(values.std())
    assert low < ratio < high


def test_deflation_beats_hutchinson_on_decaying_spectrum(decaying_spectrum):
    A = decaying_spectrum.matrix
    var = {m: float(estimates(A, m)[0].var()) for m in METHODS}
    assert var["hutch++"] < 0.05 * var["hutchinson"]
    assert var["xtrace"] < 0.05 * var["hutchinson"]


def test_xtrace_equals_explicit_leave_one_out(decaying_spectrum):
    """The s-by-s algebra of XTrace reproduces the definition with explicit projectors."""
    A = decaying_spectrum.matrix
    P, s, seed = A.shape[0], 8, 11
    Om = random_probes(P, s, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    Y = A @ Om
    I = torch.eye(P, dtype=torch.float64)
    per_sample = []
    for i in range(s):
        Qi, _ = torch.linalg.qr(torch.cat([Y[:, :i], Y[:, i + 1 :]], dim=1))
        Pi = I - Qi @ Qi.T
        w = Om[:, i]
        per_sample.append(torch.trace(Qi.T @ A @ Qi) + w @ Pi @ A @ Pi @ w)
    per_sample = torch.stack(per_sample)
    est = trace(A, 2 * s, "xtrace", seed)
    assert est.value == pytest.approx(float(per_sample.mean()), rel=1e-11)
    assert est.stderr == pytest.approx(float(per_sample.std() / math.sqrt(s)), rel=1e-9)


def test_hutchpp_equals_explicit_formula(decaying_spectrum):
    A = decaying_spectrum.matrix
    P, seed = A.shape[0], 5
    gen = torch.Generator().manual_seed(seed)
    S = random_probes(P, 10, generator=gen, dtype=torch.float64)
    G = random_probes(P, 11, generator=gen, dtype=torch.float64)
    Q, _ = torch.linalg.qr(A @ S)
    D = torch.eye(P, dtype=torch.float64) - Q @ Q.T
    expected = torch.trace(Q.T @ A @ Q) + torch.trace(G.T @ D @ A @ D @ G) / 11
    est = trace(A, 31, "hutch++", seed)
    assert est.value == pytest.approx(float(expected), rel=1e-12)


@pytest.mark.parametrize("budget", [4, 5, 30, 31, 32, 90])
@pytest.mark.parametrize("method", METHODS)
def test_num_matvecs_exact_and_within_budget(known_spectrum, counting, method, budget):
    op = counting(known_spectrum.matrix)
    est = trace(op, budget, method, seed=0)
    assert op.count == est.num_matvecs <= budget
    expected = 2 * (budget // 2) if method == "xtrace" else budget
    assert est.num_matvecs == expected
    assert est.method == method


@pytest.mark.parametrize("method", ["hutch++", "xtrace"])
def test_exact_when_sketch_spans_space(counting, method):
    q_small = torch.diag(torch.arange(1.0, 11.0, dtype=torch.float64))
    op = counting(q_small)
    est = trace(op, 40, method)
    assert est.value == pytest.approx(55.0, rel=1e-14)
    assert est.stderr == 0.0 and est.num_matvecs == op.count == 10


def test_block_size_gives_same_estimate(known_spectrum, counting):
    op = counting(known_spectrum.matrix)
    for method in METHODS:
        a = trace(known_spectrum.matrix, 30, method, seed=3)
        b = trace(op, 30, method, seed=3, block_size=7)
        assert b.value == pytest.approx(a.value, rel=1e-12)
        assert b.stderr == pytest.approx(a.stderr, rel=1e-9)
    assert op.calls > 3 * 3  # chunking really happened


def test_float32_operator(known_spectrum):
    A32 = known_spectrum.matrix.to(torch.float32)
    a = trace(A32, 30, "hutch++", seed=1)
    b = trace(A32, 30, "hutch++", seed=1, dtype=torch.float64)
    assert a.value == pytest.approx(b.value, rel=1e-4)


def test_exact_trace_and_empty_operator(known_spectrum):
    est = exact_trace(known_spectrum.matrix, block_size=64)
    assert est.value == pytest.approx(float(known_spectrum.eigenvalues.sum()), rel=1e-12)
    assert est.num_matvecs == 300
    for method in METHODS:
        empty = trace(torch.zeros(0, 0, dtype=torch.float64), 10, method)
        assert (empty.value, empty.stderr, empty.num_matvecs) == (0.0, 0.0, 0)


def test_deterministic_and_seed_dependent(known_spectrum):
    a = trace(known_spectrum.matrix, 30, "xtrace", seed=4)
    assert a == trace(known_spectrum.matrix, 30, "xtrace", seed=4)
    assert a.value != trace(known_spectrum.matrix, 30, "xtrace", seed=5).value


def test_to_dict(known_spectrum):
    d = trace(known_spectrum.matrix, 30, "hutchinson").to_dict()
    assert set(d) == {"value", "stderr", "num_matvecs", "method"}


def test_probe_distributions_are_isotropic():
    gen = torch.Generator().manual_seed(0)
    for kind in ("rademacher", "gaussian", "sphere"):
        Z = random_probes(5, 10000, generator=gen, kind=kind)
        torch.testing.assert_close(Z @ Z.T / 10000, torch.eye(5, dtype=torch.float64), rtol=0, atol=0.07)
    Z = random_probes(7, 3, generator=gen, kind="sphere")
    torch.testing.assert_close(Z.norm(dim=0), torch.full((3,), math.sqrt(7), dtype=torch.float64))


def test_errors(known_spectrum):
    A = known_spectrum.matrix
    with pytest.raises(ValueError, match=r"unknown trace method 'hutch\+\+\+'; choose one of"):
        trace(A, 30, "hutch+++")
    with pytest.raises(ValueError, match=r"hutch\+\+ needs num_matvecs >= 4.*got 3"):
        trace(A, 3, "hutch++")
    with pytest.raises(ValueError, match="xtrace needs num_matvecs >= 4"):
        trace(A, 3, "xtrace")
    with pytest.raises(ValueError, match="hutchinson needs num_matvecs >= 2"):
        trace(A, 1, "hutchinson")
    with pytest.raises(ValueError, match="num_matvecs must be an int"):
        trace(A, 30.0, "hutchinson")
    with pytest.raises(ValueError, match="block_size must be >= 1"):
        trace(A, 30, "hutchinson", block_size=0)
    with pytest.raises(ValueError, match="dtype must be a real floating dtype"):
        trace(A, 30, "hutchinson", dtype=torch.int32)
    with pytest.raises(ValueError, match="probe kind must be one of"):
        random_probes(3, 2, generator=torch.Generator(), kind="cauchy")


def test_interval_is_value_plus_minus_normal_quantile_times_stderr(known_spectrum):
    est = trace(known_spectrum.matrix, num_matvecs=30, method="hutchinson", seed=0)
    lo, hi = est.interval(0.95)
    assert (hi - lo) / 2 == pytest.approx(1.959963984540054 * est.stderr, rel=1e-12) and (lo + hi) / 2 == pytest.approx(est.value)
    exact = exact_trace(known_spectrum.matrix)
    assert exact.interval(0.99) == (exact.value, exact.value)
    with pytest.raises(ValueError, match=r"ci_level must be in \(0, 1\), got 1.5"):
        est.interval(1.5)


@pytest.mark.parametrize("kind", ["rademacher", "gaussian", "sphere"])
@pytest.mark.parametrize("batch", [1, 3, 7, 9])
def test_probe_blocks_are_the_columns_of_one_draw(kind, batch):
    g_whole, g_blocks = torch.Generator().manual_seed(11), torch.Generator().manual_seed(11)
    whole = random_probes(1001, 9, generator=g_whole, kind=kind)
    blocks = list(probe_blocks(1001, 9, generator=g_blocks, kind=kind, batch_size=batch))
    assert [b.shape[1] for b in blocks] == [min(batch, 9 - j) for j in range(0, 9, batch)]
    assert torch.equal(torch.cat(blocks, dim=1), whole)
    assert torch.equal(g_blocks.get_state(), g_whole.get_state())  # the next draw is the same too


@pytest.mark.parametrize("method", ["hutchinson", "hutch++"])
@pytest.mark.parametrize("batch", [1, 4, 7])
def test_probe_batches_give_the_same_estimate(known_spectrum, counting, method, batch):
    A = known_spectrum.matrix
    whole = trace(A, 60, method, seed=3)
    op = counting(A)
    part = trace(op, 60, method, seed=3, probe_batch_size=batch)
    assert op.widest == batch  # at most that many probes multiplied at once
    assert part.value == pytest.approx(whole.value, rel=1e-12, abs=1e-12 * float(A.abs().max()))
    assert part.stderr == pytest.approx(whole.stderr, rel=1e-10)
    assert part.num_matvecs == whole.num_matvecs
    assert trace(A, 60, method, seed=3, probe_batch_size=100) == whole  # one block: the same path


def test_probe_batch_errors(known_spectrum):
    with pytest.raises(ValueError, match="xtrace needs all its test vectors at once"):
        trace(known_spectrum.matrix, 30, "xtrace", probe_batch_size=4)
    with pytest.raises(ValueError, match="probe_batch_size must be an int >= 1 or None, got 0"):
        trace(known_spectrum.matrix, 30, "hutchinson", probe_batch_size=0)
