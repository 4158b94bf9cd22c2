"""MRI preprocessing: Clinica ``t1-linear`` re-implemented with antspyx, then skull stripping.

Per image (``cohort, subject, session``), in rule order:

1. ``t1_verdict``: read the native T1 once and judge it (unreadable, truncated, damaged gzip
   stream, not 3-D, all zeros, NaN/Inf, absurd voxel size...); the rule checks images in batches
   (``check_batch``, one JSON list per batch). Only accepted images go further; the per-cohort
   checkpoint ``preprocess_accepted`` lists them (``list_accepted``).
2. ``bias_correct``: N4 with Clinica's settings (B-spline fitting distance 200 mm, ANTs defaults
   otherwise); one N4 call gives the bias field, and corrected = input / bias.
3. ``register_to_template``: ``antsRegistrationSyNQuick[a]`` (rigid then affine, MI) to the
   MNI152NLin2009cSym template, checked to be purely affine, then Clinica's crop box.
4. skull stripping (``workflow.skullstrip``), then ``make_model_ready``: the stripped crop resampled
   to the model's input shape and stored as ``.npy`` with a scaling sidecar.
5. QC per image and per cohort (``workflow.preprocess_qc``).

Heavy libraries (antspyx, torch) are imported inside the functions that need them, so that the
Snakefile (which imports this module for path patterns) and light rules start fast.
"""

from __future__ import annotations

import functools
import gzip
import json
import logging
import os
import shlex
import tempfile
import time
import zlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # pandas loads only where a cohort table is read: not in the per-image jobs
    import pandas as pd

from workflow import paths
from workflow.settings import (
    InputCheckSettings, ModelReadySettings, N4Settings, RegistrationSettings, TemplateSettings,
)

log = logging.getLogger(__name__)

SPACE = "MNI152NLin2009cSym"
# Clinica's crop box on the 1 mm MNI152NLin2009c grid (193 x 229 x 193): [12:181, 13:221, 0:179].
CLINICA_CROP_START_MM = (12, 13, 0)
CLINICA_CROP_SIZE_MM = (169, 208, 179)
IMAGE_COLUMNS = ["cohort", "subject", "session", "source_id", "visit_code", "acq_date", "path"]
ACCEPTED_COLUMNS = ["cohort", "subject", "session", "path"]
TEMPLATE_DIR = f"{paths.RESULTS}/preprocess/template"
# The per-cohort list of images that passed the input check (checkpoint preprocess_accepted).
ACCEPTED = f"{paths.RESULTS}/preprocess/{{cohort}}/accepted.tsv"
# The verdicts of one input-check job: a JSON list, one verdict per image of the batch.
CHECK_BATCH = f"{paths.RESULTS}/preprocess/{{cohort}}/checks/batch-{{batch}}.json"
FREESURFER_TEMPLATE_NAME = "mni_icbm152_t1_tal_nlin_sym_09c.nii"
GZIP_MAGIC = b"\x1f\x8b"
GZIP_CHUNK_BYTES = 1 << 20  # decompressed bytes per read while verifying: bounded memory for any size


# --- file names -----------------------------------------------------------------------------------
def resolution_label(voxel_size_mm: float) -> str:
    """BIDS/CAPS ``res-`` label of an isotropic working grid: 1.0 -> ``1x1x1``, 1.5 -> ``1.5x1.5x1.5``."""
    size = f"{float(voxel_size_mm):g}"
    return f"{size}x{size}x{size}"


def session_files(voxel_size_mm: float) -> dict[str, str]:
    """Per-image file patterns (Snakemake wildcards cohort/subject/session), CAPS/Clinica-style.

    Keys: ``check`` (one image's JSON verdict, as prediction writes it; the rules write batches,
    ``CHECK_BATCH``), ``n4`` and ``bias`` (native space), ``affine`` (ITK .mat, MNI to native),
    ``crop`` (registered and cropped T1), ``mask`` and ``brain`` (skull strip on the crop),
    ``volume`` and ``volume_sidecar`` (model-ready array), ``qc`` (metrics JSON), ``mosaic`` (PNG).
    """
    session_dir = paths.PREPROCESS_SESSION_DIR
    prefix = "sub-{subject}_ses-{session}"
    linear = f"{session_dir}/t1_linear/{prefix}"
    mni = f"{linear}_space-{SPACE}"
    res = resolution_label(voxel_size_mm)
    return {
        "check": f"{session_dir}/{prefix}_check.json",
        "n4": f"{linear}_desc-N4_T1w.nii.gz",
        "bias": f"{linear}_desc-N4_biasfield.nii.gz",
        "affine": f"{mni}_res-{res}_affine.mat",
        "crop": f"{mni}_desc-Crop_res-{res}_T1w.nii.gz",
        "mask": f"{mni}_desc-CropBrain_res-{res}_mask.nii.gz",
        "brain": f"{mni}_desc-CropBrain_res-{res}_T1w.nii.gz",
        "volume": paths.MODEL_READY_VOLUME,
        "volume_sidecar": volume_sidecar_path(paths.MODEL_READY_VOLUME),
        "qc": f"{session_dir}/qc/{prefix}_qc.json",
        "mosaic": f"{paths.PREPROCESS_MOSAIC_DIR}/{prefix}_mosaic.png",
    }


def image_file_names(voxel_size_mm: float, compressed_n4: bool = True) -> dict[str, str]:
    """The file name of each per-image file kind of :func:`session_files` (wildcards subject and
    session), as a step's batch folder holds them (``paths.PREPROCESS_BATCH``); the N4 pair ends
    in ``.nii`` instead of ``.nii.gz`` unless ``compressed_n4`` (``N4Settings.compressed``)."""
    names = {kind: Path(pattern).name for kind, pattern in session_files(voxel_size_mm).items()}
    if not compressed_n4:
        names.update({kind: names[kind].removesuffix(".gz") for kind in ("n4", "bias")})
    return names


