"""Atomic writers in landscape.io: equal content gives equal bytes, failures leave no file."""

from __future__ import annotations

import pytest
import torch

from landscape import io


def test_torch_save_of_equal_objects_gives_identical_bytes(tmp_path):
    state = {"weight": torch.arange(12.0).reshape(3, 4), "step": 7}
    first, second = tmp_path / "a" / "model.pt", tmp_path / "b" / "other_name.pt"
    io.torch_save(first, state)
    io.torch_save(second, {"weight": state["weight"].clone(), "step": 7})
    assert first.read_bytes() == second.read_bytes()
    assert torch.equal(torch.load(first)["weight"], state["weight"])


def test_failed_write_leaves_neither_target_nor_temporary(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(TypeError):
        io.write_json(target, {"bad": object()})
    assert list(tmp_path.iterdir()) == []
