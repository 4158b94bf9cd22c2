"""Skull stripping of the registered, cropped T1: deepbet (embedded default) or SynthStrip (paper).

* ``deepbet`` (MIT) ships its TorchScript weights on PyPI, in a top-level ``site-packages/data/models``
  folder; the paths are passed explicitly so another package's ``data/`` cannot shadow them.
* ``synthstrip`` runs FreeSurfer's SynthStrip network, re-implemented here (``StripModel``), with the
  user's own ``synthstrip.1.pt`` (FreeSurfer ships it as ``$FREESURFER_HOME/models/synthstrip.1.pt``;
  no package registry does). Inference follows ``mri_synthstrip``: conform to 1 mm LIA, pad to a
  multiple of 64 within [192, 320], scale by the 99th percentile, predict a signed distance to the
  brain boundary (mm), mask = distance < border, largest component, holes filled.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np

from workflow.settings import SkullstripSettings

log = logging.getLogger(__name__)

FREESURFER_HINT = (
    "SynthStrip's weights ship with FreeSurfer >= 7.3 as $FREESURFER_HOME/models/synthstrip.1.pt (also in "
    "the freesurfer/synthstrip container); point preprocess.skullstrip.synthstrip_model at that file, or "
    "use preprocess.skullstrip.method: deepbet")


# --- SynthStrip network ---------------------------------------------------------------------------
def _strip_model_class():
    """Build the ``StripModel`` class lazily, so that importing this module does not import torch."""
    import torch
    from torch import nn

    class ConvBlock(nn.Module):
        """3x3x3 convolution, then LeakyReLU(0.2) unless it is the output layer."""

        def __init__(self, in_channels: int, out_channels: int, activate: bool = True) -> None:
            super().__init__()
            self.conv = nn.Conv3d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
            self.activation = nn.LeakyReLU(0.2) if activate else nn.Identity()

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.activation(self.conv(x))

    class StripModel(nn.Module):
        """SynthStrip's 3-D U-Net: input [B, 1, X, Y, Z] (each a multiple of 64), output the signed
        distance to the brain boundary in mm, [B, 1, X, Y, Z].

        Level widths min(nb_features * feat_mult**level, max_features) = 16, 32, 64, 64, 64, 64, 64;
        six encoder levels of two convolutions then max-pooling, six decoder levels of two
        convolutions then nearest upsampling and concatenation with the matching encoder output, then
        two full-resolution convolutions and a 1-channel output convolution (2,566,561 parameters,
        54 state-dict tensors with FreeSurfer's names ``encoder.*``, ``decoder.*``, ``remaining.*``).
        """

        def __init__(self, nb_features: int = 16, nb_levels: int = 7, feat_mult: int = 2,
                     max_features: int = 64, convs_per_level: int = 2) -> None:
            super().__init__()
            widths = [min(nb_features * feat_mult**level, max_features) for level in range(nb_levels)]
            encoder_widths = [w for w in widths[:-1] for _ in range(convs_per_level)]
            decoder_widths = [w for w in reversed(widths) for _ in range(convs_per_level)]
            depth = nb_levels - 1
            self.encoder = nn.ModuleList()
            channels, skip_channels = 1, []
            for level in range(depth):
                convs = nn.ModuleList()
                for width in encoder_widths[level * convs_per_level:(level + 1) * convs_per_level]:
                    convs.append(ConvBlock(channels, width))
                    channels = width
                self.encoder.append(convs)
                skip_channels.append(channels)
            self.decoder = nn.ModuleList()
            for level in range(depth):
                convs = nn.ModuleList()
                for width in decoder_widths[level * convs_per_level:(level + 1) * convs_per_level]:
                    convs.append(ConvBlock(channels, width))
                    channels = width
                self.decoder.append(convs)
                channels += skip_channels[depth - 1 - level]
            self.remaining = nn.ModuleList()
            for width in decoder_widths[depth * convs_per_level:]:
                self.remaining.append(ConvBlock(channels, width))
                channels = width
            self.remaining.append(ConvBlock(channels, 1, activate=False))
            self.pool = nn.MaxPool3d(2)
            self.upsample = nn.Upsample(scale_factor=2, mode="nearest")

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            skips = []
            for convs in self.encoder:
                for conv in convs:
                    x = conv(x)
                skips.append(x)
                x = self.pool(x)
            for convs in self.decoder:
                for conv in convs:
                    x = conv(x)
                x = torch.cat([self.upsample(x), skips.pop()], dim=1)
            for conv in self.remaining:
                x = conv(x)
            return x

    return StripModel


def new_strip_model():
    """A freshly initialised SynthStrip network (random weights)."""
    return _strip_model_class()()


def load_synthstrip_checkpoint(model_path: str | Path | None, sha256: str | None = None) -> dict:
    """Check the user's ``synthstrip.1.pt`` and return its state dict.

    Checks that the file exists, loads with ``torch.load(weights_only=True)`` (no code runs), holds
    ``{'model_state_dict': ...}`` with exactly the tensor names and shapes of ``StripModel``, and
    matches ``sha256`` when one is configured. Raises ``ValueError`` / ``FileNotFoundError`` that
    name the file, what is wrong and where FreeSurfer ships the real one.
    """
    import torch

    if not model_path:
        raise FileNotFoundError(
            f"preprocess.skullstrip.method is synthstrip but no model file is set. {FREESURFER_HINT}")
    model_path = Path(model_path)
    if not model_path.is_file():
        raise FileNotFoundError(f"SynthStrip model {model_path} does not exist. {FREESURFER_HINT}")
    if sha256:
        digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
        if digest != sha256.lower():
            raise ValueError(f"SynthStrip model {model_path}: sha256 {digest} differs from the configured "
                             f"preprocess.skullstrip.synthstrip_sha256 {sha256}. {FREESURFER_HINT}")
    try:
        checkpoint = torch.load(model_path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- any load failure gets the same explanation
        raise ValueError(f"SynthStrip model {model_path} cannot be loaded as a PyTorch checkpoint "
                         f"({type(error).__name__}: {error}). {FREESURFER_HINT}") from None
    if not isinstance(checkpoint, dict) or "model_state_dict" not in checkpoint:
        keys = list(checkpoint)[:5] if isinstance(checkpoint, dict) else type(checkpoint).__name__
        raise ValueError(f"SynthStrip model {model_path}: expected a dict with key 'model_state_dict', got {keys}. "
                         f"{FREESURFER_HINT}")
    state = checkpoint["model_state_dict"]
    expected = {name: tuple(t.shape) for name, t in new_strip_model().state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        missing = sorted(set(expected) - set(found))[:3]
        unexpected = sorted(set(found) - set(expected))[:3]
        wrong = [f"{n} {found[n]} (expected {expected[n]})"
                 for n in expected if n in found and found[n] != expected[n]][:3]
        raise ValueError(
            f"SynthStrip model {model_path} does not match the SynthStrip network ({len(expected)} tensors): "
            f"missing {missing}, unexpected {unexpected}, wrong shapes {wrong}. Is it synthstrip.1.pt? "
            f"{FREESURFER_HINT}")
    return state


def synthstrip_mask(
    image_path: str | Path, state_dict: dict, border_mm: float = 1.0, conform_voxel_mm: float = 1.0,
    shape_limits: tuple[int, int] = (192, 320), device: str = "cpu",
) -> np.ndarray:
    """SynthStrip brain mask of a NIfTI image, on that image's grid (bool [X, Y, Z]).

    Args:
        state_dict: from ``load_synthstrip_checkpoint``.
        border_mm: mask = signed distance < border (FreeSurfer's ``-b``, 1 mm).
        conform_voxel_mm: voxel size of the network input. SynthStrip was trained at 1 mm; a
            coarser value only serves to test the code path cheaply.
        shape_limits: each padded input axis is a multiple of 64 clipped to these (192, 320).
    """
    import surfa as sf
    import torch
    from scipy import ndimage

    image = sf.load_volume(str(image_path))
    conformed = image.conform(voxsize=float(conform_voxel_mm), dtype="float32", method="nearest", orientation="LIA")
    # surfa 0.6.3 crop_to_bbox() fails on numpy 2 (find_objects on a bool array): same crop by hand.
    box = ndimage.find_objects((conformed.data > 0).astype(np.int8))[0]
    conformed = conformed[box]
    low, high = shape_limits
    target = np.clip(np.ceil(np.array(conformed.shape[:3]) / 64).astype(int) * 64, low, high)
    conformed = conformed.reshape(target)

    data = conformed.data.astype(np.float32)
    data = data - data.min()
    data = np.clip(data / max(float(np.percentile(data, 99)), 1e-6), 0, 1)
    model = _strip_model_class()().to(device)
    model.load_state_dict(state_dict)
    model.eval()
    with torch.no_grad():
        tensor = torch.from_numpy(data)[None, None].to(device)
        distance = model(tensor).cpu().numpy().squeeze()
    # outside the conformed field of view the brain is far away: fill with a large distance
    distance_native = conformed.new(distance).resample_like(image, fill=100).data
    mask = distance_native < border_mm
    return _largest_component_filled(mask)


DEEPBET_SHAPE = (256, 256, 256)


def deepbet_mask(image_path: str | Path, model_dir: str | Path | None = None, device: str = "cpu",
                 shape: tuple[int, int, int] = DEEPBET_SHAPE) -> np.ndarray:
    """deepbet brain mask of a NIfTI image, on that image's grid (bool [X, Y, Z]).

    ``shape`` is the grid the brain's bounding box is resized to for deepbet's second network
    (deepbet's own: 256^3); the network's time grows with its voxel count.
    """
    import nibabel as nib
    from deepbet import BrainExtraction
    from deepbet.utils import DATA_PATH

    model_dir = Path(model_dir) if model_dir else Path(DATA_PATH) / "models"
    model_path, bbox_model_path = model_dir / "model.pt", model_dir / "bbox_model.pt"
    for path in (model_path, bbox_model_path):
        if not path.is_file():
            raise FileNotFoundError(f"deepbet weights {path} not found (pip install deepbet==1.0.2 puts them in "
                                    "site-packages/data/models), or set preprocess.skullstrip.deepbet_model_dir")
    extractor = BrainExtraction(no_gpu=device == "cpu", model_path=str(model_path),
                                bbox_model_path=str(bbox_model_path))
    # BrainExtraction.run calls run_model without a shape; this instance's copy passes ours
    run_model = extractor.run_model
    extractor.run_model = lambda x: run_model(x, shape=tuple(int(n) for n in shape))
    image = nib.load(str(image_path))
    try:
        _, mask, _ = extractor.run(image)
    except AssertionError as error:
        # deepbet asserts when its first network finds no head at all; an empty mask lets QC
        # exclude the image with a reason (brain volume 0 mL) instead of stopping the run
        log.warning("deepbet found no brain in %s (%s): empty mask", image_path, error)
        return np.zeros(image.shape[:3], dtype=bool)
    return np.asarray(mask.dataobj) > 0


def _largest_component_filled(mask: np.ndarray) -> np.ndarray:
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return mask.astype(bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(sizes.argmax()))


def skull_strip(
    crop_path: str | Path, mask_path: str | Path, brain_path: str | Path, settings: SkullstripSettings,
    threads: int = 1,
) -> None:
    """Brain mask (uint8) and skull-stripped T1 (float32) of the registered crop, same grid.

    Args:
        settings: the method (``deepbet``, or ``synthstrip`` with its model file), the device and
            SynthStrip's input settings.
    """
    import nibabel as nib
    import torch

    torch.set_num_threads(int(threads))
    method, device = settings.method, settings.device
    if method == "synthstrip":
        state = load_synthstrip_checkpoint(settings.synthstrip_model, settings.synthstrip_sha256)
        mask = synthstrip_mask(crop_path, state, settings.border_mm, settings.conform_voxel_mm, settings.shape_limits,
                               device)
    elif method == "deepbet":
        mask = deepbet_mask(crop_path, settings.deepbet_model_dir, device, settings.deepbet_shape)
    else:
        raise ValueError(f"preprocess.skullstrip.method must be deepbet or synthstrip, got {method!r}")
    crop = nib.load(str(crop_path))
    data = np.asarray(crop.dataobj, dtype=np.float32)
    if mask.shape != data.shape:
        raise RuntimeError(f"{method} mask shape {mask.shape} differs from {crop_path} {data.shape}")
    for path in (mask_path, brain_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(mask.astype(np.uint8), crop.affine), str(mask_path))
    nib.save(nib.Nifti1Image(data * mask, crop.affine), str(brain_path))
    voxel_ml = float(np.prod(crop.header.get_zooms()[:3])) / 1000.0
    log.info("%s mask of %s: %.0f mL in template space", method, crop_path, mask.sum() * voxel_ml)
