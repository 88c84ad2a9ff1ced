"""Along-training records: train to a target loss, the step cap, lambda_max against a dense
Hessian, records that leave the weights alone, exact resume, and recipes of older runs unchanged."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from landscape.schema import ConfigError
from landscape.training import evaluate, train_model
from landscape.training.config import TrainConfig
from landscape.training.tracking import fixed_batch


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 12, generator=g)
    y = (x[:, :4].argmax(1) + (torch.rand(n, generator=g) < 0.1).long()) % 4
    return x, y


def mlp(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 4))


BASE = {"epochs": 6, "batch_size": 16, "lr": 0.05, "momentum": 0.9, "schedule": "constant", "weight_decay": 0.0}


def run(seed=0, **over):
    train, test = data(), data(64, seed=1)
    net = mlp()
    return net, train_model(net, train, test, TrainConfig(**{**BASE, **over}), seed=seed)


def test_train_to_target_stops_at_the_first_record_below_it():
    _, free = run(track_every=4)  # the same trajectory, no target
    losses, steps = free.along_training["train_loss"], free.along_training["steps"]
    target = 0.5 * (losses[0] + losses[-1])
    net, stopped = run(track_every=4, target_loss=target)
    first = next(i for i, v in enumerate(losses) if v <= target)
    along = stopped.along_training
    assert along["reached"] and not along["hit_cap"]
    assert stopped.status == "completed" and stopped.steps == along["stop_step"] == steps[first]
    assert along["train_loss"] == losses[: first + 1]  # the records up to the stop are the free run's
    assert along["train_loss"][-1] <= target < along["train_loss"][-2]
    train = data()
    assert stopped.final["train_loss"] == pytest.approx(evaluate(net, *train)[0], abs=0) == along["train_loss"][-1]
    assert stopped.steps < 6 * (256 // 16) and stopped.epochs_completed == -(-stopped.steps // 16)


def test_unreachable_target_hits_the_cap():
    _, res = run(track_every=8, target_loss=1e-9)
    along = res.along_training
    assert res.status == "completed" and along["hit_cap"] and not along["reached"]
    assert res.steps == along["stop_step"] == along["cap_steps"] == 6 * 16


def test_records_leave_the_weights_bit_identical():
    _, plain = run()
    _, tracked = run(track_every=5, track_sharpness=True, sharpness_examples=64)
    assert plain.along_training is None
    assert tracked.state_hash == plain.state_hash
    assert len(tracked.along_training["lambda_max"]) == len(tracked.along_training["steps"]) == (6 * 16) // 5


def _dense_lambda_max(net, x, y):
    params = [p for p in net.parameters()]
    loss = F.cross_entropy(net(x), y)
    grads = torch.autograd.grad(loss, params, create_graph=True)
    flat = torch.cat([g.reshape(-1) for g in grads])
    rows = [torch.cat([h.reshape(-1) for h in torch.autograd.grad(flat[i], params, retain_graph=True)]) for i in range(flat.numel())]
    H = torch.stack(rows).double()
    return float(torch.linalg.eigvalsh(0.5 * (H + H.T))[-1])


def test_final_lambda_max_matches_the_dense_hessian_of_the_fixed_batch():
    cfg = TrainConfig(**{**BASE, "track_every": 8, "track_sharpness": True, "sharpness_examples": 100})
    train, test = data(), data(64, seed=1)
    net = mlp()
    res = train_model(net, train, test, cfg, seed=3)
    batch = fixed_batch(cfg, *train, seed=3)  # the run's fixed batch
    exact = _dense_lambda_max(net.eval(), *batch)
    assert res.along_training["lambda_max_converged"]
    assert res.along_training["lambda_max_final"] == pytest.approx(exact, rel=1e-3)
    # the last record (3 warm-started products) is a Rayleigh quotient: a lower bound, here within 15%
    assert 0.85 * exact <= res.along_training["lambda_max"][-1] <= exact * (1 + 1e-5)


def test_resume_with_records_is_exact(tmp_path):
    over = {"track_every": 6, "track_sharpness": True, "sharpness_examples": 64}
    _, reference = run(**over)

    class Interrupt(Exception):
        pass

    def stop_after_two(history):
        if len(history) == 2:
            raise Interrupt

    train, test = data(), data(64, seed=1)
    cfg = TrainConfig(**{**BASE, **over})
    with pytest.raises(Interrupt):
        train_model(mlp(), train, test, cfg, seed=0, checkpoint_dir=tmp_path, fingerprint="r", on_epoch=stop_after_two)
    resumed = train_model(mlp(seed=9), train, test, cfg, seed=0, checkpoint_dir=tmp_path, fingerprint="r")
    assert resumed.resumed_from_epoch == 2 and resumed.state_hash == reference.state_hash
    assert resumed.along_training == reference.along_training


# The recipe keys of every run recorded before the along-training settings existed.
RECIPE_KEYS_BEFORE = [
    "epochs", "batch_size", "optimizer", "lr", "momentum", "nesterov", "weight_decay", "schedule", "step_epochs",
    "step_gamma", "augment", "amp", "amp_dtype", "checkpoint_every", "divergence_loss", "eval_batch_size",
    "random_labels", "lr_reference_batch", "snapshot_every", "curvature_gamma", "hybrid_mu", "curvature_every",
    "power_steps",
]


def test_recipe_without_the_new_settings_is_unchanged():
    cfg = TrainConfig(lr=0.2, batch_size=16)
    assert list(cfg.recipe()) == RECIPE_KEYS_BEFORE
    assert cfg.recipe() == {k: v for k, v in dataclasses.asdict(cfg).items() if k in RECIPE_KEYS_BEFORE}
    with_target = TrainConfig(lr=0.2, batch_size=16, target_loss=0.1, track_every=10)
    assert with_target.recipe() == {**cfg.recipe(), "target_loss": 0.1, "track_every": 10}


def test_checkpoint_of_an_untracked_run_has_no_new_key(tmp_path):
    train, test = data(), data(64, seed=1)
    train_model(mlp(), train, test, TrainConfig(**{**BASE, "epochs": 1}), seed=0, checkpoint_dir=tmp_path, fingerprint="r")
    state = torch.load(tmp_path / "last.pt", weights_only=False)
    assert "along_training" not in state


@pytest.mark.parametrize(
    ("over", "match"),
    [({"target_loss": 0.1}, "need train.track_every >= 1"), ({"track_sharpness": True}, "need train.track_every >= 1")],
)
def test_settings_that_need_records(over, match):
    with pytest.raises(ConfigError, match=match):
        TrainConfig(**over)
