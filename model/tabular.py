"""SAT tabular encoder: semantic-aware tabular embedding and P-MoLin transformer layers.

Column identity reaches the model only through a frozen header vector (a text-encoder embedding
of the column's header), multiplied element-wise with the cell's value embedding; there is no
column position embedding, so a row's column order does not matter (docs/model.md 1.5, 3).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from model.layers import FeedForward, SelfAttention, attention_mask, init_transformer_weights, token_padding

__all__ = ["PMoLin", "SATEncoder", "TabularLayer"]


class PMoLin(nn.Module):
    """Prototype-guided mixture of linear experts (dense soft mixture, docs/model.md 3.3).

    Each token u is routed by g = softmax(u P^T) over E learned prototypes P [E, D]; the output is
    sum_e g_e * FFN_e(u) with FFN_e = Linear(D, H) -> GELU -> Linear(H, D). All experts run for
    every token, as one batched einsum over the stacked expert weights.

    Args:
        dim: token width D.
        num_experts: number of experts and prototypes E.
        hidden: hidden width H of every expert (the paper: 1.75 * D = 896).
    """

    def __init__(self, dim: int, num_experts: int, hidden: int) -> None:
        super().__init__()
        if num_experts < 1:
            raise ValueError(f"num_experts must be at least 1, got {num_experts}")
        self.prototypes = nn.Parameter(torch.empty(num_experts, dim))
        self.w1 = nn.Parameter(torch.empty(num_experts, dim, hidden))
        self.b1 = nn.Parameter(torch.empty(num_experts, hidden))
        self.w2 = nn.Parameter(torch.empty(num_experts, hidden, dim))
        self.b2 = nn.Parameter(torch.empty(num_experts, dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        # Experts as Linear layers of the official code (N(0, 0.02^2), zero bias); prototypes
        # Xavier-uniform on the [E, D] matrix.
        nn.init.xavier_uniform_(self.prototypes)
        for weight in (self.w1, self.w2):
            nn.init.normal_(weight, std=0.02)
        for bias in (self.b1, self.b2):
            nn.init.zeros_(bias)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, L, D] -> (mixture output [B, L, D], routing weights [B, L, E])."""
        routing = torch.softmax(tokens @ self.prototypes.t(), dim=-1)
        hidden = F.gelu(torch.einsum("bld,edh->bleh", tokens, self.w1) + self.b1)
        # weighting the hidden units by g before the second projection mixes the experts without
        # materialising E full-width outputs per token
        mixed = torch.einsum("bleh,ehd->bld", hidden * routing.unsqueeze(-1), self.w2)
        return mixed + routing @ self.b2, routing


