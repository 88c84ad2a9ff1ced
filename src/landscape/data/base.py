"""The in-memory data set record, its content hash and small pixel helpers.

Every loader of :mod:`landscape.data` returns one :class:`Dataset`: all examples as one
float32 tensor and one int64 label tensor, small enough to sit in memory (the sizes this
project studies, MNIST to Tiny ImageNet). Images are scaled to [0, 1] and stored
channel-first, (N, C, H, W); vector data is (N, D).

Downsampling uses exact area interpolation (as OpenCV's ``INTER_AREA``): each output
pixel is the average of the source image over the output pixel's footprint, source pixels
cut by a footprint boundary counting with the fraction that lies inside. When the target
size divides the source size this is the mean of each non-overlapping block; in every
case the mean brightness of an image is preserved. (torch's ``interpolate(mode="area")``
is adaptive average pooling, which for non-divisible sizes averages whole, overlapping
pixel windows instead, and does not preserve the mean.)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from landscape.io import sha256_tensors

__all__ = [
    "Dataset",
    "content_hash",
    "resize_area",
    "area_weights",
    "check_image_size",
    "uint8_to_unit",
    "missing_data_message",
]


@dataclasses.dataclass(frozen=True)
class Dataset:
    """All examples of one data set.

    Attributes:
        x: Inputs, float32, (N, C, H, W) for images (values in [0, 1]) or (N, D).
        y: Integer class labels, int64, (N,), each in ``[0, num_classes)``.
        num_classes: Number of classes K (labels that never occur still count).
        meta: Provenance and facts about the set: ``name`` always, and where relevant
            ``source``, ``root``, ``classes``, ``official_split`` (``{"train": n_train,
            "test": n_test}``: rows ``[0, n_train)`` come from the official train split,
            the next ``n_test`` rows from the official test split), generator settings.
    """

    x: Tensor
    y: Tensor
    num_classes: int
    meta: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.x, Tensor) or not self.x.is_floating_point():
            raise ValueError(f"x must be a floating-point tensor, got {type(self.x).__name__} "
                             f"{getattr(self.x, 'dtype', '')}")
        if self.x.ndim not in (2, 4):
            raise ValueError(f"x must have shape (N, D) or (N, C, H, W), got {tuple(self.x.shape)}")
        if not isinstance(self.y, Tensor) or self.y.dtype != torch.int64 or self.y.ndim != 1:
            raise ValueError(f"y must be an int64 tensor of shape (N,), got "
                             f"{getattr(self.y, 'dtype', type(self.y).__name__)} {tuple(getattr(self.y, 'shape', ()))}")
        if self.y.shape[0] != self.x.shape[0]:
            raise ValueError(f"x has {self.x.shape[0]} rows but y has {self.y.shape[0]} labels")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")
        if self.y.numel() and (int(self.y.min()) < 0 or int(self.y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got range "
                             f"[{int(self.y.min())}, {int(self.y.max())}]")
        if not isinstance(self.meta, Mapping):
            raise ValueError(f"meta must be a mapping, got {type(self.meta).__name__}")

    @property
    def name(self) -> str | None:
        """The registry name recorded in ``meta`` (``None`` if the set was built by hand)."""
        return self.meta.get("name")

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def class_counts(self) -> Tensor:
        """Examples per class, int64 (num_classes,)."""
        return torch.bincount(self.y, minlength=self.num_classes)

    def to_dict(self) -> dict[str, Any]:
        """Summary for JSON metrics: sizes, shape, class counts, content hash and ``meta``."""
        return {
            "name": self.name,
            "num_examples": len(self),
            "input_shape": list(self.x.shape[1:]),
            "num_classes": self.num_classes,
            "class_counts": self.class_counts().tolist(),
            "content_hash": content_hash(self.x, self.y),
            "meta": dict(self.meta),
        }


def content_hash(*tensors: Tensor) -> str:
    """Hex SHA-256 of the tensors' exact bytes, dtypes and shapes, in argument order.

    Equal hashes mean bit-identical tensors; a reshape or a cast changes the hash. Used by
    the ``prepare`` stage as a DVC metric so a silent change of the data shows up.

    Args:
        *tensors: One or more tensors (any device; they are copied to CPU to hash).

    Returns:
        64 hexadecimal characters.
    """
    if not tensors:
        raise ValueError("content_hash needs at least one tensor, got none")
    for i, t in enumerate(tensors):
        if not isinstance(t, Tensor):
            raise ValueError(f"content_hash argument {i} must be a torch.Tensor, got {type(t).__name__}")
    width = len(str(len(tensors)))
    # Zero-padded names keep argument order under sha256_tensors' sorting by name. A 0-dim
    # tensor cannot be viewed as bytes, so it is hashed as shape (1,) under a marked name
    # (the name enters the hash, so it still differs from a genuine (1,) tensor).
    named = {}
    for i, t in enumerate(tensors):
        named[f"{i:0{width}d}" + ("s" if t.ndim == 0 else "")] = t.reshape(1) if t.ndim == 0 else t
    return sha256_tensors(named)


def uint8_to_unit(x: Tensor | np.ndarray) -> Tensor:
    """Convert uint8 pixels (0..255) to float32 in [0, 1] (value / 255)."""
    t = torch.as_tensor(x)
    if t.dtype != torch.uint8:
        raise ValueError(f"expected uint8 pixels, got {t.dtype}")
    return t.to(torch.float32).div_(255.0)


def check_image_size(image_size: int | None, native: int) -> None:
    """Raise ValueError unless ``image_size`` is None or an int in [1, native]."""
    if image_size is None:
        return
    if isinstance(image_size, bool) or not isinstance(image_size, int) or not 1 <= image_size <= native:
        raise ValueError(f"image_size must be an int in [1, {native}] (area downsampling only), got {image_size!r}")


def resize_area(x: Tensor, image_size: int | None, *, native: int) -> Tensor:
    """Downsample square images (N, C, native, native) to (N, C, s, s) by area interpolation.

    Args:
        x: Float images (N, C, H, W) with H = W = ``native``.
        image_size: Target side s in ``[1, native]``; ``None`` or ``native`` returns ``x``.
        native: The set's native side length (for the error message and the check).
    """
    check_image_size(image_size, native)
    if image_size is None or image_size == native:
        return x
    if x.ndim != 4 or x.shape[-2:] != (native, native):
        raise ValueError(f"expected images (N, C, {native}, {native}), got {tuple(x.shape)}")
    weights = area_weights(native, image_size).to(device=x.device, dtype=x.dtype)
    return torch.einsum("ih,nchw,jw->ncij", weights, x, weights)


def area_weights(source: int, target: int) -> Tensor:
    """Row-stochastic (target, source) matrix of 1-D area interpolation, float64.

    Output pixel i covers the source interval [i r, (i + 1) r) with r = source / target;
    its weight on source pixel k is the length of [k, k + 1) inside that interval over r.
    Computed in integer units of 1 / target, so the weights are exact rationals.
    """
    i = torch.arange(target, dtype=torch.int64).unsqueeze(1)
    k = torch.arange(source, dtype=torch.int64).unsqueeze(0)
    lo = torch.maximum(i * source, k * target)
    hi = torch.minimum((i + 1) * source, (k + 1) * target)
    return (hi - lo).clamp(min=0).to(torch.float64) / source


def missing_data_message(name: str, root: Path, missing: list[Path], place_at: Path, *, can_download: bool) -> str:
    """The error text for a data set whose files are absent: what, where, how to get it."""
    shown = ", ".join(str(p) for p in missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    how = (
        "set `data.download: true` in params.yaml (or pass download=True to load_dataset) to fetch it, or "
        if can_download
        else ""
    )
    return (
        f"data set {name!r} not found under root {root} ({Path(root).absolute()}): missing {shown}. "
        f"To get it, {how}place the files at {place_at}."
    )
