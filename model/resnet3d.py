"""3D ResNet trunk (Hara et al. style video ResNet, as the CITab code uses it), without pool and fc.

Hara, Kataoka, Satoh, "Can Spatiotemporal 3D CNNs Retrace the History of 2D CNNs and ImageNet?",
CVPR 2018. The stem keeps CITab's stride (1, 2, 2): the first spatial axis is not downsampled by
the first convolution (a leftover of the video code that the paper model inherits).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["RESNET_LAYOUTS", "ResNet3D"]

# depth -> (block kind, number of blocks per stage)
RESNET_LAYOUTS: dict[int, tuple[str, tuple[int, int, int, int]]] = {
    10: ("basic", (1, 1, 1, 1)),
    18: ("basic", (2, 2, 2, 2)),
    34: ("basic", (3, 4, 6, 3)),
    50: ("bottleneck", (3, 4, 6, 3)),
}


class BasicBlock3D(nn.Module):
    """Two 3x3x3 convolutions with a residual connection (ResNet-10/18/34)."""

    expansion = 1

    def __init__(self, in_channels: int, width: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, width, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + shortcut)


class Bottleneck3D(nn.Module):
    """1x1x1 reduce, 3x3x3 (carries the stride), 1x1x1 expand by 4, residual (ResNet-50)."""

    expansion = 4

    def __init__(self, in_channels: int, width: int, stride: int, downsample: nn.Module | None) -> None:
        super().__init__()
        self.conv1 = nn.Conv3d(in_channels, width, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(width)
        self.conv2 = nn.Conv3d(width, width, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm3d(width)
        self.conv3 = nn.Conv3d(width, width * self.expansion, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(width * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shortcut = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + shortcut)


class ResNet3D(nn.Module):
    """3D ResNet trunk returning the last feature map.

    For the paper configuration (depth 50, widths 64/128/256/512) an input [B, 1, 160, 208, 176]
    gives a map [B, 2048, 10, 7, 6] (46,155,072 parameters).

    Args:
        depth: 10, 18, 34 (basic blocks) or 50 (bottleneck blocks).
        widths: channel width of each of the 4 stages; the stem has ``widths[0]`` channels and the
            output has ``widths[3] * expansion`` channels (expansion 4 for depth 50, else 1).
        in_channels: channels of the input volume (1 for a T1w MRI).
        stem_stride: stride of the 7x7x7 stem convolution, per spatial axis.

    Examples::

        >>> trunk = ResNet3D(depth=10, widths=(8, 16, 32, 64))
        >>> trunk(torch.zeros(1, 1, 32, 32, 32)).shape
        torch.Size([1, 64, 2, 2, 2])
    """

    def __init__(
        self,
        depth: int = 50,
        widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        stem_stride: tuple[int, int, int] = (1, 2, 2),
    ) -> None:
        super().__init__()
        if depth not in RESNET_LAYOUTS:
            raise ValueError(f"resnet depth must be one of {sorted(RESNET_LAYOUTS)}, got {depth}")
        if len(widths) != 4 or any(int(w) < 1 for w in widths):
            raise ValueError(f"resnet widths must be 4 positive integers, got {list(widths)}")
        kind, blocks_per_stage = RESNET_LAYOUTS[depth]
        block = Bottleneck3D if kind == "bottleneck" else BasicBlock3D
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, widths[0], 7, stride=stem_stride, padding=3, bias=False),
            nn.BatchNorm3d(widths[0]),
            nn.ReLU(inplace=True),
            nn.MaxPool3d(kernel_size=3, stride=2, padding=1),
        )
        channels = widths[0]
        stages = []
        for stage_index, (width, num_blocks) in enumerate(zip(widths, blocks_per_stage)):
            stride = 1 if stage_index == 0 else 2
            blocks = []
            for block_index in range(num_blocks):
                block_stride = stride if block_index == 0 else 1
                downsample = None
                if block_stride != 1 or channels != width * block.expansion:
                    # shortcut type B: a projection only where the shape changes
                    downsample = nn.Sequential(
                        nn.Conv3d(channels, width * block.expansion, 1, stride=block_stride, bias=False),
                        nn.BatchNorm3d(width * block.expansion),
                    )
                blocks.append(block(channels, width, block_stride, downsample))
                channels = width * block.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.out_channels = channels
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv3d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm3d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Map an image [B, in_channels, X, Y, Z] to the last feature map [B, out_channels, x, y, z]."""
        x = self.stem(image)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))
