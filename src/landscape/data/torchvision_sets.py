"""MNIST, Fashion-MNIST, CIFAR-10 and CIFAR-100 from a local copy in torchvision's layout.

Sources: MNIST (LeCun et al., 1998), Fashion-MNIST (Xiao et al., 2017), CIFAR-10/100
(Krizhevsky, 2009). Files live under ``root`` exactly where torchvision puts them:

* ``<root>/MNIST/raw/{train,t10k}-{images-idx3,labels-idx1}-ubyte`` (and the same under
  ``<root>/FashionMNIST/raw/``): big-endian idx files, magic 2051 (uint8, 3 dims) for
  images and 2049 (uint8, 1 dim) for labels. Read by ``torchvision.datasets.MNIST`` /
  ``FashionMNIST`` themselves.
* ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
  ``<root>/cifar-100-python/{train, test, meta}``: pickled dicts with ``data`` (n, 3072)
  uint8 rows (1,024 red, then green, then blue values, row-major) and ``labels`` (CIFAR-10)
  or ``fine_labels`` (CIFAR-100).

CIFAR choice: torchvision's ``CIFAR10``/``CIFAR100`` refuse any file whose md5 differs
from the official release, which also rejects a locally made copy (a subset, a test
fixture). So this module downloads through torchvision's classes but reads the pickle
batches itself (same layout, same ``encoding="latin1"`` unpickling as torchvision), and
checks the official md5 sums recorded on torchvision's classes unless
``verify_md5=False``. Unpickling executes code from the file: load only copies you trust
(the official archive, whose md5 is checked by default).

Official splits: ``split="all"`` (default) loads the official train split followed by the
official test split and records ``meta["official_split"] = {"train": n_train, "test":
n_test}``; the pipeline then re-splits deterministically with :func:`make_splits`
(``official_split=True`` there reproduces the official partition). ``split="train"`` or
``"test"`` loads one official split only.

Missing files with ``download=False`` raise :class:`FileNotFoundError` naming the set, the
root searched and how to get it; a failed download (e.g. offline) raises
:class:`RuntimeError` with the same facts.
"""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch

from landscape.data.base import (
    Dataset,
    missing_data_message,
    resize_area,
    uint8_to_unit,
)
from landscape.data.registry import register_dataset

__all__ = ["mnist", "fashion_mnist", "cifar10", "cifar100", "SPLITS"]

SPLITS = ("all", "train", "test")


