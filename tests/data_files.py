"""Writers of small data sets in each set's own on-disk format, for the data-set tests
(fixtures in tests/data/conftest.py) and the paper_smoke end-to-end run.

No network: every on-disk set is produced here byte by byte (idx files for the MNIST
family, pickle batches for CIFAR, JPEGs written by PIL for Tiny ImageNet, raw text for
WikiText-2), together with the pixels and labels a correct reader must return. Sizes are
arguments; the defaults are the data-set tests' tiny ones.

Imported as ``from data_files import ...`` from any test directory (tests/conftest.py's
directory is on sys.path under pytest's default import mode).
"""

from __future__ import annotations

import dataclasses
import pickle
import struct
from pathlib import Path
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class Written:
    """A data set written to disk and what loading it must give (split="all")."""

    root: Path
    x: torch.Tensor  # expected float32 inputs, official train rows then test rows
    y: torch.Tensor  # expected int64 labels
    official: dict[str, int]
    kwargs: dict[str, Any]  # loader options needed to read it
    source: np.ndarray | None = None  # encoded uint8 pixels (N, H, W, 3) where the format is lossy


def _smooth_images(rng: np.random.Generator, n: int, side: int, channels: int) -> np.ndarray:
    """(n, side, side, channels) uint8 images: random linear gradients (JPEG-friendly), no noise."""
    i, j = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    out = np.empty((n, side, side, channels), dtype=np.uint8)
    for k in range(n):
        for c in range(channels):
            a, b = rng.integers(0, 2, size=2)  # slopes 0 or 1 per pixel: no wrap-around edges
            off = rng.integers(0, 256 - (a + b) * (side - 1))
            out[k, :, :, c] = a * i + b * j + off
    return out


# ----------------------------------------------------------------------------- MNIST family


def write_idx_images(path: Path, images: np.ndarray) -> None:
    """Big-endian idx3 file: magic 2051 (0x0803: uint8, 3 dims), n, rows, cols, pixels."""
    n, rows, cols = images.shape
    path.write_bytes(struct.pack(">IIII", 2051, n, rows, cols) + images.astype(np.uint8).tobytes())


def write_idx_labels(path: Path, labels: np.ndarray) -> None:
    """Big-endian idx1 file: magic 2049 (0x0801: uint8, 1 dim), n, labels."""
    path.write_bytes(struct.pack(">II", 2049, labels.shape[0]) + labels.astype(np.uint8).tobytes())


