"""The train stage's DVCLive log tolerates only the shared signal file vanishing under it."""

from __future__ import annotations

import pytest
import torch

from landscape.pipeline.train import LiveLog


class _Live:
    def __init__(self, missing: str):
        self.missing = missing

    def log_metric(self, key: str, value: float) -> None:
        pass

    def next_step(self) -> None:
        pass

    def end(self) -> None:
        raise FileNotFoundError(2, "No such file or directory", self.missing)


def test_a_concurrent_entry_removing_the_vscode_signal_file_is_not_a_failure(tmp_path):
    log = LiveLog(str(tmp_path / "dvclive"))
    log.live = _Live(str(tmp_path / ".dvc" / "tmp" / "exps" / "run" / "DVCLIVE_STEP_COMPLETED"))
    log.close([{"epoch": 0, "train_loss": 1.0}])
    assert (tmp_path / "dvclive" / "plots" / "metrics").is_dir()


def test_any_other_missing_file_still_fails(tmp_path):
    log = LiveLog(str(tmp_path / "dvclive"))
    log.live = _Live(str(tmp_path / "dvclive" / "metrics.json"))
    with pytest.raises(FileNotFoundError):
        log.close([])


# ------------------------------------------------------------------ TensorBoard and the runtime record


def _scalars(directory) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(directory))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_tensorboard_log_holds_every_epoch_once_after_a_replayed_history(tmp_path):
    from landscape.pipeline.train import TensorBoardLog

    history = [{"epoch": e, "train_loss": 1.0 / e, "test_error": 0.5 - 0.1 * e} for e in (1, 2, 3)]
    log = TensorBoardLog(str(tmp_path / "tb"))
    log(history[:2])  # a resumed run's first call replays the restored epochs
    log.close(history)
    assert len(list((tmp_path / "tb").glob("events.out.tfevents.*"))) == 1
    assert _scalars(tmp_path / "tb") == {
        "train_loss": [(e, pytest.approx(1.0 / e, rel=1e-7)) for e in (1, 2, 3)],
        "test_error": [(e, pytest.approx(0.5 - 0.1 * e, rel=1e-6)) for e in (1, 2, 3)],
    }


def _train_params(**train):
    base = {"epochs": 2, "batch_size": 16, "lr": 0.05, "schedule": "constant", "checkpoint_every": 1, "eval_batch_size": 64}
    return {
        "seeds": [0],
        "datasets": {"toy": {"name": "gaussian_mixture"}},
        "experiments": {"exp": {"dataset": "toy", "configs": {
            "logged": {"model": {"name": "mlp", "width": 8, "depth": 1}, "train": {**base, **train}},
            "quiet": {"model": {"name": "mlp", "width": 8, "depth": 1}, "train": base},
        }}},
    }


def _prepared(layout):
    from landscape.io import torch_save

    g = torch.Generator().manual_seed(0)
    x = torch.randn(96, 5, generator=g)
    y = (x[:, 0] > 0).long()
    torch_save(layout.prepared("toy"), {"train": (x[:64], y[:64]), "test": (x[64:], y[64:]), "probe": (x, y), "num_classes": 2})


def test_train_stage_writes_tensorboard_beside_dvclive_and_records_the_runtime(tmp_path):
    from landscape.io import read_json
    from landscape.pipeline import train
    from landscape.pipeline.layout import Layout
    from landscape.pipeline.params import logs_tensorboard

    layout = Layout(tmp_path)
    _prepared(layout)
    params = _train_params(tensorboard=True)
    assert logs_tensorboard(params, "exp") and not logs_tensorboard(_train_params(), "exp")
    train.run(params, layout, "exp", "logged", 0)
    run = layout.run("exp", "logged", 0)
    logged = _scalars(run.tensorboard)
    dvclive = run.logged("train_loss").read_text().splitlines()[1:]
    assert [step for step, _ in logged["train_loss"]] == [1, 2] == [int(r.split("\t")[-2]) + 1 for r in dvclive]
    assert [v for _, v in logged["train_loss"]] == pytest.approx([float(r.split("\t")[-1]) for r in dvclive], rel=1e-6)
    assert {"test_error", "lr", "grad_norm"} <= set(logged)
    metrics = read_json(run.metrics)
    assert metrics["runtime"]["deterministic_algorithms"] is True and metrics["runtime"]["cublas_workspace_config"] == ":4096:8"
    assert metrics["runtime"]["device"] == "cpu" and metrics["runtime"]["grad_checkpointing"] is False
    assert metrics["runtime"]["nondeterministic_ops"] == []
    stored = torch.load(run.model, weights_only=False)["train"]
    assert "tensorboard" not in stored and "grad_checkpointing" not in stored  # execution switches: not the recipe
    # a config of the same group with TensorBoard off still leaves the declared (empty) directory
    train.run(params, layout, "exp", "quiet", 0)
    quiet = layout.run("exp", "quiet", 0)
    assert quiet.tensorboard.is_dir() and not any(quiet.tensorboard.iterdir())
    # switching TensorBoard on changes neither the weights nor the run's identity
    assert read_json(quiet.metrics)["state_hash"] == metrics["state_hash"]


def test_train_stage_rejects_checkpointing_for_a_model_without_blocks(tmp_path):
    from landscape.pipeline import train
    from landscape.pipeline.cli import StageError
    from landscape.pipeline.layout import Layout

    layout = Layout(tmp_path)
    _prepared(layout)
    with pytest.raises(StageError, match=r"experiments.exp.configs.logged.train.grad_checkpointing: gradient checkpointing is implemented for"):
        train.run(_train_params(grad_checkpointing=True), layout, "exp", "logged", 0)