def check_split(split: str) -> tuple[str, ...]:
    """Official splits to load for ``split`` ("all" -> train then test)."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    return ("train", "test") if split == "all" else (split,)


def download_failed(name: str, root: Path, place_at: Path, err: BaseException) -> RuntimeError:
    """The error for a download that did not complete (offline machine, bad mirror)."""
    return RuntimeError(
        f"downloading data set {name!r} into root {root} failed ({type(err).__name__}: {err}). "
        f"On an offline machine set `data.download: false` and place the files at {place_at}."
    )


def _stack_splits(
    parts: list[tuple[str, torch.Tensor, torch.Tensor]],
) -> tuple[torch.Tensor, torch.Tensor, dict[str, int]]:
    sizes = {"train": 0, "test": 0}
    for split, _, y in parts:
        sizes[split] = int(y.shape[0])
    x = torch.cat([p[1] for p in parts])
    y = torch.cat([p[2] for p in parts])
    return x, y, sizes


# ----------------------------------------------------------------------------- MNIST family


def _mnist_family(name: str, class_name: str, root: Path, download: bool, split: str,
                  image_size: int | None) -> Dataset:
    import torchvision.datasets as tvd

    splits = check_split(split)
    cls = getattr(tvd, class_name)
    raw = root / class_name / "raw"
    # torchvision requires all four uncompressed idx files (resources list the .gz names)
    needed = [raw / Path(fname).stem for fname, _ in cls.resources]
    missing = [p for p in needed if not p.is_file()]
    if missing:
        if not download:
            raise FileNotFoundError(missing_data_message(name, root, missing, raw, can_download=True))
        try:
            cls(str(root), train=True, download=True)
        except (RuntimeError, OSError) as err:
            raise download_failed(name, root, raw, err) from err
    parts = []
    for s in splits:
        ds = cls(str(root), train=(s == "train"), download=False)
        parts.append((s, uint8_to_unit(ds.data).unsqueeze(1), ds.targets.to(torch.int64)))
    x, y, sizes = _stack_splits(parts)
    x = resize_area(x, image_size, native=28)
    meta = {"name": name, "source": f"torchvision.datasets.{class_name}", "root": str(root),
            "official_split": sizes, "pixel_scale": "value / 255", "image_size": int(x.shape[-1]),
            "classes": list(cls.classes)}
    return Dataset(x=x, y=y, num_classes=len(cls.classes), meta=meta)


@register_dataset("mnist", uses_root=True)
def mnist(root: Path, download: bool = False, split: str = "all", image_size: int | None = None) -> Dataset:
    """MNIST via torchvision (70,000 = 60,000 + 10,000 digits), (N, 1, 28, 28) in [0, 1].

    Args:
        root: Directory containing ``MNIST/raw/``.
        download: Fetch the files with torchvision when they are missing.
        split: "all" (official train then test, see module docstring), "train" or "test".
        image_size: Optional side in [1, 28] for area downsampling.
    """
    return _mnist_family("mnist", "MNIST", root, download, split, image_size)


@register_dataset("fashion_mnist", uses_root=True)
def fashion_mnist(root: Path, download: bool = False, split: str = "all",
                  image_size: int | None = None) -> Dataset:
    """Fashion-MNIST via torchvision (70,000 clothing images), (N, 1, 28, 28) in [0, 1].

    Args:
        root: Directory containing ``FashionMNIST/raw/``.
        download: Fetch the files with torchvision when they are missing.
        split: "all" (official train then test), "train" or "test".
        image_size: Optional side in [1, 28] for area downsampling.
    """
    return _mnist_family("fashion_mnist", "FashionMNIST", root, download, split, image_size)


# ----------------------------------------------------------------------------- CIFAR family


def _read_pickle(path: Path) -> dict[str, Any]:
    with open(path, "rb") as fh:
        entry = pickle.load(fh, encoding="latin1")
    if not isinstance(entry, dict):
        raise RuntimeError(f"{path} does not hold a pickled dict (got {type(entry).__name__})")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in entry.items()}


def _read_cifar_batch(path: Path, label_key: str) -> tuple[torch.Tensor, torch.Tensor]:
    entry = _read_pickle(path)
    if "data" not in entry or label_key not in entry:
        raise RuntimeError(f"{path} lacks the keys 'data' and {label_key!r} (has {sorted(entry)})")
    data = np.asarray(entry["data"])
    labels = np.asarray(entry[label_key], dtype=np.int64)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32 or labels.shape != (data.shape[0],):
        raise RuntimeError(f"{path}: expected uint8 data (n, 3072) and n labels, got {data.dtype} "
                           f"{data.shape} and labels {labels.shape}")
    return torch.from_numpy(data.reshape(-1, 3, 32, 32).copy()), torch.from_numpy(labels)


def _cifar_family(name: str, class_name: str, label_key: str, root: Path, download: bool, split: str,
                  verify_md5: bool, image_size: int | None) -> Dataset:
    import torchvision.datasets as tvd
    from torchvision.datasets.utils import check_integrity

    splits = check_split(split)
    cls = getattr(tvd, class_name)
    folder = root / cls.base_folder
    files = {"train": list(cls.train_list), "test": list(cls.test_list)}
    meta_file = (cls.meta["filename"], cls.meta["md5"])
    needed = [f for s in splits for f in files[s]] + [meta_file]
    missing = [folder / f for f, _ in needed if not (folder / f).is_file()]
    if missing:
        if not download:
            raise FileNotFoundError(missing_data_message(name, root, missing, folder, can_download=True))
        try:
            cls(str(root), train=True, download=True)
        except (RuntimeError, OSError) as err:
            raise download_failed(name, root, folder, err) from err
    if verify_md5:
        for fname, md5 in needed:
            if not check_integrity(str(folder / fname), md5):
                raise RuntimeError(
                    f"data set {name!r}: {folder / fname} fails the md5 check of the official release "
                    f"(expected {md5}). Delete {folder} and set `data.download: true` to fetch a clean copy, "
                    f"or pass verify_md5=False to read a locally made copy in the same format."
                )
    parts = []
    for s in splits:
        batches = [_read_cifar_batch(folder / fname, label_key) for fname, _ in files[s]]
        parts.append((s, uint8_to_unit(torch.cat([b[0] for b in batches])), torch.cat([b[1] for b in batches])))
    x, y, sizes = _stack_splits(parts)
    classes = [str(c) for c in _read_pickle(folder / meta_file[0])[cls.meta["key"]]]
    x = resize_area(x, image_size, native=32)
    meta = {"name": name, "source": f"{cls.base_folder} pickle batches (torchvision layout)", "root": str(root),
            "official_split": sizes, "pixel_scale": "value / 255", "image_size": int(x.shape[-1]),
            "md5_verified": bool(verify_md5), "classes": classes}
    return Dataset(x=x, y=y, num_classes=len(classes), meta=meta)


@register_dataset("cifar10", uses_root=True)
def cifar10(root: Path, download: bool = False, split: str = "all", verify_md5: bool = True,
            image_size: int | None = None) -> Dataset:
    """CIFAR-10 (60,000 = 50,000 + 10,000 colour images), (N, 3, 32, 32) in [0, 1], 10 classes.

    Args:
        root: Directory containing ``cifar-10-batches-py/``.
        download: Fetch the archive with torchvision when files are missing.
        split: "all" (official train then test), "train" or "test".
        verify_md5: Check the files against the official md5 sums (False admits local copies).
        image_size: Optional side in [1, 32] for area downsampling.
    """
    return _cifar_family("cifar10", "CIFAR10", "labels", root, download, split, verify_md5, image_size)


@register_dataset("cifar100", uses_root=True)
def cifar100(root: Path, download: bool = False, split: str = "all", verify_md5: bool = True,
             image_size: int | None = None) -> Dataset:
    """CIFAR-100 (60,000 colour images, 100 fine labels), (N, 3, 32, 32) in [0, 1].

    Args:
        root: Directory containing ``cifar-100-python/``.
        download: Fetch the archive with torchvision when files are missing.
        split: "all" (official train then test), "train" or "test".
        verify_md5: Check the files against the official md5 sums (False admits local copies).
        image_size: Optional side in [1, 32] for area downsampling.
    """
    return _cifar_family("cifar100", "CIFAR100", "fine_labels", root, download, split, verify_md5, image_size)
