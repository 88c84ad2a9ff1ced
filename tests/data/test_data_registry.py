"""Registry behaviour, and one parametrised contract test that every registered name joins."""

from __future__ import annotations

import json

import pytest
import torch

from landscape.data import DATASETS, Dataset, load_dataset, make_splits, register_dataset
from landscape.io import to_jsonable

# How to obtain each registered set without network: options, and the conftest fixture
# that writes its files (None: bundled or synthetic, nothing to write). A newly
# registered name fails test_every_registered_name_has_a_case until it is added here.
CASES: dict[str, tuple[str | None, dict]] = {
    "digits": (None, {}),
    "mnist5k": (None, {}),
    "mnist": ("written_mnist", {}),
    "fashion_mnist": ("written_fashion_mnist", {}),
    "cifar10": ("written_cifar10", {"verify_md5": False}),
    "cifar100": ("written_cifar100", {"verify_md5": False}),
    "tiny_imagenet": ("written_tiny_imagenet", {}),
    "gaussian_mixture": (None, {"n": 300}),
    "teacher_student": (None, {"n": 300}),
    "wikitext2": ("written_wikitext2", {"context": 16}),
}
EXPECTED_SHAPE = {  # per-example input shape with default options
    "digits": (1, 8, 8), "mnist5k": (1, 28, 28), "mnist": (1, 28, 28), "fashion_mnist": (1, 28, 28),
    "cifar10": (3, 32, 32), "cifar100": (3, 32, 32), "tiny_imagenet": (3, 64, 64),
    "gaussian_mixture": (32,), "teacher_student": (32,), "wikitext2": (16,),
}
EXPECTED_CLASSES = {"digits": 10, "mnist5k": 10, "mnist": 10, "fashion_mnist": 10, "cifar10": 10,
                    "cifar100": 100, "tiny_imagenet": 3, "gaussian_mixture": 10, "teacher_student": 10,
                    "wikitext2": 17}  # 12 words, "=", 2 titles, <eos>, <unk>


def test_every_registered_name_has_a_case():
    assert set(DATASETS) == set(CASES), "add a no-network case for each registered data set"


@pytest.mark.parametrize("name", sorted(DATASETS))
def test_registered_dataset_contract(name, request):
    fixture, options = CASES[name]
    root = request.getfixturevalue(fixture).root if fixture else "unused-root"
    ds = load_dataset(name, root=root, **options)
    assert isinstance(ds, Dataset)
    assert ds.meta["name"] == name == ds.name
    assert ds.x.dtype == torch.float32 and ds.y.dtype == torch.int64
    assert tuple(ds.x.shape[1:]) == EXPECTED_SHAPE[name]
    assert ds.num_classes == EXPECTED_CLASSES[name]
    assert 0 <= int(ds.y.min()) and int(ds.y.max()) < ds.num_classes
    assert torch.isfinite(ds.x).all()
    if ds.x.ndim == 4:  # images are scaled to [0, 1]
        assert float(ds.x.min()) >= 0.0 and float(ds.x.max()) <= 1.0
    # a second load gives the identical bytes
    again = load_dataset(name, root=root, **options)
    assert torch.equal(ds.x, again.x) and torch.equal(ds.y, again.y)
    # the summary and the splits serialise to JSON
    json.dumps(to_jsonable(ds.to_dict()))
    splits = make_splits(ds, test_fraction=0.25, probe_size=5, seed=0)
    assert splits.train[0].shape[0] + splits.test[0].shape[0] == len(ds)
    json.dumps(to_jsonable(splits.to_dict()))


def test_unknown_name_lists_registered_names():
    with pytest.raises(ValueError, match=r"unknown data set 'imagenet'.*cifar10, cifar100, digits"):
        load_dataset("imagenet")


def test_unknown_option_is_rejected_with_allowed_list():
    with pytest.raises(ValueError, match=r"'digits' got unknown option\(s\) \['image_size'\]; allowed: none"):
        load_dataset("digits", image_size=4)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['sep'\]; allowed: num_classes, dim, separation"):
        load_dataset("gaussian_mixture", sep=2.0)


def test_duplicate_registration_is_rejected():
    with pytest.raises(ValueError, match="'digits' is already registered"):
        register_dataset("digits", uses_root=False)(lambda: None)
    assert DATASETS["digits"].loader.__name__ == "digits"


def test_uses_root_must_match_signature():
    def loader(n: int = 1) -> Dataset:  # no root parameter
        raise AssertionError("never called")

    with pytest.raises(ValueError, match="uses_root=True but its signature lacks a root parameter"):
        register_dataset("brand_new_name", uses_root=True)(loader)
    assert "brand_new_name" not in DATASETS


def test_registry_is_read_only():
    with pytest.raises(TypeError):
        DATASETS["x"] = DATASETS["digits"]  # type: ignore[index]


def test_spec_lists_options():
    assert DATASETS["tiny_imagenet"].options() == ("download", "split", "max_per_class", "image_size")
    assert DATASETS["cifar10"].uses_root and not DATASETS["mnist5k"].uses_root
    assert DATASETS["mnist5k"].to_dict()["options"] == ["image_size"]
