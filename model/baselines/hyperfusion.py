"""HyperFusion baseline (Duenias et al. 2025): a pre-activation 3D ResNet with a table-generated shortcut.

The AD network of the HyperFusion release (docs/baselines.md 6), on the full volume instead of
their hippocampus crop, with the table given as [values ‖ missing flags]. Only the 1x1x1
shortcut convolution of the last block is per-sample: a hypernetwork maps a small tabular
embedding to its weights and bias. Training has two stages: a tabular MLP is trained first
(:meth:`HyperFusion.prepare_from_training_rows`) and its first layers initialise the embedding.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from model.baselines.common import config_dict
from model.table_spec import TableSpec

__all__ = ["HyperFusion", "HyperPreactBlock", "PreactBlock", "ShortcutHypernetwork", "generated_pointwise_conv"]

EMBEDDING_DIM = 8  # width of the tabular embedding e that drives the hypernetwork
HEAD_HIDDEN = 64
BN_MOMENTUM = 0.05


def tabular_input(values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """The hypernetwork's input [B, 2C]: values [B, C] then missing flags [B, C] as 0/1 floats."""
    return torch.cat([values, missing.to(values.dtype)], dim=1)


def generated_pointwise_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: int,
) -> torch.Tensor:
    """A 1x1x1 convolution with its own weights per sample, as one grouped convolution.

    Args:
        x: [B, C_in, X, Y, Z].
        weight: [B, C_out, C_in], sample b's kernel.
        bias: [B, C_out].
        stride: spatial stride.

    Returns:
        [B, C_out, X', Y', Z']: the batch is folded into channels and each sample is one group.
    """
    batch, in_channels = x.shape[:2]
    out_channels = weight.shape[1]
    folded = x.reshape(1, batch * in_channels, *x.shape[2:])
    out = F.conv3d(folded, weight.reshape(batch * out_channels, in_channels, 1, 1, 1).to(x.dtype),
                   bias.reshape(batch * out_channels).to(x.dtype), stride=stride, groups=batch)
    return out.reshape(batch, out_channels, *out.shape[2:])


class _PreactResidual(nn.Module):
    """Residual branch BN -> ReLU -> Dropout3d -> Conv3 (stride) -> BN -> ReLU -> Dropout3d -> Conv3 (biased convs)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.stride = stride
        self.branch = nn.Sequential(
            nn.BatchNorm3d(in_channels, momentum=BN_MOMENTUM), nn.ReLU(inplace=True), nn.Dropout3d(dropout),
            nn.Conv3d(in_channels, out_channels, 3, stride=stride, padding=1),
            nn.BatchNorm3d(out_channels, momentum=BN_MOMENTUM), nn.ReLU(inplace=True), nn.Dropout3d(dropout),
            nn.Conv3d(out_channels, out_channels, 3, padding=1),
        )


class PreactBlock(_PreactResidual):
    """Pre-activation block with an ordinary shortcut BN -> Conv1 (stride).

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first 3x3x3 conv and of the shortcut.
        dropout: Dropout3d rate inside the branch.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__(in_channels, out_channels, stride, dropout)
        self.shortcut = nn.Sequential(
            nn.BatchNorm3d(in_channels, momentum=BN_MOMENTUM), nn.Conv3d(in_channels, out_channels, 1, stride=stride),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, in_channels, X, Y, Z] -> [B, out_channels, X/stride, ...]."""
        return self.branch(x) + self.shortcut(x)


class HyperPreactBlock(_PreactResidual):
    """Pre-activation block whose shortcut is a generated per-sample Conv1 (stride) followed by BN.

    Args:
        in_channels: input channels.
        out_channels: output channels.
        stride: stride of the first 3x3x3 conv and of the shortcut.
        dropout: Dropout3d rate inside the branch.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, dropout: float) -> None:
        super().__init__(in_channels, out_channels, stride, dropout)
        self.shortcut_norm = nn.BatchNorm3d(out_channels, momentum=BN_MOMENTUM)

    def forward(self, x: torch.Tensor, shortcut_weight: torch.Tensor, shortcut_bias: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, X, Y, Z], shortcut_weight [B, C_out, C_in], shortcut_bias [B, C_out] -> [B, C_out, ...]."""
        shortcut = generated_pointwise_conv(x, shortcut_weight, shortcut_bias, self.stride)
        return self.branch(x) + self.shortcut_norm(shortcut)


class ShortcutHypernetwork(nn.Module):
    """Tabular embedding e = PReLU(BN1d(Linear(n_tab, 8))) and linear generators of the shortcut conv.

    weight = Linear(8, C_out * C_in)(e) reshaped to [B, C_out, C_in]; bias = Linear(8, C_out)(e).

    Args:
        tabular_features: n_tab, width of the hypernetwork input (2C here).
        in_channels: C_in of the generated convolution.
        out_channels: C_out of the generated convolution.
    """

    def __init__(self, tabular_features: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.embedding = nn.Sequential(
            nn.Linear(tabular_features, EMBEDDING_DIM), nn.BatchNorm1d(EMBEDDING_DIM), nn.PReLU(),
        )
        self.weight_generator = nn.Linear(EMBEDDING_DIM, out_channels * in_channels)
        self.bias_generator = nn.Linear(EMBEDDING_DIM, out_channels)
        self.reset_generators(input_variance=1.0)

    @torch.no_grad()
    def reset_generators(self, input_variance: float) -> None:
        """HyperFusion's "input_variance" init: uniform generator weights, zero generator biases.

        The weight generator's weights get variance 1 / (C_in * 8 * v), the bias generator's
        1 / (8 * v) (uniform on +-sqrt(3 variance)), with v the mean per-row variance of the
        training table (1 when that is 0), so the generated conv starts at a sensible scale.
        """
        variance = float(input_variance) or 1.0
        for generator, fan_in in ((self.weight_generator, self.in_channels * EMBEDDING_DIM),
                                  (self.bias_generator, EMBEDDING_DIM)):
            bound = math.sqrt(3.0 / (fan_in * variance))
            nn.init.uniform_(generator.weight, -bound, bound)
            nn.init.zeros_(generator.bias)

    def forward(self, tabular: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tabular [B, n_tab] -> (weight [B, C_out, C_in], bias [B, C_out])."""
        embedding = self.embedding(tabular)
        weight = self.weight_generator(embedding).reshape(-1, self.out_channels, self.in_channels)
        return weight, self.bias_generator(embedding)


