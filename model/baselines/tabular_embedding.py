"""Position-bound tabular tokens (TIP style): one token per column plus a CLS, for a fixed table.

Unlike CITab's SAT embedding (model/tabular.py), a column is identified by its position in the
table through a learned column embedding, so these tokens only make sense for the table they were
built for (docs/baselines.md 2). Used by the tabular transformer and by the cross-attention fusion
baseline.
"""

from __future__ import annotations

import torch
from torch import nn

from model.layers import init_transformer_weights
from model.table_spec import TableSpec

__all__ = ["TabularEmbedding"]


class TabularEmbedding(nn.Module):
    """Cell tokens of a fixed table: value embedding, [MASK] for missing cells, CLS, column embedding, LayerNorm.

    Token of column j (before the column embedding):

    * categorical (cardinality K_j > 0): row ``code_j + offset_j`` of one shared
      ``Embedding(sum K, D)``, offset_j = sum of the cardinalities of the categorical columns before j;
    * continuous: one ``Linear(1, D)`` shared by all continuous columns;
    * missing cell (either kind): the learned [MASK] vector, whatever the cell holds.

    A learned CLS vector is prepended (position 0), the learned column embedding
    ``Embedding(C+1, D)`` is added by position, and every token is layer-normalised.

    Args:
        table: the cohort's columns (order and cardinalities).
        dim: token width D.
    """

    def __init__(self, table: TableSpec, dim: int) -> None:
        super().__init__()
        self.num_columns = table.num_columns
        cardinalities = torch.tensor(table.cardinalities)
        is_categorical = cardinalities > 0
        # offset_j of categorical column j in the shared table (exclusive cumulative sum)
        offsets = torch.cumsum(cardinalities, 0) - cardinalities
        self.register_buffer("is_categorical", is_categorical, persistent=False)
        self.register_buffer("category_offsets", offsets, persistent=False)
        self.register_buffer("cardinalities", cardinalities, persistent=False)
        # an all-continuous table has no categorical embedding at all (no parameters)
        self.categorical_embedding = nn.Embedding(table.num_categories, dim) if table.num_categories else None
        self.continuous_proj = nn.Linear(1, dim)
        self.mask_token = nn.Parameter(torch.empty(dim))
        self.cls_token = nn.Parameter(torch.empty(dim))
        self.column_embedding = nn.Embedding(table.num_columns + 1, dim)
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_weights(self)  # Linear N(0, 0.02^2), bias 0; LayerNorm 1 / 0
        for embedding in (self.categorical_embedding, self.column_embedding):
            if embedding is not None:
                nn.init.normal_(embedding.weight, std=0.02)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def _check(self, values: torch.Tensor, missing: torch.Tensor) -> None:
        if values.ndim != 2 or values.shape[1] != self.num_columns or missing.shape != values.shape:
            raise ValueError(
                f"values {tuple(values.shape)} and missing {tuple(missing.shape)} must both be "
                f"[B, {self.num_columns}] (the table this model was built for)"
            )
        if self.categorical_embedding is None or values.is_meta or not values.numel():
            return
        # checked here because an out-of-range index on CUDA is an opaque device assert
        codes = values[:, self.is_categorical]
        present = ~missing[:, self.is_categorical]
        limit = self.cardinalities[self.is_categorical].expand_as(codes)
        bad = present & ((codes < 0) | (codes >= limit) | (codes != codes.round()))
        if bool(bad.any()):
            raise ValueError("categorical cells must hold integer codes 0 .. K-1 of their column (or be missing)")

    def forward(self, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """Tokens [B, C+1, D] (CLS first) of values float [B, C] and missing bool [B, C] (True = missing)."""
        missing = missing.bool()
        self._check(values, missing)
        tokens = self.continuous_proj(values.unsqueeze(-1).to(self.continuous_proj.weight.dtype))
        if self.categorical_embedding is not None:
            # continuous and missing cells look up row 0; torch.where discards those lookups
            usable = self.is_categorical & ~missing
            index = torch.where(usable, values.round().long() + self.category_offsets, 0)
            categorical = self.categorical_embedding(index).to(tokens.dtype)
            tokens = torch.where(self.is_categorical[:, None], categorical, tokens)
        tokens = torch.where(missing.unsqueeze(-1), self.mask_token.to(tokens.dtype), tokens)
        cls = self.cls_token.to(tokens.dtype).expand(tokens.shape[0], 1, -1)
        tokens = torch.cat([cls, tokens], dim=1) + self.column_embedding.weight.to(tokens.dtype)
        return self.norm(tokens)
