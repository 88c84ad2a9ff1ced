"""The bounds stage's prior networks, trained once each and kept: resumable, skipped when done.

The data-dependent prior of :mod:`landscape.pipeline.bounds` is a copy of the run's network
trained from its initialisation on ``S_prior`` alone with the run's recipe. The paper profile
bounds 10 runs x 5 seeds in one stage, so 50 such trainings; a stage killed after 40 of them
must not redo them. With a ``directory`` (the layout's ``bounds/priors/<exp>/<cfg>/seed<k>``,
``persist: true`` in ``dvc.yaml``):

* ``checkpoints/last.pt`` is written atomically every ``checkpoint_every`` epochs while the
  prior trains (:func:`~landscape.training.train_model`), and a killed training resumes from
  it and ends bit-identical to an uninterrupted one;
* ``prior.pt`` (final weights, status, epochs, the epoch it resumed from) is written
  atomically when the training ends; the next call loads it instead of training.

Both carry a fingerprint of everything the prior depends on (the recipe, its epochs, the
seed, the initial weights and the ``S_prior`` examples): a file left by another run, setting
or data set is ignored, never reused.
"""

from __future__ import annotations

import copy
import dataclasses
import shutil
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import Tensor, nn

from landscape.io import sha256_tensors, torch_save
from landscape.pipeline.params import fingerprint
from landscape.training import train_model
from landscape.training.config import TrainConfig

__all__ = ["PRIOR_FILE", "prior_fingerprint", "train_prior"]

PRIOR_FILE = "prior.pt"


def prior_fingerprint(cfg: TrainConfig, init_state: Mapping[str, Tensor], data: tuple[Tensor, Tensor], seed: int) -> str:
    """SHA-256 identity of one prior's training: recipe (epochs included), seed, initial state, data."""
    state = {k: v.detach().cpu() for k, v in init_state.items()}
    examples = {"x": data[0].detach().cpu(), "y": data[1].detach().cpu()}
    return fingerprint(dataclasses.asdict(cfg), seed, sha256_tensors(state), sha256_tensors(examples))


def train_prior(
    model: nn.Module,
    init_state: Mapping[str, Tensor],
    data: tuple[Tensor, Tensor],
    test: tuple[Tensor, Tensor],
    train_config: TrainConfig,
    epochs: int | None,
    seed: int,
    directory: str | Path | None = None,
) -> tuple[nn.Module, str, int]:
    """A copy of ``model`` reset to ``init_state`` and trained on ``data`` alone (in eval mode).

    Args:
        model: The trained network (its architecture is copied; it is left unchanged).
        init_state: Its full ``state_dict`` at initialisation.
        data: ``(x, y)`` of ``S_prior``.
        test: Held-out ``(x, y)`` for the training loop's evaluation.
        train_config: The run's recipe; ``batch_size`` is capped at ``len(data)`` and
            weight snapshots are off.
        epochs: Epochs of the prior (``None``: the recipe's).
        seed: Seed of the training (data order, augmentation).
        directory: Where the checkpoint and the finished prior are kept (module docstring);
            ``None`` trains in memory only.

    Returns:
        ``(prior network, status, epochs completed)``.

    Raises:
        ValueError: ``init_state`` is not a full state dict of ``model``.
    """
    prior = copy.deepcopy(model)
    try:
        prior.load_state_dict(dict(init_state))
    except RuntimeError as exc:
        raise ValueError(f"init_state must be a full state_dict of the model to train the prior from it: {exc}") from None
    cfg = train_config if epochs is None else dataclasses.replace(train_config, epochs=epochs)
    cfg = dataclasses.replace(cfg, batch_size=min(cfg.batch_size, int(data[1].shape[0])), snapshot_every=0)
    if directory is None:
        result = train_model(prior, data, test, cfg, seed=seed)
        prior.eval()
        return prior, result.status, result.epochs_completed
    directory = Path(directory)
    ident = prior_fingerprint(cfg, init_state, data, seed)
    done = directory / PRIOR_FILE
    if done.is_file():
        stored = torch.load(done, map_location="cpu", weights_only=False)
        if stored.get("fingerprint") == ident:
            prior.load_state_dict(stored["state_dict"])
            prior.eval()
            return prior, str(stored["status"]), int(stored["epochs_completed"])
    result = train_model(prior, data, test, cfg, seed=seed, checkpoint_dir=directory / "checkpoints", fingerprint=ident)
    torch_save(done, {"fingerprint": ident, "state_dict": prior.state_dict(), "status": result.status,
                      "epochs_completed": result.epochs_completed, "resumed_from_epoch": result.resumed_from_epoch,
                      "state_hash": result.state_hash})
    shutil.rmtree(directory / "checkpoints", ignore_errors=True)  # prior.pt supersedes it
    prior.eval()
    return prior, result.status, result.epochs_completed
