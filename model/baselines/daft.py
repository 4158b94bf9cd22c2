"""DAFT baseline: a ResNet whose last residual block is modulated by the table (Wolf et al. 2022).

This is the codebase design of the released CITab ``DAFT`` module (a 2D TIP module that cannot be
built, see docs/baselines.md 4), ported to 3D and made to run: the trunk's last residual block is
replaced by a block that scales and shifts its input feature map with per-channel factors
computed from the pooled map and the raw table row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from model.baselines.common import config_dict, kaiming_linear_init
from model.heads import classifier
from model.resnet3d import Bottleneck3D, ResNet3D
from model.table_spec import TableSpec

__all__ = ["DAFT", "DAFTBlock"]


class DAFTBlock(nn.Module):
    """Residual block with a dynamic affine feature-map transform of its input.

    With F [B, C_in, x, y, z] the block input and t [B, C] the raw table row:

    1. aux net: s = Linear(h, 2 C_in)(ReLU(Linear(C_in + C, h)(GAP(F) ‖ t))), h = floor((C_in + C) / 7);
       split s into scale and shift [B, C_in];
    2. G = scale * F + shift (broadcast over space);
    3. residual branch on G:
       * bottleneck (ResNet-50): Conv1 -> BN -> ReLU -> Conv3 (stride) -> BN -> Conv1 (x4) -> BN,
         with no ReLU after the second BN (as the released code has it);
       * basic (ResNet-10/18/34): Conv3 (stride) -> BN -> ReLU -> Conv3 -> BN;
    4. out = ReLU(branch + shortcut(F)): the shortcut carries the unmodulated F (identity, or the
       replaced block's projection where the shape changes).

    Args:
        in_channels: C_in, channels of F.
        width: the replaced block's width (its output has ``width * expansion`` channels).
        stride: stride of the replaced block.
        num_columns: C, table width.
        bottleneck: bottleneck branch (ResNet-50) or basic branch.
        downsample: the replaced block's projection shortcut, or None for identity.
    """

    def __init__(
        self, in_channels: int, width: int, stride: int, num_columns: int, bottleneck: bool,
        downsample: nn.Module | None = None,
    ) -> None:
        super().__init__()
        hidden = max(1, (in_channels + num_columns) // 7)
        self.aux = nn.Sequential(
            nn.Linear(in_channels + num_columns, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * in_channels),
        )
        kaiming_linear_init(self.aux)
        if bottleneck:
            out_channels = width * Bottleneck3D.expansion
            self.branch = nn.Sequential(
                nn.Conv3d(in_channels, width, 1, bias=False), nn.BatchNorm3d(width), nn.ReLU(inplace=True),
                nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(width),
                nn.Conv3d(width, out_channels, 1, bias=False), nn.BatchNorm3d(out_channels),
            )
        else:
            self.branch = nn.Sequential(
                nn.Conv3d(in_channels, width, 3, stride=stride, padding=1, bias=False), nn.BatchNorm3d(width),
                nn.ReLU(inplace=True),
                nn.Conv3d(width, width, 3, padding=1, bias=False), nn.BatchNorm3d(width),
            )
        for module in self.branch:
            if isinstance(module, nn.Conv3d):  # as the trunk initialises its convolutions
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
        self.downsample = downsample
        self.relu = nn.ReLU(inplace=True)

    def affine(self, feature_map: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """scale, shift [B, C_in] from feature_map [B, C_in, x, y, z] and values [B, C]."""
        pooled = feature_map.mean(dim=(2, 3, 4))
        scale, shift = self.aux(torch.cat([pooled, values.to(pooled.dtype)], dim=1)).chunk(2, dim=1)
        return scale, shift

    def forward(self, feature_map: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """feature_map [B, C_in, x, y, z], values [B, C] -> [B, width * expansion, x', y', z']."""
        scale, shift = self.affine(feature_map, values)
        modulated = feature_map * scale[:, :, None, None, None] + shift[:, :, None, None, None]
        shortcut = feature_map if self.downsample is None else self.downsample(feature_map)
        return self.relu(self.branch(modulated) + shortcut)


class DAFT(nn.Module):
    """3D ResNet with its last residual block replaced by a :class:`DAFTBlock`, GAP, linear classifier.

    The trunk before the replaced block never sees the table (:meth:`features_before_daft`). Paper
    configuration (ResNet-50, C 14): trunk without its last bottleneck 36,973,888 + DAFT block
    9,181,184 convs/BN + 1,814,842 aux net + 6,147 head = 47,976,061 parameters.

    For depth 10 the replaced block is the only block of the last stage, so it also carries the
    stage's stride 2 and projection shortcut; the DAFT block keeps both (the shortcut stays
    unmodulated) and modulates the block input, which has ``widths[2]`` channels.

    Args:
        table: the cohort's columns (only C is used: raw values, categorical codes as numbers).
        resnet_depth: 10, 18, 34 (basic blocks) or 50 (bottlenecks).
        resnet_widths: the 4 ResNet stage widths.
        in_channels: image channels.
        num_classes: classifier outputs (Kaiming-normal fan_in, bias 0, like the aux net).

    Inputs of :meth:`classify` (``input_names``): image float [B, in_channels, X, Y, Z], values
    float [B, C] (missing cells 0; no missing flags, as released).
    """

    input_names: ClassVar[tuple[str, ...]] = ("image", "values")
    stage: ClassVar[str] = "finetune"

    def __init__(
        self,
        table: TableSpec,
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.config = config_dict(resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
                                  in_channels=in_channels, num_classes=num_classes)
        self.table = table
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        # take the last block out of the trunk; its shape (and projection shortcut) passes to the DAFT block
        *kept, replaced = list(self.image_encoder.layer4)
        self.image_encoder.layer4 = nn.Sequential(*kept)
        bottleneck = isinstance(replaced, Bottleneck3D)
        self.daft = DAFTBlock(
            in_channels=replaced.conv1.in_channels,
            width=replaced.conv1.out_channels if bottleneck else replaced.conv2.out_channels,
            stride=replaced.conv2.stride[0] if bottleneck else replaced.conv1.stride[0],
            num_columns=table.num_columns,
            bottleneck=bottleneck,
            downsample=replaced.downsample,
        )
        # the trunk's out_channels still names the full trunk's output, which the DAFT block produces
        self.classifier = classifier(self.image_encoder.out_channels, num_classes)
        kaiming_linear_init(self.classifier)

    def features_before_daft(self, image: torch.Tensor) -> torch.Tensor:
        """The trunk up to the replaced block: image [B, in_channels, X, Y, Z] -> F [B, C_in, x, y, z]."""
        return self.image_encoder(image)  # layer4 now ends before the replaced block

    def classify(self, image: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """image float [B, in_channels, X, Y, Z], values float [B, C] -> logits [B, num_classes]."""
        feature_map = self.daft(self.features_before_daft(image), values)
        return self.classifier(feature_map.mean(dim=(2, 3, 4)))

    forward = classify
