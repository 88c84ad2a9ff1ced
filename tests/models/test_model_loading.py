"""landscape.models.loading: any timm model by name, weight files in both formats, mismatch
errors that name every key and shape, and the one-example input check."""

from __future__ import annotations

import pytest
import torch

from landscape.models import MODEL_NAMES, build_model, check_inputs, create_model, input_shape, load_weights, model_origin, read_checkpoint


def test_create_model_builds_registered_names_as_build_model_does_and_other_timm_names():
    ours = create_model("mlp", seed=3, in_features=5, width=4, depth=1, num_classes=2)
    ref = build_model("mlp", seed=3, in_features=5, width=4, depth=1, num_classes=2)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values(), strict=True))
    timm_net = create_model("test_resnet", seed=1, num_classes=3, in_chans=1)
    again = create_model("test_resnet", seed=1, num_classes=3, in_chans=1)
    assert all(torch.equal(a, b) for a, b in zip(timm_net.state_dict().values(), again.state_dict().values(), strict=True))
    assert timm_net.eval()(torch.zeros(2, 1, 8, 8)).shape == (2, 3)
    assert model_origin("mlp") == "registered" and model_origin("resnet18") == "timm" and model_origin("test_vit") == "timm"


def test_unknown_names_and_pretrained_requests_are_refused_with_what_is_accepted(tmp_path, monkeypatch):
    with pytest.raises(ValueError, match=r"unknown model 'nope': not one of the registered models \[.*'cnn_small'.*\] and not a timm model"):
        create_model("nope")
    assert "mlp" in str(MODEL_NAMES)
    with pytest.raises(ValueError, match=r"model 'mlp' is defined in this package and has no pretrained weights"):
        create_model("mlp", pretrained=True)
    with pytest.raises(ValueError, match=r"model 'test_resnet': .*unexpected keyword argument 'widht'"):
        create_model("test_resnet", widht=3)


def _train_stage_file(path, model):
    torch.save({"state_dict": model.state_dict(), "model": {"name": "mlp", "width": 4, "depth": 1},
                "model_kwargs": {"in_features": 5, "num_classes": 2}, "train": {"lr": 0.1}, "seed": 7}, path)


def test_read_checkpoint_reads_the_train_stage_format_a_state_dict_and_a_module(tmp_path):
    model = build_model("mlp", seed=0, in_features=5, width=4, depth=1, num_classes=2)
    _train_stage_file(tmp_path / "model.pt", model)
    ck = read_checkpoint(tmp_path / "model.pt")
    assert ck.name == "mlp" and dict(ck.kwargs) == {"width": 4, "depth": 1, "in_features": 5, "num_classes": 2}
    assert ck.meta["train"] == {"lr": 0.1} and ck.meta["seed"] == 7
    rebuilt = load_weights(create_model(ck.name, **ck.kwargs), ck.state_dict)
    assert all(torch.equal(a, b) for a, b in zip(rebuilt.state_dict().values(), model.state_dict().values(), strict=True))
    torch.save(model.state_dict(), tmp_path / "sd.pt")
    plain = read_checkpoint(tmp_path / "sd.pt")
    assert plain.name is None and not plain.kwargs and set(plain.state_dict) == set(model.state_dict())
    torch.save(model, tmp_path / "module.pt")
    assert set(read_checkpoint(tmp_path / "module.pt").state_dict) == set(model.state_dict())


@pytest.mark.parametrize(
    ("content", "match"),
    [
        pytest.param([1, 2, 3], r"holds a list; expected a state_dict", id="list"),
        pytest.param({"w": [1.0]}, r"state_dict entries w are not tensors", id="not-tensors"),
        pytest.param({}, r"expected a non-empty state_dict", id="empty"),
    ],
)
def test_read_checkpoint_refuses_other_content(tmp_path, content, match):
    torch.save(content, tmp_path / "x.pt")
    with pytest.raises(ValueError, match=match):
        read_checkpoint(tmp_path / "x.pt")


def test_read_checkpoint_names_a_missing_or_unreadable_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"checkpoint .*absent\.pt does not exist"):
        read_checkpoint(tmp_path / "absent.pt")
    (tmp_path / "text.pt").write_text("not a torch file")
    with pytest.raises(ValueError, match=r"checkpoint .*text\.pt is not a file torch.load can read"):
        read_checkpoint(tmp_path / "text.pt")


def test_load_weights_names_missing_unexpected_and_mismatched_tensors_and_leaves_the_model_untouched():
    model = build_model("mlp", seed=0, in_features=5, width=4, depth=2, num_classes=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    other = build_model("mlp", seed=1, in_features=5, width=3, depth=1, num_classes=2).state_dict()
    other["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as info:
        load_weights(model, other, source="file w.pt")
    msg = str(info.value)
    assert msg.startswith("file w.pt does not match the architecture MLP (6 tensors): ")
    assert "missing keys: layers.1.linear.weight, layers.1.linear.bias" in msg
    assert "unexpected keys: extra.weight" in msg
    assert "shape mismatches: layers.0.linear.weight (3, 5) vs model (4, 5), layers.0.linear.bias (3,) vs model (4,), " \
           "head.weight (2, 3) vs model (2, 4)" in msg
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_weights_lists_six_keys_and_counts_the_rest():
    model = build_model("mlp", seed=0, in_features=5, width=4, depth=4, num_classes=2)
    with pytest.raises(ValueError, match=r"missing keys: (\S+, ){5}\S+ and 4 more$"):
        load_weights(model, {})


def test_input_shape_and_check_inputs_name_the_expected_and_found_shapes():
    assert input_shape("mlp", {"in_features": 64}) == (64,)
    assert input_shape("cnn_small", {"in_chans": 3, "img_size": 16}) == (3, 16, 16)
    assert input_shape("cnn_small", {}) == (1, 28, 28) and input_shape("resnet18", {}) is None
    mlp = build_model("mlp", seed=0, in_features=64, width=4, depth=1, num_classes=3)
    assert check_inputs(mlp, torch.rand(5, 1, 8, 8, dtype=torch.float64), expected=(64,)).shape == (1, 3)  # cast, flattened
    with pytest.raises(ValueError, match=r"the data has examples of shape \(1, 7, 7\), but the model expects 64 features per example"):
        check_inputs(mlp, torch.rand(5, 1, 7, 7), expected=(64,))
    cnn = build_model("cnn_small", seed=0, in_chans=1, img_size=8, num_classes=3)
    cnn.train()
    with pytest.raises(ValueError, match=r"x\.pt has examples of shape \(3, 8, 8\), but the model expects examples of shape \(1, 8, 8\)$"):
        check_inputs(cnn, torch.rand(5, 3, 8, 8), expected=(1, 8, 8), what="x.pt")
    with pytest.raises(ValueError, match=r"examples of shape \(3, 8, 8\), but the model expects another input shape \(.*channels"):
        check_inputs(cnn, torch.rand(5, 3, 8, 8))
    assert cnn.training  # flag restored after the failed forward
