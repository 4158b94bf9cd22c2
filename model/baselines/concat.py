"""Concat fusion baseline: pooled image features concatenated with a tabular MLP embedding.

The codebase version of Spasov et al. 2019 as released CITab's ``MultimodalModel`` means it
(docs/baselines.md 3); the released forward cannot run (it pools sample 0 only), here the image
features are the global average pool of every sample.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from model.baselines.common import config_dict, kaiming_linear_init
from model.heads import classifier
from model.resnet3d import ResNet3D
from model.table_spec import TableSpec

__all__ = ["ConcatFusion", "TabularMLP"]


class TabularMLP(nn.Sequential):
    """Linear(C, D) -> BatchNorm1d(D) -> ReLU -> Linear(D, D); Linear weights Kaiming-normal (fan_in), bias 0.

    Args:
        num_columns: C, the raw values of every column go in as they are (no missing flags).
        width: D.
    """

    def __init__(self, num_columns: int, width: int) -> None:
        super().__init__(nn.Linear(num_columns, width), nn.BatchNorm1d(width), nn.ReLU(inplace=True),
                         nn.Linear(width, width))
        kaiming_linear_init(self)


class ConcatFusion(nn.Module):
    """GAP(ResNet(image)) [B, C_img] ‖ TabularMLP(values) [B, D] -> ``Linear(C_img + D, num_classes)``.

    The logits are a sum of an image part and a table part (the head is linear and nothing mixes
    the two before it). Paper configuration (ResNet-50, D 512, C 14): 46,434,115 parameters.

    Args:
        table: the cohort's columns (only C is used: categorical codes enter as plain numbers).
        resnet_depth: 10, 18, 34 or 50.
        resnet_widths: the 4 ResNet stage widths.
        in_channels: image channels.
        embed_dim: width D of the tabular MLP.
        num_classes: classifier outputs (head: PyTorch default init).

    Inputs of :meth:`classify` (``input_names``): image float [B, in_channels, X, Y, Z], values
    float [B, C] as the data module gives them (missing cells 0; no missing flags, as released).
    """

    input_names: ClassVar[tuple[str, ...]] = ("image", "values")
    stage: ClassVar[str] = "finetune"

    def __init__(
        self,
        table: TableSpec,
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        embed_dim: int = 512,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.config = config_dict(resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
                                  in_channels=in_channels, embed_dim=embed_dim, num_classes=num_classes)
        self.table = table
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        self.tabular_encoder = TabularMLP(table.num_columns, embed_dim)
        self.classifier = classifier(self.image_encoder.out_channels + embed_dim, num_classes)

    def classify(self, image: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """image float [B, in_channels, X, Y, Z], values float [B, C] -> logits [B, num_classes]."""
        image_features = self.image_encoder(image).mean(dim=(2, 3, 4))
        tabular_features = self.tabular_encoder(values.to(image_features.dtype))
        return self.classifier(torch.cat([image_features, tabular_features], dim=1))

    forward = classify
