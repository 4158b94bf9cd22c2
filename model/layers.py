"""Transformer pieces shared by the tabular encoder and the fusion module.

Masking follows the CITab code (docs/model.md 3.2): a padded key is hidden from every query except
itself (the diagonal stays visible so that no attention row is empty). Attention runs through
``torch.nn.functional.scaled_dot_product_attention`` with a boolean "may attend" mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "CrossAttention", "FeedForward", "SelfAttention", "attention_mask", "init_transformer_weights", "token_padding",
]


def attention_mask(token_padding: torch.Tensor | None) -> torch.Tensor | None:
    """Boolean "may attend" mask for SDPA from a per-token padding flag.

    Args:
        token_padding: bool [B, L], True where the token is a padded column (CLS and image tokens
            are False); None when nothing is padded.

    Returns:
        bool [B, 1, L, L] (broadcast over heads): entry [b, 0, i, j] is True when query i may
        attend to key j, i.e. key j is not padded or j == i. None when ``token_padding`` is None.
    """
    if token_padding is None:
        return None
    length = token_padding.shape[1]
    diagonal = torch.eye(length, dtype=torch.bool, device=token_padding.device)
    allowed = ~token_padding[:, None, :] | diagonal[None]
    return allowed[:, None]


def token_padding(pad_mask: torch.Tensor | None, extra_tokens: int = 0) -> torch.Tensor | None:
    """Per-token padding flags [B, 1 + C + extra_tokens] for CLS + columns (+ image tokens, never padded).

    Args:
        pad_mask: bool [B, C], True = padded column; None when nothing is padded.
        extra_tokens: number of always-valid tokens appended after the columns.
    """
    if pad_mask is None:
        return None
    batch = pad_mask.shape[0]
    cls = pad_mask.new_zeros(batch, 1)
    extra = pad_mask.new_zeros(batch, extra_tokens)
    return torch.cat([cls, pad_mask.bool(), extra], dim=1)


def init_transformer_weights(module: nn.Module) -> None:
    """Official-code init for transformer parts: Linear N(0, 0.02^2) with zero bias, LayerNorm 1 / 0."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear):
            nn.init.normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, nn.LayerNorm):
            nn.init.ones_(sub.weight)
            nn.init.zeros_(sub.bias)


class SelfAttention(nn.Module):
    """Multi-head self-attention: qkv projection (without bias unless asked), output projection with bias.

    Args:
        dim: token width D; must be divisible by ``num_heads``.
        num_heads: attention heads (head width D / num_heads, scale its inverse square root).
        qkv_bias: give the qkv projection a bias (timm's ViT blocks, used by the ViTa baseline).
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = False) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, D], mask bool [B, 1, L, L] from :func:`attention_mask` or None -> [B, L, D]."""
        batch, length, dim = x.shape
        qkv = self.qkv(x).reshape(batch, length, 3, self.num_heads, dim // self.num_heads)
        query, key, value = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, L, head_dim]
        out = F.scaled_dot_product_attention(query, key, value, attn_mask=mask)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class CrossAttention(nn.Module):
    """Multi-head cross-attention (TIP style): queries from x, keys and values from a context.

    Args:
        dim: token width D of both x and the context; divisible by ``num_heads``.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"embed_dim ({dim}) must be divisible by num_heads ({num_heads})")
        self.num_heads = num_heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim, bias=False)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] attends to context [B, M, D] (every context token valid) -> [B, L, D]."""
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        query = self.q(x).reshape(batch, length, self.num_heads, head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(batch, context.shape[1], 2, self.num_heads, head_dim)
        key, value = kv.permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(query, key, value)
        return self.proj(out.transpose(1, 2).reshape(batch, length, dim))


class FeedForward(nn.Module):
    """Linear(D, hidden) -> exact GELU -> Linear(hidden, D).

    Args:
        dim: token width D.
        hidden: hidden width.
    """

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))
