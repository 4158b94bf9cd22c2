"""3D image augmentation of the paper (docs/model.md 2.2), built from torchio transforms.

The pipeline, applied to a min-max-scaled [1, X, Y, Z] volume: random flips over the configured
axes (each axis independently), a random affine (rotation per axis in [0, max_rotation] degrees,
scaling in [1 - s, 1 + s], no translation, about the image centre, out-of-field filled with the
image minimum), random gamma with probability 0.5, cast to float32. The deterministic resize of
docs/model.md 2.2 step 1 is done once when a volume is loaded (``resize_volume``), not per sample.
"""

from __future__ import annotations

import torch
import torchio as tio

from model.augment_settings import AugmentSettings


def build_augmentation(settings: AugmentSettings) -> tio.Compose:
    """The random part of the docs/model.md 2.2 pipeline as one torchio transform (input [1, X, Y, Z])."""
    angle = settings.max_rotation_deg
    transforms: list[tio.Transform] = []
    if settings.flip_axes and settings.flip_probability > 0:
        transforms.append(tio.RandomFlip(axes=tuple(settings.flip_axes), flip_probability=settings.flip_probability))
    transforms.append(
        tio.RandomAffine(
            scales=settings.scale_range,
            degrees=(0, angle, 0, angle, 0, angle),
            translation=0,
            isotropic=settings.isotropic_scale,
            center="image",
            default_pad_value="minimum",
            image_interpolation="linear",
        )
    )
    if settings.gamma_probability > 0:
        transforms.append(tio.RandomGamma(log_gamma=settings.gamma_log_range, p=settings.gamma_probability))
    return tio.Compose(transforms)


def augment_volume(volume: torch.Tensor, augmentation: tio.Compose) -> torch.Tensor:
    """Apply ``augmentation`` to one volume [1, X, Y, Z] and return float32 [1, X, Y, Z].

    The random draws come from torch's global generator, so callers seed it for reproducibility.
    """
    return augmentation(volume).to(torch.float32)


def resize_volume(volume: torch.Tensor, shape: tuple[int, int, int]) -> torch.Tensor:
    """Resample [1, X, Y, Z] to [1, *shape] with linear interpolation (torchio ``Resize``).

    Returns the input unchanged when it already has that shape.
    """
    if tuple(volume.shape[1:]) == tuple(shape):
        return volume
    return tio.Resize(tuple(shape), image_interpolation="linear")(volume).to(torch.float32)
