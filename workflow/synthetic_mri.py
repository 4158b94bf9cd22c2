"""Synthetic T1-weighted HEAD volumes with known pose, brain mask, bias field and noise.

The brain is nilearn's ICBM 2009 template on the MNI152NLin2009c grid (:mod:`workflow.templates`),
which has no skull. Around it we add shells by distance from a smoothed brain envelope, with T1
contrast: CSF (dark), skull inner table (very dark), diploic marrow (brighter), outer table (dark),
galea/muscle (grey), scalp fat (bright), skin; plus a neck below the skull, so skull stripping has
real work. Per subject:

1. atrophy that grows with ``severity`` in [0, 1]: ventricles dilated (up to
   :data:`VENTRICLE_DILATION_MM`), hippocampi shrunk (up to :data:`HIPPOCAMPUS_SHRINK` of their
   radius, tissue replaced by CSF) and cortex thinned from the outside (up to
   :data:`CORTEX_THINNING_MM`), so the image carries diagnostic signal;
2. skull and scalp thickness varied;
3. a random pose (rotation, translation, per-axis scale): ``template_to_subject`` maps a template
   world point p (RAS mm) to ``A @ p`` in the subject's scanner world;
4. resampling (trilinear) onto a "scanner" grid with its own field of view, origin and axis
   orientation (NACC volumes are stored left-to-right flipped, as many DICOM converters write them);
5. a smooth multiplicative bias field ``exp(strength * f)``, f a sum of long-wavelength plane
   waves scaled to [-1, 1], and Rician noise of ``sigma = noise_fraction * p99``;
6. stored as int16 with a random scanner gain.

The template-space model (distance maps, masks) is built once per voxel size and process
(:func:`head_model`); a volume then costs only vectorised numpy/scipy passes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import nibabel as nib
import numpy as np
from scipy import ndimage

from workflow.templates import mni_brain_mask, mni_template, mni_tissue_probability

# Atrophy at severity 1 (larger ventricles, smaller hippocampi, thinner cortex).
VENTRICLE_DILATION_MM = 4.0
HIPPOCAMPUS_SHRINK = 0.3
CORTEX_THINNING_MM = 1.5
# Hippocampus as two tilted ellipsoids (MNI mm): centre, semi-axes (x, long axis, across), tilt of
# the long axis from the posterior (-y) direction towards superior, in degrees.
HIPPOCAMPUS_CENTRES = ((-28.0, -24.0, -10.0), (28.0, -24.0, -10.0))
HIPPOCAMPUS_SEMI_AXES_MM = (6.0, 19.0, 6.0)
HIPPOCAMPUS_TILT_DEG = 32.0
# Lateral ventricles: dark voxels inside this central box (MNI mm, (low, high) per axis).
VENTRICLE_BOX_MM = ((-28.0, 28.0), (-42.0, 28.0), (-2.0, 32.0))

# T1 intensities relative to the template (white matter ~0.86).
CSF = 0.22
BONE = 0.05
MARROW = 0.55
MUSCLE = 0.35
FAT = 1.0
SKIN = 0.55
# Layers outside the brain envelope: (name, base thickness mm, value, which thickness factor).
HEAD_LAYERS = (
    ("csf", 1.5, CSF, None),
    ("inner_table", 2.0, BONE, "skull"),
    ("diploe", 3.0, MARROW, "skull"),
    ("outer_table", 1.5, BONE, "skull"),
    ("galea_muscle", 2.0, MUSCLE, "scalp"),
    ("fat", 4.0, FAT, "scalp"),
    ("skin", 1.5, SKIN, "scalp"),
)
ENVELOPE_SMOOTHING_MM = 4.0
TEMPLATE_PAD_MM = 24.0
# Neck: an elliptic cylinder below this height (MNI z, mm), centred at (x, y), semi-axes (x, y).
NECK_TOP_MM = -35.0
NECK_CENTRE_MM = (0.0, -15.0)
NECK_SEMI_AXES_MM = (48.0, 50.0)
# Centre of the head in template world (mm), where the scanner field of view is centred.
HEAD_CENTRE_MM = (0.0, -18.0, 12.0)


@dataclass(frozen=True)
class PoseSettings:
    """Ranges of the random pose and image degradations (uniform draws)."""

    rotation_deg: float = 10.0
    translation_mm: float = 10.0
    scale: float = 0.05
    fov_mm: tuple[tuple[float, float], tuple[float, float], tuple[float, float]] = (
        (184.0, 200.0), (236.0, 256.0), (210.0, 230.0))
    fov_offset_mm: float = 6.0
    bias_strength: tuple[float, float] = (0.15, 0.3)
    bias_wavelength_mm: tuple[float, float] = (200.0, 400.0)
    noise_fraction: tuple[float, float] = (0.01, 0.03)
    gain: tuple[float, float] = (800.0, 1200.0)
    skull_thickness: tuple[float, float] = (0.85, 1.2)
    scalp_thickness: tuple[float, float] = (0.8, 1.3)


@dataclass(frozen=True)
class HeadModel:
    """Template-space ingredients at one voxel size (arrays of the padded template grid [X, Y, Z]).

    ``t1``: brain intensities (0 outside the brain); ``brain``: brain mask (bool);
    ``gm_dominant``: grey matter more likely than white; ``gm``: grey-matter probability;
    ``ventricle_mm``: distance to the ventricles; ``hippocampus_radius``: normalised ellipsoid
    radius (< 1 inside a hippocampus); ``depth_mm``: depth inside the brain from its surface;
    ``envelope_mm``: distance outside the smoothed brain envelope (0 inside); ``neck``: neck region.
    """

    voxel_size_mm: float
    affine: np.ndarray
    t1: np.ndarray
    brain: np.ndarray
    gm: np.ndarray
    gm_dominant: np.ndarray
    ventricle_mm: np.ndarray
    hippocampus_radius: np.ndarray
    depth_mm: np.ndarray
    envelope_mm: np.ndarray
    neck: np.ndarray
    neck_radius: np.ndarray


@lru_cache(maxsize=4)
def head_model(voxel_size_mm: float) -> HeadModel:
    """Build (once per process and voxel size) the template-space head model."""
    v = float(voxel_size_mm)
    pad = int(math.ceil(TEMPLATE_PAD_MM / v))
    template = mni_template(v)
    affine = template.affine.copy()
    affine[:3, 3] -= pad * v

    def padded(img: nib.Nifti1Image) -> np.ndarray:
        return np.pad(np.asarray(img.dataobj, dtype=np.float32), pad)

    t1 = padded(template)
    brain = ndimage.binary_fill_holes(padded(mni_brain_mask(v)) > 0)
    gm, wm = padded(mni_tissue_probability("gm", v)), padded(mni_tissue_probability("wm", v))
    t1 = np.where(brain, t1, 0).astype(np.float32)
    x, y, z = _world_axes(t1.shape, affine)

    box = ((x >= VENTRICLE_BOX_MM[0][0]) & (x <= VENTRICLE_BOX_MM[0][1]))
    box = box & ((y >= VENTRICLE_BOX_MM[1][0]) & (y <= VENTRICLE_BOX_MM[1][1]))
    box = box & ((z >= VENTRICLE_BOX_MM[2][0]) & (z <= VENTRICLE_BOX_MM[2][1]))
    inner = ndimage.binary_erosion(brain, iterations=max(1, int(round(6.0 / v))))
    wm_level = float(np.median(t1[wm > 0.8])) if np.any(wm > 0.8) else float(t1.max())
    ventricles = box & inner & (t1 < 0.45 * wm_level)
    if not ventricles.any():  # very coarse grids: take the darkest central voxels
        candidates = box & inner
        ventricles = candidates & (t1 <= np.percentile(t1[candidates], 5))
    ventricle_mm = ndimage.distance_transform_edt(~ventricles, sampling=v).astype(np.float32)

    hippocampus_radius = np.full(t1.shape, np.inf, dtype=np.float32)
    tilt = math.radians(HIPPOCAMPUS_TILT_DEG)
    axis = np.array([0.0, -math.cos(tilt), math.sin(tilt)])
    across = np.array([0.0, math.sin(tilt), math.cos(tilt)])
    a_x, a_long, a_across = HIPPOCAMPUS_SEMI_AXES_MM
    for cx, cy, cz in HIPPOCAMPUS_CENTRES:
        dx, dy, dz = x - cx, y - cy, z - cz
        along = dy * axis[1] + dz * axis[2]
        side = dy * across[1] + dz * across[2]
        radius = np.sqrt((dx / a_x) ** 2 + (along / a_long) ** 2 + (side / a_across) ** 2).astype(np.float32)
        hippocampus_radius = np.minimum(hippocampus_radius, radius)

    depth_mm = ndimage.distance_transform_edt(brain, sampling=v).astype(np.float32)
    sigma = ENVELOPE_SMOOTHING_MM / v
    envelope = ndimage.binary_fill_holes(ndimage.gaussian_filter(brain.astype(np.float32), sigma) > 0.3) | brain
    envelope_mm = ndimage.distance_transform_edt(~envelope, sampling=v).astype(np.float32)

    neck_radius = np.sqrt(((x - NECK_CENTRE_MM[0]) / NECK_SEMI_AXES_MM[0]) ** 2
                          + ((y - NECK_CENTRE_MM[1]) / NECK_SEMI_AXES_MM[1]) ** 2).astype(np.float32)
    neck = (neck_radius <= 1.0) & (z <= NECK_TOP_MM)
    return HeadModel(v, affine, t1, brain, gm, gm > wm, ventricle_mm, hippocampus_radius, depth_mm,
                     envelope_mm, neck, np.broadcast_to(neck_radius, t1.shape))


def _world_axes(shape: tuple[int, ...], affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """World coordinates (mm) of a diagonal-affine grid as broadcastable [X,1,1], [1,Y,1], [1,1,Z]."""
    axes = [affine[k, k] * np.arange(shape[k], dtype=np.float32) + affine[k, 3] for k in range(3)]
    return axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]


def atrophy_parameters(severity: float) -> dict[str, float]:
    """Atrophy amounts at ``severity`` in [0, 1] (0 = none)."""
    severity = float(np.clip(severity, 0.0, 1.0))
    return {"ventricle_dilation_mm": VENTRICLE_DILATION_MM * severity,
            "hippocampus_shrink": HIPPOCAMPUS_SHRINK * severity,
            "cortex_thinning_mm": CORTEX_THINNING_MM * severity}


def template_head(model: HeadModel, atrophy: dict[str, float], skull: float, scalp: float) -> np.ndarray:
    """The subject's head in template space [X, Y, Z] float32: atrophied brain, shells and neck."""
    v = model.voxel_size_mm
    ventricle = np.clip((atrophy["ventricle_dilation_mm"] - model.ventricle_mm) / v + 0.5, 0, 1)
    ventricle = np.where(model.ventricle_mm > 0, ventricle, 0)
    cortex = np.clip((atrophy["cortex_thinning_mm"] - (model.depth_mm - v / 2)) / v + 0.5, 0, 1)
    cortex = cortex * model.gm_dominant * (atrophy["cortex_thinning_mm"] > 0)
    shell = (model.hippocampus_radius <= 1.0) & (model.hippocampus_radius > 1.0 - atrophy["hippocampus_shrink"])
    hippocampus = shell * np.clip(2.0 * model.gm, 0, 1)
    to_csf = np.maximum(np.maximum(ventricle, cortex), hippocampus)
    brain = model.t1 * (1 - to_csf) + CSF * to_csf

    knots, values = [], []
    start, value_before = 0.0, CSF
    ramp = v / 2
    factors = {None: 1.0, "skull": skull, "scalp": scalp}
    for _name, thickness, value, factor in HEAD_LAYERS:
        end = start + thickness * factors[factor]
        if start > 0:
            half = min(ramp, (end - start) / 2)
            knots += [start - half, start + half]
            values += [value_before, value]
        value_before, start = value, end
    knots += [start - min(ramp, 0.5), start + min(ramp, 0.5)]
    values += [value_before, 0.0]
    knots = np.maximum.accumulate(np.asarray(knots))
    shells = np.interp(model.envelope_mm, knots, values).astype(np.float32)
    neck = np.where(model.neck_radius > 0.85, FAT, MUSCLE).astype(np.float32)
    shells = np.where(model.neck & (shells == 0), neck, shells)
    return np.where(model.brain, brain, shells).astype(np.float32)


