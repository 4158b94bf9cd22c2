"""Cross-attention fusion baseline: image and table tokens attend to each other (this project's design).

The paper cites MCAD (Zhang J. et al. 2023) for this row of Table 1. No code of MCAD exists
(and it fuses sMRI, PET and CSF with its own encoders), and the released CITab code has no
cross-attention baseline, so this module is our own minimal design on the shared parts: the ResNet
map as image tokens, the position-bound tabular tokens of the transformer baseline, and two
bidirectional cross-attention blocks (docs/baselines.md 5). It is not CITab's Table 2 ablation
"replace with cross-attention" (model/fusion.py), which keeps CITab's tabular encoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar, NamedTuple

import torch
from torch import nn

from model.baselines.common import config_dict
from model.baselines.tabular_embedding import TabularEmbedding
from model.fusion import image_tokens
from model.heads import classifier
from model.layers import CrossAttention, FeedForward, init_transformer_weights, token_padding
from model.resnet3d import ResNet3D
from model.table_spec import TableSpec

__all__ = ["AttentionMaps", "BidirectionalCrossBlock", "CrossAttentionFusion", "MaskedCrossAttention"]

MLP_RATIO = 4


class AttentionMaps(NamedTuple):
    """Softmax attention weights of one block.

    Attributes:
        tabular_to_image: [B, heads, C+1, N_img], tabular queries (CLS first) over image keys.
        image_to_tabular: [B, heads, N_img, C+1], image queries over tabular keys (missing
            columns get weight 0).
    """

    tabular_to_image: torch.Tensor
    image_to_tabular: torch.Tensor


class MaskedCrossAttention(CrossAttention):
    """Cross-attention (query bias, keys/values without bias, as CITab's) with hidden context keys.

    Attention is computed explicitly (not with SDPA) so the weights can be returned; the matrices
    are small (C+1 tabular tokens).

    Args:
        dim: token width D (divisible by ``num_heads``).
        num_heads: attention heads.
    """

    def forward(  # type: ignore[override]
        self, x: torch.Tensor, context: torch.Tensor, context_padding: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """x [B, L, D] attends to context [B, M, D]; context_padding bool [B, M] (True = hidden key).

        Every query must keep at least one visible key. Returns (output [B, L, D], weights [B, heads, L, M]).
        """
        batch, length, dim = x.shape
        head_dim = dim // self.num_heads
        query = self.q(x).reshape(batch, length, self.num_heads, head_dim).transpose(1, 2)
        kv = self.kv(context).reshape(batch, context.shape[1], 2, self.num_heads, head_dim)
        key, value = kv.permute(2, 0, 3, 1, 4)  # each [B, heads, M, head_dim]
        scores = (query @ key.transpose(-2, -1)).float() / math.sqrt(head_dim)
        if context_padding is not None:
            scores = scores.masked_fill(context_padding[:, None, None, :], float("-inf"))
        weights = scores.softmax(dim=-1).to(value.dtype)
        out = (weights @ value).transpose(1, 2).reshape(batch, length, dim)
        return self.proj(out), weights


class BidirectionalCrossBlock(nn.Module):
    """Pre-norm block: tabular <- image and image <- tabular cross-attention, then an MLP per stream.

    Both cross-attentions read the block's input streams (layer-normalised), so neither direction
    goes first; each stream then gets its residual update and its own GELU MLP D -> 4D -> D.

    Args:
        dim: token width D.
        num_heads: attention heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.tabular_norm = nn.LayerNorm(dim)
        self.image_norm = nn.LayerNorm(dim)
        self.tabular_from_image = MaskedCrossAttention(dim, num_heads)
        self.image_from_tabular = MaskedCrossAttention(dim, num_heads)
        self.tabular_mlp_norm = nn.LayerNorm(dim)
        self.tabular_mlp = FeedForward(dim, MLP_RATIO * dim)
        self.image_mlp_norm = nn.LayerNorm(dim)
        self.image_mlp = FeedForward(dim, MLP_RATIO * dim)

    def forward(
        self, tabular: torch.Tensor, image: torch.Tensor, tabular_padding: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, AttentionMaps]:
        """tabular [B, C+1, D], image [B, N_img, D], tabular_padding bool [B, C+1] (True = missing column).

        Returns the updated streams and the block's attention maps.
        """
        tabular_in, image_in = self.tabular_norm(tabular), self.image_norm(image)
        tabular_update, tabular_to_image = self.tabular_from_image(tabular_in, image_in)
        image_update, image_to_tabular = self.image_from_tabular(image_in, tabular_in, tabular_padding)
        tabular = tabular + tabular_update
        image = image + image_update
        tabular = tabular + self.tabular_mlp(self.tabular_mlp_norm(tabular))
        image = image + self.image_mlp(self.image_mlp_norm(image))
        return tabular, image, AttentionMaps(tabular_to_image, image_to_tabular)


class CrossAttentionFusion(nn.Module):
    """3D ResNet + tabular tokens + bidirectional cross-attention blocks + linear classifier (our design).

    * image tokens: the ResNet map [B, C_img, x, y, z] flattened (raster order, no position
      embedding) to [B, N_img, C_img], then Linear(C_img, D) + LayerNorm;
    * tabular tokens: :class:`TabularEmbedding` [B, C+1, D] (CLS first; missing cells are [MASK]),
      without transformer layers of their own;
    * ``num_blocks`` :class:`BidirectionalCrossBlock`; image queries never see a missing column;
    * a final LayerNorm per stream, then tabular CLS ‖ mean image token [B, 2D] -> Linear(2D, num_classes).

    For the paper shape N_img = 10 * 7 * 6 = 420. Init: transformer parts (projection, blocks,
    embeddings) N(0, 0.02^2) with zero biases as CITab's; trunk as CITab's; classifier PyTorch default.

    Args:
        table: the cohort's columns (order, cardinalities).
        resnet_depth: 10, 18, 34 or 50.
        resnet_widths: the 4 ResNet stage widths.
        in_channels: image channels.
        embed_dim: token width D.
        num_heads: attention heads (must divide D).
        num_blocks: bidirectional blocks.
        num_classes: classifier outputs.

    Inputs of :meth:`classify` (``input_names``): image float [B, in_channels, X, Y, Z], values
    float [B, C], missing bool [B, C] (True = missing; the cell's value is ignored).
    """

    input_names: ClassVar[tuple[str, ...]] = ("image", "values", "missing")
    stage: ClassVar[str] = "finetune"

    def __init__(
        self,
        table: TableSpec,
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        embed_dim: int = 512,
        num_heads: int = 8,
        num_blocks: int = 2,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.config = config_dict(resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
                                  in_channels=in_channels, embed_dim=embed_dim, num_heads=num_heads,
                                  num_blocks=num_blocks, num_classes=num_classes)
        self.table = table
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        self.image_proj = nn.Linear(self.image_encoder.out_channels, embed_dim)
        self.image_norm = nn.LayerNorm(embed_dim)
        self.tabular_embedding = TabularEmbedding(table, embed_dim)
        self.blocks = nn.ModuleList(BidirectionalCrossBlock(embed_dim, num_heads) for _ in range(num_blocks))
        self.tabular_out_norm = nn.LayerNorm(embed_dim)
        self.image_out_norm = nn.LayerNorm(embed_dim)
        for module in (self.image_proj, self.image_norm, self.blocks, self.tabular_out_norm, self.image_out_norm):
            init_transformer_weights(module)
        self.classifier = classifier(2 * embed_dim, num_classes)

    def classify(
        self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor, return_attention: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, list[AttentionMaps]]:
        """Class logits.

        Args:
            image: float [B, in_channels, X, Y, Z].
            values: float [B, C].
            missing: bool [B, C], True = missing.
            return_attention: also return each block's :class:`AttentionMaps`.

        Returns:
            logits [B, num_classes], or (logits, list over blocks of AttentionMaps).
        """
        image_stream = self.image_norm(self.image_proj(image_tokens(self.image_encoder(image))))
        tabular_stream = self.tabular_embedding(values, missing).to(image_stream.dtype)
        tabular_padding = token_padding(missing.bool())
        maps = []
        for block in self.blocks:
            tabular_stream, image_stream, block_maps = block(tabular_stream, image_stream, tabular_padding)
            maps.append(block_maps)
        pooled = torch.cat(
            [self.tabular_out_norm(tabular_stream)[:, 0], self.image_out_norm(image_stream).mean(dim=1)], dim=1,
        )
        logits = self.classifier(pooled)
        return (logits, maps) if return_attention else logits

    forward = classify
