"""landscape.data.files: a user's tensor file in each accepted format, the errors for the
others, and seeded subsets."""

from __future__ import annotations

import pytest
import torch

from landscape.data import TensorData, load_tensor_file, subset

X = torch.arange(24, dtype=torch.float32).reshape(6, 4)
Y = torch.tensor([0, 1, 2, 0, 1, 2])


@pytest.mark.parametrize(
    "content",
    [{"inputs": X, "targets": Y}, {"x": X, "y": Y}, (X, Y), [X, Y]],
    ids=["inputs-targets", "x-y", "tuple", "list"],
)
def test_each_format_gives_the_same_tensors(tmp_path, content):
    torch.save(content, tmp_path / "d.pt")
    data = load_tensor_file(tmp_path / "d.pt")
    assert torch.equal(data.inputs, X) and torch.equal(data.targets, Y) and data.source == str(tmp_path / "d.pt")
    assert data.to_dict() == {"source": str(tmp_path / "d.pt"), "num_examples": 6, "input_shape": [4], "target_shape": [],
                              "target_dtype": "int64"}


def test_a_split_of_the_prepare_stage_file(tmp_path):
    torch.save({"train": (X, Y), "probe": (X[:2], Y[:2]), "num_classes": 3}, tmp_path / "splits.pt")
    probe = load_tensor_file(tmp_path / "splits.pt", split="probe")
    assert len(probe) == 2 and probe.source.endswith("splits.pt[probe]")
    with pytest.raises(ValueError, match=r"holds splits \['probe', 'train'\] and the request names no split; choose one of them"):
        load_tensor_file(tmp_path / "splits.pt")
    with pytest.raises(ValueError, match=r"has no split 'test'; choose one of them"):
        load_tensor_file(tmp_path / "splits.pt", split="test")
    torch.save((X, Y), tmp_path / "one.pt")
    with pytest.raises(ValueError, match=r"holds one \(inputs, targets\) set, not splits; drop the split 'probe'"):
        load_tensor_file(tmp_path / "one.pt", split="probe")


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param({"a": X}, r"holds a dict with keys \['a'\]; expected a mapping with 'inputs' and 'targets'", id="keys"),
        pytest.param(X, r"holds a float32 tensor of shape \(6, 4\); expected", id="tensor"),
        pytest.param((X, Y[:5]), r"inputs hold 6 examples \(6, 4\) but targets 5 \(5,\); expected the same N", id="lengths"),
        pytest.param((Y, Y), r"inputs must be a floating-point tensor \(N, \.\.\.\) with N examples, got a int64 tensor", id="int-inputs"),
        pytest.param((X[0], Y), r"inputs must be a floating-point tensor .*got a float32 tensor of shape \(4,\)", id="one-example"),
    ],
)
def test_other_content_is_refused_saying_what_was_found(tmp_path, content, match):
    torch.save(content, tmp_path / "d.pt")
    with pytest.raises(ValueError, match=match):
        load_tensor_file(tmp_path / "d.pt")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"data file .*none\.pt does not exist"):
        load_tensor_file(tmp_path / "none.pt")
    (tmp_path / "text.pt").write_text("inputs,targets")
    with pytest.raises(ValueError, match=r"data file .*text\.pt is not a file torch.load can read"):
        load_tensor_file(tmp_path / "text.pt")


def test_subset_is_seeded_in_data_order_and_all_when_large():
    data = TensorData(X, Y, "d")
    a, b, c = subset(data, 3, seed=1), subset(data, 3, seed=1), subset(data, 3, seed=2)
    assert torch.equal(a.inputs, b.inputs) and not torch.equal(a.inputs, c.inputs)
    rows = (a.inputs[:, 0] / 4).long()
    assert torch.equal(rows, rows.sort().values) and torch.equal(a.targets, Y[rows]) and a.source == "d (3 of 6, seed 1)"
    assert subset(data, 6, seed=0) is data and subset(data, None, seed=0) is data
    with pytest.raises(ValueError, match=r"num_examples must be a positive int or None \(all\), got 0"):
        subset(data, 0, seed=0)
