"""A small causal transformer language model, registered with timm as ``lm_transformer``.

GPT-style decoder (Radford et al. 2019): token and learned position embeddings, ``depth``
pre-norm blocks of causal multi-head self-attention and a GELU MLP (ratio ``mlp_ratio``),
a final LayerNorm and a linear read-out. It reads a window of token ids (B, T) and returns
the logits of the token that follows the window, (B, vocab) from the last position, so the
classification loss, the training loop and every curvature tool apply unchanged (see
``landscape.data.wikitext``). Ids arrive as float32 (the data sets' input dtype), whole
numbers in ``[0, vocab)``.

Attention is written out (scores, mask, softmax) rather than through a fused kernel, so
double backward (Hessian-vector products) works on every device. Initialisation follows
the package rule (``landscape.models._layers``): Linear weights N(0, gain**2 / fan_in) with
gain sqrt(2) before the GELU and 1 elsewhere, zero biases, LayerNorm at (1, 0); token and
position embeddings N(0, 1). ``init_scale`` multiplies the Linear weights (not the
embeddings). Parameter count with vocabulary V, width D, context T, L blocks, MLP ratio r::

    V*D + T*D  (embeddings)  +  L * ((4 + 2r)*D*D + (9 + r)*D)  (blocks)  +  2*D + D*V + V
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from ._layers import check_int, check_prob, he_normal_
from ._registry import check_entrypoint_extras, register
from .init_scale import check_init_scale, scale_init_

__all__ = ["lm_transformer", "CausalLM"]


class _CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, num_heads: int, drop_rate: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, h: Tensor) -> Tensor:
        b, t, d = h.shape
        q, k, v = self.qkv(h).view(b, t, 3, self.num_heads, d // self.num_heads).permute(2, 0, 3, 1, 4)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.num_heads)  # (B, heads, T, T)
        future = torch.ones(t, t, dtype=torch.bool, device=h.device).triu(1)
        weights = self.drop(scores.masked_fill(future, float("-inf")).softmax(dim=-1))
        return self.drop(self.proj((weights @ v).transpose(1, 2).reshape(b, t, d)))


class _Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: int, drop_rate: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = _CausalSelfAttention(dim, num_heads, drop_rate)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, mlp_ratio * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(mlp_ratio * dim, dim)
        self.drop = nn.Dropout(drop_rate)

    def forward(self, h: Tensor) -> Tensor:
        h = h + self.attn(self.norm1(h))
        return h + self.drop(self.fc2(self.act(self.fc1(self.norm2(h)))))


class CausalLM(nn.Module):
    """Decoder-only transformer: ids (B, T) -> next-token logits (B, vocab)."""

    def __init__(self, vocab: int, context: int, embed_dim: int, depth: int, num_heads: int,
                 mlp_ratio: int, drop_rate: float) -> None:
        super().__init__()
        self.vocab, self.context = vocab, context
        self.tok_embed = nn.Embedding(vocab, embed_dim)
        self.pos_embed = nn.Parameter(torch.randn(context, embed_dim))
        self.drop = nn.Dropout(drop_rate)
        self.blocks = nn.ModuleList(_Block(embed_dim, num_heads, mlp_ratio, drop_rate) for _ in range(depth))
        self.norm = nn.LayerNorm(embed_dim)
        self.head = nn.Linear(embed_dim, vocab)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                he_normal_(module, math.sqrt(2.0) if any(module is b.fc1 for b in self.blocks) else 1.0)

    def token_ids(self, x: Tensor) -> Tensor:
        """int64 ids (B, T) from the input (float ids are truncated; no data-dependent check, so
        the model runs under ``torch.func.vmap`` for per-example gradients)."""
        if x.ndim != 2 or x.shape[1] > self.context:
            raise ValueError(f"expected token ids (B, T) with T <= {self.context}, got {tuple(x.shape)}")
        return x.long()

    def forward_features(self, x: Tensor) -> Tensor:
        """Final-norm hidden states (B, T, D); position t depends on tokens 0..t only."""
        ids = self.token_ids(x)
        h = self.drop(self.tok_embed(ids) + self.pos_embed[: ids.shape[1]])
        for block in self.blocks:
            h = block(h)
        return self.norm(h)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.forward_features(x)[:, -1])


@register
def lm_transformer(
    pretrained: bool = False,
    *,
    num_classes: int = 10,
    in_chans: int = 1,
    img_size: int = 32,
    in_features: int | None = None,
    embed_dim: int = 128,
    depth: int = 2,
    num_heads: int = 4,
    mlp_ratio: int = 4,
    drop_rate: float = 0.0,
    init_scale: float = 1.0,
    **kwargs: Any,
) -> CausalLM:
    """Small causal transformer LM over a vocabulary of ``num_classes`` tokens.

    Args:
        pretrained: Must be False (no weights).
        num_classes: Vocabulary size V (the next-token classes).
        in_chans: Accepted for the factory's uniform call; token inputs have no channels.
        img_size: Context length when ``in_features`` is not given (the factory's size argument).
        in_features: Context length T, the tokens per input window (the train stage passes
            the data's row length here).
        embed_dim: Width D; a multiple of ``num_heads``.
        depth: Transformer blocks L.
        num_heads: Attention heads.
        mlp_ratio: Hidden width of the MLP over D.
        drop_rate: Dropout on embeddings, attention weights and residual branches, in [0, 1).
        init_scale: Multiplies every Linear weight after initialisation.
        **kwargs: Only timm's bookkeeping arguments (unset); anything else is an error.
    """
    check_entrypoint_extras(lm_transformer, pretrained, kwargs)
    check_init_scale(init_scale)
    context = img_size if in_features is None else in_features
    for arg, value in [("num_classes", num_classes), ("in_chans", in_chans), ("context (in_features)", context),
                       ("embed_dim", embed_dim), ("depth", depth), ("num_heads", num_heads), ("mlp_ratio", mlp_ratio)]:
        check_int(arg, value)
    drop_rate = check_prob("drop_rate", drop_rate)
    if embed_dim % num_heads:
        raise ValueError(f"embed_dim must be a multiple of num_heads={num_heads}, got embed_dim={embed_dim}")
    model = CausalLM(num_classes, context, embed_dim, depth, num_heads, mlp_ratio, drop_rate)
    return scale_init_(model, init_scale)