class TabularLayer(nn.Module):
    """Pre-norm transformer layer: x + MSA(LN(x)), then h + FFN(LN(h)) with FFN = P-MoLin or MLP.

    Args:
        dim: token width D.
        num_heads: attention heads.
        num_experts: E for P-MoLin; ``None`` uses a plain GELU MLP of width ``hidden`` instead.
        hidden: hidden width of each expert (P-MoLin) or of the plain MLP.
    """

    def __init__(self, dim: int, num_heads: int, num_experts: int | None, hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.ffn: nn.Module = FeedForward(dim, hidden) if num_experts is None else PMoLin(dim, num_experts, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """x [B, L, D], mask bool [B, 1, L, L] or None -> (x [B, L, D], routing [B, L, E] or None)."""
        x = x + self.attn(self.norm1(x), mask)
        if isinstance(self.ffn, PMoLin):
            update, routing = self.ffn(self.norm2(x))
            return x + update, routing
        return x + self.ffn(self.norm2(x)), None


class SATEncoder(nn.Module):
    """Semantic-aware tabular encoder Φ_t (docs/model.md 1.5 and 3).

    Token of column j: (value_proj(v_j), or the padding token where padded) * header_adapter(h_j),
    with h_j the frozen header vector of the column (zero where padded). A CLS token is prepended,
    all tokens are layer-normalised, then ``num_layers`` masked pre-norm layers run. There is no
    final LayerNorm.

    Args:
        header_bank: float [N, D_h], frozen header vectors; row i belongs to column id i. Kept as a
            non-persistent buffer (it comes from the header stage's file, not from checkpoints).
        dim: token width D.
        num_layers: number of transformer layers.
        num_heads: attention heads per layer.
        num_experts: E for P-MoLin in every layer; ``None`` = plain MLP (ablation "w/o P-MoLin").
        hidden: hidden width of each expert, or of the plain MLP.
        use_header: multiply by the adapted header vector; False = ablation "w/o header".
        use_mask: mask padded keys in attention; False = ablation "w/o mask attention" (padded
            cells are still replaced by the padding token).
    """

    def __init__(
        self,
        header_bank: torch.Tensor,
        dim: int = 512,
        num_layers: int = 4,
        num_heads: int = 8,
        num_experts: int | None = 5,
        hidden: int = 896,
        use_header: bool = True,
        use_mask: bool = True,
    ) -> None:
        super().__init__()
        if header_bank.ndim != 2 or header_bank.shape[0] < 1:
            raise ValueError(f"header_bank must be a [N, D_h] tensor with N >= 1, got shape {tuple(header_bank.shape)}")
        self.register_buffer("header_bank", header_bank.detach().float().clone(), persistent=False)
        self.use_header = use_header
        self.use_mask = use_mask
        self.value_proj = nn.Linear(1, dim)
        self.header_adapter = nn.Linear(header_bank.shape[1], dim) if use_header else None
        self.cls_token = nn.Parameter(torch.empty(dim))
        self.pad_token = nn.Parameter(torch.empty(dim))
        self.norm = nn.LayerNorm(dim)
        self.layers = nn.ModuleList(TabularLayer(dim, num_heads, num_experts, hidden) for _ in range(num_layers))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        init_transformer_weights(self)
        for layer in self.layers:
            if isinstance(layer.ffn, PMoLin):
                layer.ffn.reset_parameters()
        # as timm's trunc_normal_(std=0.02) in the official code: the cut is at +-2 absolute, so in
        # effect a plain N(0, 0.02^2)
        nn.init.trunc_normal_(self.cls_token, std=0.02)
        nn.init.trunc_normal_(self.pad_token, std=0.02)

    def embed(self, values: torch.Tensor, col_ids: torch.Tensor, pad_mask: torch.Tensor | None) -> torch.Tensor:
        """Token embeddings [B, C+1, D] (CLS first) of values [B, C], col_ids [B, C], pad_mask [B, C]."""
        if values.shape != col_ids.shape:
            raise ValueError(
                f"values {tuple(values.shape)} and col_ids {tuple(col_ids.shape)} must have the same shape [B, C]"
            )
        tokens = self.value_proj(values.unsqueeze(-1).to(self.value_proj.weight.dtype))
        if pad_mask is not None:
            tokens = torch.where(pad_mask.unsqueeze(-1), self.pad_token, tokens)
        if self.header_adapter is not None:
            # checked here because an out-of-range index on CUDA is an opaque device assert
            checkable = col_ids.numel() and not col_ids.is_meta
            if checkable and (col_ids.min() < 0 or col_ids.max() >= self.header_bank.shape[0]):
                raise IndexError(
                    f"col_ids must lie in [0, {self.header_bank.shape[0]}) (rows of the header bank), "
                    f"got range [{int(col_ids.min())}, {int(col_ids.max())}]"
                )
            headers = self.header_bank[col_ids]
            if pad_mask is not None:
                headers = headers.masked_fill(pad_mask.unsqueeze(-1), 0.0)
            tokens = tokens * self.header_adapter(headers)
        cls = self.cls_token.expand(tokens.shape[0], 1, -1)
        return self.norm(torch.cat([cls, tokens], dim=1))

    def forward(
        self, values: torch.Tensor, col_ids: torch.Tensor, pad_mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Encode rows.

        Args:
            values: float [B, C], standardised cell values.
            col_ids: long [B, C], header-bank row of each cell's column.
            pad_mask: bool [B, C], True where the cell is padding; None when nothing is padded.

        Returns:
            tokens [B, C+1, D] (CLS at index 0) and the routing weights of each P-MoLin layer,
            a list of [B, C+1, E] (empty for the plain-MLP variant).
        """
        x = self.embed(values, col_ids, pad_mask)
        mask = attention_mask(token_padding(pad_mask)) if self.use_mask else None
        routing = []
        for layer in self.layers:
            x, weights = layer(x, mask)
            if weights is not None:
                routing.append(weights)
        return x, routing

