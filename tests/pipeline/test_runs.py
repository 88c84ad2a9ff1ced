"""landscape.pipeline.runs.load_run: a stored run's network, and a clear error when its weights
do not fit the architecture its model.pt records."""

from __future__ import annotations

import pytest
import torch

from landscape.io import write_json
from landscape.models import build_model
from landscape.pipeline.layout import Layout
from landscape.pipeline.runs import initial_model, load_run


def _store(layout: Layout, state_dict, seed: int = 2) -> None:
    paths = layout.run("exp", "cfg", seed)
    write_json(paths.metrics, {"status": "completed"})
    torch.save({"state_dict": state_dict, "model": {"name": "mlp", "width": 4, "depth": 1},
                "model_kwargs": {"in_features": 5, "num_classes": 3}, "train": {"lr": 0.1}}, paths.model)


def test_load_run_rebuilds_the_stored_network(tmp_path):
    layout = Layout(root=tmp_path)
    trained = build_model("mlp", seed=9, in_features=5, width=4, depth=1, num_classes=3)
    _store(layout, trained.state_dict())
    run = load_run(layout, "exp", "cfg", 2)
    assert run.status == "completed" and run.train == {"lr": 0.1} and run.spec["name"] == "mlp"
    assert all(torch.equal(a, b) for a, b in zip(run.model.state_dict().values(), trained.state_dict().values(), strict=True))
    init = initial_model(run)
    assert all(torch.equal(a, b) for a, b in zip(init.state_dict().values(), build_model(
        "mlp", seed=2, in_features=5, width=4, depth=1, num_classes=3).state_dict().values(), strict=True))


def test_load_run_names_what_does_not_fit(tmp_path):
    layout = Layout(root=tmp_path)
    _store(layout, build_model("mlp", seed=9, in_features=5, width=6, depth=1, num_classes=3).state_dict())
    with pytest.raises(ValueError, match=r"model\.pt does not match the architecture MLP .*shape mismatches: layers\.0\.linear\.weight "
                                         r"\(6, 5\) vs model \(4, 5\)"):
        load_run(layout, "exp", "cfg", 2)
