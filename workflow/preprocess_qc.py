"""Quality control of preprocessed images: per-image metrics and mosaic, per-cohort table.

Per image (``image_qc``): normalised cross-correlation with the template inside the template's brain
mask (registration quality), brain volume, and on synthetic data (truth sidecar present) the pose
error of the estimated affine against the true one and the Dice of the brain mask against the true
mask. Per cohort (``cohort_qc``): one row per image of intake's table with ``passed`` and ``reason``,
thresholds applied here (so changing one reruns only this step), and every failure in the
exclusions table.

Conventions: NIfTI/nibabel world coordinates are RAS; ITK/ANTs ``.mat`` transforms act on LPS.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas loads only where a cohort table is read: not in the per-image jobs
    import pandas as pd

from workflow import paths
from workflow.preprocess import read_images_table, read_verdicts
from workflow.settings import QcThresholds

log = logging.getLogger(__name__)

STAGE = "preprocess"
QC_COLUMNS = ["cohort", "subject", "session", "passed", "reason", "volume"]
METRIC_COLUMNS = ["ncc_template", "brain_volume_ml", "pose_error_mm", "pose_error_max_mm", "dice_truth"]
LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


# --- transforms -----------------------------------------------------------------------------------
def read_itk_affine(mat_path: str | Path) -> np.ndarray:
    """4x4 matrix (RAS world mm) of an ITK affine ``.mat`` as ANTs writes it.

    ANTs' forward transform of a registration maps points of the fixed (template) space to the
    moving (native) space, so the result maps a template point p (RAS) to the native point A @ p.
    """
    from scipy.io import loadmat

    content = loadmat(str(mat_path))
    key = next((k for k in content if k.startswith("AffineTransform")), None)
    if key is None:
        raise ValueError(f"{mat_path}: no AffineTransform in this ITK .mat (keys {sorted(content)})")
    parameters = np.asarray(content[key], dtype=float).ravel()
    center = np.asarray(content["fixed"], dtype=float).ravel()
    matrix, translation = parameters[:9].reshape(3, 3), parameters[9:12]
    lps = np.eye(4)
    lps[:3, :3] = matrix
    lps[:3, 3] = translation + center - matrix @ center  # ITK: y = M (x - c) + c + t
    return LPS_FROM_RAS @ lps @ LPS_FROM_RAS


def apply_affine(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """``matrix`` (4x4) applied to ``points`` [N, 3]."""
    return points @ matrix[:3, :3].T + matrix[:3, 3]


def voxel_world_points(mask: np.ndarray, affine: np.ndarray, step: int = 1) -> np.ndarray:
    """World coordinates [N, 3] of the nonzero voxels of ``mask`` (every ``step``-th along each axis)."""
    index = np.argwhere(mask[::step, ::step, ::step] > 0) * step
    return apply_affine(affine, index.astype(float))


def pose_error_mm(estimated: np.ndarray, true: np.ndarray, points: np.ndarray) -> tuple[float, float]:
    """Mean and max distance (mm) between ``points`` [N, 3] mapped by two 4x4 transforms."""
    distance = np.linalg.norm(apply_affine(estimated, points) - apply_affine(true, points), axis=1)
    return float(distance.mean()), float(distance.max())


def resample_native_mask(native_mask: np.ndarray, native_affine: np.ndarray, template_to_native: np.ndarray,
                         grid_shape: tuple[int, int, int], grid_affine: np.ndarray) -> np.ndarray:
    """A native-space mask pulled onto a template-space grid through ``template_to_native`` (bool)."""
    from scipy import ndimage

    # one voxel-to-voxel affine, applied by scipy without an array of coordinates (6 M points at 1 mm)
    grid_to_native_voxels = np.linalg.inv(native_affine) @ template_to_native @ grid_affine
    values = ndimage.affine_transform(native_mask.astype(np.float32), grid_to_native_voxels, output_shape=grid_shape,
                                      order=1, mode="constant", cval=0.0)
    return values > 0.5


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice overlap of two boolean arrays of the same shape."""
    total = int(a.sum()) + int(b.sum())
    return 2.0 * int(np.logical_and(a, b).sum()) / total if total else 1.0


