"""bounds_for_run: validity on fresh data, the eq (8) KL against dense references, errors."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence
from torch.func import functional_call

from landscape.bounds.gaussians import complement_curvature, hessian_posterior, kl_lowrank
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.pacbayes import PriorVarianceGrid
from landscape.bounds.run_bounds import BoundsConfig, bounds_for_run
from landscape.config import ConfigError, parse_config
from landscape.io import to_jsonable

F64 = torch.float64
CENTRES = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
# Small grids and budgets: every test stays well under a second or two on one core.
FAST = dict(
    mc_samples=40,
    pilot_samples=2,
    pilot_examples=400,
    sigmas=(0.05, 0.1, 0.2, 0.4),
    posterior_c=(1e-3, 1e-2, 1e-1),
    eps=(0.1, 1.0),
)


def _mixture(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 3, (n,), generator=g)
    x = CENTRES[y] + torch.randn(n, 4, generator=g)
    return x, y


def _net(seed: int, bn: bool = False) -> nn.Module:
    torch.manual_seed(seed)
    layers: list[nn.Module] = [nn.Linear(4, 6)]
    if bn:
        layers.append(nn.BatchNorm1d(6))
    layers += [nn.Tanh(), nn.Linear(6, 3)]
    return nn.Sequential(*layers)


def _train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int = 300) -> None:
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    opt.zero_grad(set_to_none=True)
    model.eval()


def _dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hessian of the mean cross-entropy (eval mode) over the trainable parameters, float64."""
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    sizes = [math.prod(s) for s in shapes]
    m64 = _copy64(model)
    flat = torch.cat([p.detach().reshape(-1).to(F64) for n, p in model.named_parameters() if p.requires_grad])

    def loss(v: torch.Tensor) -> torch.Tensor:
        params = {n: c.reshape(s) for n, c, s in zip(names, v.split(sizes), shapes)}
        return nn.functional.cross_entropy(functional_call(m64, params, (x.to(F64),)), y)

    return torch.autograd.functional.hessian(loss, flat)  # double backward (DESIGN.md)


def _copy64(model: nn.Module) -> nn.Module:
    import copy

    m = copy.deepcopy(model).to(F64)
    m.eval()
    return m


@pytest.fixture(scope="module")
def problem():
    """A trained 4-6-3 tanh MLP (51 parameters) on a 3-class Gaussian mixture, n = 1500."""
    x, y = _mixture(1500, seed=0)
    model = _net(seed=7)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, x, y)
    H = _dense_hessian(model, x[:500], y[:500])
    evals, evecs = torch.linalg.eigh(H)
    order = torch.argsort(evals, descending=True)
    evals, evecs = evals[order], evecs[:, order]
    krylov = {"ritz_values": evals[:5].float(), "ritz_vectors": evecs[:, :5].float()}
    fresh = _mixture(20000, seed=1)
    return {
        "model": model,
        "init": init,
        "train": (x, y),
        "fresh": fresh,
        "H": H,
        "evals": evals,
        "evecs": evecs,
        "krylov": krylov,
        "trace": float(torch.diagonal(H).sum()),
    }


