"""The MNI template that ships offline, placed on the MNI152NLin2009c grid.

nilearn ships the ICBM 2009a brain-only T1 (and grey/white-matter maps) but no head template.
Clinica's crop box assumes the MNI152NLin2009c 1 mm grid (193 x 229 x 193, origin
(-96, -132, -78)), so the shipped images are resampled onto that grid (or a coarser grid with the
same field of view) before anything uses them. Used by the synthetic generator (to build heads) and
by preprocessing (as the default registration target).
"""

from __future__ import annotations

from functools import lru_cache

import nibabel as nib
import numpy as np

# MNI152NLin2009c 1 mm grid as Clinica uses it.
MNI2009C_SHAPE_1MM = (193, 229, 193)
MNI2009C_ORIGIN_MM = (-96.0, -132.0, -78.0)


def mni2009c_grid(voxel_size_mm: float = 1.0) -> tuple[tuple[int, int, int], np.ndarray]:
    """Shape and RAS affine of the MNI152NLin2009c field of view at an isotropic voxel size."""
    if voxel_size_mm <= 0:
        raise ValueError(f"voxel_size_mm must be positive, got {voxel_size_mm}")
    shape = tuple(int(round(n / voxel_size_mm)) for n in MNI2009C_SHAPE_1MM)
    affine = np.diag([voxel_size_mm, voxel_size_mm, voxel_size_mm, 1.0])
    affine[:3, 3] = MNI2009C_ORIGIN_MM
    return shape, affine


@lru_cache(maxsize=8)
def _resampled(kind: str, voxel_size_mm: float) -> nib.Nifti1Image:
    from nilearn import datasets, image

    loaders = {
        "t1": datasets.load_mni152_template,
        "gm": datasets.load_mni152_gm_template,
        "wm": datasets.load_mni152_wm_template,
    }
    source = loaders[kind](resolution=1)
    shape, affine = mni2009c_grid(voxel_size_mm)
    resampled = image.resample_img(
        source, target_affine=affine, target_shape=shape, interpolation="continuous",
        force_resample=True, copy_header=True,
    )
    data = np.clip(np.asarray(resampled.get_fdata(), dtype=np.float32), 0, None)
    return nib.Nifti1Image(data, affine)


def mni_template(voxel_size_mm: float = 1.0) -> nib.Nifti1Image:
    """nilearn's brain-only ICBM 2009 T1 on the MNI152NLin2009c grid (float32, >= 0)."""
    return _resampled("t1", float(voxel_size_mm))


def mni_tissue_probability(tissue: str, voxel_size_mm: float = 1.0) -> nib.Nifti1Image:
    """Grey ('gm') or white ('wm') matter probability on the MNI152NLin2009c grid, in [0, 1]."""
    if tissue not in ("gm", "wm"):
        raise ValueError(f"tissue must be 'gm' or 'wm', got {tissue!r}")
    img = _resampled(tissue, float(voxel_size_mm))
    data = np.asarray(img.dataobj, dtype=np.float32)
    return nib.Nifti1Image(np.clip(data / max(float(data.max()), 1e-6), 0, 1), img.affine)


def mni_brain_mask(voxel_size_mm: float = 1.0) -> nib.Nifti1Image:
    """Brain mask of the shipped template: its intensity above 0.2 of the maximum (uint8)."""
    img = mni_template(voxel_size_mm)
    data = np.asarray(img.dataobj)
    return nib.Nifti1Image((data > 0.2 * data.max()).astype(np.uint8), img.affine)
