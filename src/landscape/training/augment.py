"""Batch image augmentation with an explicit generator: random crop with padding and flip."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["random_crop_flip"]


def random_crop_flip(x: Tensor, generator: torch.Generator, pad: int | None = None) -> Tensor:
    """Random translation by up to ``pad`` pixels (zero padding) and a horizontal flip.

    Args:
        x: images, shape (B, C, H, W).
        generator: CPU generator that drives the draws (reproducible per epoch).
        pad: padding in pixels; default ``max(1, H // 8)`` (4 px at 32x32, 2 px at 14x14).

    Returns:
        Augmented images, shape (B, C, H, W), same dtype and device.
    """
    if x.ndim != 4:
        return x
    b, _, h, w = x.shape
    pad = max(1, h // 8) if pad is None else pad
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator).to(x.device)
    flip = (torch.rand(b, generator=generator) < 0.5).to(x.device)
    rows = (torch.arange(h, device=x.device)[None, :] + dy[:, None])  # (B, H)
    cols = torch.arange(w, device=x.device)[None, :] + dx[:, None]  # (B, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    idx_b = torch.arange(b, device=x.device)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[idx_b, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()
