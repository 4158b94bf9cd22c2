"""Multimodal fusion Φ_c: unified self-attention over [tabular; image] tokens, or cross-attention.

Image tokens are the flattened last ResNet map, projected to D and layer-normalised, in raster
order without a position embedding (docs/model.md 2.4, 4). Index 0 of the output is the tabular CLS,
which is the fused representation.
"""

from __future__ import annotations

import torch
from torch import nn

from model.layers import (
    CrossAttention,
    FeedForward,
    SelfAttention,
    attention_mask,
    init_transformer_weights,
    token_padding,
)

__all__ = ["CrossAttentionFusion", "FUSIONS", "UnifiedFusion"]


def image_tokens(feature_map: torch.Tensor) -> torch.Tensor:
    """Flatten a map [B, C_img, x, y, z] to tokens [B, x*y*z, C_img] (first spatial axis slowest)."""
    return feature_map.flatten(2).transpose(1, 2)


class FusionBlock(nn.Module):
    """Pre-norm block: self-attention, optional cross-attention to image tokens, then an MLP.

    Args:
        dim: token width D.
        num_heads: attention heads.
        mlp_hidden: hidden width of the MLP.
        cross_attention: add a pre-norm cross-attention sub-layer (queries = sequence tokens,
            keys/values = image tokens).
    """

    def __init__(self, dim: int, num_heads: int, mlp_hidden: int, cross_attention: bool = False) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.cross_norm = nn.LayerNorm(dim) if cross_attention else None
        self.cross_attn = CrossAttention(dim, num_heads) if cross_attention else None
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, mlp_hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, context: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, L, D], mask bool [B, 1, L, L] or None, context [B, M, D] (cross-attention only)."""
        x = x + self.attn(self.norm1(x), mask)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.cross_norm(x), context)
        return x + self.mlp(self.norm2(x))


class _Fusion(nn.Module):
    """Shared parts: the image token projection, the blocks and the final LayerNorm."""

    def __init__(
        self, image_channels: int, dim: int, num_layers: int, num_heads: int, mlp_ratio: float,
        use_mask: bool, cross_attention: bool,
    ) -> None:
        super().__init__()
        self.use_mask = use_mask
        self.image_proj = nn.Linear(image_channels, dim)
        self.image_norm = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.blocks = nn.ModuleList(FusionBlock(dim, num_heads, hidden, cross_attention) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        init_transformer_weights(self)

    def project_image(self, feature_map: torch.Tensor) -> torch.Tensor:
        """ResNet map [B, C_img, x, y, z] -> image tokens [B, x*y*z, D]."""
        return self.image_norm(self.image_proj(image_tokens(feature_map)))


class UnifiedFusion(_Fusion):
    """Unified self-attention over the concatenation [CLS_t, tab_1..tab_C, img_1..img_M] (the paper's Φ_c).

    Args:
        image_channels: channels of the ResNet map (2048 for ResNet-50).
        dim: token width D (equal to the tabular width; tabular tokens enter unchanged).
        num_layers: number of pre-norm blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        use_mask: hide padded tabular keys (same pattern as the tabular encoder).
    """

    def __init__(
        self, image_channels: int = 2048, dim: int = 512, num_layers: int = 4, num_heads: int = 8,
        mlp_ratio: float = 4.0, use_mask: bool = True,
    ) -> None:
        super().__init__(image_channels, dim, num_layers, num_heads, mlp_ratio, use_mask, cross_attention=False)

    def forward(self, tabular: torch.Tensor, feature_map: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """Fuse.

        Args:
            tabular: [B, C+1, D] tabular encoder output (CLS first).
            feature_map: [B, C_img, x, y, z] ResNet map.
            pad_mask: bool [B, C], True = padded column; None when nothing is padded.

        Returns:
            [B, C+1+x*y*z, D] after the final LayerNorm; index 0 is the fused CLS.
        """
        image = self.project_image(feature_map)
        x = torch.cat([tabular, image.to(tabular.dtype)], dim=1)
        mask = attention_mask(token_padding(pad_mask, extra_tokens=image.shape[1])) if self.use_mask else None
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)


class CrossAttentionFusion(_Fusion):
    """Ablation "Replace with cross-attention" (TIP style, docs/model.md 4.2): tabular tokens attend to image tokens.

    Each block: masked self-attention over the tabular tokens, cross-attention from them to the
    image tokens, MLP. Only tabular tokens are output.

    Args:
        image_channels: channels of the ResNet map.
        dim: token width D.
        num_layers: number of blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width as a multiple of D.
        use_mask: hide padded tabular keys in the self-attention.
    """

    def __init__(
        self, image_channels: int = 2048, dim: int = 512, num_layers: int = 4, num_heads: int = 8,
        mlp_ratio: float = 4.0, use_mask: bool = True,
    ) -> None:
        super().__init__(image_channels, dim, num_layers, num_heads, mlp_ratio, use_mask, cross_attention=True)

    def forward(self, tabular: torch.Tensor, feature_map: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """tabular [B, C+1, D], feature_map [B, C_img, x, y, z], pad_mask [B, C] or None -> [B, C+1, D]."""
        image = self.project_image(feature_map).to(tabular.dtype)
        mask = attention_mask(token_padding(pad_mask)) if self.use_mask else None
        x = tabular
        for block in self.blocks:
            x = block(x, mask, context=image)
        return self.norm(x)


FUSIONS: dict[str, type[_Fusion]] = {"unified": UnifiedFusion, "cross": CrossAttentionFusion}
