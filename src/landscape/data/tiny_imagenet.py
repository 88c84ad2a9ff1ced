"""Tiny ImageNet (200 classes of 64x64 RGB images; Le & Yang, 2015) from its standard layout.

Expected under ``root`` (the layout of the official ``tiny-imagenet-200.zip``)::

    tiny-imagenet-200/wnids.txt                      one WordNet id per line (200 lines)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG     500 images per class
    tiny-imagenet-200/val/images/*.JPEG              10,000 images
    tiny-imagenet-200/val/val_annotations.txt        "<file>\\t<wnid>\\t<x0>\\t<y0>\\t<x1>\\t<y1>"

The official ``test/`` folder has no labels and is not read. Labels index the *sorted*
WordNet ids (the order ``torchvision.datasets.ImageFolder`` gives on ``train/``), stored in
``meta["classes"]``. Grayscale JPEGs (a few in the release) are converted to RGB by
replicating the channel (PIL ``convert("RGB")``). ``split="all"`` concatenates the
official train split and the official validation split (used as the test split) and
records ``meta["official_split"]``; ``max_per_class`` keeps the first k files per class
and split in sorted file-name order. Every image is decoded into memory: the full set is
110,000 x 3 x 64 x 64 float32 = 5.4 GB, so use ``max_per_class`` and/or ``image_size`` on
small machines.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from landscape.data.base import (
    Dataset,
    check_image_size,
    missing_data_message,
    resize_area,
    uint8_to_unit,
)
from landscape.data.registry import register_dataset
from landscape.data.torchvision_sets import check_split, download_failed

__all__ = ["tiny_imagenet", "TINY_IMAGENET_URL", "TINY_IMAGENET_MD5"]

TINY_IMAGENET_URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
TINY_IMAGENET_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
_NATIVE = 64


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    with Image.open(path) as img:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if arr.shape != (_NATIVE, _NATIVE, 3):
        raise RuntimeError(f"tiny_imagenet: {path} is {arr.shape[1]}x{arr.shape[0]}, expected {_NATIVE}x{_NATIVE}")
    return arr


def _train_files(base: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    out: list[tuple[Path, int]] = []
    for label, wnid in enumerate(wnids):
        folder = base / "train" / wnid / "images"
        if not folder.is_dir():
            raise FileNotFoundError(f"tiny_imagenet: class folder {folder} listed in wnids.txt is missing")
        out.extend((p, label) for p in sorted(folder.glob("*.JPEG")))
    return out


def _val_files(base: Path, wnids: list[str]) -> list[tuple[Path, int]]:
    index = {w: i for i, w in enumerate(wnids)}
    ann = base / "val" / "val_annotations.txt"
    out = []
    for lineno, line in enumerate(ann.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 2 or fields[1] not in index:
            raise RuntimeError(
                f"tiny_imagenet: {ann} line {lineno} is not '<file>\\t<wnid>...' with a known wnid: {line!r}"
            )
        out.append((base / "val" / "images" / fields[0], index[fields[1]]))
    return sorted(out)


def _cap_per_class(files: list[tuple[Path, int]], max_per_class: int | None) -> list[tuple[Path, int]]:
    if max_per_class is None:
        return files
    taken: dict[int, int] = {}
    kept = []
    for path, label in sorted(files):
        if taken.get(label, 0) < max_per_class:
            taken[label] = taken.get(label, 0) + 1
            kept.append((path, label))
    return kept


@register_dataset("tiny_imagenet", uses_root=True)
def tiny_imagenet(root: Path, download: bool = False, split: str = "all", max_per_class: int | None = None,
                  image_size: int | None = None) -> Dataset:
    """Tiny ImageNet from ``<root>/tiny-imagenet-200``, (N, 3, 64, 64) in [0, 1], 200 classes.

    Args:
        root: Directory containing ``tiny-imagenet-200/``.
        download: Fetch and unzip the official archive (md5-checked) when missing.
        split: "all" (official train then val), "train" or "test" (= official val).
        max_per_class: Keep at most this many images per class in each split.
        image_size: Optional side in [1, 64] for area downsampling.
    """
    splits = check_split(split)
    if max_per_class is not None and (isinstance(max_per_class, bool) or not isinstance(max_per_class, int)
                                      or max_per_class < 1):
        raise ValueError(f"max_per_class must be a positive int or None, got {max_per_class!r}")
    check_image_size(image_size, _NATIVE)  # before any decoding
    base = root / "tiny-imagenet-200"
    needed = [base / "wnids.txt", base / "train"]
    if "test" in splits:
        needed += [base / "val" / "images", base / "val" / "val_annotations.txt"]
    missing = [p for p in needed if not p.exists()]
    if missing:
        if not download:
            raise FileNotFoundError(missing_data_message("tiny_imagenet", root, missing, base, can_download=True))
        from torchvision.datasets.utils import download_and_extract_archive

        try:
            download_and_extract_archive(TINY_IMAGENET_URL, str(root), md5=TINY_IMAGENET_MD5)
        except (RuntimeError, OSError) as err:
            raise download_failed("tiny_imagenet", root, base, err) from err

    wnids = sorted({w.strip() for w in (base / "wnids.txt").read_text().splitlines() if w.strip()})
    listing = {"train": _train_files, "test": _val_files}
    xs, ys, sizes = [], [], {"train": 0, "test": 0}
    for s in splits:
        files = _cap_per_class(listing[s](base, wnids), max_per_class)
        sizes[s] = len(files)
        if files:
            pixels = np.stack([_read_rgb(p) for p, _ in files])  # (n, 64, 64, 3) uint8
            xs.append(resize_area(uint8_to_unit(pixels).permute(0, 3, 1, 2).contiguous(), image_size, native=_NATIVE))
            ys.append(torch.tensor([label for _, label in files], dtype=torch.int64))
    if not xs:
        raise RuntimeError(f"tiny_imagenet: no JPEG files found under {base} for split {split!r}")
    x, y = torch.cat(xs), torch.cat(ys)
    meta = {"name": "tiny_imagenet", "source": "tiny-imagenet-200 directory", "root": str(root),
            "official_split": sizes, "official_test_is": "val", "pixel_scale": "value / 255",
            "image_size": int(x.shape[-1]), "max_per_class": max_per_class, "classes": wnids}
    return Dataset(x=x, y=y, num_classes=len(wnids), meta=meta)