def tabular_prior(tabular_features: int, num_classes: int) -> nn.Sequential:
    """The first-stage tabular MLP: Linear(n_tab, 8) -> BN1d -> PReLU -> Linear(8, num_classes).

    Its first three layers have the layout of :attr:`ShortcutHypernetwork.embedding`.
    """
    return nn.Sequential(
        nn.Linear(tabular_features, EMBEDDING_DIM), nn.BatchNorm1d(EMBEDDING_DIM), nn.PReLU(),
        nn.Linear(EMBEDDING_DIM, num_classes),
    )


class HyperFusion(nn.Module):
    """Pre-activation 3D ResNet (base filters f) with a hypernetwork-generated shortcut in its last block.

    Layers (f = 16; shapes for a [B, 1, 160, 208, 176] input):

    * Conv3d(1, f, 3, padding 1, bias) -> BN -> ReLU -> MaxPool 2: [B, 16, 80, 104, 88];
    * PreactBlock(f, 2f, stride 1, dropout 0.1); (2f, 4f, s2, 0.2); (4f, 8f, s2, 0.2): [B, 128, 20, 26, 22];
    * HyperPreactBlock(8f, 16f, s2, 0.3) with its shortcut from :class:`ShortcutHypernetwork`:
      [B, 256, 10, 13, 11];
    * GAP -> Dropout 0.6 -> Linear(16f, 64) -> ReLU -> Dropout 0.5 -> Linear(64, num_classes).

    All BatchNorm3d have momentum 0.05; everything but the generators has PyTorch's default init.
    Parameters at f = 16, 3 classes, n_tab = 28 (ADNI, 2C): 3,853,820 (generators 297,216).

    Args:
        table: the cohort's columns; n_tab = 2C (values and missing flags).
        in_channels: image channels.
        base_filters: f.
        num_classes: classifier outputs.
        block_dropout: Dropout3d rate of the four residual blocks.
        head_dropout: dropout before the two head layers.

    Inputs of :meth:`classify` (``input_names``): image float [B, in_channels, X, Y, Z], values
    float [B, C], missing bool [B, C].
    """

    input_names: ClassVar[tuple[str, ...]] = ("image", "values", "missing")
    stage: ClassVar[str] = "finetune"

    def __init__(
        self,
        table: TableSpec,
        in_channels: int = 1,
        base_filters: int = 16,
        num_classes: int = 3,
        block_dropout: Sequence[float] = (0.1, 0.2, 0.2, 0.3),
        head_dropout: Sequence[float] = (0.6, 0.5),
    ) -> None:
        super().__init__()
        if len(block_dropout) != 4 or len(head_dropout) != 2:
            raise ValueError("block_dropout needs 4 rates and head_dropout 2")
        self.config = config_dict(in_channels=in_channels, base_filters=base_filters, num_classes=num_classes,
                                  block_dropout=[float(p) for p in block_dropout],
                                  head_dropout=[float(p) for p in head_dropout])
        self.table = table
        f = base_filters
        self.tabular_features = 2 * table.num_columns
        self.stem = nn.Sequential(
            nn.Conv3d(in_channels, f, 3, padding=1), nn.BatchNorm3d(f, momentum=BN_MOMENTUM), nn.ReLU(inplace=True),
            nn.MaxPool3d(2),
        )
        self.blocks = nn.Sequential(
            PreactBlock(f, 2 * f, 1, block_dropout[0]),
            PreactBlock(2 * f, 4 * f, 2, block_dropout[1]),
            PreactBlock(4 * f, 8 * f, 2, block_dropout[2]),
        )
        self.hyper_block = HyperPreactBlock(8 * f, 16 * f, 2, block_dropout[3])
        self.hypernetwork = ShortcutHypernetwork(self.tabular_features, 8 * f, 16 * f)
        # the mean per-row variance of the training table, kept so a checkpoint records the init it used
        self.register_buffer("input_variance", torch.tensor(1.0))
        self.head = nn.Sequential(
            nn.Dropout(head_dropout[0]), nn.Linear(16 * f, HEAD_HIDDEN), nn.ReLU(inplace=True),
            nn.Dropout(head_dropout[1]), nn.Linear(HEAD_HIDDEN, num_classes),
        )

    def classify(self, image: torch.Tensor, values: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
        """image float [B, in_channels, X, Y, Z], values float [B, C], missing bool [B, C] -> logits [B, K]."""
        weight, bias = self.hypernetwork(tabular_input(values, missing))
        x = self.hyper_block(self.blocks(self.stem(image)), weight, bias)
        return self.head(x.mean(dim=(2, 3, 4)))

    forward = classify

    def prepare_from_training_rows(
        self,
        values: torch.Tensor,
        missing: torch.Tensor,
        labels: torch.Tensor,
        epochs: int = 250,
        lr: float = 1e-3,
        seed: int = 2022,
        class_weights: Sequence[float] | None = None,
        batch_size: int = 32,
    ) -> dict[str, float]:
        """First training stage, run once on the training split before the image network trains.

        1. v = mean over rows of the per-row variance (population) of [values ‖ missing]; sets the
           generator init (:meth:`ShortcutHypernetwork.reset_generators`) and :attr:`input_variance`;
        2. trains the tabular MLP Linear(n_tab, 8) -> BN1d -> PReLU -> Linear(8, K) with Adam and
           (weighted) cross-entropy on the rows, shuffled mini-batches;
        3. copies its first three layers (with the BN running statistics) into the hypernetwork's
           embedding, which stays trainable.

        The global RNG is left as it was: the generator init, the MLP's init and the batch order
        draw from ``seed`` only.

        Args:
            values: float [N, C] training rows (as ``classify`` takes them).
            missing: bool [N, C].
            labels: long [N], classes 0 .. num_classes-1.
            epochs: passes over the rows.
            lr: Adam learning rate.
            seed: seed of the MLP's init and the batch order.
            class_weights: cross-entropy weight per class, or None for unweighted.
            batch_size: rows per step (a last batch of a single row is dropped: BatchNorm needs two).

        Returns:
            {"input_variance": v, "prior_loss": mean loss of the last epoch,
             "prior_accuracy": training accuracy of the MLP in eval mode}.
        """
        device = self.input_variance.device
        rows = tabular_input(values.float(), missing.bool()).to(device)
        labels = labels.long().to(device)
        if rows.shape[0] != labels.shape[0] or rows.shape[1] != self.tabular_features:
            raise ValueError(f"expected rows [N, {self.tabular_features // 2}] and labels [N], got "
                             f"{tuple(values.shape)} and {tuple(labels.shape)}")
        if rows.shape[0] < 2:
            raise ValueError("the tabular prior needs at least 2 training rows (BatchNorm)")
        variance = float(rows.var(dim=1, unbiased=False).mean()) or 1.0
        self.input_variance.fill_(variance)
        num_classes = self.head[-1].out_features
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            torch.manual_seed(seed)
            self.hypernetwork.reset_generators(variance)
            prior = tabular_prior(self.tabular_features, num_classes).to(device)
        order_generator = torch.Generator().manual_seed(seed)
        weight = None if class_weights is None else torch.tensor(class_weights, dtype=torch.float32, device=device)
        optimizer = torch.optim.Adam(prior.parameters(), lr=lr)
        prior.train()
        epoch_loss = float("nan")
        for _ in range(epochs):
            losses = []
            for batch in torch.randperm(rows.shape[0], generator=order_generator).split(batch_size):
                if batch.numel() < 2:
                    continue
                batch = batch.to(device)
                loss = F.cross_entropy(prior(rows[batch]), labels[batch], weight=weight)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                losses.append(float(loss.detach()))
            epoch_loss = sum(losses) / max(len(losses), 1)
        prior.eval()
        with torch.no_grad():
            accuracy = float((prior(rows).argmax(dim=1) == labels).float().mean())
        self.hypernetwork.embedding.load_state_dict(prior[:3].state_dict())
        return {"input_variance": variance, "prior_loss": epoch_loss, "prior_accuracy": accuracy}