def _run(problem, seed: int = 0, krylov=None, **overrides):
    cfg = BoundsConfig(**{**FAST, **overrides})
    return bounds_for_run(
        problem["model"],
        problem["init"],
        problem["train"],
        problem["fresh"],
        problem["krylov"] if krylov is None else krylov,
        problem["trace"],
        config=cfg,
        seed=seed,
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bounds_cover_posterior_risk_on_fresh_sample(problem, seed):
    r = _run(problem, seed=seed)
    # Risk of each posterior on 20000 fresh examples x 40 draws (stderr ~ 0.002) and of the
    # deterministic network; every bound must lie above, and be informative (< 0.65).
    for post in (r.isotropic, r.hessian):
        assert post.test_error_stderr < 0.01
        assert post.bound >= post.test_error
        assert post.bound >= post.sample.upper >= post.sample.mean_error
        assert post.bound < 0.65
    assert r.occam.bound >= r.test_error
    # Occam: 32 bits x 51 parameters ~ 1131 nats over n = 1500 examples: far looser.
    assert r.occam.kl == pytest.approx(32 * 51 * math.log(2))
    assert r.occam.bound > max(r.isotropic.bound, r.hessian.bound)


def test_hessian_kl_equals_library_and_dense_reference(problem):
    r = _run(problem)
    h = r.hessian
    P, k = r.num_params, r.top_k
    theta = torch.cat([p.detach().reshape(-1).to(F64) for p in problem["model"].parameters()])
    theta0 = torch.cat([problem["init"][n].reshape(-1).to(F64) for n, _ in problem["model"].named_parameters()])
    lam_rest = complement_curvature(problem["trace"], problem["krylov"]["ritz_values"].double(), P)
    assert r.lambda_rest == pytest.approx(lam_rest, rel=1e-12)
    post = hessian_posterior(
        theta, problem["krylov"]["ritz_values"], problem["krylov"]["ritz_vectors"],
        c=h.scale["c"], eps=h.scale["eps"], lambda_rest=lam_rest,
    )
    lib = kl_lowrank(post, theta0, h.prior_var)
    assert h.kl.kl == pytest.approx(lib.kl, rel=1e-12)
    # Dense reference: S_q = V diag(c / (lambda+ + eps)) V^T + tau (I - V V^T), via torch.distributions.
    V = problem["krylov"]["ritz_vectors"].double()
    V, _ = torch.linalg.qr(V)
    a = h.scale["c"] / (problem["krylov"]["ritz_values"].double().clamp_min(0) + h.scale["eps"])
    tau = h.scale["c"] / (max(lam_rest, 0.0) + h.scale["eps"])
    S = V @ torch.diag(a) @ V.T + tau * (torch.eye(P, dtype=F64) - V @ V.T)
    ref = kl_divergence(MultivariateNormal(theta, S), MultivariateNormal(theta0, h.prior_var * torch.eye(P, dtype=F64)))
    assert h.kl.kl == pytest.approx(float(ref), rel=1e-8)
    # The effective-rank split reproduces the exact KL; each form bounds it from above.
    assert h.complexity.kl == pytest.approx(h.kl.kl, rel=1e-9)
    assert h.bounds_by_form["exact"] == pytest.approx(h.bound, rel=1e-12)
    for form in ("logdet", "effective_rank", "trace"):
        assert h.bounds_by_form[form] >= h.bound
    assert k == 5


def test_full_spectrum_posterior_is_exactly_eq8(problem):
    # With all P eigenpairs the posterior covariance is c (H+ + eps I)^-1 exactly.
    P = problem["evals"].shape[0]
    krylov = {"ritz_values": problem["evals"], "ritz_vectors": problem["evecs"]}
    r = _run(problem, krylov=krylov, posterior_c=(1e-2,), eps=(0.5,))
    h = r.hessian
    assert r.top_k == P and r.lambda_rest == 0.0
    theta = torch.cat([p.detach().reshape(-1).to(F64) for p in problem["model"].parameters()])
    theta0 = torch.cat([problem["init"][n].reshape(-1).to(F64) for n, _ in problem["model"].named_parameters()])
    w, U = torch.linalg.eigh(problem["H"])
    Hplus = U @ torch.diag(w.clamp_min(0)) @ U.T
    S = 1e-2 * torch.linalg.inv(Hplus + 0.5 * torch.eye(P, dtype=F64))
    S = 0.5 * (S + S.T)
    ref = kl_divergence(MultivariateNormal(theta, S), MultivariateNormal(theta0, h.prior_var * torch.eye(P, dtype=F64)))
    assert h.kl.kl == pytest.approx(float(ref), rel=1e-8)


def test_result_fields_json_and_union_costs(problem):
    r = _run(problem)
    d = json.loads(json.dumps(to_jsonable(r.to_dict())))
    for key in (
        "n_train", "n_test", "num_params", "num_fixed", "fixed_nats", "dist_sq", "top_k", "ritz_values",
        "lambda_rest", "trace", "train_error", "test_error", "occam", "isotropic", "hessian", "ordering",
        "hessian_below_isotropic", "isotropic_below_occam", "hessian_below_occam", "folded_batchnorm",
        "seed", "config", "bounds",
    ):
        assert key in d, key
    for fam in ("isotropic", "hessian"):
        for key in ("scale", "bound", "prior_index", "prior_var", "kl", "pac_bayes", "sample", "test_error", "candidates"):
            assert key in d[fam], (fam, key)
    assert d["hessian"]["complexity"]["effective_dim"] > 0
    assert len(d["isotropic"]["candidates"]) == len(FAST["sigmas"])
    assert len(d["hessian"]["candidates"]) == len(FAST["posterior_c"]) * len(FAST["eps"])
    assert r.n_train == 1500 and r.n_test == 20000 and r.num_params == 51 and r.fixed_nats == 0.0
    # What the prior grid charged, and the composition of the final number.
    grid = PriorVarianceGrid(FAST.get("prior_c", 1.0), 100.0)
    for post in (r.isotropic, r.hessian):
        j = post.prior_index
        assert post.prior_var == pytest.approx(grid.variance(j), rel=1e-12)
        assert post.pac_bayes.union_cost == pytest.approx(2 * math.log(j) + math.log(math.pi**2 / 6), rel=1e-12)
        assert post.pac_bayes.grid_size is None  # countable grid
        assert post.sample.num_candidates == 1 and post.selection == "pilot"
        assert post.sample.budget == pytest.approx(math.log(2 / 0.01) / 40, rel=1e-12)
        n = 1500
        budget = (post.kl.kl + math.log(2 * math.sqrt(n) / 0.025) + post.pac_bayes.union_cost) / n
        assert post.bound == pytest.approx(kl_inv_upper(post.sample.upper, budget), rel=1e-12)
        assert post.delta_total == pytest.approx(0.035)


def test_ordering_is_reported_not_assumed(problem):
    normal = _run(problem)
    # A hopeless eq (8) grid (a near point mass: enormous KL) must put the Hessian family last.
    bad = _run(problem, posterior_c=(1e-9,), eps=(1.0,))
    for r in (normal, bad):
        values = {"occam": r.occam.bound, "isotropic": r.isotropic.bound, "hessian": r.hessian.bound}
        assert list(r.ordering) == sorted(values, key=values.get)
        assert r.hessian_below_isotropic == (r.hessian.bound < r.isotropic.bound)
        assert r.isotropic_below_occam == (r.isotropic.bound < r.occam.bound)
    assert not bad.hessian_below_isotropic and bad.ordering[0] == "isotropic"


def test_union_mode_splits_mc_delta_over_candidates(problem):
    r = _run(problem, pilot_samples=0, mc_samples=20)
    C = len(FAST["posterior_c"]) * len(FAST["eps"])
    assert r.hessian.selection == "union" and r.hessian.sample.num_candidates == C
    assert r.hessian.sample.budget == pytest.approx(math.log(2 * C / 0.01) / 20, rel=1e-12)
    assert r.isotropic.sample.num_candidates == len(FAST["sigmas"])
    assert r.hessian.bound >= r.hessian.test_error


def test_deterministic_and_side_effect_free(problem):
    model = problem["model"]
    model.train()  # the caller's mode must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = _run(problem, seed=3)
    assert model.training
    model.eval()
    b = _run(problem, seed=3)
    c = _run(problem, seed=4)
    assert json.dumps(to_jsonable(a.to_dict())) == json.dumps(to_jsonable(b.to_dict()))
    assert a.hessian.sample.mean_error != c.hessian.sample.mean_error or a.isotropic.sample.mean_error != c.isotropic.sample.mean_error
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_bound_below_test_error_fails_loudly(problem):
    x, y = problem["fresh"]
    with torch.no_grad():
        pred = problem["model"](x[:2000]).argmax(-1)
    wrong = (x[:2000], (pred + 1) % 3)  # labels the network (and its posterior) almost always miss
    cfg = BoundsConfig(**FAST)
    with pytest.raises(RuntimeError, match="below the test error"):
        bounds_for_run(problem["model"], problem["init"], problem["train"], wrong, problem["krylov"], problem["trace"], config=cfg, seed=0)


def test_batchnorm_model_is_folded_and_valid():
    x, y = _mixture(1200, seed=5)
    model = _net(seed=3, bn=True)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, x, y, steps=200)
    H = _dense_hessian(model, x[:400], y[:400])
    w, U = torch.linalg.eigh(H)
    krylov = {"ritz_values": w.flip(0)[:4], "ritz_vectors": U.flip(1)[:, :4]}
    fresh = _mixture(10000, seed=6)
    r = bounds_for_run(model, init, (x, y), fresh, krylov, float(w.sum()), config=BoundsConfig(**FAST), seed=0)
    assert r.folded_batchnorm == ("1",)
    assert r.fixed_nats == 0.0 and r.num_fixed == 0  # statistics folded, nothing charged
    assert r.hessian.bounds_by_form is None  # forms describe the unfolded KL only
    # Occam still describes the stored network: parameters plus the 12 running statistics.
    assert r.occam.kl == pytest.approx(32 * (sum(p.numel() for p in model.parameters()) + 12) * math.log(2))
    for post in (r.isotropic, r.hessian):
        assert post.bound >= post.test_error
        assert post.bound < 0.8
    # A near point-mass posterior evaluates the folded network: same errors as the stored one.
    tiny = bounds_for_run(
        model, init, (x, y), fresh, krylov, float(w.sum()),
        config=BoundsConfig(**{**FAST, "sigmas": (1e-7,), "posterior_c": (1e-12,), "eps": (1.0,), "mc_samples": 3}),
        seed=0,
    )
    for post in (tiny.isotropic, tiny.hessian):
        assert post.sample.mean_error == pytest.approx(tiny.train_error, abs=1.5 / 1200)
        assert post.test_error == pytest.approx(tiny.test_error, abs=1.5 / 10000)


