"""Training loop: bit-identical determinism, exact resume, divergence records, schedules."""

import math
import warnings

import pytest
import torch
from torch import nn

from landscape.training.config import TrainConfig
from landscape.io import sha256_tensors
from landscape.training import build_optimizer, build_scheduler, evaluate, randomize_labels, train_model
from landscape.training.augment import random_crop_flip
from landscape.training.loop import epoch_seed
from landscape.training.optim import effective_lr


def data(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x.flatten(1)[:, :10].argmax(1) + torch.randint(0, 2, (n,), generator=g)) % 10
    return x, y


def model(seed=1):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Dropout(0.2), nn.Linear(32, 10))


CFG = TrainConfig(epochs=3, batch_size=32, lr=0.05, augment=True, weight_decay=1e-4)


def test_same_seed_bit_identical_and_seed_matters():
    train, test = data(), data(64, seed=1)
    a = train_model(model(), train, test, CFG, seed=0)
    b = train_model(model(), train, test, CFG, seed=0)
    c = train_model(model(), train, test, CFG, seed=1)
    assert a.status == "completed" and a.epochs_completed == 3 and a.steps == 3 * (256 // 32)
    assert a.state_hash == b.state_hash
    assert a.history == tuple({**h, "epoch_time_s": a.history[i]["epoch_time_s"]} for i, h in enumerate(b.history))
    assert a.state_hash != c.state_hash
    assert set(a.final) == {"train_loss", "train_error", "test_loss", "test_error", "gen_gap"}


def test_a_steps_gradients_are_freed_before_the_next_backward_allocates_its_own():
    """At the peak of a training step (its backward) the previous step's gradients are gone: a
    reference kept past zero_grad(set_to_none=True) would hold a second copy of every gradient.
    The evaluation after each epoch runs without the last step's gradients too."""
    import weakref

    from torch.optim.optimizer import register_optimizer_step_post_hook

    net = model()
    previous: list[weakref.ref] = []
    alive_in_backward: list[int] = []

    def after_step(optimizer, args, kwargs):
        previous[:] = [weakref.ref(p.grad) for group in optimizer.param_groups for p in group["params"] if p.grad is not None]

    def in_backward(module, grad_input, grad_output):
        alive_in_backward.append(sum(ref() is not None for ref in previous))

    def in_evaluation(module, args):
        if not module.training:
            alive_in_evaluation.append(sum(ref() is not None for ref in previous))

    alive_in_evaluation: list[int] = []
    net[-1].register_full_backward_hook(in_backward)  # runs first in each backward, before any new gradient
    net.register_forward_pre_hook(in_evaluation)
    handle = register_optimizer_step_post_hook(after_step)
    try:
        train_model(net, data(), data(64, seed=1), TrainConfig(epochs=2, batch_size=64, lr=0.05), seed=0)
    finally:
        handle.remove()
    assert len(alive_in_backward) == 2 * 256 // 64 and len(previous) == 6
    assert alive_in_backward == [0] * 8
    # nor do the last step's gradients stay for the epoch's evaluation (test, then train split)
    assert len(alive_in_evaluation) >= 2 and set(alive_in_evaluation) == {0}


def test_resume_after_interruption_is_bit_identical(tmp_path):
    train, test = data(), data(64, seed=1)
    reference = train_model(model(), train, test, CFG, seed=0)

    class Interrupt(Exception):
        pass

    def stop_after_two(history):
        if len(history) == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_model(model(), train, test, CFG, seed=0, checkpoint_dir=tmp_path, fingerprint="run", on_epoch=stop_after_two)
    # A fresh model (different init) proves the weights come from the checkpoint.
    resumed = train_model(model(seed=99), train, test, CFG, seed=0, checkpoint_dir=tmp_path, fingerprint="run")
    assert resumed.resumed_from_epoch == 2
    assert resumed.state_hash == reference.state_hash
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in reference.history]


def test_checkpoint_of_another_run_is_not_resumed(tmp_path):
    train, test = data(), data(64, seed=1)
    train_model(model(), train, test, CFG, seed=0, checkpoint_dir=tmp_path, fingerprint="old-config")
    fresh = train_model(model(), train, test, CFG, seed=0, checkpoint_dir=tmp_path, fingerprint="new-config")
    assert fresh.resumed_from_epoch == 0


