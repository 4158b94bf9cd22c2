"""MMCL (Hager, Menten, Rueckert, CVPR 2023): CLIP-style image-table pretraining, image-only fine-tuning.

As the CITab codebase runs it (docs/baselines.md 8): a 3D ResNet and a tabular MLP, each with a
projection head, trained with a symmetric contrastive loss between the (augmented) image and a
corrupted copy of its table row. Fine-tuning keeps the image encoder only, so the fine-tuned model
never reads the table (the paper's footnote on MMCL in Table 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from model.baselines.common import config_dict
from model.baselines.concat import TabularMLP
from model.heads import ProjectionHead, classifier
from model.losses import itc_loss
from model.resnet3d import ResNet3D
from model.table_spec import TableSpec
from model.weights import PretrainedEncoders, check_stage, require_stage

__all__ = ["MMCL"]


class MMCL(PretrainedEncoders, nn.Module):
    """3D ResNet + tabular MLP with CLIP projections (pretraining), or ResNet + linear classifier (fine-tuning).

    Pretraining (paper configuration, ADNI C = 14: 51,213,376 parameters; 51,209,792 for AIBL's 7
    and 51,216,960 for NACC's 21 columns):

    * image: trunk -> global average pool [B, C_img] -> ``ProjectionHead(C_img, C_img, P)``;
    * table: :class:`model.baselines.concat.TabularMLP` ``Linear(C, D) -> BN -> ReLU -> Linear(D, D)``
      on the raw values (categorical codes as numbers, missing cells 0, as the CITab codebase feeds
      it) -> ``ProjectionHead(D, D, P)``;
    * loss: :func:`model.losses.itc_loss` (L2-normalised projections, logits / temperature, mean
      of the row and column cross-entropies, in-batch negatives).

    Fine-tuning: trunk -> pool -> ``Linear(C_img, num_classes)`` (46,161,219 parameters, the same
    network as the ``resnet50`` baseline, started from the pretrained trunk).

    Args:
        table: the cohort's columns (only C is used).
        stage: "pretrain" (tabular encoder and projection heads) or "finetune" (classifier only).
        resnet_depth: 10, 18, 34 or 50.
        resnet_widths: the 4 ResNet stage widths.
        in_channels: image channels.
        embed_dim: width D of the tabular MLP (paper 512; upstream MMCL 2048).
        projection_dim: width P of both projections (128).
        num_classes: classifier outputs.
        temperature: fixed contrastive temperature (0.1).

    Inputs: :meth:`classify` (``input_names``) image float [B, in_channels, X, Y, Z];
    :meth:`pretrain_losses` (``pretrain_input_names``) the image and values float [B, C], the
    corrupted view of the row.
    """

    input_names: ClassVar[tuple[str, ...]] = ("image",)
    pretrain_input_names: ClassVar[tuple[str, ...]] = ("image", "values")
    finetune_encoders: ClassVar[tuple[str, ...]] = ("image_encoder",)
    # the tabular encoder exists only to pretrain the image encoder
    pretrain_only_modules: ClassVar[tuple[str, ...]] = ("tabular_encoder", "image_head", "tabular_head")

    def __init__(
        self,
        table: TableSpec,
        stage: str = "pretrain",
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        embed_dim: int = 512,
        projection_dim: int = 128,
        num_classes: int = 3,
        temperature: float = 0.1,
    ) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.stage = check_stage(stage)
        self.config = config_dict(stage=stage, resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
                                  in_channels=in_channels, embed_dim=embed_dim, projection_dim=projection_dim,
                                  num_classes=num_classes, temperature=temperature)
        self.table = table
        self.temperature = temperature
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        image_channels = self.image_encoder.out_channels
        if stage == "pretrain":
            self.tabular_encoder = TabularMLP(table.num_columns, embed_dim)
            self.image_head = ProjectionHead(image_channels, image_channels, projection_dim)
            self.tabular_head = ProjectionHead(embed_dim, embed_dim, projection_dim)
        else:
            self.classifier = classifier(image_channels, num_classes)

    def pooled_image(self, image: torch.Tensor) -> torch.Tensor:
        """image [B, in_channels, X, Y, Z] -> globally pooled trunk features [B, C_img]."""
        return self.image_encoder(image).mean(dim=(2, 3, 4))

    def classify(self, image: torch.Tensor) -> torch.Tensor:
        """image float [B, in_channels, X, Y, Z] -> logits [B, num_classes] (fine-tuning stage)."""
        require_stage(self, "finetune", "classify")
        return self.classifier(self.pooled_image(image))

    def pretrain_losses(self, image: torch.Tensor, values: torch.Tensor) -> dict[str, torch.Tensor]:
        """The CLIP objective on one batch (pretraining stage).

        Args:
            image: float [B, in_channels, X, Y, Z] (B >= 2: the negatives are the other rows).
            values: float [B, C], the corrupted table rows.

        Returns:
            "loss" (the scalar to backpropagate, equal to "itc"), "itc" scalar and "itc_logits"
            [B, B] (rows images, columns table rows).
        """
        require_stage(self, "pretrain", "pretrain_losses")
        image_features = self.pooled_image(image)
        tabular_features = self.tabular_encoder(values.to(image_features.dtype))
        itc, logits = itc_loss(self.image_head(image_features), self.tabular_head(tabular_features), self.temperature)
        return {"loss": itc, "itc": itc, "itc_logits": logits}
