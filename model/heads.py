"""Heads on top of the encoders: ITC projections, the ITM head and the fine-tuning classifier.

All use PyTorch's default Linear init (docs/model.md 3.5).
"""

from __future__ import annotations

from torch import nn

__all__ = ["ProjectionHead", "classifier", "itm_head"]


class ProjectionHead(nn.Sequential):
    """Two-layer MLP Linear -> ReLU -> Linear, no normalisation (lightly's SimCLR head, as in the code).

    Args:
        in_features: input width (2048 for the pooled ResNet-50 map, D for the tabular CLS).
        hidden: hidden width (the code: equal to ``in_features``).
        out_features: projection width (128).
    """

    def __init__(self, in_features: int, hidden: int, out_features: int) -> None:
        super().__init__(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, out_features))


def itm_head(dim: int) -> nn.Linear:
    """Image-tabular matching head: fused CLS [.., D] -> 2 logits (0 = not matching, 1 = matching)."""
    return nn.Linear(dim, 2)


def classifier(dim: int, num_classes: int) -> nn.Linear:
    """Fine-tuning classifier: fused CLS [.., D] -> ``num_classes`` logits."""
    return nn.Linear(dim, num_classes)