def test_divergence_is_recorded_with_its_step():
    train, test = data(), data(64, seed=1)
    result = train_model(model(), train, test, TrainConfig(epochs=3, batch_size=32, lr=1e4, momentum=0.0), seed=0)
    assert result.status == "diverged"
    assert result.diverged_step is not None and 0 <= result.diverged_step < 3 * 8
    assert "loss=" in result.diverged_reason
    assert result.final == {}


def test_nan_input_diverges_at_the_exact_step():
    x, y = data()
    x = x.clone()
    cfg = TrainConfig(epochs=1, batch_size=32, lr=0.01, schedule="constant")
    order = torch.randperm(256, generator=torch.Generator().manual_seed(epoch_seed(0, 0)))
    x[order[5 * 32]] = float("nan")  # first example of step 5
    result = train_model(model(), (x, y), data(64, seed=1), cfg, seed=0)
    assert result.status == "diverged" and result.diverged_step == 5
    assert "nan" in result.diverged_reason


def test_batch_larger_than_data_is_rejected():
    with pytest.raises(ValueError, match=r"train\.batch_size=512 exceeds the 256 training examples"):
        train_model(model(), data(), data(64), TrainConfig(batch_size=512), seed=0)


def test_amp_on_cpu_warns_and_is_ignored():
    with pytest.warns(UserWarning, match=r"train\.amp=true is ignored on cpu"):
        result = train_model(model(), data(), data(64), TrainConfig(epochs=1, batch_size=64, amp=True), seed=0)
    assert result.amp == "off" and result.status == "completed"


@pytest.mark.parametrize("schedule", ["constant", "cosine", "step"])
def test_schedules(schedule):
    cfg = TrainConfig(epochs=4, lr=0.1, schedule=schedule, step_epochs=2, step_gamma=0.5)
    opt = build_optimizer(nn.Linear(2, 2), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=10)
    lrs = []
    for _ in range(40):
        lrs.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    expected = {
        "constant": [0.1] * 40,
        "cosine": [0.1 * 0.5 * (1 + math.cos(math.pi * s / 40)) for s in range(40)],
        "step": [0.1 * 0.5 ** (s // 20) for s in range(40)],
    }[schedule]
    assert lrs == pytest.approx(expected, rel=1e-12)


def test_optimizers_and_linear_scaling_rule():
    lin = nn.Linear(3, 2)
    assert isinstance(build_optimizer(lin, TrainConfig(optimizer="adamw", weight_decay=0.1)), torch.optim.AdamW)
    sgd = build_optimizer(lin, TrainConfig(optimizer="sgd", momentum=0.9, nesterov=True))
    assert sgd.defaults["nesterov"] and sgd.defaults["momentum"] == 0.9
    assert effective_lr(TrainConfig(lr=0.1, batch_size=512, lr_reference_batch=128)) == pytest.approx(0.4)
    assert effective_lr(TrainConfig(lr=0.1, batch_size=512)) == 0.1


def test_augmentation_is_a_translation_or_flip_and_reproducible():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8) + 1
    a = random_crop_flip(x, torch.Generator().manual_seed(3), pad=0)
    assert all(torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1)) for i in range(2))
    b1 = random_crop_flip(x, torch.Generator().manual_seed(4))
    b2 = random_crop_flip(x, torch.Generator().manual_seed(4))
    assert torch.equal(b1, b2) and b1.shape == x.shape
    # every non-zero pixel of a translated image is a pixel of the original (no interpolation)
    assert set(b1[b1 > 0].tolist()) <= set(x.flatten().tolist())


def test_evaluate_restores_mode_and_counts_errors():
    m = model()
    m.train()
    x, y = data(100)
    loss, err = evaluate(m, x, y, batch_size=7)
    assert m.training
    m.eval()
    with torch.no_grad():
        logits = m(x)
    assert err == pytest.approx(float((logits.argmax(1) != y).float().mean()))
    assert loss == pytest.approx(float(nn.functional.cross_entropy(logits, y)), rel=1e-5)


