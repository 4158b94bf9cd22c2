"""ViTa (Zhang Y. et al. 2025), as this project builds it: CLIP between a 3D ResNet and a tabular ViT.

The original (cardiac cine MRI) pretrains a ViT by masked autoencoding, aligns it with a tabular
ViT by a contrastive loss, and classifies from the image encoder alone. CITab gives neither code nor
settings for ViTa on brain MRI, and Table 1 groups it with the image + table methods. **Our
assumptions** (docs/baselines.md 10): the image encoder is the 3D ResNet every other row uses (no
masked-autoencoder stage, no patch masking), the tabular encoder is ViTa's tabular ViT with a
learned [MASK] vector per column for missing cells, and fine-tuning trains both encoders with a
linear classifier on the two mean-pooled embeddings.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from model.baselines.common import config_dict
from model.heads import ProjectionHead, classifier
from model.layers import FeedForward, SelfAttention
from model.losses import itc_loss
from model.resnet3d import ResNet3D
from model.table_spec import TableSpec
from model.weights import PretrainedEncoders, check_stage, require_stage

__all__ = ["TabularViT", "ViTa", "ViTBlock", "sincos_positions"]

MLP_RATIO = 4


def sincos_positions(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed 1-D sine-cosine codes [num_positions, dim] of positions 0 .. num_positions-1.

    Frequencies 10000^(-i / h) for i < h, h = ceil(dim / 2); a position's code is its sines then its
    cosines. For an odd ``dim`` the code of width dim + 1 loses its last cosine (ViTa's D = 1025).
    """
    half = math.ceil(dim / 2)
    frequencies = 1.0 / 10000 ** (torch.arange(half, dtype=torch.float64) / half)
    angles = torch.arange(num_positions, dtype=torch.float64)[:, None] * frequencies[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)[:, :dim].float()