def masked_ncc(image: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> float:
    """Normalised cross-correlation of two arrays inside ``mask`` (in [-1, 1])."""
    a = image[mask > 0].astype(np.float64)
    b = reference[mask > 0].astype(np.float64)
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else 0.0


# --- per image ------------------------------------------------------------------------------------
def image_qc(
    cohort: str, subject: str, session: str, crop_path: str | Path, mask_path: str | Path,
    affine_path: str | Path, template_crop_path: str | Path, template_brainmask_path: str | Path,
    truth_path: str | Path, truth_brainmask_path: str | Path, qc_path: str | Path, mosaic_path: str | Path,
    volume_path: str = "",
) -> dict:
    """Metrics of one preprocessed image (JSON at ``qc_path``) and its mosaic PNG.

    Args:
        crop_path, mask_path: registered crop and its brain mask (same grid as the template crop).
        affine_path: the ITK affine of the registration (template to native).
        truth_path, truth_brainmask_path: synthetic ground truth; ignored when the files do not
            exist (real data), and then the pose error and Dice are left empty.
        volume_path: the model-ready volume, recorded in the JSON.
    """
    import nibabel as nib

    crop = nib.load(str(crop_path))
    image = np.asarray(crop.dataobj, dtype=np.float32)
    mask = np.asarray(nib.load(str(mask_path)).dataobj) > 0
    template = np.asarray(nib.load(str(template_crop_path)).dataobj, dtype=np.float32)
    template_mask = np.asarray(nib.load(str(template_brainmask_path)).dataobj) > 0
    template_to_native = read_itk_affine(affine_path)
    voxel_ml = float(abs(np.linalg.det(crop.affine[:3, :3]))) / 1000.0
    metrics: dict = {
        "cohort": cohort, "subject": subject, "session": session, "volume": str(volume_path),
        "ncc_template": masked_ncc(image, template, template_mask),
        # the mask lives in template space: scale by the affine's volume change to get native mL
        "brain_volume_ml": float(mask.sum()) * voxel_ml * float(abs(np.linalg.det(template_to_native[:3, :3]))),
        "pose_error_mm": None, "pose_error_max_mm": None, "dice_truth": None,
    }
    if Path(truth_path).is_file():
        truth = json.loads(Path(truth_path).read_text())
        true_transform = np.asarray(truth["template_to_subject"], dtype=float)
        points = voxel_world_points(template_mask, crop.affine, step=2)
        mean, largest = pose_error_mm(template_to_native, true_transform, points)
        metrics["pose_error_mm"], metrics["pose_error_max_mm"] = mean, largest
        if Path(truth_brainmask_path).is_file():
            native = nib.load(str(truth_brainmask_path))
            true_mask = resample_native_mask(np.asarray(native.dataobj) > 0, native.affine, template_to_native,
                                             image.shape, crop.affine)
            metrics["dice_truth"] = dice(mask, true_mask)
    Path(qc_path).parent.mkdir(parents=True, exist_ok=True)
    Path(qc_path).write_text(json.dumps(metrics, indent=1) + "\n")
    write_mosaic(image, mask, template_mask, mosaic_path, title=_mosaic_title(metrics))
    log.info("QC %s/%s/%s: %s", cohort, subject, session, {k: metrics[k] for k in METRIC_COLUMNS})
    return metrics


def _mosaic_title(metrics: dict) -> str:
    parts = [f"sub-{metrics['subject']} ses-{metrics['session']}", f"NCC {metrics['ncc_template']:.2f}",
             f"brain {metrics['brain_volume_ml']:.0f} mL"]
    if metrics["pose_error_mm"] is not None:
        parts.append(f"pose err {metrics['pose_error_mm']:.2f} mm")
    if metrics["dice_truth"] is not None:
        parts.append(f"Dice {metrics['dice_truth']:.3f}")
    return ", ".join(parts)


def write_mosaic(image: np.ndarray, mask: np.ndarray, template_mask: np.ndarray, png_path: str | Path,
                 title: str = "", slices_per_view: int = 3) -> None:
    """PNG of a few sagittal, coronal and axial slices of ``image`` [X, Y, Z] (RAS voxel order) with
    the brain mask outline (red) and the template's brain outline (cyan, registration check)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(3, slices_per_view, figsize=(2.2 * slices_per_view, 6.6), facecolor="black")
    limit = float(np.percentile(image, 99.5)) or 1.0
    for row, axis in enumerate((0, 1, 2)):
        extent = np.flatnonzero(mask.any(axis=tuple(a for a in range(3) if a != axis)))
        low, high = (extent.min(), extent.max()) if extent.size else (0, image.shape[axis] - 1)
        for column, fraction in enumerate(np.linspace(0.3, 0.7, slices_per_view)):
            index = int(round(low + fraction * (high - low)))
            panel = axes[row, column]
            take = lambda volume: np.rot90(np.take(volume, index, axis=axis))  # noqa: E731 -- superior/anterior up
            panel.imshow(take(image), cmap="gray", vmin=0, vmax=limit, interpolation="nearest")
            panel.contour(take(mask).astype(float), levels=[0.5], colors="red", linewidths=0.6)
            panel.contour(take(template_mask).astype(float), levels=[0.5], colors="cyan", linewidths=0.4)
            panel.axis("off")
    figure.suptitle(title, color="white", fontsize=7)
    figure.tight_layout()
    Path(png_path).parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(str(png_path), dpi=80, facecolor="black")
    plt.close(figure)


# --- per cohort -----------------------------------------------------------------------------------
def failed_thresholds(metrics: dict, thresholds: QcThresholds) -> list[str]:
    """Reasons why an image's metrics fail the configured QC thresholds (empty when it passes).

    The pose error and Dice thresholds apply only where the metrics have them (synthetic data).
    """
    reasons = []
    if metrics["ncc_template"] < thresholds.min_ncc:
        reasons.append(f"registration NCC with the template {metrics['ncc_template']:.3f} < {thresholds.min_ncc}")
    low, high = thresholds.brain_volume_ml
    if not low <= metrics["brain_volume_ml"] <= high:
        reasons.append(f"brain volume {metrics['brain_volume_ml']:.0f} mL outside [{low}, {high}] mL")
    if metrics.get("pose_error_mm") is not None and metrics["pose_error_mm"] > thresholds.max_pose_error_mm:
        reasons.append(f"pose error {metrics['pose_error_mm']:.2f} mm > {thresholds.max_pose_error_mm} mm")
    if metrics.get("dice_truth") is not None and metrics["dice_truth"] < thresholds.min_dice:
        reasons.append(f"brain mask Dice vs truth {metrics['dice_truth']:.3f} < {thresholds.min_dice}")
    return reasons


def cohort_qc(
    cohort: str, images_tsv: str | Path, verdict_paths: list[str], model_ready_folders: list[str],
    thresholds: QcThresholds, qc_tsv: str | Path, exclusions_tsv: str | Path,
) -> pd.DataFrame:
    """Write the cohort's ``qc.tsv`` (one row per image of ``images_tsv``) and ``exclusions.tsv``.

    Args:
        verdict_paths: the input-check verdict files (``check_batch`` lists) covering every image.
        model_ready_folders: the model-ready step's batch folders, which cover every image that
            passed the check: an ``image_qc`` JSON per image done, the failing step's reason per
            image that failed (``workflow.preprocess_batch``).
        thresholds: see ``failed_thresholds``.
    """
    import pandas as pd

    from workflow.preprocess_batch import DONE, read_outcomes

    images = read_images_table(images_tsv)
    verdicts = read_verdicts(verdict_paths)
    outcomes = [outcome for folder in model_ready_folders for outcome in read_outcomes(folder)]
    metrics = {(o.subject, o.session): _read_json(o.files["qc"]) for o in outcomes if o.status == DONE}
    failures = {(o.subject, o.session): o.reason for o in outcomes if o.status != DONE}
    rows, exclusions = [], []
    for _, image in images.iterrows():
        key = (image["subject"], image["session"])
        verdict = verdicts.get(key)
        if verdict is None:
            raise ValueError(f"no check verdict for subject {key[0]} session {key[1]} of {images_tsv}")
        row = {"cohort": cohort, "subject": key[0], "session": key[1], "passed": False, "reason": "", "volume": ""}
        if not verdict["passed"]:
            row["reason"] = f"input check: {verdict['reason']}"
        elif key in failures:
            row["reason"] = f"preprocessing: {failures[key]}"
        elif key not in metrics:
            raise ValueError(f"no QC metrics for accepted image subject {key[0]} session {key[1]}")
        else:
            row.update({name: metrics[key][name] for name in METRIC_COLUMNS})
            reasons = failed_thresholds(metrics[key], thresholds)
            row["passed"] = not reasons
            row["reason"] = "QC: " + "; ".join(reasons) if reasons else ""
            row["volume"] = metrics[key]["volume"] if not reasons else ""
        if not row["passed"]:
            exclusions.append({"stage": STAGE, "cohort": cohort, "subject": key[0], "session": key[1],
                               "file": image["path"], "row": "", "column": "", "reason": row["reason"]})
        rows.append(row)
    table = pd.DataFrame(rows, columns=QC_COLUMNS + METRIC_COLUMNS)
    table["passed"] = table["passed"].map({True: "true", False: "false"})
    Path(qc_tsv).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(qc_tsv, sep="\t", index=False, float_format="%.4f")
    pd.DataFrame(exclusions, columns=paths.EXCLUSION_COLUMNS).to_csv(exclusions_tsv, sep="\t", index=False)
    passed = int((table["passed"] == "true").sum())
    log.info("cohort %s: %d of %d images passed preprocessing QC", cohort, passed, len(table))
    for exclusion in exclusions:
        log.warning("excluded %s/%s: %s", exclusion["subject"], exclusion["session"], exclusion["reason"])
    return table


def _read_json(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())