def write_mnist_family(root: Path, class_name: str, seed: int = 0, n_train: int = 7, n_test: int = 4) -> Written:
    """``<root>/<class_name>/raw/`` idx files (torchvision's MNIST / FashionMNIST layout)."""
    rng = np.random.default_rng(seed)
    raw = root / class_name / "raw"
    raw.mkdir(parents=True)
    sizes = {"train": n_train, "test": n_test}
    xs, ys = [], []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = rng.integers(0, 256, size=(sizes[split], 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, size=sizes[split], dtype=np.uint8)
        write_idx_images(raw / f"{prefix}-images-idx3-ubyte", images)
        write_idx_labels(raw / f"{prefix}-labels-idx1-ubyte", labels)
        xs.append(images)
        ys.append(labels)
    x = torch.from_numpy(np.concatenate(xs)).to(torch.float32).div(255).unsqueeze(1)
    y = torch.from_numpy(np.concatenate(ys).astype(np.int64))
    return Written(root, x, y, sizes, {})




# ----------------------------------------------------------------------------- CIFAR family


def _pickle(path: Path, obj: dict) -> None:
    with open(path, "wb") as fh:
        pickle.dump(obj, fh, protocol=2)


def _cifar_rows(images_hwc: np.ndarray) -> np.ndarray:
    """(n, 32, 32, 3) HWC images -> (n, 3072) rows: all red values, then green, then blue."""
    return images_hwc.transpose(0, 3, 1, 2).reshape(images_hwc.shape[0], 3 * 32 * 32).copy()


def write_cifar10(root: Path, seed: int = 3, per_batch: int = 2, n_test: int = 3) -> Written:
    """``<root>/cifar-10-batches-py/``: five training batches of ``per_batch`` images, a test batch."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    train_imgs, train_labels = [], []
    for b in range(1, 6):
        imgs = rng.integers(0, 256, size=(per_batch, 32, 32, 3), dtype=np.uint8)
        labels = rng.integers(0, 10, size=per_batch).tolist()
        batch = {"batch_label": f"training batch {b} of 5", "labels": labels, "data": _cifar_rows(imgs),
                 "filenames": [f"f{b}_{k}.png" for k in range(per_batch)]}
        _pickle(folder / f"data_batch_{b}", batch)
        train_imgs.append(imgs)
        train_labels += labels
    test_imgs = rng.integers(0, 256, size=(n_test, 32, 32, 3), dtype=np.uint8)
    test_labels = rng.integers(0, 10, size=n_test).tolist()
    _pickle(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": test_labels,
                                    "data": _cifar_rows(test_imgs), "filenames": [f"t{k}.png" for k in range(n_test)]})
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _pickle(folder / "batches.meta", {"label_names": names, "num_cases_per_batch": per_batch, "num_vis": 3072})
    imgs = np.concatenate([*train_imgs, test_imgs])
    x = torch.from_numpy(imgs).permute(0, 3, 1, 2).to(torch.float32).div(255)
    y = torch.tensor(train_labels + test_labels, dtype=torch.int64)
    return Written(root, x, y, {"train": 5 * per_batch, "test": n_test}, {"verify_md5": False})


def write_cifar100(root: Path, seed: int = 4, n_train: int = 6, n_test: int = 4) -> Written:
    """``<root>/cifar-100-python/{train, test, meta}`` with fine and coarse labels."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    sizes = {"train": n_train, "test": n_test}
    xs, ys = [], []
    for split in ("train", "test"):
        imgs = rng.integers(0, 256, size=(sizes[split], 32, 32, 3), dtype=np.uint8)
        fine = rng.integers(0, 100, size=sizes[split]).tolist()
        _pickle(folder / split, {"filenames": [f"{split}{k}.png" for k in range(sizes[split])],
                                 "batch_label": f"{split} batch", "fine_labels": fine,
                                 "coarse_labels": [f // 5 for f in fine], "data": _cifar_rows(imgs)})
        xs.append(imgs)
        ys += fine
    _pickle(folder / "meta", {"fine_label_names": [f"class{k:03d}" for k in range(100)],
                              "coarse_label_names": [f"super{k:02d}" for k in range(20)]})
    x = torch.from_numpy(np.concatenate(xs)).permute(0, 3, 1, 2).to(torch.float32).div(255)
    return Written(root, x, torch.tensor(ys, dtype=torch.int64), sizes, {"verify_md5": False})




# ----------------------------------------------------------------------------- Tiny ImageNet

# deliberately not in sorted order: labels must index the sorted ids
TINY_WNIDS = ["n09999999", "n01443537", "n02124075"]


def write_tiny_imagenet(root: Path, per_class_train: int = 3, per_class_val: int = 2, seed: int = 5,
                        wnids: tuple[str, ...] | list[str] = TINY_WNIDS) -> Written:
    """A tiny-imagenet-200 tree with the classes ``wnids`` (default 3); one train image per
    class is saved as grayscale.

    ``Written.x`` holds the pixels PIL decodes from each JPEG (JPEG is lossy, so the reader
    is held to the decoder's output); ``Written.kwargs["source_pixels"]`` holds the
    uint8 arrays that were encoded (``Written.source``), for a closeness check.
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "test" / "images").mkdir(parents=True)  # unlabeled official test: must be ignored
    (base / "wnids.txt").write_text("\n".join(wnids) + "\n")
    label_of = {w: i for i, w in enumerate(sorted(wnids))}

    def save(path: Path, pixels: np.ndarray, gray: bool) -> np.ndarray:
        img = Image.fromarray(np.ascontiguousarray(pixels[:, :, 0]) if gray else pixels)  # mode L or RGB
        img.save(path, "JPEG", quality=100, subsampling=0)
        with Image.open(path) as back:
            return np.asarray(back.convert("RGB"))

    decoded_train, decoded_val, source_train = [], [], []
    for wnid in sorted(wnids):  # the loader reads classes in sorted order, files sorted by name
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        imgs = _smooth_images(rng, per_class_train, 64, 3)
        for k in range(per_class_train):
            gray = k == 0
            src = np.repeat(imgs[k][:, :, :1], 3, axis=2) if gray else imgs[k]
            decoded_train.append((label_of[wnid], save(folder / f"{wnid}_{k}.JPEG", imgs[k], gray)))
            source_train.append(src)
    lines = []
    val_imgs = _smooth_images(rng, per_class_val * len(wnids), 64, 3)
    for k in range(per_class_val * len(wnids)):
        wnid = wnids[k % len(wnids)]
        fname = f"val_{k}.JPEG"
        decoded_val.append((fname, label_of[wnid], save(base / "val" / "images" / fname, val_imgs[k], False),
                            val_imgs[k]))
        lines.append(f"{fname}\t{wnid}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    decoded_val.sort(key=lambda t: t[0])  # the loader sorts val files by path
    pixels = [p for _, p in decoded_train] + [p for _, _, p, _ in decoded_val]
    labels = [lab for lab, _ in decoded_train] + [lab for _, lab, _, _ in decoded_val]
    source = source_train + [s for *_, s in decoded_val]
    x = torch.from_numpy(np.stack(pixels)).permute(0, 3, 1, 2).to(torch.float32).div(255)
    return Written(root, x, torch.tensor(labels, dtype=torch.int64),
                   {"train": per_class_train * len(wnids), "test": per_class_val * len(wnids)},
                   {}, np.stack(source))



# ----------------------------------------------------------------------------- WikiText-2

WIKITEXT_WORDS = ("the", "cat", "dog", "sat", "on", "a", "mat", "and", "ran", "home", "@-@", ",")


def write_wikitext2(root: Path, seed: int = 6, lines: int = 12) -> Written:
    """wikitext-2-raw/wiki.{train,valid,test}.raw as the release writes them: ' = Title = '
    headings, ' ' blank lines and space-separated tokens (two train articles of ``lines``
    lines each, a test article of ``lines - 2``). Every word occurs in the train file; the
    test file adds one unseen word ('zebra'). x/y are left empty: the loader's own test
    checks ids by hand."""
    rng = np.random.default_rng(seed)

    def article(title: str, lines: int, extra: tuple[str, ...] = ()) -> str:
        body = [" ".join(rng.choice(WIKITEXT_WORDS + extra, size=int(rng.integers(8, 20)))) for _ in range(lines)]
        return f" = {title} = \n \n" + "".join(f" {line} \n \n" for line in body)

    base = root / "wikitext-2-raw"
    base.mkdir(parents=True)
    train = " ".join(WIKITEXT_WORDS) + " \n" + article("Cats", lines) + article("Dogs", lines)
    (base / "wiki.train.raw").write_text(train, encoding="utf-8")
    (base / "wiki.valid.raw").write_text(article("Mats", 4), encoding="utf-8")
    (base / "wiki.test.raw").write_text(article("Zoo", lines - 2, ("zebra",)), encoding="utf-8")
    empty = torch.empty(0)
    return Written(root, empty, empty.long(), {}, {"context": 16})

