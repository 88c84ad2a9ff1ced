"""Tiny ImageNet read from a small directory in the official layout (JPEGs written by PIL)."""

from __future__ import annotations

from urllib.error import URLError

import numpy as np
import pytest
import torch

from landscape.data import load_dataset

TINY_CLASSES_SORTED = ["n01443537", "n02124075", "n09999999"]


def test_reads_back_decoded_pixels_and_labels(written_tiny_imagenet):
    w = written_tiny_imagenet
    ds = load_dataset("tiny_imagenet", root=w.root)
    assert ds.x.shape == (15, 3, 64, 64) and ds.num_classes == 3
    assert torch.equal(ds.x, w.x)  # exactly what PIL decodes from each written file
    assert torch.equal(ds.y, w.y)
    assert ds.meta["classes"] == TINY_CLASSES_SORTED  # labels index the sorted WordNet ids
    assert ds.meta["official_split"] == {"train": 9, "test": 6}
    # and close to the pixels that were encoded (JPEG at quality 100, smooth images)
    err = (ds.x * 255 - torch.from_numpy(w.source).permute(0, 3, 1, 2).to(torch.float32)).abs().max()
    assert float(err) <= 4.0


def test_grayscale_jpeg_becomes_three_equal_channels(written_tiny_imagenet):
    ds = load_dataset("tiny_imagenet", root=written_tiny_imagenet.root, split="train")
    first = ds.x[0]  # the first file of the first class is written as mode "L"
    assert torch.equal(first[0], first[1]) and torch.equal(first[1], first[2])
    assert not torch.equal(ds.x[1][0], ds.x[1][2])  # an RGB one differs across channels


def test_splits_and_max_per_class(written_tiny_imagenet):
    w = written_tiny_imagenet
    train = load_dataset("tiny_imagenet", root=w.root, split="train")
    test = load_dataset("tiny_imagenet", root=w.root, split="test")
    assert torch.equal(train.x, w.x[:9]) and torch.equal(test.x, w.x[9:])
    capped = load_dataset("tiny_imagenet", root=w.root, max_per_class=1)
    assert capped.meta["official_split"] == {"train": 3, "test": 3}
    assert capped.class_counts().tolist() == [2, 2, 2]
    # the kept ones are the first file of each class, in sorted name order
    assert torch.equal(capped.x[:3], w.x[[0, 3, 6]])


def test_image_size_downsamples_by_area(written_tiny_imagenet):
    w = written_tiny_imagenet
    ds = load_dataset("tiny_imagenet", root=w.root, split="test", image_size=16)
    expected = w.x[9:].to(torch.float64).reshape(6, 3, 16, 4, 16, 4).mean(dim=(3, 5))
    torch.testing.assert_close(ds.x.to(torch.float64), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_per_class": 0}, "max_per_class must be a positive int or None, got 0"),
        ({"image_size": 65}, r"image_size must be an int in \[1, 64\]"),
        ({"split": "val"}, r"split must be one of \('all', 'train', 'test'\)"),
    ],
)
def test_bad_options(written_tiny_imagenet, kwargs, match):
    with pytest.raises(ValueError, match=match):
        load_dataset("tiny_imagenet", root=written_tiny_imagenet.root, **kwargs)


def test_missing_directory_names_set_root_and_remedy(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"data set 'tiny_imagenet' not found under root {tmp_path}.*"
                                                 rf"wnids\.txt.*data\.download: true.*{tmp_path}/tiny-imagenet-200"):
        load_dataset("tiny_imagenet", root=tmp_path)


def test_missing_val_annotations_only_matters_for_test_split(written_tiny_imagenet):
    root = written_tiny_imagenet.root
    (root / "tiny-imagenet-200" / "val" / "val_annotations.txt").unlink()
    assert len(load_dataset("tiny_imagenet", root=root, split="train")) == 9
    with pytest.raises(FileNotFoundError, match=r"missing \S*val_annotations\.txt"):
        load_dataset("tiny_imagenet", root=root)


def test_missing_class_folder_is_named(written_tiny_imagenet):
    root = written_tiny_imagenet.root
    folder = root / "tiny-imagenet-200" / "train" / "n02124075" / "images"
    for p in folder.iterdir():
        p.unlink()
    folder.rmdir()
    with pytest.raises(FileNotFoundError, match=r"class folder \S*n02124075/images listed in wnids.txt is missing"):
        load_dataset("tiny_imagenet", root=root)


def test_bad_annotation_line_is_named(written_tiny_imagenet):
    ann = written_tiny_imagenet.root / "tiny-imagenet-200" / "val" / "val_annotations.txt"
    ann.write_text(ann.read_text() + "val_99.JPEG\tn00000000\t0\t0\t1\t1\n")
    with pytest.raises(RuntimeError, match=r"val_annotations.txt line 7 .*known wnid"):
        load_dataset("tiny_imagenet", root=written_tiny_imagenet.root)


def test_wrong_image_size_on_disk_is_named(written_tiny_imagenet):
    from PIL import Image

    path = written_tiny_imagenet.root / "tiny-imagenet-200" / "val" / "images" / "val_2.JPEG"
    Image.fromarray(np.zeros((32, 48, 3), dtype=np.uint8)).save(path, "JPEG")
    with pytest.raises(RuntimeError, match=r"val_2.JPEG is 48x32, expected 64x64"):
        load_dataset("tiny_imagenet", root=written_tiny_imagenet.root)


def test_offline_download_failure_is_explained(tmp_path, monkeypatch):
    import torchvision.datasets.utils as tv_utils

    calls = []

    def offline(url, *args, **kwargs):  # stands in for the network
        calls.append((url, kwargs.get("md5")))
        raise URLError("network unreachable")

    monkeypatch.setattr(tv_utils, "download_and_extract_archive", offline)
    with pytest.raises(RuntimeError, match=rf"downloading data set 'tiny_imagenet' into root {tmp_path} failed"):
        load_dataset("tiny_imagenet", root=tmp_path, download=True)
    assert calls == [("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "90528d7ca1a48142e341f4ef8d21d0de")]
