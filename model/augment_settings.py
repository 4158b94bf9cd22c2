"""Augmentation strengths: a plain dataclass without torch, so that the pipeline's settings layer
(``workflow.settings``), which also serves rules whose environments have no torch, can carry them.
The transforms themselves are built in :mod:`model.augment`."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AugmentSettings:
    """Augmentation strengths (config section ``pretrain.augment``, shared by fine-tuning).

    Attributes:
        flip_axes: axes flipped at random, each independently.
        flip_probability: probability of flipping each axis.
        max_rotation_deg: rotation angle per axis drawn from U(0, max_rotation_deg).
        scale_range: isotropic-or-not scale factor drawn from U(1 - scale_range, 1 + scale_range).
        isotropic_scale: one scale for all axes (True) or one per axis (torchio's default, False).
        gamma_log_range: log-gamma drawn from U(-gamma_log_range, gamma_log_range).
        gamma_probability: probability of applying the gamma transform.
    """

    flip_axes: tuple[int, ...] = (0, 1, 2)
    flip_probability: float = 0.5
    max_rotation_deg: float = 45.0
    scale_range: float = 0.1
    isotropic_scale: bool = False
    gamma_log_range: float = 0.3
    gamma_probability: float = 0.5
