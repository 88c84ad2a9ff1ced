"""The bounds stage: bounds_for_run (validity on fresh data, every arm at the trained weights, the
curvature KL against a dense reference, the hold-out and Occam baselines, errors), BoundsConfig and the
params.yaml `bounds` section (run list, random-label sanity pair)."""

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
from torch.func import functional_call, jacrev

from landscape.bounds.curvature_posterior import quantize_uniform
from landscape.bounds.kl import kl_inv_upper
from landscape.bounds.pacbayes import PriorVarianceGrid
from landscape.bounds.posterior import split_indices
from landscape.io import to_jsonable
from landscape.pipeline.bounds import FAMILIES, BoundsConfig, InvalidBoundError, bounds_for_run, parse_bounds_section
from landscape.pipeline.validate import validate_pipeline_params
from landscape.schema import ConfigError, parse_config
from landscape.training import train_model
from landscape.training.config import TrainConfig

F64 = torch.float64
CENTRES = torch.tensor([[2.0, 0.0, 0.0, 0.0], [0.0, 2.0, 0.0, 0.0], [0.0, 0.0, 2.0, 0.0]])
# Small grids and budgets: every test stays within a few seconds on one core.
FAST = dict(
    mc_draws=1500,
    test_draws=4,
    pilot_draws=2,
    pilot_examples=300,
    sigmas=(0.05, 0.1, 0.2, 0.4),
    posterior_c=(1e-3, 1e-2, 1e-1),
    eps=(0.1, 1.0),
    curvature_examples=200,
    quant_bits=(4, 8),
    optimize_steps=40,
    optimize_lr=0.01,
    optimize_batch=100,
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


def _functional64(model: nn.Module):
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    shapes = [p.shape for n, p in model.named_parameters() if p.requires_grad]
    sizes = [math.prod(s) for s in shapes]
    m64 = copy.deepcopy(model).to(F64).eval()

    def f(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return functional_call(m64, {n: c.reshape(s) for n, c, s in zip(names, v.split(sizes), shapes)}, (x.to(F64),))

    return f


def _dense_hessian(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Hessian of the mean cross-entropy (eval mode) over the trainable parameters, float64."""
    f = _functional64(model)
    return torch.autograd.functional.hessian(lambda v: nn.functional.cross_entropy(f(v, x), y), _flat(model))  # double backward


def _dense_ggn(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """(1/N) sum_n J_n^T (diag p_n - p_n p_n^T) J_n, float64, by explicit Jacobians."""
    f, flat = _functional64(model), _flat(model)
    G = torch.zeros(flat.numel(), flat.numel(), dtype=F64)
    for i in range(x.shape[0]):
        J = jacrev(lambda v, i=i: f(v, x[i : i + 1])[0])(flat)
        p = torch.softmax(f(flat, x[i : i + 1])[0], -1)
        G += J.T @ (torch.diag(p) - torch.outer(p, p)) @ J
    return G / x.shape[0]


def _flat(model: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1).to(F64) for p in model.parameters()])


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
    krylov = {"ritz_values": evals[:3].float(), "ritz_vectors": evecs[:, :3].float()}
    return {"model": model, "init": init, "train": (x, y), "fresh": _mixture(20000, seed=1), "krylov": krylov}


def _run(problem, seed: int = 0, krylov=None, train=None, **overrides):
    cfg = BoundsConfig(**{**FAST, **overrides})
    return bounds_for_run(
        problem["model"], problem["init"], problem["train"] if train is None else train, problem["fresh"],
        problem["krylov"] if krylov is None else krylov, train_config=RECIPE, config=cfg, seed=seed,
    )


@pytest.fixture(scope="module")
def result(problem):
    return _run(problem)


def _prior_network(problem, fraction: float, seed: int = 0, labels=None) -> nn.Module:
    x, y = problem["train"]
    y = y if labels is None else labels
    prior_idx, _ = split_indices(1500, fraction, seed)
    ref = _net(seed=7)
    ref.load_state_dict(problem["init"])
    train_model(ref, (x[prior_idx], y[prior_idx]), problem["fresh"], RECIPE, seed=seed)
    return ref.eval()


def test_every_bound_covers_the_risk_of_what_it_certifies(problem, result):
    r = result
    x, y = problem["fresh"]
    with torch.no_grad():
        risk = float((problem["model"](x).argmax(-1) != y).float().mean())
    assert r.test_error == pytest.approx(risk)
    # PAC-Bayes arms: above their posterior's risk on 20,000 fresh examples x 4 draws, and informative.
    for post in (r.isotropic, r.curvature, r.optimized):
        assert post.test_error_stderr < 0.02
        assert post.bound >= post.test_error
        assert post.bound >= post.sample.upper >= post.sample.mean_error
        assert post.bound < 0.65
    # Hold-out bounds: the prior network on S_bound, theta* on the test split; both above the risk.
    prior = _prior_network(problem, 0.5)
    with torch.no_grad():
        prior_risk = float((prior(x).argmax(-1) != y).float().mean())
    assert r.holdout_prior.bound >= prior_risk and r.holdout_test.bound >= risk
    assert r.holdout_test.n == 20000 and r.holdout_test.empirical_risk == pytest.approx(risk)
    assert r.occam.bound >= r.occam.train_error
    assert set(r.bounds) == set(FAMILIES) and r.bounds["holdout_test"] == r.holdout_test.bound


def test_arms_are_centred_at_the_trained_weights(problem, result):
    r = result
    # No interpolation toward the prior: the isotropic and curvature means are theta* itself.
    assert r.isotropic.dist_sq == pytest.approx(r.prior.dist_sq_prior, rel=1e-6)
    assert r.curvature.dist_sq == r.isotropic.dist_sq
    assert "scale" in r.to_dict()["isotropic"] and "t" not in r.isotropic.scale
    # A near point mass at the mean: the Gibbs classifier is theta*, so its Monte-Carlo risk on
    # S_bound is theta*'s error there (and not the prior network's).
    tiny = _run(problem, sigmas=(1e-7,), posterior_c=(1e-14,), eps=(1.0,), mc_draws=4000)
    x, y = problem["train"]
    _, bound_idx = split_indices(1500, 0.5, 0)
    with torch.no_grad():
        err = float((problem["model"](x[bound_idx]).argmax(-1) != y[bound_idx]).float().mean())
    for post in (tiny.isotropic, tiny.curvature):
        assert abs(post.sample.mean_error - err) < 4 * math.sqrt(max(err, 0.01) / 4000)
        assert post.test_error == pytest.approx(tiny.test_error, abs=1.5 / 20000)


def test_data_dependent_prior_is_trained_on_its_split_only(problem):
    r = _run(problem, prior_fraction=0.4)
    prior_idx, bound_idx = split_indices(1500, 0.4, 0)
    assert r.n_bound == 900 == bound_idx.numel() and r.prior.n_prior == 600 and r.prior.kind == "trained"
    for post in (r.isotropic, r.curvature, r.optimized):
        assert post.pac_bayes.n == 900  # the prior's examples are not in the bound's n
    ref = _prior_network(problem, 0.4)
    theta = _flat(problem["model"])
    assert r.prior.dist_sq_prior == pytest.approx(float(((theta - _flat(ref)) ** 2).sum()), rel=1e-10)
    # The hold-out baseline: that prior network's mistakes on S_bound, kl-inverted at delta + delta'.
    x, y = problem["train"]
    with torch.no_grad():
        k = int((ref(x[bound_idx]).argmax(-1) != y[bound_idx]).sum())
    assert (r.holdout_prior.errors, r.holdout_prior.n) == (k, 900)
    assert r.holdout_prior.bound == pytest.approx(float(kl_inv_upper(k / 900, math.log(1 / 0.035) / 900)), rel=1e-12)
    # Relabelling the bound examples cannot move the prior: it never saw them.
    y2 = y.clone()
    y2[bound_idx] = (y2[bound_idx] + 1) % 3
    moved = _run(problem, prior_fraction=0.4, train=(x, y2))
    assert moved.prior.dist_sq_prior == r.prior.dist_sq_prior
    assert moved.prior.bound_error > 0.5 > r.prior.bound_error


def test_curvature_kl_equals_dense_reference(problem, result):
    r = result
    c = r.curvature
    P = r.num_params
    x, _ = problem["train"]
    _, bound_idx = split_indices(1500, 0.5, 0)
    d = torch.diagonal(_dense_ggn(problem["model"], x[bound_idx[:200]]))
    assert r.diag_summary["mean"] == pytest.approx(float(d.mean()), rel=1e-4)  # float32 network vs float64 reference
    lam = problem["krylov"]["ritz_values"].double()
    V = problem["krylov"]["ritz_vectors"].double()
    assert r.top_k == 3 and r.ritz_values == pytest.approx(lam.tolist())
    gain = (lam - ((V * V) * d[:, None]).sum(0)).clamp(min=0)
    A = torch.diag(d + c.scale["eps"]) + V @ torch.diag(gain) @ V.T
    S = c.scale["c"] * torch.linalg.inv(A)
    S = 0.5 * (S + S.T)
    # The Gaussian KL depends on the means only through |theta* - w_p|^2 = dist_sq.
    mean = _flat(problem["model"])
    offset = torch.zeros(P, dtype=F64)
    offset[0] = math.sqrt(c.dist_sq)
    ref = kl_divergence(MultivariateNormal(mean, S), MultivariateNormal(mean - offset, c.prior_var * torch.eye(P, dtype=F64)))
    assert c.kl.kl == pytest.approx(float(ref), rel=1e-4)
    # The curvature covariance differs from the isotropic one in every direction: its diagonal varies.
    assert r.diag_summary["max"] > 3 * r.diag_summary["median"] > 0


def test_result_fields_json_and_what_every_bound_pays(result):
    r = result
    d = json.loads(json.dumps(to_jsonable(r.to_dict())))
    for key in ("n_train", "n_bound", "n_test", "num_params", "prior", "top_k", "diag_summary", "train_error", "test_error",
                *FAMILIES, "optimizer", "certifies", "ordering", "seed", "config", "bounds"):
        assert key in d, key
    assert set(d["certifies"]) == set(FAMILIES)
    assert "S_prior only" in d["certifies"]["holdout_prior"] and "test examples" in d["certifies"]["holdout_test"]
    assert r.n_train == 1500 and r.n_bound == 750 and r.n_test == 20000 and r.num_params == 51 and r.fixed_nats == 0.0
    values = r.bounds
    assert list(r.ordering) == sorted(values, key=values.get)
    grid = PriorVarianceGrid(1.0, 100.0)
    n = 750
    for post in (r.isotropic, r.curvature, r.optimized):
        j = post.prior_index
        assert post.prior_var == pytest.approx(grid.variance(j), rel=1e-12)
        assert post.pac_bayes.union_cost == pytest.approx(2 * math.log(j) + math.log(math.pi**2 / 6), rel=1e-12)
        # Paired draws: N = mc_draws fresh Bernoulli terms, one-sided Chernoff at delta'.
        assert post.sample.num_samples == 1500 and post.sample.num_candidates == 1
        assert post.sample.upper == pytest.approx(kl_inv_upper(post.sample.mean_error, math.log(1 / 0.01) / 1500), rel=1e-12)
        budget = (post.kl.kl + math.log(2 * math.sqrt(n) / 0.025) + post.pac_bayes.union_cost) / n
        assert post.bound == pytest.approx(kl_inv_upper(post.sample.upper, budget), rel=1e-12)
        assert post.delta_total == pytest.approx(0.035)
    # Occam: b bits per parameter + (min, max) per tensor, b chosen among 2 options at ln 2 nats.
    assert r.occam.bits_options == (4, 8) and r.occam.union_cost == pytest.approx(math.log(2))
    best = min(r.occam.per_bits, key=lambda row: row["bound"])
    assert r.occam.bound == best["bound"]
    assert r.occam.description_nats == pytest.approx((r.occam.bits * 51 + 64 * 4) * math.log(2))
    assert r.optimizer["steps"] == 40 and r.optimizer["objective_last"] < r.optimizer["objective_first"]


def test_occam_uses_the_quantised_networks_training_error(problem, result):
    model = problem["model"]
    x, y = problem["train"]
    sizes = [p.numel() for p in model.parameters()]
    for row in result.occam.per_bits:
        q = quantize_uniform(_flat(model), sizes, int(row["bits"]))
        qnet = copy.deepcopy(model)
        torch.nn.utils.vector_to_parameters(q.float(), qnet.parameters())
        with torch.no_grad():
            assert row["train_error"] == pytest.approx(float((qnet(x).argmax(-1) != y).float().mean()))


def test_deterministic_and_side_effect_free(problem, result):
    model = problem["model"]
    model.train()  # the caller's mode must survive
    before = {k: v.clone() for k, v in model.state_dict().items()}
    a = _run(problem, seed=0)
    assert model.training
    model.eval()
    c = _run(problem, seed=4)
    assert json.dumps(to_jsonable(a.to_dict())) == json.dumps(to_jsonable(result.to_dict()))
    assert a.prior.dist_sq_prior != c.prior.dist_sq_prior  # another seed: another split
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(p.grad is None for p in model.parameters())


def test_bound_below_test_error_fails_loudly(problem):
    x, y = problem["fresh"]
    with torch.no_grad():
        pred = problem["model"](x[:2000]).argmax(-1)
    wrong = (x[:2000], (pred + 1) % 3)  # labels the network (and its posterior) almost always miss
    with pytest.raises(InvalidBoundError, match="below the test error"):
        bounds_for_run(problem["model"], problem["init"], problem["train"], wrong, problem["krylov"],
                       train_config=RECIPE, config=BoundsConfig(**FAST), seed=0)


def test_batchnorm_model_is_folded_and_valid():
    x, y = _mixture(1200, seed=5)
    model = _net(seed=3, bn=True)
    init = {k: v.clone() for k, v in model.state_dict().items()}
    _train(model, x, y, steps=200)
    H = _dense_hessian(model, x[:400], y[:400])
    w, U = torch.linalg.eigh(H)
    krylov = {"ritz_values": w.flip(0)[:4], "ritz_vectors": U.flip(1)[:, :4]}
    fresh = _mixture(10000, seed=6)
    r = bounds_for_run(model, init, (x, y), fresh, krylov, train_config=RECIPE, config=BoundsConfig(**FAST), seed=0)
    assert r.folded_batchnorm == ("1",)
    assert r.fixed_nats == 0.0 and r.num_fixed == 0  # statistics folded, nothing charged
    assert r.top_k == 0  # the cached eigenvectors live in unfolded coordinates: diagonal only
    # Occam describes the stored network: its parameters plus the 12 running statistics at 32 bits.
    P = sum(p.numel() for p in model.parameters())
    assert r.occam.description_nats == pytest.approx((r.occam.bits * P + 64 * 6 + 32 * 12) * math.log(2))
    for post in (r.isotropic, r.curvature, r.optimized):
        assert post.bound >= post.test_error
        assert post.bound < 0.8


def test_unfoldable_buffer_is_charged(problem):
    model = problem["model"]
    model.register_buffer("calibration", torch.zeros(10))  # read by nobody, but data could set it
    init = {**problem["init"], "calibration": torch.zeros(10)}
    try:
        r = bounds_for_run(model, init, problem["train"], problem["fresh"], problem["krylov"],
                           train_config=RECIPE, config=BoundsConfig(**FAST), seed=0)
    finally:
        del model._buffers["calibration"]
    assert r.num_fixed == 10 and r.fixed_nats == pytest.approx(320 * math.log(2))
    assert r.curvature.pac_bayes.kl == pytest.approx(r.curvature.kl.kl + r.fixed_nats, rel=1e-12)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"sigmas": ()}, "sigmas"),
        ({"posterior_c": []}, "posterior_c"),
        ({"eps": (0.1, -1.0)}, "eps"),
        ({"prior_fraction": 0.99}, "prior_fraction"),
        ({"prior_fraction": 0.0}, "prior_fraction"),
        ({"prior_c": 0.0}, "prior_c"),
        ({"delta": 0.5, "mc_delta": 0.5}, "delta \\+ mc_delta"),
        ({"mc_draws": 0}, "mc_draws"),
        ({"bn_mode": "batch"}, "bn_mode"),
        ({"top_k": -1}, "top_k"),
        ({"top_k": 2.5}, "top_k=2.5 must be an int"),
        ({"mc_draws": 10.0}, "mc_draws=10.0 must be an int"),
        ({"prior_epochs": 0}, "prior_epochs"),
        ({"quant_bits": (0, 8)}, "quant_bits"),
        ({"quant_bits": ()}, "quant_bits"),
        ({"optimize_steps": 0}, "optimize_steps"),
        ({"optimize_lr": -1.0}, "optimize_lr"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        BoundsConfig(**overrides)


def test_parse_config_builds_and_rejects():
    cfg = parse_config(BoundsConfig, {"sigmas": [0.1, 0.2], "mc_draws": 50, "top_k": 0, "quant_bits": [4, 8]}, "bounds.settings")
    assert cfg.sigmas == (0.1, 0.2) and cfg.mc_draws == 50 and cfg.top_k == 0 and cfg.quant_bits == (4, 8)
    with pytest.raises(ConfigError, match="unknown key bounds.settings.mean_grid "):
        parse_config(BoundsConfig, {"mean_grid": [1.0]}, "bounds.settings")
    with pytest.raises(ConfigError, match="bounds.settings.*sigmas"):
        parse_config(BoundsConfig, {"sigmas": []}, "bounds.settings")


def test_bad_inputs_raise(problem):
    kr = problem["krylov"]
    bad_p = {"ritz_values": kr["ritz_values"], "ritz_vectors": torch.zeros(50, 3)}
    with pytest.raises(ValueError, match="ritz_vectors must have shape \\(P=51"):
        _run(problem, krylov=bad_p)
    with pytest.raises(ValueError, match="krylov must map"):
        _run(problem, krylov={"ritz_values": kr["ritz_values"]})
    with pytest.raises(ValueError, match="top_k=6 needs"):
        _run(problem, top_k=6)
    cfg = BoundsConfig(**FAST)
    args = (problem["model"], problem["init"], problem["train"], problem["fresh"], kr)
    kw = dict(train_config=RECIPE, config=cfg)
    with pytest.raises(ValueError, match="seed must be"):
        bounds_for_run(*args, seed=-1, **kw)
    with pytest.raises(ValueError, match="train_config must be a TrainConfig"):
        bounds_for_run(*args, config=cfg, seed=0)
    with pytest.raises(ValueError, match="init_state lacks"):
        bounds_for_run(problem["model"], {}, *args[2:], seed=0, **kw)
    shrunk = {**problem["init"], "0.weight": torch.zeros(6, 3)}
    with pytest.raises(ValueError, match="init_state\\['0.weight'\\] has shape"):
        bounds_for_run(problem["model"], shrunk, *args[2:], seed=0, **kw)
    x, y = problem["train"]
    with pytest.raises(ValueError, match="train_data must hold"):
        bounds_for_run(problem["model"], problem["init"], (x, y[:-1]), *args[3:], seed=0, **kw)
    with pytest.raises(ValueError, match="config must be a BoundsConfig"):
        bounds_for_run(*args, train_config=RECIPE, config={"sigmas": (0.1,)}, seed=0)


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
