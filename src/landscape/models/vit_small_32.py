"""ViT-Small for 32 px images, registered with timm as ``vit_small_32``.

The ViT-S configuration (Dosovitskiy et al. 2021, *An image is worth 16x16 words*; Touvron
et al. 2021, DeiT-S: embed_dim 384, depth 12, 6 heads, MLP ratio 4) with 4 x 4 patches so
a 32 x 32 image gives 8 x 8 = 64 tokens plus the class token, built from timm's own
``VisionTransformer`` (pre-norm blocks, learned position embeddings, class-token pooling,
timm's default initialisation). ``depth``, ``embed_dim`` and ``num_heads`` can be
overridden (tests use a tiny one). Parameter count with C input channels, patch p, width D,
N = (img_size / p)**2 tokens, L blocks, K classes and MLP ratio 4::

    C*p*p*D + D  (patch embedding)  +  D  (class token)  +  (N + 1)*D  (position embedding)
    + L * (12*D*D + 13*D)  (blocks)  +  2*D  (final norm)  +  D*K + K  (head)
"""

from __future__ import annotations

from typing import Any

from timm.models.vision_transformer import VisionTransformer

from ._layers import check_int, check_prob
from ._registry import check_entrypoint_extras, register
from .init_scale import check_init_scale, scale_init_

__all__ = ["vit_small_32"]


@register
def vit_small_32(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    img_size: int = 32,
    patch_size: int = 4,
    embed_dim: int = 384,
    depth: int = 12,
    num_heads: int = 6,
    drop_rate: float = 0.0,
    init_scale: float = 1.0,
    **kwargs: Any,
) -> VisionTransformer:
    """ViT-S/4 for small images.

    Args:
        pretrained: Must be False (no weights).
        num_classes: Outputs (logits).
        in_chans: Input channels.
        img_size: Input side length; a multiple of ``patch_size``.
        patch_size: Side of the square patches.
        embed_dim: Token width D; a multiple of ``num_heads``.
        depth: Number of transformer blocks.
        num_heads: Attention heads.
        drop_rate: Dropout after the position embedding, in the blocks' projections and
            before the head, in ``[0, 1)``.
        init_scale: Multiplies every Linear/Conv weight after timm's initialisation.
        **kwargs: Only timm's bookkeeping arguments (unset); anything else is an error.

    Returns:
        A ``timm.models.vision_transformer.VisionTransformer``.

    Raises:
        ValueError: Bad sizes, ``img_size`` not divisible by ``patch_size``, ``embed_dim``
            not divisible by ``num_heads``, or an unknown keyword argument.
    """
    check_entrypoint_extras(vit_small_32, pretrained, kwargs)
    check_init_scale(init_scale)
    for arg, value in [
        ("num_classes", num_classes),
        ("in_chans", in_chans),
        ("img_size", img_size),
        ("patch_size", patch_size),
        ("embed_dim", embed_dim),
        ("depth", depth),
        ("num_heads", num_heads),
    ]:
        check_int(arg, value)
    drop_rate = check_prob("drop_rate", drop_rate)
    if img_size % patch_size:
        raise ValueError(
            f"img_size must be a multiple of patch_size={patch_size}, got img_size={img_size}"
        )
    if embed_dim % num_heads:
        raise ValueError(
            f"embed_dim must be a multiple of num_heads={num_heads}, got embed_dim={embed_dim}"
        )
    model = VisionTransformer(
        img_size=img_size,
        patch_size=patch_size,
        in_chans=in_chans,
        num_classes=num_classes,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=num_heads,
        mlp_ratio=4.0,
        drop_rate=drop_rate,
        pos_drop_rate=drop_rate,
        proj_drop_rate=drop_rate,
    )
    return scale_init_(model, init_scale)
