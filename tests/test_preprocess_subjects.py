"""Synthetic T1 heads with a known pose, for the preprocessing tests and benchmark.

A stand-in until the shared generator (workflow/synthesize.py) is used: nilearn's brain template
with a synthetic CSF / skull / scalp shell, moved by a random affine onto an oblique-free but
permuted-axes "scanner" grid, multiplied by a smooth bias field, plus Rician noise. Ground truth is
written as docs/interfaces.md section 1 describes (``truth.json`` with ``template_to_subject``, and
the brain mask on the subject's grid), plus the true bias field for the N4 test.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from workflow.templates import mni_brain_mask, mni_template

# Subject field of view (mm): left-right, anterior-posterior, inferior-superior.
SCANNER_FOV_MM = (176.0, 240.0, 256.0)


def _rotation(degrees: np.ndarray) -> np.ndarray:
    rx, ry, rz = np.deg2rad(degrees)
    x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    return z @ y @ x


def template_head(voxel_size_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Head [X, Y, Z] on the MNI grid: the template brain inside CSF, skull and scalp shells.

    Returns (head intensities, brain mask, RAS affine).
    """
    template = mni_template(voxel_size_mm)
    brain = np.asarray(template.dataobj, dtype=np.float32)
    mask = np.asarray(mni_brain_mask(voxel_size_mm).dataobj) > 0
    top = float(np.percentile(brain[mask], 99))
    outside_mm = ndimage.distance_transform_edt(~mask) * voxel_size_mm
    head = np.where(mask, brain, 0.0).astype(np.float32)
    for (start, stop), level in (((0, 3), 0.15), ((3, 8), 0.04), ((8, 14), 0.75)):
        head[(outside_mm > start) & (outside_mm <= stop)] = level * top
    return head, mask, template.affine


def make_subject(
    out_dir: Path, subject: str, session: str = "M000", voxel_size_mm: float = 2.0, seed: int = 0,
) -> dict[str, Path]:
    """Write one synthetic native T1 with its ground truth; returns the paths (t1, truth, brainmask, bias)."""
    rng = np.random.default_rng(seed)
    head, mask, template_affine = template_head(voxel_size_mm)
    rotation_deg = rng.uniform(-10, 10, 3)
    translation_mm = rng.uniform(-10, 10, 3)
    scale = rng.uniform(0.95, 1.05, 3)
    template_to_subject = np.eye(4)
    template_to_subject[:3, :3] = _rotation(rotation_deg) @ np.diag(scale)
    template_to_subject[:3, 3] = translation_mm

    # a sagittal-style scanner grid (voxel axes: posterior, inferior, right) centred on the head
    fov = np.array(SCANNER_FOV_MM)
    shape = tuple(int(round(n / voxel_size_mm)) for n in (fov[1], fov[2], fov[0]))
    subject_affine = np.zeros((4, 4))
    subject_affine[0, 2] = voxel_size_mm
    subject_affine[1, 0] = -voxel_size_mm
    subject_affine[2, 1] = -voxel_size_mm
    subject_affine[3, 3] = 1.0
    subject_affine[:3, 3] = [-fov[0] / 2, fov[1] / 2 - 20, fov[2] / 2 - 20]

    index = np.indices(shape, dtype=np.float32).reshape(3, -1).T
    world = index @ subject_affine[:3, :3].T + subject_affine[:3, 3]
    to_template_voxel = np.linalg.inv(template_affine) @ np.linalg.inv(template_to_subject)
    template_index = (world @ to_template_voxel[:3, :3].T + to_template_voxel[:3, 3]).T
    image = ndimage.map_coordinates(head, template_index, order=1, cval=0.0).reshape(shape)
    true_mask = ndimage.map_coordinates(mask.astype(np.float32), template_index, order=1).reshape(shape) > 0.5

    field = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=48.0 / voxel_size_mm)
    field = 2 * (field - field.min()) / (field.max() - field.min()) - 1
    bias = np.exp(0.3 * field).astype(np.float32)
    sigma = 0.02 * float(np.percentile(image, 99))
    noisy = np.sqrt((image * bias + rng.normal(0, sigma, shape)) ** 2 + rng.normal(0, sigma, shape) ** 2)

    out_dir = Path(out_dir)
    truth_dir = out_dir / "truth"
    truth_dir.mkdir(parents=True, exist_ok=True)
    stem = f"sub-{subject}_ses-{session}"
    files = {
        "t1": out_dir / f"{stem}_T1w.nii.gz",
        "truth": truth_dir / f"{stem}_truth.json",
        "brainmask": truth_dir / f"{stem}_brainmask.nii.gz",
        "bias": truth_dir / f"{stem}_bias.nii.gz",
    }
    nib.save(nib.Nifti1Image(noisy.astype(np.float32), subject_affine), str(files["t1"]))
    nib.save(nib.Nifti1Image(true_mask.astype(np.uint8), subject_affine), str(files["brainmask"]))
    nib.save(nib.Nifti1Image(bias, subject_affine), str(files["bias"]))
    files["truth"].write_text(json.dumps({
        "subject": subject, "session": session, "voxel_size_mm": voxel_size_mm, "shape": list(shape),
        "template_to_subject": template_to_subject.tolist(), "rotation_deg": rotation_deg.tolist(),
        "translation_mm": translation_mm.tolist(), "scale": scale.tolist(),
        "bias_field_range": [float(bias.min()), float(bias.max())], "noise_sigma": sigma,
    }, indent=1))
    return files


def test_synthetic_subject_truth_is_consistent(tmp_path: Path) -> None:
    """The true brain mask sits where the true pose puts the template brain."""
    files = make_subject(tmp_path, "S1", voxel_size_mm=4.0, seed=3)
    truth = json.loads(files["truth"].read_text())
    native = nib.load(str(files["brainmask"]))
    template_mask = mni_brain_mask(4.0)
    points = np.argwhere(np.asarray(template_mask.dataobj) > 0)[::7]
    world = points @ template_mask.affine[:3, :3].T + template_mask.affine[:3, 3]
    moved = world @ np.asarray(truth["template_to_subject"])[:3, :3].T + np.asarray(truth["template_to_subject"])[:3, 3]
    index = np.round((moved - native.affine[:3, 3]) @ np.linalg.inv(native.affine[:3, :3]).T).astype(int)
    inside = np.all((index >= 0) & (index < native.shape), axis=1)
    hits = np.asarray(native.dataobj)[tuple(index[inside].T)]
    assert inside.mean() > 0.95 and hits.mean() > 0.9
