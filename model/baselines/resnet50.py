"""Image-only baseline: the 3D ResNet trunk, global average pooling and a linear classifier.

Released CITab's ``ImagingModel`` trained from scratch (docs/baselines.md 1). The trunk is the same
:class:`model.resnet3d.ResNet3D` as CITab's image encoder.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn

from model.baselines.common import config_dict
from model.heads import classifier
from model.resnet3d import ResNet3D

__all__ = ["ImageResNet"]


class ImageResNet(nn.Module):
    """3D ResNet -> global average pool [B, C_img] -> ``Linear(C_img, num_classes)`` (PyTorch default init).

    Paper configuration (ResNet-50, widths 64/128/256/512, 3 classes): 46,155,072 trunk +
    6,147 head = 46,161,219 parameters. There is no table input.

    Args:
        resnet_depth: 10, 18, 34 (basic blocks) or 50 (bottlenecks).
        resnet_widths: the 4 stage widths; C_img = widths[3] * (4 for depth 50, else 1).
        in_channels: image channels.
        num_classes: classifier outputs.

    Inputs of :meth:`classify` (``input_names``): image float [B, in_channels, X, Y, Z].
    """

    input_names: ClassVar[tuple[str, ...]] = ("image",)
    stage: ClassVar[str] = "finetune"

    def __init__(
        self,
        resnet_depth: int = 50,
        resnet_widths: Sequence[int] = (64, 128, 256, 512),
        in_channels: int = 1,
        num_classes: int = 3,
    ) -> None:
        super().__init__()
        self.config = config_dict(resnet_depth=resnet_depth, resnet_widths=[int(w) for w in resnet_widths],
                                  in_channels=in_channels, num_classes=num_classes)
        self.image_encoder = ResNet3D(resnet_depth, resnet_widths, in_channels)
        self.classifier = classifier(self.image_encoder.out_channels, num_classes)

    def classify(self, image: torch.Tensor) -> torch.Tensor:
        """image float [B, in_channels, X, Y, Z] -> logits [B, num_classes]."""
        return self.classifier(self.image_encoder(image).mean(dim=(2, 3, 4)))

    forward = classify
