"""The bounds stage: bounds_for_run (validity on fresh data, the eq (8) KL against dense references,
errors), BoundsConfig and the params.yaml `bounds` section (run list, random-label sanity pair)."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
import yaml
from torch import nn
from torch.distributions import MultivariateNormal, kl_divergence
from torch.func import functional_call

from landscape.bounds.gaussians import complement_curvature, hessian_posterior, kl_lowrank
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.pacbayes import PriorVarianceGrid
from landscape.bounds.posterior import split_indices
from landscape.io import to_jsonable
from landscape.pipeline.bounds import BoundsConfig, InvalidBoundError, bounds_for_run, parse_bounds_section
from landscape.pipeline.validate import validate_pipeline_params
from landscape.schema import ConfigError, parse_config
from landscape.training import train_model
from landscape.training.config import TrainConfig

F64 = torch.float64
CENTRES = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
# Small grids and budgets: every test stays well under a second or two on one core.
FAST = dict(
    mc_draws=1500,
    test_draws=4,
    pilot_draws=2,
    pilot_examples=300,
    mean_grid=(1.0, 0.5),
    sigmas=(0.05, 0.1, 0.2, 0.4),
    posterior_c=(1e-3, 1e-2, 1e-1),
    eps=(0.1, 1.0),
)
RECIPE = TrainConfig(epochs=8, batch_size=50, optimizer="adam", lr=0.02, schedule="constant")


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


def _run(problem, seed: int = 0, krylov=None, train=None, **overrides):
    cfg = BoundsConfig(**{**FAST, **overrides})
    return bounds_for_run(
        problem["model"],
        problem["init"],
        problem["train"] if train is None else train,
        problem["fresh"],
        problem["krylov"] if krylov is None else krylov,
        problem["trace"],
        train_config=RECIPE,
        config=cfg,
        seed=seed,
    )


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).to(F64) for p in model.parameters()])


@pytest.mark.parametrize(("seed", "fraction"), [(0, 0.5), (1, 0.5), (2, 0.0)])
def test_bounds_cover_posterior_risk_on_fresh_sample(problem, seed, fraction):
    r = _run(problem, seed=seed, prior_fraction=fraction)
    # Risk of each posterior on 20000 fresh examples x 4 draws and of the deterministic
    # network; every bound must lie above, and be informative (< 0.65).
    for post in (r.isotropic, r.hessian):
        assert post.test_error_stderr < 0.02
        assert post.bound >= post.test_error
        assert post.bound >= post.sample.upper >= post.sample.mean_error
        assert post.bound < 0.65
    assert r.occam.bound >= r.test_error
    # Occam: 32 bits x 51 parameters ~ 1131 nats over n = 1500 examples: far looser.
    assert r.occam.kl == pytest.approx(32 * 51 * math.log(2))
    assert r.occam.n == 1500
    assert r.occam.bound > max(r.isotropic.bound, r.hessian.bound)


def test_data_dependent_prior_is_trained_on_its_split_only(problem):
    r = _run(problem, prior_fraction=0.4)
    prior_idx, bound_idx = split_indices(1500, 0.4, 0)
    assert r.n_bound == 900 == bound_idx.numel() and r.prior.n_prior == 600 and r.prior.kind == "trained"
    for post in (r.isotropic, r.hessian):
        assert post.pac_bayes.n == 900  # the prior's examples are not in the bound's n
    # The prior mean is the recipe applied from the initialisation to S_prior alone.
    x, y = problem["train"]
    ref = _net(seed=7)
    ref.load_state_dict(problem["init"])
    train_model(ref, (x[prior_idx], y[prior_idx]), problem["fresh"], RECIPE, seed=0)
    theta = _flat(problem["model"])
    assert r.prior.dist_sq_prior == pytest.approx(float(((theta - _flat(ref)) ** 2).sum()), rel=1e-10)
    assert r.prior.dist_sq_init == pytest.approx(float(((theta - _flat(_net(seed=7))) ** 2).sum()), rel=1e-10)
    # Relabelling the bound examples cannot move the prior: it never saw them.
    y2 = y.clone()
    y2[bound_idx] = (y2[bound_idx] + 1) % 3
    moved = _run(problem, prior_fraction=0.4, train=(x, y2))
    assert moved.prior.dist_sq_prior == r.prior.dist_sq_prior
    assert moved.prior.bound_error > 0.5 > r.prior.bound_error


def test_hessian_kl_equals_dense_reference(problem):
    r = _run(problem, prior_fraction=0.0, mean_grid=(1.0,))
    h = r.hessian
    P, k = r.num_params, r.top_k
    theta = _flat(problem["model"])
    theta0 = torch.cat([problem["init"][n].reshape(-1).to(F64) for n, _ in problem["model"].named_parameters()])
    lam_rest = complement_curvature(problem["trace"], problem["krylov"]["ritz_values"].double(), P)
    assert r.lambda_rest == pytest.approx(lam_rest, rel=1e-12)
    assert h.scale["t"] == 1.0 and h.dist_sq == pytest.approx(float(((theta - theta0) ** 2).sum()), rel=1e-12)
    post = hessian_posterior(
        theta, problem["krylov"]["ritz_values"], problem["krylov"]["ritz_vectors"],
        c=h.scale["c"], eps=h.scale["eps"], lambda_rest=lam_rest,
    )
    assert h.kl.kl == pytest.approx(kl_lowrank(post, theta0, h.prior_var).kl, rel=1e-9)
    # Dense reference: S_q = V diag(c / (lambda+ + eps)) V^T + tau (I - V V^T), via torch.distributions.
    V, _ = torch.linalg.qr(problem["krylov"]["ritz_vectors"].double())
    a = h.scale["c"] / (problem["krylov"]["ritz_values"].double().clamp_min(0) + h.scale["eps"])
    tau = h.scale["c"] / (max(lam_rest, 0.0) + h.scale["eps"])
    S = V @ torch.diag(a) @ V.T + tau * (torch.eye(P, dtype=F64) - V @ V.T)
    ref = kl_divergence(MultivariateNormal(theta, S), MultivariateNormal(theta0, h.prior_var * torch.eye(P, dtype=F64)))
    assert h.kl.kl == pytest.approx(float(ref), rel=1e-8)
    iso = r.isotropic
    s2 = iso.scale["sigma"] ** 2
    ref_iso = kl_divergence(MultivariateNormal(theta, s2 * torch.eye(P, dtype=F64)), MultivariateNormal(theta0, iso.prior_var * torch.eye(P, dtype=F64)))
    assert iso.kl.kl == pytest.approx(float(ref_iso), rel=1e-8)
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
    r = _run(problem, krylov=krylov, posterior_c=(1e-2,), eps=(0.5,), prior_fraction=0.0, mean_grid=(1.0,))
    h = r.hessian
    assert r.top_k == P and r.lambda_rest == 0.0
    theta = _flat(problem["model"])
    theta0 = torch.cat([problem["init"][n].reshape(-1).to(F64) for n, _ in problem["model"].named_parameters()])
    w, U = torch.linalg.eigh(problem["H"])
    Hplus = U @ torch.diag(w.clamp_min(0)) @ U.T
    S = 1e-2 * torch.linalg.inv(Hplus + 0.5 * torch.eye(P, dtype=F64))
    S = 0.5 * (S + S.T)
    ref = kl_divergence(MultivariateNormal(theta, S), MultivariateNormal(theta0, h.prior_var * torch.eye(P, dtype=F64)))
    assert h.kl.kl == pytest.approx(float(ref), rel=1e-8)


def test_result_fields_json_and_what_every_grid_pays(problem):
    r = _run(problem)
    d = json.loads(json.dumps(to_jsonable(r.to_dict())))
    for key in (
        "n_train", "n_bound", "n_test", "num_params", "num_fixed", "fixed_nats", "prior", "top_k", "ritz_values",
        "lambda_rest", "trace", "train_error", "test_error", "occam", "isotropic", "hessian", "ordering",
        "hessian_below_isotropic", "isotropic_below_occam", "hessian_below_occam", "folded_batchnorm",
        "seed", "config", "bounds",
    ):
        assert key in d, key
    for fam in ("isotropic", "hessian"):
        for key in ("scale", "bound", "prior_index", "prior_var", "kl", "pac_bayes", "sample", "test_error", "dist_sq", "candidates"):
            assert key in d[fam], (fam, key)
    assert d["hessian"]["complexity"]["effective_dim"] > 0
    assert {row["t"] for row in d["isotropic"]["candidates"]} == {1.0, 0.5}
    assert all(row["t"] == r.isotropic.scale["t"] for row in d["hessian"]["candidates"])
    assert r.hessian.scale["t"] == r.isotropic.scale["t"]  # both families share the mean
    assert r.n_train == 1500 and r.n_bound == 750 and r.n_test == 20000 and r.num_params == 51 and r.fixed_nats == 0.0
    grid = PriorVarianceGrid(1.0, 100.0)
    n = 750
    for post in (r.isotropic, r.hessian):
        j = post.prior_index
        assert post.prior_var == pytest.approx(grid.variance(j), rel=1e-12)
        assert post.pac_bayes.union_cost == pytest.approx(2 * math.log(j) + math.log(math.pi**2 / 6), rel=1e-12)
        assert post.pac_bayes.grid_size is None  # countable grid
        # Paired draws: N = mc_draws Bernoulli terms, one-sided Chernoff at delta'.
        assert post.sample.num_samples == 1500 and post.sample.num_candidates == 1
        assert post.sample.budget == pytest.approx(math.log(1 / 0.01) / 1500, rel=1e-12)
        assert post.sample.upper == pytest.approx(kl_inv_upper(post.sample.mean_error, post.sample.budget), rel=1e-12)
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
    assert a.prior.dist_sq_prior != c.prior.dist_sq_prior  # another seed: another split
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_bound_below_test_error_fails_loudly(problem):
    x, y = problem["fresh"]
    with torch.no_grad():
        pred = problem["model"](x[:2000]).argmax(-1)
    wrong = (x[:2000], (pred + 1) % 3)  # labels the network (and its posterior) almost always miss
    cfg = BoundsConfig(**FAST)
    with pytest.raises(InvalidBoundError, match="below the test error"):
        bounds_for_run(problem["model"], problem["init"], problem["train"], wrong, problem["krylov"], problem["trace"],
                       train_config=RECIPE, config=cfg, seed=0)


def test_batchnorm_model_is_folded_and_valid():
    x, y = _mixture(1200, seed=5)
    model = _net(seed=3, bn=True)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, x, y, steps=200)
    H = _dense_hessian(model, x[:400], y[:400])
    w, U = torch.linalg.eigh(H)
    krylov = {"ritz_values": w.flip(0)[:4], "ritz_vectors": U.flip(1)[:, :4]}
    fresh = _mixture(10000, seed=6)
    r = bounds_for_run(model, init, (x, y), fresh, krylov, float(w.sum()), train_config=RECIPE, config=BoundsConfig(**FAST), seed=0)
    assert r.folded_batchnorm == ("1",)
    assert r.fixed_nats == 0.0 and r.num_fixed == 0  # statistics folded, nothing charged
    assert r.hessian.bounds_by_form is None  # forms describe the unfolded KL only
    # Occam still describes the stored network: parameters plus the 12 running statistics.
    assert r.occam.kl == pytest.approx(32 * (sum(p.numel() for p in model.parameters()) + 12) * math.log(2))
    for post in (r.isotropic, r.hessian):
        assert post.bound >= post.test_error
        assert post.bound < 0.8
    # A near point-mass posterior at t = 1 evaluates the folded network: the stored network's errors.
    tiny = bounds_for_run(
        model, init, (x, y), fresh, krylov, float(w.sum()), train_config=RECIPE,
        config=BoundsConfig(**{**FAST, "sigmas": (1e-7,), "posterior_c": (1e-12,), "eps": (1.0,), "mean_grid": (1.0,), "mc_draws": 4000}),
        seed=0,
    )
    for post in (tiny.isotropic, tiny.hessian):
        assert post.test_error == pytest.approx(tiny.test_error, abs=1.5 / 10000)
        assert abs(post.sample.mean_error - tiny.train_error) < 4 * math.sqrt(tiny.train_error / 4000) + 1e-3


def test_unfoldable_buffer_is_charged(problem):
    model = problem["model"]
    model.register_buffer("calibration", torch.zeros(10))  # read by nobody, but data could set it
    init = {**problem["init"], "calibration": torch.zeros(10)}
    try:
        r = bounds_for_run(model, init, problem["train"], problem["fresh"], problem["krylov"], problem["trace"],
                           train_config=RECIPE, config=BoundsConfig(**FAST), seed=0)
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
        ({"mean_grid": (1.5,)}, "mean_grid"),
        ({"prior_fraction": 0.99}, "prior_fraction"),
        ({"prior_c": 0.0}, "prior_c"),
        ({"delta": 0.5, "mc_delta": 0.5}, "delta \\+ mc_delta"),
        ({"mc_draws": 0}, "mc_draws"),
        ({"bn_mode": "batch"}, "bn_mode"),
        ({"top_k": 0}, "top_k"),
        ({"top_k": 2.5}, "top_k=2.5 must be an int"),
        ({"mc_draws": 10.0}, "mc_draws=10.0 must be an int"),
        ({"prior_epochs": 0}, "prior_epochs"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        BoundsConfig(**overrides)


def test_parse_config_builds_and_rejects():
    cfg = parse_config(BoundsConfig, {"sigmas": [0.1, 0.2], "mc_draws": 50, "top_k": 3, "mean_grid": [1, 0.5]}, "bounds.settings")
    assert cfg.sigmas == (0.1, 0.2) and cfg.mc_draws == 50 and cfg.top_k == 3 and cfg.mean_grid == (1.0, 0.5)
    with pytest.raises(ConfigError, match="unknown key bounds.settings.sigma "):
        parse_config(BoundsConfig, {"sigma": [0.1]}, "bounds.settings")
    with pytest.raises(ConfigError, match="bounds.settings.*sigmas"):
        parse_config(BoundsConfig, {"sigmas": []}, "bounds.settings")


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
    kw = dict(train_config=RECIPE, config=cfg)
    with pytest.raises(ValueError, match="trace must be a finite"):
        bounds_for_run(*args, float("nan"), seed=0, **kw)
    with pytest.raises(ValueError, match="seed must be"):
        bounds_for_run(*args, problem["trace"], seed=-1, **kw)
    with pytest.raises(ValueError, match="train_config must be a TrainConfig"):
        bounds_for_run(*args, problem["trace"], config=cfg, seed=0)
    with pytest.raises(ValueError, match="init_state lacks"):
        bounds_for_run(problem["model"], {}, *args[2:], problem["trace"], seed=0, **kw)
    shrunk = {**problem["init"], "0.weight": torch.zeros(6, 3)}
    with pytest.raises(ValueError, match="init_state\\['0.weight'\\] has shape"):
        bounds_for_run(problem["model"], shrunk, *args[2:], problem["trace"], seed=0, **kw)
    x, y = problem["train"]
    with pytest.raises(ValueError, match="train_data must hold"):
        bounds_for_run(problem["model"], problem["init"], (x, y[:-1]), *args[3:], problem["trace"], seed=0, **kw)
    with pytest.raises(ValueError, match="config must be a BoundsConfig"):
        bounds_for_run(*args, problem["trace"], train_config=RECIPE, config={"sigmas": (0.1,)}, seed=0)


# ------------------------------------------------------------------ the params.yaml section

REPO = Path(__file__).resolve().parents[2]
MLP = {"name": "mlp", "width": 8, "depth": 1}
TRAIN = {"epochs": 2, "batch_size": 16}
EXPERIMENTS = {
    "h1": {"dataset": "d", "configs": {"b16": {"model": MLP, "train": {**TRAIN, "snapshot_every": 1}},
                                        "b32": {"model": MLP, "train": {**TRAIN, "batch_size": 32}}}},
    "sanity": {"dataset": "d", "configs": {"random": {"model": MLP, "train": {**TRAIN, "random_labels": True}}}},
}
GOOD = {"runs": ["h1/b16", "sanity/random"], "sanity": {"real": "h1/b16", "random": "sanity/random"}, "settings": {"mc_draws": 10}}


@pytest.mark.parametrize("profile", ["params.yaml", "profiles/ci.yaml", "profiles/paper.yaml"])
def test_every_profile_has_a_valid_bounds_section(profile):
    params = yaml.safe_load((REPO / profile).read_text())
    checked = validate_pipeline_params(params)
    bounds = checked["bounds"]
    assert isinstance(bounds["settings"], BoundsConfig)
    assert bounds["sanity"]["random"] in params["bounds"]["runs"]
    assert all(cfg in params["experiments"][exp]["configs"] for exp, cfg in bounds["runs"])


def test_good_section_parses():
    out = parse_bounds_section(GOOD, EXPERIMENTS)
    assert out == {"runs": [("h1", "b16"), ("sanity", "random")], "sanity": GOOD["sanity"], "settings": {"mc_draws": 10}}
    assert parse_bounds_section({"runs": ["h1/b32"]}, EXPERIMENTS)["sanity"] is None


@pytest.mark.parametrize(
    ("edit", "match"),
    [
        (lambda b: b.update(extra=1), "unknown key bounds.extra"),
        (lambda b: b.update(runs=[]), "bounds.runs=\\[\\] is not allowed"),
        (lambda b: b.update(runs=["h1/b16", "h1/b16"]), "repeats a run"),
        (lambda b: b.update(runs=["h1/b64", "sanity/random"]), "'h1/b64' is not an experiment config; valid: \\['h1/b16'"),
        (lambda b: b.update(runs=["nope/b16"]), "'nope/b16' is not an experiment config"),
        (lambda b: b.update(sanity={"real": "h1/b16"}), "bounds.sanity=.* is not allowed"),
        (lambda b: b.update(sanity={"real": "h1/b32", "random": "sanity/random"}), "bounds.sanity.real='h1/b32' must be one of bounds.runs"),
        (lambda b: b.update(sanity={"real": "sanity/random", "random": "h1/b16"}), "random_labels false for real"),
        (lambda b: b.update(settings=[1]), "bounds.settings must be a mapping"),
    ],
)
def test_bad_sections_name_the_key(edit, match):
    section = copy.deepcopy(GOOD)
    edit(section)
    with pytest.raises(ConfigError, match=match):
        parse_bounds_section(section, EXPERIMENTS)


def test_sanity_pair_must_be_the_same_network_and_training():
    experiments = copy.deepcopy(EXPERIMENTS)
    experiments["sanity"]["configs"]["random"]["train"]["batch_size"] = 32
    with pytest.raises(ConfigError, match="must be the same network and training except random_labels"):
        parse_bounds_section(GOOD, experiments)
    experiments = copy.deepcopy(EXPERIMENTS)
    experiments["sanity"]["configs"]["random"]["model"] = {**MLP, "width": 16}
    with pytest.raises(ConfigError, match="same network"):
        parse_bounds_section(GOOD, experiments)


def test_pipeline_validation_checks_bounds_settings():
    params = yaml.safe_load((REPO / "profiles/ci.yaml").read_text())
    params["bounds"]["settings"]["prior_fraction"] = 1.5
    with pytest.raises(ConfigError, match="bounds.settings.prior_fraction=1.5 is not allowed"):
        validate_pipeline_params(params)
    params["bounds"]["settings"]["prior_fraction"] = 0.5
    params["bounds"]["runs"].append("h2_arch/missing")
    with pytest.raises(ConfigError, match="'h2_arch/missing' is not an experiment config"):
        validate_pipeline_params(params)