def template_files(voxel_size_mm: float) -> dict[str, str]:
    """The registration target at the working voxel size: ``head`` (full grid), ``crop`` and
    ``brainmask`` (on the cropped grid)."""
    stem = f"{TEMPLATE_DIR}/tpl-{SPACE}_res-{resolution_label(voxel_size_mm)}"
    return {
        "head": f"{stem}_T1w.nii.gz",
        "crop": f"{stem}_desc-Crop_T1w.nii.gz",
        "brainmask": f"{stem}_desc-CropBrain_mask.nii.gz",
    }


def truth_files() -> dict[str, str]:
    """Ground-truth sidecars of a synthetic image (docs/interfaces.md section 1)."""
    stem = f"{paths.SYNTHETIC_TRUTH_DIR}/sub-{{subject}}_ses-{{session}}"
    return {"truth": f"{stem}_truth.json", "brainmask": f"{stem}_brainmask.nii.gz"}


def volume_sidecar_path(volume_path: str | Path) -> str:
    """The JSON sidecar beside a model-ready ``.npy`` (same name, ``.json``)."""
    text = str(volume_path)
    if not text.endswith(".npy"):
        raise ValueError(f"model-ready volume must be a .npy file, got {text}")
    return text[: -len(".npy")] + ".json"


def check_user_files(settings: dict) -> None:
    """Stop before any rule runs when a configured template or SynthStrip model file is missing.

    Args:
        settings: the validated ``preprocess`` config section.
    Raises ``FileNotFoundError`` naming the key, the path and where the real file comes from (the
    contents are checked later, by the rules that read them).
    """
    template = settings["template"]
    if template and not Path(template).is_file():
        raise FileNotFoundError(
            f"preprocess.template: {template} does not exist. Expected {FREESURFER_TEMPLATE_NAME} (ICBM 2009c "
            "Nonlinear Symmetric T1 with skull, 193x229x193 at 1 mm), or null for the embedded brain-only stand-in.")
    strip = settings["skullstrip"]
    model = strip["synthstrip_model"]
    if strip["method"] == "synthstrip" and not (model and Path(model).is_file()):
        from workflow.skullstrip import FREESURFER_HINT

        raise FileNotFoundError(
            f"preprocess.skullstrip.synthstrip_model: {model} does not exist. {FREESURFER_HINT}")