class ViTBlock(nn.Module):
    """Pre-norm transformer block as timm's ViT: x + MSA(LN(x)) (qkv with bias), then x + MLP(LN(x)).

    Args:
        dim: token width D (divisible by ``num_heads``).
        num_heads: attention heads.
    """

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SelfAttention(dim, num_heads, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = FeedForward(dim, MLP_RATIO * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, D] -> [B, L, D]."""
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TabularViT(nn.Module):
    """ViTa's tabular encoder for one table: a token per column, each column with its own embedding.

    * continuous column j: its own ``Linear(1, D)``; categorical column j: its own ``Embedding(K_j, D)``;
    * a missing cell: column j's learned [MASK] vector (our addition: ViTa's data has no gaps);
    * a learned CLS token first; fixed sine-cosine codes of the column positions 0 .. C-1 added
      (the CLS gets none); ``num_layers`` :class:`ViTBlock`; a final LayerNorm. Every token attends
      to every other one.

    Init as ViTa's: Linear Xavier-uniform with zero bias, LayerNorm 1 / 0, CLS N(0, 0.02^2),
    embeddings PyTorch's N(0, 1); the [MASK] vectors N(0, 0.02^2).

    Args:
        table: the cohort's columns (order, cardinalities).
        dim: token width D (1025 in ViTa).
        num_layers: blocks (2).
        num_heads: attention heads (5; must divide D).
    """

    def __init__(self, table: TableSpec, dim: int = 1025, num_layers: int = 2, num_heads: int = 5) -> None:
        super().__init__()
        self.table = table
        self.column_embeddings = nn.ModuleList(
            nn.Embedding(k, dim) if k else nn.Linear(1, dim) for k in table.cardinalities
        )
        self.mask_tokens = nn.Parameter(torch.empty(table.num_columns, dim))
        self.cls_token = nn.Parameter(torch.empty(dim))
        positions = torch.cat([torch.zeros(1, dim), sincos_positions(table.num_columns, dim)])
        self.register_buffer("positions", positions, persistent=False)  # fixed: not learned, not saved
        self.blocks = nn.ModuleList(ViTBlock(dim, num_heads) for _ in range(num_layers))
        self.norm = nn.LayerNorm(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        nn.init.normal_(self.cls_token, std=0.02)
        nn.init.normal_(self.mask_tokens, std=0.02)

    def forward(self, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """values float [B, C] (codes in categorical cells), missing bool [B, C] -> tokens [B, C+1, D]."""
        missing = missing.bool()
        tokens = []
        for column, (embedding, cardinality) in enumerate(zip(self.column_embeddings, self.table.cardinalities)):
            cells = values[:, column]
            if cardinality:
                codes = torch.where(missing[:, column], 0, cells.round().long())
                if not codes.is_meta and bool(((codes < 0) | (codes >= cardinality)).any()):
                    raise ValueError(f"column {self.table.column_names[column]!r}: categorical codes must be "
                                     f"0 .. {cardinality - 1} (or the cell missing)")
                tokens.append(embedding(codes))
            else:
                tokens.append(embedding(cells.unsqueeze(-1).to(embedding.weight.dtype)))
        x = torch.stack(tokens, dim=1)
        x = torch.where(missing.unsqueeze(-1), self.mask_tokens.to(x.dtype), x)
        x = torch.cat([self.cls_token.to(x.dtype).expand(x.shape[0], 1, -1), x], dim=1) + self.positions.to(x.dtype)
        for block in self.blocks:
            x = block(x)
        return self.norm(x)


class ViTa(PretrainedEncoders, nn.Module):
    """3D ResNet + tabular ViT with CLIP projections (pretraining), or both encoders + a linear classifier.

    * image embedding: the trunk map averaged over all positions [B, C_img] (ViTa averages its image
      tokens);
    * table embedding: the :class:`TabularViT` tokens averaged over all C+1 tokens [B, D_t];
    * pretraining: ``ProjectionHead(C_img, C_img, P)`` and ``ProjectionHead(D_t, D_t, P)``, the
      contrastive loss of :func:`model.losses.itc_loss` (no table corruption in ViTa);
    * fine-tuning (our assumption): ``Linear(C_img + D_t, num_classes)`` on the two embeddings
      concatenated [B, C_img + D_t] (3,073 for the paper configuration).

    Paper configuration with 14 continuous columns: 77,084,449 parameters for pretraining and
    71,452,069 for fine-tuning (trunk 46,155,072 + tabular ViT 25,287,775 + ...).

    Args:
        table: the cohort's columns.
        stage: "pretrain" (projection heads) or "finetune" (classifier).
        resnet_depth: 10, 18, 34 or 50.
        resnet_widths: the 4 ResNet stage widths.
        in_channels: image channels.
        tabular_dim: token width D_t of the tabular ViT (ViTa 1025; not the shared ``embed_dim``).
        tabular_layers: tabular ViT blocks (ViTa 2).
        tabular_heads: tabular ViT heads (ViTa 5; must divide ``tabular_dim``).
        projection_dim: projection width P (128).
        num_classes: classifier outputs.
        temperature: fixed contrastive temperature (0.1).

    Inputs of :meth:`classify` (``input_names``) and :meth:`pretrain_losses`
    (``pretrain_input_names``): image float [B, in_channels, X, Y, Z], values float [B, C],
    missing bool [B, C] (True = missing).
    """

    input_names: ClassVar[tuple[str, ...]] = ("image", "values", "missing")
    pretrain_input_names: ClassVar[tuple[str, ...]] = input_names
    finetune_encoders: ClassVar[tuple[str, ...]] = ("image_encoder", "tabular_encoder")
    pretrain_only_modules: ClassVar[tuple[str, ...]] = ("image_head", "tabular_head")

    def __init__(
        self,
        table: TableSpec,
        stage: str = "pretrain",
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        tabular_dim: int = 1025,
        tabular_layers: int = 2,
        tabular_heads: int = 5,
        projection_dim: int = 128,
        num_classes: int = 3,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.stage = check_stage(stage)
        self.config = config_dict(
            stage=stage, resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
            in_channels=in_channels, tabular_dim=tabular_dim, tabular_layers=tabular_layers,
            tabular_heads=tabular_heads, projection_dim=projection_dim, num_classes=num_classes,
            temperature=temperature,
        )
        self.table = table
        self.temperature = temperature
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        image_channels = self.image_encoder.out_channels
        self.tabular_encoder = TabularViT(table, tabular_dim, tabular_layers, tabular_heads)
        if stage == "pretrain":
            self.image_head = ProjectionHead(image_channels, image_channels, projection_dim)
            self.tabular_head = ProjectionHead(tabular_dim, tabular_dim, projection_dim)
        else:
            self.classifier = classifier(image_channels + tabular_dim, num_classes)

    def embeddings(
        self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(image embedding [B, C_img], table embedding [B, D_t]), each a mean over its tokens."""
        image_embedding = self.image_encoder(image).mean(dim=(2, 3, 4))
        return image_embedding, self.tabular_encoder(values, missing).mean(dim=1).to(image_embedding.dtype)

    def classify(self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """Logits [B, num_classes] from both embeddings concatenated (fine-tuning stage)."""
        require_stage(self, "finetune", "classify")
        return self.classifier(torch.cat(self.embeddings(image, values, missing), dim=1))

    def pretrain_losses(self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor) -> dict[str, torch.Tensor]:
        """The CLIP objective on one batch (pretraining stage; B >= 2).

        Returns:
            "loss" (equal to "itc"), "itc" scalar, "itc_logits" [B, B] (rows images, columns rows).
        """
        require_stage(self, "pretrain", "pretrain_losses")
        image_embedding, table_embedding = self.embeddings(image, values, missing)
        itc, logits = itc_loss(self.image_head(image_embedding), self.tabular_head(table_embedding), self.temperature)
        return {"loss": itc, "itc": itc, "itc_logits": logits}