def test_random_labels_are_fixed_per_seed_and_cover_classes():
    y = torch.zeros(1000, dtype=torch.long)
    a, b = randomize_labels(y, 10, seed=0), randomize_labels(y, 10, seed=0)
    assert torch.equal(a, b) and not torch.equal(a, randomize_labels(y, 10, seed=1))
    assert set(a.tolist()) == set(range(10))


def test_state_hash_is_sensitive_to_one_ulp():
    sd = {"w": torch.ones(3), "n": torch.tensor(5)}
    h = sha256_tensors(sd)
    sd2 = {"w": torch.tensor([1.0, 1.0, float(torch.nextafter(torch.tensor(1.0), torch.tensor(2.0)))]), "n": torch.tensor(5)}
    assert h != sha256_tensors(sd2) and h == sha256_tensors({"n": torch.tensor(5), "w": torch.ones(3)})


def test_snapshots_for_curvature_along_training(tmp_path):
    from landscape.training.checkpoint import list_snapshots

    train, test = data(), data(64, seed=1)
    cfg = TrainConfig(epochs=4, batch_size=32, lr=0.05, snapshot_every=2)
    (tmp_path / "snapshot_epoch0009.pt").write_bytes(b"stale")  # from another run: must go
    reference = train_model(model(), train, test, cfg, seed=0)

    class Interrupt(Exception):
        pass

    def stop_after_three(history):
        if len(history) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        train_model(model(), train, test, cfg, seed=0, checkpoint_dir=tmp_path, fingerprint="f", on_epoch=stop_after_three)
    resumed = train_model(model(), train, test, cfg, seed=0, checkpoint_dir=tmp_path, fingerprint="f")
    snaps = [torch.load(p, weights_only=False) for p in list_snapshots(tmp_path)]
    assert [s["epoch"] for s in snaps] == [0, 2, 4]
    assert sha256_tensors(snaps[-1]["state_dict"]) == reference.state_hash == resumed.state_hash
    fresh_init = model()
    assert sha256_tensors(snaps[0]["state_dict"]) == sha256_tensors(fresh_init.state_dict())


def _resnet(seed=1):
    from landscape.models import build_model

    return build_model("resnet_small", num_classes=10, in_chans=1, img_size=8, width=4, blocks_per_stage=2, seed=seed)


@pytest.mark.parametrize("optimizer", ["sgd", "curvature_adaptive"])
def test_gradient_checkpointing_trains_the_same_weights(optimizer):
    """Checkpointed blocks give the plain run's state_dict bit for bit (buffers included), also
    with the Hessian-vector products of the curvature-adaptive optimizer through them."""
    from landscape.models.checkpointing import is_grad_checkpointing

    train, test = data(128), data(32, seed=1)
    # no augmentation: its (B, 1, H, W) crops have channels-last strides, and torch 2.14.1's CPU conv
    # backward corrupts the heap on them at one thread (seen here with and without checkpointing)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, optimizer=optimizer, curvature_gamma=0.1, curvature_every=2)
    plain = train_model(_resnet(), train, test, cfg, seed=0)
    net = _resnet()
    ck = train_model(net, train, test, TrainConfig(**{**cfg.recipe(), "grad_checkpointing": True}), seed=0)
    assert ck.status == plain.status == "completed"
    assert ck.state_hash == plain.state_hash and ck.history[-1]["train_loss"] == plain.history[-1]["train_loss"]
    assert not is_grad_checkpointing(net)  # plain again after training


def test_gradient_checkpointing_of_an_unsupported_model_fails_before_training():
    cfg = TrainConfig(epochs=1, batch_size=32, grad_checkpointing=True)
    with pytest.raises(ValueError, match=r"gradient checkpointing is implemented for .*got a Sequential"):
        train_model(model(), data(), data(64, seed=1), cfg, seed=0)


def test_recipe_leaves_out_the_execution_switches_only():
    import dataclasses

    from landscape.training.config import OPTIONAL

    cfg = TrainConfig(grad_checkpointing=True, tensorboard=True, lr=0.2)
    # the along-training settings (OPTIONAL) join the recipe only when set (tests/training/test_tracking.py)
    assert cfg.recipe() == {k: v for k, v in dataclasses.asdict(cfg).items()
                            if k not in ("grad_checkpointing", "tensorboard", *OPTIONAL)}
    assert cfg.recipe() == TrainConfig(lr=0.2).recipe()