def rotation_matrix(angles_deg: np.ndarray) -> np.ndarray:
    """3x3 rotation about x, then y, then z (angles in degrees)."""
    ax, ay, az = np.radians(angles_deg)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def pose_affine(rotation_deg: np.ndarray, translation_mm: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """4x4 ``template_to_subject`` = translate @ rotate @ scale (RAS world mm)."""
    affine = np.eye(4)
    affine[:3, :3] = rotation_matrix(rotation_deg) @ np.diag(scale)
    affine[:3, 3] = translation_mm
    return affine


def scanner_grid(pose: np.ndarray, voxel_size_mm: float, fov_mm: np.ndarray, offset_mm: np.ndarray,
                 flip_x: bool) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and affine of the subject's image grid: field of view ``fov_mm`` centred on the posed
    head centre plus ``offset_mm``; x stored right-to-left when ``flip_x``."""
    shape = tuple(int(round(f / voxel_size_mm)) for f in fov_mm)
    centre = (pose @ np.array([*HEAD_CENTRE_MM, 1.0]))[:3] + offset_mm
    spacing = np.array([-voxel_size_mm if flip_x else voxel_size_mm, voxel_size_mm, voxel_size_mm])
    affine = np.eye(4)
    affine[:3, :3] = np.diag(spacing)
    affine[:3, 3] = centre - spacing * (np.array(shape) - 1) / 2
    return shape, affine


def bias_field(shape: tuple[int, int, int], affine: np.ndarray, strength: float, wavelengths_mm: tuple[float, float],
               rng: np.random.Generator, waves: int = 4) -> np.ndarray:
    """Smooth multiplicative field ``exp(strength * f)`` [X, Y, Z] float32, f scaled to [-1, 1]."""
    axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * abs(affine[k, k]) for k, n in enumerate(shape)]
    field = np.zeros(shape, dtype=np.float32)
    for _ in range(waves):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        k = 2 * math.pi / rng.uniform(*wavelengths_mm) * direction
        phase = rng.uniform(0, 2 * math.pi)
        field += np.cos(k[0] * axes[0][:, None, None] + k[1] * axes[1][None, :, None]
                        + k[2] * axes[2][None, None, :] + phase, dtype=np.float32) * np.float32(rng.uniform(0.5, 1.0))
    low, high = float(field.min()), float(field.max())
    field = (field - low) / max(high - low, 1e-6) * 2 - 1
    return np.exp(np.float32(strength) * field).astype(np.float32)


@dataclass
class SyntheticVolume:
    """One synthetic T1w: the image (int16), the brain mask on its grid (uint8), the truth, and the
    multiplicative bias field applied on the image grid (float32; what N4 should recover)."""

    image: nib.Nifti1Image
    brain_mask: nib.Nifti1Image
    truth: dict
    bias_field: np.ndarray


def synthesize_volume(voxel_size_mm: float, severity: float, rng: np.random.Generator, flip_x: bool = False,
                      pose: PoseSettings = PoseSettings()) -> SyntheticVolume:
    """A head T1w of a subject at ``severity`` (0 healthy .. 1 severe atrophy) in its own scanner space.

    Args:
        voxel_size_mm: isotropic voxel size of the template model and of the output grid.
        severity: atrophy amount in [0, 1].
        rng: the session's generator (same state -> identical volume).
        flip_x: store the x axis right-to-left (negative first affine column).
        pose: ranges of the random pose and degradations.
    Returns the volume; ``truth`` holds the JSON-ready ground truth (docs/interfaces.md section 1).
    """
    model = head_model(float(voxel_size_mm))
    atrophy = atrophy_parameters(severity)
    skull, scalp = rng.uniform(*pose.skull_thickness), rng.uniform(*pose.scalp_thickness)
    head = template_head(model, atrophy, skull, scalp)

    rotation = rng.uniform(-pose.rotation_deg, pose.rotation_deg, 3)
    translation = rng.uniform(-pose.translation_mm, pose.translation_mm, 3)
    scale = rng.uniform(1 - pose.scale, 1 + pose.scale, 3)
    to_subject = pose_affine(rotation, translation, scale)
    fov = np.array([rng.uniform(*r) for r in pose.fov_mm])
    fov_offset = rng.uniform(-pose.fov_offset_mm, pose.fov_offset_mm, 3)
    shape, affine = scanner_grid(to_subject, voxel_size_mm, fov, fov_offset, flip_x)

    # Output voxel -> template voxel: inv(template grid) @ inv(pose) @ subject grid.
    voxel_map = np.linalg.inv(model.affine) @ np.linalg.inv(to_subject) @ affine
    matrix, offset = voxel_map[:3, :3], voxel_map[:3, 3]
    posed = ndimage.affine_transform(head, matrix, offset, output_shape=shape, order=1, mode="constant", cval=0.0,
                                     prefilter=False)
    mask = ndimage.affine_transform(model.brain.astype(np.uint8), matrix, offset, output_shape=shape, order=0,
                                    mode="constant", cval=0)

    strength = rng.uniform(*pose.bias_strength)
    bias = bias_field(shape, affine, strength, pose.bias_wavelength_mm, rng)
    biased = posed * bias
    head_voxels = posed > 0.01
    reference = float(np.percentile(biased[::3, ::3, ::3], 99))
    noise_fraction = rng.uniform(*pose.noise_fraction)
    sigma = np.float32(noise_fraction * reference)
    real = biased + sigma * rng.standard_normal(shape, dtype=np.float32)
    imaginary = sigma * rng.standard_normal(shape, dtype=np.float32)
    gain = rng.uniform(*pose.gain)
    data = np.clip(np.rint(np.sqrt(real * real + imaginary * imaginary) * np.float32(gain)), 0, 32767).astype(np.int16)

    image = nib.Nifti1Image(data, affine)
    brain_mask = nib.Nifti1Image(mask.astype(np.uint8), affine)
    for img in (image, brain_mask):
        img.set_sform(affine, code=1)
        img.set_qform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
    bias_in_head = bias[head_voxels] if head_voxels.any() else bias
    truth = {
        "severity": round(float(severity), 6),
        "voxel_size_mm": float(voxel_size_mm),
        "shape": list(shape),
        "image_affine": np.round(affine, 6).tolist(),
        "template_to_subject": np.round(to_subject, 8).tolist(),
        "rotation_deg": np.round(rotation, 6).tolist(),
        "translation_mm": np.round(translation, 6).tolist(),
        "scale": np.round(scale, 6).tolist(),
        "bias_field_strength": round(float(strength), 6),
        "bias_field_range": [round(float(bias_in_head.min()), 6), round(float(bias_in_head.max()), 6)],
        "noise_sigma": round(float(sigma * gain), 6),
        "noise_fraction_of_p99": round(float(noise_fraction), 6),
        "intensity_gain": round(float(gain), 6),
        "skull_thickness_factor": round(float(skull), 6),
        "scalp_thickness_factor": round(float(scalp), 6),
        "brain_voxels": int(mask.sum()),
        **{k: round(float(val), 6) for k, val in atrophy.items()},
    }
    return SyntheticVolume(image, brain_mask, truth, bias)