# --- the intake images table and the accepted list -----------------------------------------------
def read_images_table(images_tsv: str | Path) -> pd.DataFrame:
    """Read intake's ``images.tsv`` (columns ``IMAGE_COLUMNS``) as strings; errors name the file."""
    import pandas as pd

    table = pd.read_csv(images_tsv, sep="\t", dtype=str, keep_default_na=False)
    missing = [c for c in IMAGE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{images_tsv}: missing column(s) {missing}; expected {IMAGE_COLUMNS}")
    duplicated = table.duplicated(["subject", "session"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0]) + 2  # +1 header, +1 one-based
        raise ValueError(f"{images_tsv}: row {row}: subject/session listed twice")
    return table


@functools.lru_cache(maxsize=16)
def _native_t1_paths(images_tsv: str, size: int, mtime_ns: int) -> Mapping[tuple[str, str], str]:
    # Keyed on the file's size and modification time as well as its name, so a table that intake
    # rewrites is read again; otherwise one read per cohort serves every job of the DAG build
    # (reading it per job grows with the square of the image count).
    table = read_images_table(images_tsv)
    # read-only: every caller shares the cached mapping
    return MappingProxyType(dict(zip(zip(table["subject"], table["session"]), table["path"].astype(str))))


def native_t1_paths(images_tsv: str | Path) -> Mapping[tuple[str, str], str]:
    """``(subject, session)`` -> native T1 path of every image of intake's ``images.tsv``, in its order
    (cached per file version: input functions call this once per job)."""
    stat = os.stat(images_tsv)
    return _native_t1_paths(str(images_tsv), stat.st_size, stat.st_mtime_ns)


def image_keys(images_tsv: str | Path) -> list[tuple[str, str]]:
    """``(subject, session)`` of every image of intake's table, in its order."""
    return list(native_t1_paths(images_tsv))


def native_t1_path(images_tsv: str | Path, subject: str, session: str) -> str:
    """Path of the native T1 of one image, from intake's ``images.tsv``."""
    try:
        return native_t1_paths(images_tsv)[(subject, session)]
    except KeyError:
        raise ValueError(f"{images_tsv}: no image for subject {subject!r} session {session!r}") from None


@functools.lru_cache(maxsize=16)
def _accepted_keys(accepted_tsv: str, size: int, mtime_ns: int) -> tuple[tuple[str, str], ...]:
    # Cached per file version as _native_t1_paths is: the input functions of every batch job read
    # the cohort's list, and one read serves them all.
    import pandas as pd

    table = pd.read_csv(accepted_tsv, sep="\t", dtype=str, keep_default_na=False)
    return tuple(zip(table["subject"], table["session"]))


def read_accepted(accepted_tsv: str | Path) -> tuple[tuple[str, str], ...]:
    """``(subject, session)`` of the images that passed ``check_t1`` (the checkpoint's table), in
    its order (cached per file version)."""
    stat = os.stat(accepted_tsv)
    return _accepted_keys(str(accepted_tsv), stat.st_size, stat.st_mtime_ns)


# --- input functions of rules/preprocess.smk (they need Snakemake's ``checkpoints`` object) -------
def intake_images(checkpoints, cohort: str) -> str:
    """Intake's ``images.tsv`` of a cohort, once the ``intake_cohort`` checkpoint has run."""
    checkpoints.intake_cohort.get(cohort=cohort)
    return paths.INTAKE_IMAGES.format(cohort=cohort)


def batches_of(keys: Sequence[tuple[str, str]], images_per_job: int) -> dict[str, Sequence[tuple[str, str]]]:
    """Batch label -> ``(subject, session)`` of its images: ``keys`` in their order, cut into runs of
    ``images_per_job`` (labels ``0000``, ``0001``, ...)."""
    return {f"{start // images_per_job:04d}": keys[start:start + images_per_job]
            for start in range(0, len(keys), images_per_job)}


def check_batches(images_tsv: str | Path, images_per_job: int) -> dict[str, Sequence[tuple[str, str]]]:
    """The input-check batches: intake's table in its order, in runs of ``images_per_job``."""
    return batches_of(image_keys(images_tsv), images_per_job)


def every_check_batch_input(checkpoints, images_per_job: int):
    """Input function: every input-check batch file of ``{cohort}``."""
    def files(wildcards) -> list[str]:
        batches = check_batches(intake_images(checkpoints, wildcards.cohort), images_per_job)
        return [CHECK_BATCH.format(cohort=wildcards.cohort, batch=batch) for batch in batches]
    return files


def check_batch_images(checkpoints, images_per_job: int):
    """Params function: ``[subject, session, native T1 path]`` of every image of ``{cohort}``'s
    batch ``{batch}`` (the images' native files are the rule's input, the same list)."""
    def images(wildcards) -> list[list[str]]:
        images_tsv = intake_images(checkpoints, wildcards.cohort)
        batch = check_batches(images_tsv, images_per_job).get(wildcards.batch)
        if batch is None:
            raise ValueError(f"{images_tsv}: no input-check batch {wildcards.batch} "
                             f"({images_per_job} images per batch)")
        return [[subject, session, native_t1_path(images_tsv, subject, session)] for subject, session in batch]
    return images


def check_batch_input(checkpoints, images_per_job: int):
    """Input function: the native T1s of ``{cohort}``'s input-check batch ``{batch}``."""
    images = check_batch_images(checkpoints, images_per_job)
    return lambda wildcards: [path for _, _, path in images(wildcards)]


def truth_arguments(config: dict):
    """Params function: the ``--truth`` / ``--truth-brainmask`` options of ``workflow.preprocess_job
    model-ready`` for a synthetic ``{cohort}``: its ground-truth file patterns (wildcards subject and
    session), or '' for a real cohort (no ground truth: QC then has no pose error or Dice)."""
    def arguments(wildcards) -> str:
        if config["cohorts"][wildcards.cohort]["source"] != "synthetic":
            return ""
        files = {kind: pattern.replace("{cohort}", wildcards.cohort) for kind, pattern in truth_files().items()}
        return f"--truth {shlex.quote(files['truth'])} --truth-brainmask {shlex.quote(files['brainmask'])}"
    return arguments


def image_batches(checkpoints, cohort: str, images_per_job: int) -> dict[str, Sequence[tuple[str, str]]]:
    """The per-image steps' batches of a cohort: the images that passed the input check, in the
    checkpoint's order, in runs of ``images_per_job``."""
    accepted_tsv = checkpoints.preprocess_accepted.get(cohort=cohort).output[0]
    return batches_of(read_accepted(accepted_tsv), images_per_job)


def batch_image_arguments(checkpoints, images_per_job: int):
    """Params function: ``--image SUBJECT SESSION T1`` for each image of ``{cohort}``'s batch
    ``{batch}`` (shell-quoted), what the first step (N4) reads."""
    def arguments(wildcards) -> str:
        images = batch_native_images(checkpoints, wildcards.cohort, wildcards.batch, images_per_job)
        return " ".join(f"--image {shlex.quote(s)} {shlex.quote(t)} {shlex.quote(p)}" for s, t, p in images)
    return arguments


def batch_native_images(checkpoints, cohort: str, batch: str, images_per_job: int) -> list[tuple[str, str, str]]:
    """``(subject, session, native T1 path)`` of each image of a cohort's batch."""
    keys = image_batches(checkpoints, cohort, images_per_job).get(batch)
    if keys is None:
        raise ValueError(f"cohort {cohort}: no preprocessing batch {batch} ({images_per_job} images per batch)")
    images_tsv = intake_images(checkpoints, cohort)
    return [(subject, session, native_t1_path(images_tsv, subject, session)) for subject, session in keys]


def batch_t1_input(checkpoints, images_per_job: int):
    """Input function: the native T1s of ``{cohort}``'s batch ``{batch}``."""
    return lambda wildcards: [path for _, _, path in batch_native_images(
        checkpoints, wildcards.cohort, wildcards.batch, images_per_job)]


def every_batch_input(checkpoints, images_per_job: int, step: str):
    """Input function: every batch folder of ``step`` for ``{cohort}``."""
    def folders(wildcards) -> list[str]:
        return [paths.PREPROCESS_BATCH.format(cohort=wildcards.cohort, step=step, batch=batch)
                for batch in image_batches(checkpoints, wildcards.cohort, images_per_job)]
    return folders


# --- 1. input check --------------------------------------------------------------------------------
def is_gzip(path: str | Path) -> bool:
    """Whether ``path`` starts with the gzip magic bytes (whatever its name says)."""
    with open(path, "rb") as raw:
        return raw.read(len(GZIP_MAGIC)) == GZIP_MAGIC


def gzip_damage(path: str | Path) -> str:
    """Why the gzip-compressed file ``path`` is damaged ('' when it is intact or not compressed).

    Decompresses every gzip member to its end, so that each member's CRC-32 and length trailer is
    compared with the data it holds. nibabel reads only the bytes the header promises and stops
    before the trailer, so a bit flipped late in the stream (garbage voxels) or a wrong trailer
    would otherwise pass unnoticed. Compression is recognised by the gzip magic bytes, not by
    the file name. Costs 0.05-0.1 s for a 1 mm head (176 x 240 x 256 int16, 6-16 MB compressed)
    on one core, against seconds for registration; memory stays at one ``GZIP_CHUNK_BYTES`` block.
    """
    if not is_gzip(path):
        return ""
    try:
        with gzip.open(path, "rb") as stream:
            while stream.read(GZIP_CHUNK_BYTES):
                pass
    except EOFError as error:  # the stream stops before a member's end-of-stream marker and trailer
        return f"the gzip stream ends early ({error})"
    except zlib.error as error:  # the deflate data itself cannot be decoded
        return f"invalid compressed data ({error})"
    except gzip.BadGzipFile as error:  # Python words a CRC mismatch "CRC check failed <stored> != <computed>"
        return f"{error} (stored != computed)" if "CRC" in str(error) else str(error)
    return ""


def _damaged_file_reason(path: str | Path, damage: str) -> str:
    """The exclusion reason of a damaged gzip file (``unreadable``, like every other read failure)."""
    return (f"unreadable image: damaged gzip file {path}: {damage}; expected a complete gzip stream whose "
            "CRC-32 and length trailer match its decompressed data (download or convert the image again)")


def inspect_t1(t1_path: str | Path, voxel_size_range_mm: tuple[float, float], min_axis_voxels: int) -> tuple[str, dict]:
    """Why a native T1 cannot be preprocessed ('' when it can), and what was seen.

    Decompresses a gzip file to its end and checks its CRC-32 (``gzip_damage``), then reads every
    voxel, so a truncated or corrupted file is caught here and not in the middle of N4 (or not at
    all: garbage voxels would otherwise go through QC).
    """
    import nibabel as nib

    facts: dict = {}
    try:
        if is_gzip(t1_path):
            started = time.perf_counter()
            damage = gzip_damage(t1_path)
            if damage:
                return _damaged_file_reason(t1_path, damage), facts
            facts["gzip_crc_check_s"] = round(time.perf_counter() - started, 3)
    except OSError as error:  # the file cannot even be opened
        return f"unreadable image ({type(error).__name__}: {error})", facts
    try:
        image = nib.load(str(t1_path))
        # A NIfTI pair (.hdr + .img.gz) keeps its voxels in a second file: check that one too.
        for holder in image.file_map.values():
            other = holder.filename
            if other and Path(other) != Path(t1_path):
                damage = gzip_damage(other)
                if damage:
                    return _damaged_file_reason(other, damage), facts
        facts["shape"] = [int(n) for n in image.shape]
        facts["voxel_size_mm"] = [round(float(z), 4) for z in image.header.get_zooms()[: len(image.shape)]]
        data = np.asanyarray(image.dataobj)
    except Exception as error:  # noqa: BLE001 -- any read failure is a verdict, not a crash
        return f"unreadable image ({type(error).__name__}: {error})", facts
    if data.ndim != 3:
        return f"{data.ndim}-D image of shape {list(data.shape)}: expected one 3-D T1 volume", facts
    if min(data.shape) < min_axis_voxels:
        return (f"image of shape {list(data.shape)} is too thin (fewer than {min_axis_voxels} voxels "
                f"along an axis): expected a 3-D T1 volume"), facts
    low, high = voxel_size_range_mm
    zooms = facts["voxel_size_mm"]
    if not all(low <= z <= high for z in zooms):
        return f"voxel size {zooms} mm outside the plausible range [{low}, {high}] mm", facts
    if not np.all(np.isfinite(image.affine)) or abs(np.linalg.det(image.affine[:3, :3])) < 1e-9:
        return "invalid (singular or non-finite) voxel-to-world affine", facts
    values = np.asarray(data, dtype=np.float32)
    finite = np.isfinite(values)
    if not finite.all():
        return f"{int((~finite).sum())} NaN or infinite voxel(s)", facts
    if float(values.max()) == float(values.min()):
        return f"constant image (every voxel is {float(values.max()):g})", facts
    facts["intensity_range"] = [float(values.min()), float(values.max())]
    return "", facts


def t1_verdict(t1_path: str | Path, cohort: str, subject: str, session: str, settings: InputCheckSettings) -> dict:
    """The verdict of one native T1: ``{cohort, subject, session, file, passed, reason, ...}``.

    Args:
        t1_path: the native image (NIfTI).
        settings: the plausible voxel sizes and the least voxels per axis.
    """
    reason, facts = inspect_t1(t1_path, settings.voxel_size_range_mm, settings.min_axis_voxels)
    verdict = {"cohort": cohort, "subject": subject, "session": session, "file": str(t1_path),
               "passed": not reason, "reason": reason, **facts}
    if reason:
        log.warning("excluding %s: %s", t1_path, reason)
    else:
        log.info("accepted %s: shape %s, voxel size %s mm", t1_path, facts["shape"], facts["voxel_size_mm"])
    return verdict


def check_t1(
    t1_path: str | Path, verdict_path: str | Path, cohort: str, subject: str, session: str,
    settings: InputCheckSettings,
) -> dict:
    """Write the JSON verdict of one native T1 (:func:`t1_verdict`) to ``verdict_path``; return it."""
    verdict = t1_verdict(t1_path, cohort, subject, session, settings)
    _write_json(verdict, verdict_path)
    return verdict


def check_batch(images: list[list[str]], cohort: str, settings: InputCheckSettings, batch_path: str | Path) -> list[dict]:
    """Check the native T1s of one batch, one after another, and write their verdicts as one JSON list.

    An image whose check itself fails (not just finds a fault) gets a failed verdict naming the
    error, and the batch's other images are still checked.

    Args:
        images: ``[subject, session, native T1 path]`` of each image of the batch.
        cohort: the images' cohort.
        settings: as for :func:`t1_verdict`.
        batch_path: output JSON (``CHECK_BATCH``).
    """
    verdicts = []
    for subject, session, path in images:
        try:
            verdicts.append(t1_verdict(path, cohort, subject, session, settings))
        except Exception as error:  # noqa: BLE001 -- one image's failure is its verdict; the batch goes on
            log.exception("input check of %s failed", path)
            verdicts.append({"cohort": cohort, "subject": subject, "session": session, "file": str(path),
                             "passed": False, "reason": f"input check failed ({type(error).__name__}: {error})"})
    _write_json(verdicts, batch_path)
    log.info("%d of %d images of the batch passed the input check", sum(v["passed"] for v in verdicts), len(verdicts))
    return verdicts


def read_verdicts(verdict_paths: list[str]) -> dict[tuple[str, str], dict]:
    """``(subject, session)`` -> verdict, from files holding one verdict or a batch's list of them."""
    verdicts = {}
    for path in verdict_paths:
        content = _read_json(path)
        for verdict in content if isinstance(content, list) else [content]:
            verdicts[(verdict["subject"], verdict["session"])] = verdict
    return verdicts


def list_accepted(images_tsv: str | Path, verdict_paths: list[str], accepted_tsv: str | Path) -> pd.DataFrame:
    """Write the images whose verdict passed (columns ``ACCEPTED_COLUMNS``), in intake's order."""
    verdicts = read_verdicts(verdict_paths)
    table = read_images_table(images_tsv)
    keep = []
    for subject, session in zip(table["subject"], table["session"]):
        if (subject, session) not in verdicts:
            raise ValueError(f"no check verdict for subject {subject} session {session} of {images_tsv}")
        keep.append(bool(verdicts[(subject, session)]["passed"]))
    accepted = table.loc[keep, ACCEPTED_COLUMNS]
    Path(accepted_tsv).parent.mkdir(parents=True, exist_ok=True)
    accepted.to_csv(accepted_tsv, sep="\t", index=False)
    log.info("%d of %d images accepted for preprocessing", len(accepted), len(table))
    return accepted


# --- template -------------------------------------------------------------------------------------
def crop_slices(voxel_size_mm: float) -> tuple[slice, slice, slice]:
    """Clinica's crop box on the MNI152NLin2009c grid at an isotropic voxel size.

    At 1 mm this is exactly ``[12:181, 13:221, 0:179]`` (169 x 208 x 179); at other sizes the same
    box in mm, rounded to whole voxels.
    """
    starts = [int(round(s / voxel_size_mm)) for s in CLINICA_CROP_START_MM]
    sizes = [int(round(n / voxel_size_mm)) for n in CLINICA_CROP_SIZE_MM]
    return tuple(slice(start, start + size) for start, size in zip(starts, sizes))


def crop_affine(affine: np.ndarray, slices: tuple[slice, slice, slice]) -> np.ndarray:
    """Voxel-to-world affine of ``image[slices]``."""
    shifted = np.array(affine, dtype=float)
    shifted[:3, 3] = affine[:3, :3] @ np.array([s.start for s in slices], dtype=float) + affine[:3, 3]
    return shifted


def load_user_template(template_path: str | Path, voxel_size_mm: float):
    """The user's MNI152NLin2009cSym head T1, checked and resampled to the working grid.

    Raises ``ValueError`` when the file is not on the MNI152NLin2009c 1 mm grid (193 x 229 x 193,
    1 mm, origin (-96, -132, -78)), which Clinica's crop box assumes.
    """
    import nibabel as nib

    from workflow.templates import MNI2009C_ORIGIN_MM, MNI2009C_SHAPE_1MM, mni2009c_grid

    template_path = Path(template_path)
    if not template_path.is_file():
        raise FileNotFoundError(
            f"preprocess.template: {template_path} does not exist. Expected {FREESURFER_TEMPLATE_NAME} "
            "(ICBM 2009c Nonlinear Symmetric T1, with skull), or null for the embedded brain-only stand-in.")
    image = nib.load(str(template_path))
    expected_affine = mni2009c_grid(1.0)[1]
    if tuple(image.shape[:3]) != MNI2009C_SHAPE_1MM or image.ndim != 3 or not np.allclose(
            image.affine, expected_affine, atol=1e-3):
        raise ValueError(
            f"preprocess.template: {template_path} is not the MNI152NLin2009cSym 1 mm template: expected "
            f"shape {MNI2009C_SHAPE_1MM}, 1 mm voxels and origin {MNI2009C_ORIGIN_MM} (RAS affine "
            f"{expected_affine.tolist()}), got shape {list(image.shape)} and affine "
            f"{np.round(image.affine, 3).tolist()}. Use {FREESURFER_TEMPLATE_NAME} from the ICBM 2009c "
            "Nonlinear Symmetric release.")
    if float(voxel_size_mm) == 1.0:
        return nib.Nifti1Image(np.asarray(image.get_fdata(), dtype=np.float32), image.affine)
    from nilearn import image as nimage

    shape, affine = mni2009c_grid(voxel_size_mm)
    resampled = nimage.resample_img(image, target_affine=affine, target_shape=shape,
                                    interpolation="continuous", force_resample=True, copy_header=True)
    return nib.Nifti1Image(np.clip(np.asarray(resampled.get_fdata(), dtype=np.float32), 0, None), affine)


def prepare_template(
    settings: TemplateSettings, head_path: str | Path, crop_path: str | Path, brainmask_path: str | Path,
) -> None:
    """Write the registration target at the working voxel size, its crop and its brain mask.

    Args:
        settings: the user's ``mni_icbm152_t1_tal_nlin_sym_09c.nii`` (full fidelity), or ``None``
            for nilearn's brain-only ICBM 2009 template on the same grid (stand-in); the working
            voxel size.
    """
    import nibabel as nib

    from workflow.templates import mni_brain_mask, mni_template

    template_path, voxel_size_mm = settings.template, settings.voxel_size_mm
    if template_path:
        head = load_user_template(template_path, voxel_size_mm)
        log.info("registration target: %s (MNI152NLin2009cSym head T1) at %g mm", template_path, voxel_size_mm)
    else:
        head = mni_template(voxel_size_mm)
        log.warning(
            "registration target: nilearn's BRAIN-ONLY ICBM 2009 template on the MNI152NLin2009c grid at "
            "%g mm, a stand-in for Clinica's head template. For full fidelity set preprocess.template to "
            "%s (head-to-head registration as in the paper).", voxel_size_mm, FREESURFER_TEMPLATE_NAME)
    slices = crop_slices(voxel_size_mm)
    cropped_affine = crop_affine(head.affine, slices)
    head_data = np.asarray(head.dataobj, dtype=np.float32)
    mask = np.asarray(mni_brain_mask(voxel_size_mm).dataobj, dtype=np.uint8)
    for path in (head_path, crop_path, brainmask_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(head_data, head.affine), str(head_path))
    nib.save(nib.Nifti1Image(head_data[slices], cropped_affine), str(crop_path))
    nib.save(nib.Nifti1Image(mask[slices], cropped_affine), str(brainmask_path))


# --- 2. N4 ----------------------------------------------------------------------------------------
# The parts of antspyx the chain calls: image I/O, N4 (ops) and registration, with their helpers.
ANTS_PARTS = ("core", "utils", "ops", "registration")


def import_ants():
    """antspyx with only :data:`ANTS_PARTS` loaded, as the ``ants`` module.

    ``import ants`` runs every subpackage: plotting (matplotlib), learn and math (statsmodels,
    scipy.stats) and deeplearn (scikit-learn), which the chain never uses: 3.3 CPU-s in each N4 and
    registration job against 0.8 this way (benchmarks/import_cost.py). The same compiled ANTs runs
    either way. Where ``ants`` is already imported (whole or like this) that
    module is returned; a later ``import ants`` in the process gets these parts only.
    """
    import importlib
    import importlib.util
    import sys
    import types

    if "ants" in sys.modules:
        return sys.modules["ants"]
    spec = importlib.util.find_spec("ants")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("antspyx is not installed in this environment (envs/preprocess.yaml lists it)")
    package = types.ModuleType("ants")
    package.__path__ = list(spec.submodule_search_locations)
    package.__spec__, package.__file__ = spec, spec.origin
    sys.modules["ants"] = package
    try:
        for part in ANTS_PARTS:
            module = importlib.import_module(f"ants.{part}")
            names = getattr(module, "__all__", [name for name in vars(module) if not name.startswith("_")])
            vars(package).update({name: getattr(module, name) for name in names})
    except BaseException:
        for name in [name for name in sys.modules if name == "ants" or name.startswith("ants.")]:
            del sys.modules[name]
        raise
    return package


def set_threads(threads: int) -> None:
    """Give ITK (antspyx) and torch the rule's ``threads:``; call before importing ants."""
    os.environ["ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS"] = str(int(threads))
    os.environ["OMP_NUM_THREADS"] = str(int(threads))


def bias_correct(
    t1_path: str | Path, corrected_path: str | Path, bias_path: str | Path, settings: N4Settings, threads: int = 1,
) -> None:
    """N4 bias field correction as Clinica runs it (fitting distance 200 mm, ANTs defaults otherwise).

    One N4 call returns the bias field; the corrected image is input / bias (Clinica calls N4 twice
    to get both, with identical results). Both are written in the native space of ``t1_path``.
    """
    set_threads(threads)
    ants = import_ants()

    image = ants.image_read(str(t1_path)).clone("float")
    bias = ants.n4_bias_field_correction(
        image, shrink_factor=settings.shrink_factor, spline_param=float(settings.spline_distance_mm),
        convergence={"iters": list(settings.iterations), "tol": settings.tolerance}, return_bias_field=True,
    )
    corrected = image / bias
    for path in (corrected_path, bias_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    ants.image_write(corrected, str(corrected_path))
    ants.image_write(bias, str(bias_path))
    log.info("N4 on %s: bias field range %.3f-%.3f", t1_path, float(bias.min()), float(bias.max()))


# --- 3. affine registration + crop ----------------------------------------------------------------
def register_to_template(
    n4_path: str | Path, template_head_path: str | Path, template_brainmask_path: str | Path,
    affine_path: str | Path, crop_path: str | Path, settings: RegistrationSettings, threads: int = 1,
) -> float:
    """Affine registration of the N4 image to the template, then Clinica's crop.

    Writes the ITK affine (``.mat``: maps template points, LPS, to native points) and the registered
    image cropped to Clinica's box (``crop_slices``) on the template grid.

    Args:
        template_brainmask_path: the template's brain mask on the crop grid (for the NCC check).
        settings: the working grid, the seed, the preset, the attempts and the fit voxel size:
        settings.seed: ANTs seed of the first attempt (Clinica's ``--random_seed``), at least 1: ANTs reseeds
            its sampler only for a nonzero seed. Unseeded, the sampler draws from ITK's process-wide
            generator, so the same image can register differently from one run (or one earlier ITK
            call in the same process) to the next; a seed makes the transform repeat exactly with
            one thread (to float rounding with more).
        settings.type_of_transform, settings.stages: the antspyx preset (Clinica's), or custom
            linear stages run by ``linear_registration`` (one of the two is None).
        settings.attempts: at most this many registrations, seeds ``seed, seed + 1, ...``: a further attempt
            runs only while the best normalised cross-correlation with the template inside its brain
            mask is below ``retry_below_ncc``. With a brain-only template a head can land in a
            "skull fitted onto the brain edge" optimum; another seed usually escapes it. The first
            attempt is Clinica's run with ``--random_seed seed``.
        settings.fit_voxel_size_mm: the first attempt fits the affine on copies of both images resampled to
            this voxel size (never finer than an image's own spacing), then resamples the
            full-resolution image with it; retries fit on the images as they are. None always fits
            on the images as they are, as Clinica does. The preset's pyramid ends with a level at
            full resolution that costs most of the time at 1 mm, and 2 mm copies of 1 mm heads
            give the same pose error (``benchmarks/preprocess.py``); copies of 3 mm or coarser
            leave the coarsest level too few voxels and can miss the pose entirely.
    Returns the NCC of the kept registration.

    Raises ``ValueError`` for a seed below 1.

    Raises ``RuntimeError`` when anything but exactly one affine transform comes back (a deformable
    field would mean a non-linear registration, which Clinica's --use-antspy runs by mistake).
    """
    set_threads(threads)
    import nibabel as nib

    ants = import_ants()

    from workflow.preprocess_qc import masked_ncc

    seed, type_of_transform, fit_voxel_size_mm = settings.seed, settings.type_of_transform, settings.fit_voxel_size_mm
    if type_of_transform is not None and not type_of_transform.endswith("[a]"):
        raise ValueError(f"type_of_transform must be an affine ANTs preset ('...[a]'), got {type_of_transform!r}")
    if seed < 1:
        raise ValueError(f"registration seed must be at least 1, got {seed}: ANTs leaves its sampler unseeded "
                         "for 0, and the registration would differ from run to run")
    fixed = ants.image_read(str(template_head_path))
    moving = ants.image_read(str(n4_path))
    coarse = (fixed, moving)
    if fit_voxel_size_mm is not None:
        coarse = tuple(_coarsened(ants, image, float(fit_voxel_size_mm)) for image in (fixed, moving))
    slices = crop_slices(settings.voxel_size_mm)
    template_crop = fixed.numpy()[slices]
    brainmask = np.asarray(nib.load(str(template_brainmask_path)).dataobj)
    best: tuple[float, int, np.ndarray, bytes] | None = None
    for attempt in range(max(1, settings.attempts)):
        # a retry fits at the working grid: a poor first fit may come from too coarse copies
        fit_fixed, fit_moving = coarse if attempt == 0 else (fixed, moving)
        # antspyx takes the seed from its config, not from a keyword (a keyword would be silently ignored).
        ants.config._random_seed = seed + attempt
        with tempfile.TemporaryDirectory(prefix="preprocess_reg_") as scratch:
            outprefix = str(Path(scratch) / "reg_")
            if type_of_transform is not None:
                result = ants.registration(fixed=fit_fixed, moving=fit_moving, type_of_transform=type_of_transform,
                                           outprefix=outprefix)
                transforms, registered = list(result["fwdtransforms"]), result["warpedmovout"]
            else:
                transforms, registered = linear_registration(ants, fit_fixed, fit_moving, settings.stages,
                                                             seed + attempt, outprefix), None
            leftovers = sorted(p.name for p in Path(scratch).iterdir() if "Warp" in p.name)
            if len(transforms) != 1 or not transforms[0].endswith("GenericAffine.mat") or leftovers:
                raise RuntimeError(f"registration of {n4_path} returned {transforms} (+ {leftovers}): expected "
                                   "exactly one affine transform and no deformation field")
            transform_bytes = Path(transforms[0]).read_bytes()
            if registered is None or fit_fixed is not fixed or fit_moving is not moving:
                # the same linear resampling antsRegistration applies to its own output
                registered = ants.apply_transforms(fixed, moving, transforms, interpolator="linear")
        cropped = registered.numpy().astype(np.float32)[slices]
        ncc = masked_ncc(cropped, template_crop, brainmask)
        log.info("registration attempt %d of %s (%s, seed %d, fitted at %s mm): NCC with the template %.3f",
                 attempt + 1, n4_path, settings.method, seed + attempt,
                 "x".join(f"{spacing:g}" for spacing in fit_moving.spacing), ncc)
        if best is None or ncc > best[0]:
            best = (ncc, seed + attempt, cropped, transform_bytes)
        if best[0] >= settings.retry_below_ncc:
            break
    ncc, used_seed, cropped, transform_bytes = best
    for path in (affine_path, crop_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(affine_path).write_bytes(transform_bytes)
    # ants arrays keep the NIfTI voxel order, so the template's RAS affine describes them.
    template_affine = nib.load(str(template_head_path)).affine
    nib.save(nib.Nifti1Image(cropped, crop_affine(template_affine, slices)), str(crop_path))
    log.info("registered %s to %s: kept seed %d (NCC %.3f)", n4_path, template_head_path, used_seed, ncc)
    return ncc


def linear_registration(ants, fixed, moving, stages, seed: int, outprefix: str) -> list[str]:
    """antsRegistration with the linear ``stages`` (LinearStage) in place of a preset's; returns the
    path of the one affine it writes (``<outprefix>0GenericAffine.mat``, template to native).

    The arguments are those antspyx builds for ``antsRegistrationSyNQuick[a]`` (centre-of-mass start,
    mutual information with 32 bins on a regular sample, gradient step 0.1, convergence [.., 1e-6,
    10], single precision), with each stage's levels and sampling rate from the settings; no warped
    image is written (the caller resamples with the transform).
    """
    from ants.internal import get_lib_fn, get_pointer_string, process_arguments

    fixed, moving = fixed.clone("float"), moving.clone("float")
    fixed_pointer, moving_pointer = get_pointer_string(fixed), get_pointer_string(moving)
    args = ["--dimensionality", "3", "-r", f"[{fixed_pointer},{moving_pointer},1]", "--output", outprefix]
    for stage in stages:
        args += [
            "--transform", f"{stage.transform}[0.1]",
            "--metric", f"MI[{fixed_pointer},{moving_pointer},1,32,Regular,{stage.sampling_rate:g}]",
            "--convergence", "[{},1e-6,10]".format("x".join(str(int(n)) for n in stage.iterations)),
            "--shrink-factors", "x".join(str(int(n)) for n in stage.shrink_factors),
            "--smoothing-sigmas", "x".join(f"{sigma:g}" for sigma in stage.smoothing_sigmas_vox) + "vox",
        ]
    args += ["-x", "[NA,NA]", "--random-seed", str(int(seed)), "--float", "1", "--write-composite-transform", "0"]
    status = get_lib_fn("antsRegistration")(process_arguments(args))
    if status != 0:
        raise RuntimeError(f"antsRegistration failed with status {status} (stages {stages})")
    return sorted(str(path) for path in Path(outprefix).parent.glob(Path(outprefix).name + "*GenericAffine.mat"))


def _coarsened(ants, image, voxel_size_mm: float):
    """``image`` resampled (linearly) so that no axis is finer than ``voxel_size_mm``; itself if none is."""
    spacing = tuple(max(float(own), voxel_size_mm) for own in image.spacing)
    if np.allclose(spacing, image.spacing):
        return image
    return ants.resample_image(image, spacing, use_voxels=False, interp_type=0)


# --- 4. model-ready volume ------------------------------------------------------------------------
def resize_volume(volume: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """Resample ``volume`` [X, Y, Z] to ``shape`` with linear interpolation, field of view preserved
    (voxel corners aligned, as torchio's ``Resize`` does)."""
    from scipy import ndimage

    factors = [target / source for target, source in zip(shape, volume.shape)]
    resized = ndimage.zoom(volume.astype(np.float32), factors, order=1, mode="nearest", grid_mode=True)
    if resized.shape != tuple(shape):  # zoom rounds the output shape; it cannot miss by more than one
        raise RuntimeError(f"resize to {shape} gave {resized.shape}")
    return resized


def make_model_ready(
    crop_path: str | Path, mask_path: str | Path, volume_path: str | Path, sidecar_path: str | Path,
    settings: ModelReadySettings,
) -> dict:
    """Store the skull-stripped crop, resampled to the model's input ``settings.shape``, as a ``.npy`` array.

    The array holds ``(x - offset) / scale`` where x is the stripped intensity: ``float16`` in [0, 1]
    or ``uint8`` in [0, 255]. The sidecar JSON gives ``offset`` and ``scale`` (x = stored * scale +
    offset), the dtype, the shape and the source crop. The model min-max scales every volume to
    [0, 1] anyway (docs/model.md 2.1), so float16 loses nothing it uses.
    """
    import nibabel as nib

    shape, dtype = settings.shape, settings.dtype
    if dtype not in ("float16", "uint8"):
        raise ValueError(f"model-ready dtype must be float16 or uint8, got {dtype!r}")
    crop = nib.load(str(crop_path))
    brain = np.asarray(crop.dataobj, dtype=np.float32) * (np.asarray(nib.load(str(mask_path)).dataobj) > 0)
    resized = resize_volume(brain, tuple(int(n) for n in shape))
    offset = float(resized.min())
    top = 1.0 if dtype == "float16" else 255.0
    scale = max(float(resized.max()) - offset, 1e-12) / top
    stored = (resized - offset) / scale
    stored = stored.astype(np.float16) if dtype == "float16" else np.round(stored).astype(np.uint8)
    Path(volume_path).parent.mkdir(parents=True, exist_ok=True)
    np.save(volume_path, stored)
    sidecar = {
        "dtype": dtype, "shape": list(stored.shape), "offset": offset, "scale": scale,
        "undo": "intensity = stored * scale + offset", "source": str(crop_path), "mask": str(mask_path),
        "source_shape": list(brain.shape),
        "source_voxel_size_mm": [float(z) for z in crop.header.get_zooms()[:3]],
    }
    _write_json(sidecar, sidecar_path)
    return sidecar


def load_model_ready(volume_path: str | Path) -> np.ndarray:
    """The model-ready array [X, Y, Z] back in the stripped image's intensity units (float32)."""
    sidecar = _read_json(volume_sidecar_path(volume_path))
    return np.load(volume_path).astype(np.float32) * sidecar["scale"] + sidecar["offset"]


# --- helpers --------------------------------------------------------------------------------------
def _write_json(payload: dict | list, path: str | Path) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(payload, indent=1) + "\n")


def _read_json(path: str | Path) -> dict | list:
    return json.loads(Path(path).read_text())