def test_unfoldable_buffer_is_charged(problem):
    model = problem["model"]
    model.register_buffer("calibration", torch.zeros(10))  # read by nobody, but data could set it
    try:
        r = _run(problem)
    finally:
        del model._buffers["calibration"]
    assert r.num_fixed == 10 and r.fixed_nats == pytest.approx(320 * math.log(2))
    assert r.hessian.pac_bayes.kl == pytest.approx(r.hessian.kl.kl + r.fixed_nats, rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sigmas": ()}, "sigmas"),
        ({"posterior_c": []}, "posterior_c"),
        ({"eps": (0.1, -1.0)}, "eps"),
        ({"prior_c": 0.0}, "prior_c"),
        ({"delta": 0.5, "mc_delta": 0.5}, "delta \\+ mc_delta"),
        ({"mc_samples": 0}, "mc_samples"),
        ({"bn_mode": "batch"}, "bn_mode"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k=2.5 must be an int"),
        ({"mc_samples": 10.0}, "mc_samples=10.0 must be an int"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        BoundsConfig(**overrides)


def test_parse_config_builds_and_rejects():
    cfg = parse_config(BoundsConfig, {"sigmas": [0.1, 0.2], "mc_samples": 50, "top_k": 3}, "bounds.h1_batch")
    assert cfg.sigmas == (0.1, 0.2) and cfg.mc_samples == 50 and cfg.top_k == 3
    with pytest.raises(ConfigError, match="unknown key bounds.h1_batch.sigma "):
        parse_config(BoundsConfig, {"sigma": [0.1]}, "bounds.h1_batch")
    with pytest.raises(ConfigError, match="bounds.h1_batch.*sigmas"):
        parse_config(BoundsConfig, {"sigmas": []}, "bounds.h1_batch")


def test_bad_inputs_raise(problem):
    kr = problem["krylov"]
    bad_p = {"ritz_values": kr["ritz_values"], "ritz_vectors": torch.zeros(50, 5)}
    with pytest.raises(ValueError, match="ritz_vectors must have shape \\(P=51"):
        _run(problem, krylov=bad_p)
    with pytest.raises(ValueError, match="krylov must map"):
        _run(problem, krylov={"ritz_values": kr["ritz_values"]})
    with pytest.raises(ValueError, match="top_k=6 needs"):
        _run(problem, top_k=6)
    cfg = BoundsConfig(**FAST)
    args = (problem["model"], problem["init"], problem["train"], problem["fresh"], kr)
    with pytest.raises(ValueError, match="trace must be a finite"):
        bounds_for_run(*args, float("nan"), config=cfg, seed=0)
    with pytest.raises(ValueError, match="seed must be"):
        bounds_for_run(*args, problem["trace"], config=cfg, seed=-1)
    with pytest.raises(ValueError, match="init_state lacks"):
        bounds_for_run(problem["model"], {}, *args[2:], problem["trace"], config=cfg, seed=0)
    shrunk = {**problem["init"], "0.weight": torch.zeros(6, 3)}
    with pytest.raises(ValueError, match="init_state\\['0.weight'\\] has shape"):
        bounds_for_run(problem["model"], shrunk, *args[2:], problem["trace"], config=cfg, seed=0)
    x, y = problem["train"]
    with pytest.raises(ValueError, match="train_data must hold"):
        bounds_for_run(problem["model"], problem["init"], (x, y[:-1]), *args[3:], problem["trace"], config=cfg, seed=0)
    with pytest.raises(ValueError, match="config must be a BoundsConfig"):
        bounds_for_run(*args, problem["trace"], config={"sigmas": (0.1,)}, seed=0)
