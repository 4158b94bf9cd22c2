"""Tabular-only baseline: a position-bound tabular transformer (the TIP tabular encoder) + linear head.

The released CITab code has no tabular transformer (its tabular-only path builds an MLP); the
transformer of the comparison is the tabular encoder of TIP, which the CITab codebase carries
(docs/baselines.md 2).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import nn

from model.baselines.common import config_dict
from model.baselines.tabular_embedding import TabularEmbedding
from model.heads import classifier
from model.layers import attention_mask, init_transformer_weights, token_padding
from model.table_spec import TableSpec
from model.tabular import TabularLayer

__all__ = ["TabularTransformer", "TabularTransformerEncoder"]


class TabularTransformerEncoder(nn.Module):
    """:class:`TabularEmbedding` followed by ``num_layers`` pre-norm transformer layers, no final norm.

    Layers: x + MSA(LN(x)) (qkv without bias), then x + MLP(LN(x)) with MLP D -> 4D -> D (GELU).
    Attention hides a missing column's token from every other token (its own query still sees it,
    so no attention row is empty); the CLS is never hidden.

    Args:
        table: the cohort's columns.
        embed_dim: token width D.
        num_layers: transformer layers.
        num_heads: attention heads (must divide D).
    """

    def __init__(self, table: TableSpec, embed_dim: int = 512, num_layers: int = 4, num_heads: int = 8) -> None:
        super().__init__()
        self.embedding = TabularEmbedding(table, embed_dim)
        self.layers = nn.ModuleList(
            TabularLayer(embed_dim, num_heads, num_experts=None, hidden=4 * embed_dim) for _ in range(num_layers)
        )
        init_transformer_weights(self.layers)

    def forward(self, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """values float [B, C], missing bool [B, C] -> tokens [B, C+1, D] (CLS at index 0)."""
        x = self.embedding(values, missing)
        mask = attention_mask(token_padding(missing.bool()))
        for layer in self.layers:
            x, _ = layer(x, mask)
        return x


class TabularTransformer(nn.Module):
    """Tabular-only classifier: :class:`TabularTransformerEncoder` and ``Linear(D, num_classes)`` on the CLS.

    Paper configuration (D 512, 4 layers, 8 heads): 12,606,464 + 512 (C + 1) + 512 sum(K) + 513 classes
    parameters; 12,615,683 for the 14 ADNI columns counted as continuous.

    Args:
        table: the cohort's columns (order, cardinalities).
        embed_dim: token width D.
        num_layers: transformer layers.
        num_heads: attention heads.
        num_classes: classifier outputs.

    Inputs of :meth:`classify` (``input_names``): values float [B, C] (z-scored continuous cells,
    integer codes in categorical cells), missing bool [B, C] (True = missing; the cell's value is ignored).
    """

    input_names: ClassVar[tuple[str, ...]] = ("values", "missing")
    stage: ClassVar[str] = "finetune"

    def __init__(
        self, table: TableSpec, embed_dim: int = 512, num_layers: int = 4, num_heads: int = 8, num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.config = config_dict(embed_dim=embed_dim, num_layers=num_layers, num_heads=num_heads,
                                  num_classes=num_classes)
        self.table = table
        self.encoder = TabularTransformerEncoder(table, embed_dim, num_layers, num_heads)
        self.classifier = classifier(embed_dim, num_classes)

    def classify(self, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """values float [B, C], missing bool [B, C] -> logits [B, num_classes]."""
        return self.classifier(self.encoder(values, missing)[:, 0])

    forward = classify
