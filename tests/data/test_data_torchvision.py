"""MNIST, Fashion-MNIST, CIFAR-10/100 read from files written in their own formats (no network)."""

from __future__ import annotations

import shutil
from urllib.error import URLError

import pytest
import torch

from landscape.data import load_dataset, make_splits

MNIST_LIKE = [("mnist", "written_mnist", "MNIST"), ("fashion_mnist", "written_fashion_mnist", "FashionMNIST")]
CIFAR = [("cifar10", "written_cifar10", "cifar-10-batches-py"), ("cifar100", "written_cifar100", "cifar-100-python")]


@pytest.mark.parametrize("name,fixture,folder", MNIST_LIKE + CIFAR)
def test_reads_back_written_pixels_and_labels(name, fixture, folder, request):
    w = request.getfixturevalue(fixture)
    ds = load_dataset(name, root=w.root, **w.kwargs)
    assert torch.equal(ds.x, w.x)  # exact: value / 255 of the written bytes, channel-first
    assert torch.equal(ds.y, w.y)
    assert ds.meta["official_split"] == w.official
    assert ds.meta["root"] == str(w.root)


@pytest.mark.parametrize("name,fixture,folder", MNIST_LIKE + CIFAR)
def test_single_official_split(name, fixture, folder, request):
    w = request.getfixturevalue(fixture)
    n_train = w.official["train"]
    train = load_dataset(name, root=w.root, split="train", **w.kwargs)
    test = load_dataset(name, root=w.root, split="test", **w.kwargs)
    assert torch.equal(train.x, w.x[:n_train]) and torch.equal(train.y, w.y[:n_train])
    assert torch.equal(test.x, w.x[n_train:]) and torch.equal(test.y, w.y[n_train:])
    assert train.meta["official_split"] == {"train": n_train, "test": 0}
    with pytest.raises(ValueError, match=r"split must be one of \('all', 'train', 'test'\), got 'val'"):
        load_dataset(name, root=w.root, split="val", **w.kwargs)


@pytest.mark.parametrize("name,fixture,folder", MNIST_LIKE + CIFAR)
def test_official_split_reproduced_by_make_splits(name, fixture, folder, request):
    w = request.getfixturevalue(fixture)
    ds = load_dataset(name, root=w.root, **w.kwargs)
    s = make_splits(ds, official_split=True, probe_size=3, seed=0)
    n_train = w.official["train"]
    assert sorted(s.train_index.tolist()) == list(range(n_train))
    assert sorted(s.test_index.tolist()) == list(range(n_train, len(ds)))


@pytest.mark.parametrize("name,fixture,folder", MNIST_LIKE + CIFAR)
def test_missing_files_name_set_root_and_remedy(name, fixture, folder, tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"data set '{name}' not found under root {tmp_path}.*"
                                                 rf"data\.download: true.*place the files at {tmp_path}/{folder}"):
        load_dataset(name, root=tmp_path)


@pytest.mark.parametrize("name,fixture,folder", MNIST_LIKE)
def test_one_missing_mnist_file_is_named(name, fixture, folder, request):
    w = request.getfixturevalue(fixture)
    (w.root / folder / "raw" / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match=r"missing \S*/raw/t10k-labels-idx1-ubyte\. To get it"):
        load_dataset(name, root=w.root)


@pytest.mark.parametrize("name,fixture,folder", MNIST_LIKE)
def test_offline_download_failure_is_explained(name, fixture, folder, tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    calls = []

    def offline(url, *args, **kwargs):  # stands in for the network: nothing leaves the machine
        calls.append(url)
        raise URLError("network unreachable")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match=rf"(?s)downloading data set '{name}' into root {tmp_path} failed.*"
                                           r"data\.download: false"):
        load_dataset(name, root=tmp_path, download=True)
    assert calls, "the download path was not taken"


@pytest.mark.parametrize("name,fixture,folder", CIFAR)
def test_offline_cifar_download_failure_is_explained(name, fixture, folder, tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    def offline(url, *args, **kwargs):
        raise URLError("network unreachable")

    monkeypatch.setattr(tv_cifar, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match=rf"downloading data set '{name}' into root {tmp_path} failed"):
        load_dataset(name, root=tmp_path, download=True)


@pytest.mark.parametrize("name,fixture,folder", CIFAR)
def test_cifar_md5_check_rejects_non_official_files_by_default(name, fixture, folder, request):
    w = request.getfixturevalue(fixture)
    with pytest.raises(RuntimeError, match=rf"data set '{name}': .*{folder}/\S+ fails the md5 check.*verify_md5=False"):
        load_dataset(name, root=w.root)
    ds = load_dataset(name, root=w.root, verify_md5=False)
    assert ds.meta["md5_verified"] is False


def test_cifar_md5_check_passes_on_matching_sums(written_cifar10, monkeypatch):
    """With the recorded sums equal to the files' sums the default (verifying) path loads."""
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import calculate_md5

    w = written_cifar10
    folder = w.root / "cifar-10-batches-py"
    sums = {f.name: calculate_md5(str(f)) for f in folder.iterdir()}
    monkeypatch.setattr(tvd.CIFAR10, "train_list", [[f"data_batch_{b}", sums[f"data_batch_{b}"]] for b in range(1, 6)])
    monkeypatch.setattr(tvd.CIFAR10, "test_list", [["test_batch", sums["test_batch"]]])
    monkeypatch.setattr(tvd.CIFAR10, "meta", {"filename": "batches.meta", "key": "label_names",
                                              "md5": sums["batches.meta"]})
    ds = load_dataset("cifar10", root=w.root)
    assert ds.meta["md5_verified"] is True and torch.equal(ds.x, w.x)
    assert ds.meta["classes"][:2] == ["airplane", "automobile"]


def test_cifar_channel_layout(written_cifar10):
    """Row layout check independent of the reader: red plane first, row-major."""
    import pickle

    with open(written_cifar10.root / "cifar-10-batches-py" / "data_batch_1", "rb") as fh:
        row = pickle.load(fh)["data"][1]
    ds = load_dataset("cifar10", root=written_cifar10.root, verify_md5=False)
    for c, i, j in [(0, 0, 0), (1, 5, 7), (2, 31, 30)]:
        assert ds.x[1, c, i, j] == torch.tensor(row[c * 1024 + i * 32 + j] / 255, dtype=torch.float32)


def test_cifar_corrupt_batch_is_named(written_cifar10):
    import pickle

    path = written_cifar10.root / "cifar-10-batches-py" / "data_batch_3"
    with open(path, "wb") as fh:
        pickle.dump({"data": b"", "labels": []}, fh)
    with pytest.raises(RuntimeError, match=r"data_batch_3: expected uint8 data \(n, 3072\)"):
        load_dataset("cifar10", root=written_cifar10.root, verify_md5=False)


def test_cifar_image_size_downsamples(written_cifar100):
    ds = load_dataset("cifar100", root=written_cifar100.root, verify_md5=False, image_size=16)
    expected = written_cifar100.x.reshape(-1, 3, 16, 2, 16, 2).mean(dim=(3, 5))
    torch.testing.assert_close(ds.x, expected, rtol=0, atol=1e-6)
    assert ds.meta["classes"][99] == "class099"


def test_mnist_missing_folder_after_partial_copy(written_mnist, tmp_path):
    other = tmp_path / "elsewhere"
    shutil.copytree(written_mnist.root / "MNIST", other / "MNIST")
    assert torch.equal(load_dataset("mnist", root=other).x, written_mnist.x)
    with pytest.raises(FileNotFoundError, match=r"data set 'fashion_mnist' not found"):
        load_dataset("fashion_mnist", root=other)
