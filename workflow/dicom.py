"""Write a 3-D NIfTI volume as a classic DICOM MR Image Storage series (one file per slice).

Used to make test data for the NACC conversion (``workflow.nacc_zips``): NACC ships each MRI
session as a zip of DICOM files, and converting synthetic volumes back to DICOM lets the tests run
the real ``dcm2niix`` on data whose voxels and geometry are known.

Geometry. NIfTI world coordinates are RAS (+x points to the subject's right, +y anterior, +z
superior); DICOM patient coordinates are LPS (+x left, +y posterior, +z superior), so a world point
``p_ras`` is ``diag(-1, -1, 1) @ p_ras`` in DICOM. The series is sliced along the third voxel
axis: in slice ``k`` the DICOM column index is the first voxel axis and the row index the second,
so

* ``ImageOrientationPatient`` = (unit LPS direction of voxel axis 0, unit LPS direction of axis 1),
* ``PixelSpacing`` = (spacing along axis 1 [between rows], spacing along axis 0 [between columns]),
* ``ImagePositionPatient`` of slice ``k`` = LPS position of voxel ``(0, 0, k)``,
* pixel ``(row r, column c)`` of slice ``k`` = voxel ``(c, r, k)``.

DICOM can only describe a grid whose slice axis is perpendicular to the in-plane axes, so a sheared
affine is refused. Every UID is derived from ``uid_seed``, and no time stamp of the moment of
writing goes into a file, so the same inputs give byte-identical files.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from pydicom.valuerep import DSfloat

# RAS world -> LPS patient coordinates (and back: the matrix is its own inverse).
RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])

# Largest |cosine| between two voxel axes still treated as perpendicular (about 0.006 degrees).
ORTHOGONALITY_TOLERANCE = 1e-4


@dataclass(frozen=True)
class MRSequence:
    """Acquisition parameters written into every slice (a converter copies them into its sidecar).

    Attributes: scanning_sequence / sequence_variant / scan_options (DICOM code strings, several
    values joined by ``\\``), sequence_name, repetition_time_ms, echo_time_ms, inversion_time_ms
    (None: tag left out), flip_angle_deg, image_type (``ORIGINAL\\PRIMARY\\...``; put ``DERIVED``
    first to mimic a derived series), mr_acquisition_type (``3D`` or ``2D``).
    """

    scanning_sequence: str = "GR\\IR"
    sequence_variant: str = "SP\\MP"
    scan_options: str = "IR"
    sequence_name: str = "*tfl3d1"
    repetition_time_ms: float = 2300.0
    echo_time_ms: float = 2.98
    inversion_time_ms: float | None = 900.0
    flip_angle_deg: float = 9.0
    image_type: str = "ORIGINAL\\PRIMARY\\M\\ND"
    mr_acquisition_type: str = "3D"


# A 3-D T1 MPRAGE (the default) and a 2-D FLAIR, for writing multi-series sessions.
MPRAGE = MRSequence()
FLAIR = MRSequence(
    scanning_sequence="SE\\IR",
    sequence_variant="SK\\SP\\MP",
    scan_options="IR",
    sequence_name="*tir2d1_16",
    repetition_time_ms=9000.0,
    echo_time_ms=81.0,
    inversion_time_ms=2500.0,
    flip_angle_deg=150.0,
    mr_acquisition_type="2D",
)


def _ds(value: float) -> DSfloat:
    """A decimal string that fits DICOM's 16-character limit (rounded, not refused)."""
    return DSfloat(float(value), auto_format=True)


def _uid(uid_seed: str, *parts: object) -> str:
    """A UID that depends only on ``uid_seed`` and ``parts`` (pydicom hashes them into its root)."""
    return generate_uid(entropy_srcs=[uid_seed, *(str(p) for p in parts)])


def _describe(image: nib.Nifti1Image) -> str:
    """The image's file name for error messages, or a placeholder for an in-memory image."""
    name = image.get_filename()
    return str(name) if name else "<in-memory NIfTI image>"


def _int16_pixels(data: np.ndarray, source: str) -> tuple[np.ndarray, float, float]:
    """Stored int16 values and the rescale (slope, intercept) that give back ``data``.

    Args:
        data: the voxel values (any real dtype).
        source: the image's name for error messages.
    Returns:
        (stored int16 array, RescaleSlope, RescaleIntercept). Integer data that fits int16 is
        stored as is (slope 1, intercept 0, lossless); anything else is mapped linearly onto the
        int16 range (error at most slope / 2 per voxel).
    Raises:
        ValueError: NaN or infinite voxels.
    """
    if not np.all(np.isfinite(data)):
        raise ValueError(f"{source}: expected finite voxel values, found NaN or Inf")
    lo, hi = float(data.min()), float(data.max())
    is_integral = np.issubdtype(data.dtype, np.integer) or bool(np.all(np.equal(np.mod(data, 1), 0)))
    info = np.iinfo(np.int16)
    if is_integral and lo >= info.min and hi <= info.max:
        return data.astype(np.int16), 1.0, 0.0
    # Lossy case: spread [lo, hi] over [int16 min, int16 max].
    slope = (hi - lo) / (info.max - info.min) if hi > lo else 1.0
    intercept = lo - info.min * slope
    stored = np.clip(np.rint((data - intercept) / slope), info.min, info.max).astype(np.int16)
    return stored, slope, intercept


def _slice_geometry(affine: np.ndarray, source: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS unit directions of the three voxel axes and their spacings (mm).

    Args:
        affine: 4x4 voxel -> RAS world affine.
        source: the image's name for error messages.
    Returns:
        (directions 3x3 with one unit LPS vector per column, spacings (3,), LPS origin (3,)).
    Raises:
        ValueError: a zero-length axis or axes that are not mutually perpendicular.
    """
    lps = RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(lps, axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"{source}: expected a non-singular affine, got voxel sizes {spacing.tolist()}")
    directions = lps / spacing
    cosines = directions.T @ directions - np.eye(3)
    if np.max(np.abs(cosines)) > ORTHOGONALITY_TOLERANCE:
        raise ValueError(
            f"{source}: expected perpendicular voxel axes (DICOM cannot store a sheared grid), "
            f"largest axis cosine {np.max(np.abs(cosines)):.2e}"
        )
    origin = RAS_TO_LPS @ affine[:3, 3]
    return directions, spacing, origin


def write_dicom_series(
    image: nib.Nifti1Image,
    out_dir: Path,
    *,
    patient_id: str,
    series_description: str,
    acquisition: datetime,
    uid_seed: str,
    series_number: int = 1,
    study_uid: str | None = None,
    field_strength: float = 3.0,
    patient_name: str | None = None,
    protocol_name: str | None = None,
    manufacturer: str = "SIEMENS",
    model_name: str = "Prisma",
    sequence: MRSequence = MPRAGE,
) -> list[Path]:
    """Write ``image`` as one DICOM MR Image Storage file per slice of its third voxel axis.

    Args:
        image: a 3-D NIfTI image (a 4-D image with one volume is accepted); its ``affine`` (sform
            if set, else qform) gives the geometry.
        out_dir: folder for the files (created if missing); files are named
            ``S<series:03d>_I<instance:04d>.dcm`` so several series can share a folder.
        patient_id: PatientID (also PatientName unless ``patient_name`` is given).
        series_description: SeriesDescription (also ProtocolName unless ``protocol_name``).
        acquisition: study / series / acquisition / content date and time.
        uid_seed: every UID (study unless ``study_uid``, series, frame of reference, SOP instances)
            is derived from it, the series number and the slice index.
        series_number: SeriesNumber.
        study_uid: StudyInstanceUID to share one study between series; None derives it from
            ``uid_seed``.
        field_strength: MagneticFieldStrength in tesla.
        patient_name, protocol_name, manufacturer, model_name: the tags of the same name.
        sequence: acquisition parameters (``MPRAGE`` default, ``FLAIR`` or your own).
    Returns:
        The written files, in slice order (InstanceNumber 1..n).
    Raises:
        ValueError: not 3-D, non-finite voxels, or a sheared affine.
        FileExistsError: a file of this series already exists in ``out_dir`` (never overwritten).
    """
    source = _describe(image)
    data = np.asanyarray(image.dataobj)
    if data.ndim == 4 and data.shape[3] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise ValueError(f"{source}: expected a 3-D volume, got shape {data.shape}")
    stored, slope, intercept = _int16_pixels(data, source)
    directions, spacing, origin = _slice_geometry(np.asarray(image.affine, dtype=float), source)
    n_cols, n_rows, n_slices = stored.shape
    row_dir, col_dir, slice_dir = directions[:, 0], directions[:, 1], directions[:, 2]
    # The normal of the image plane; SliceLocation is the position along it.
    normal = np.cross(row_dir, col_dir)

    out_dir = Path(out_dir)
    files = [out_dir / f"S{series_number:03d}_I{k + 1:04d}.dcm" for k in range(n_slices)]
    existing = [f for f in files if f.exists()]
    if existing:
        raise FileExistsError(f"{existing[0]}: expected no existing DICOM file of series {series_number} there")
    out_dir.mkdir(parents=True, exist_ok=True)

    study_uid = study_uid or _uid(uid_seed, "study")
    series_uid = _uid(uid_seed, "series", series_number)
    frame_uid = _uid(uid_seed, "frame", series_number)
    date = acquisition.strftime("%Y%m%d")
    time = acquisition.strftime("%H%M%S.%f")
    window_center = (float(stored.max()) + float(stored.min())) / 2 * slope + intercept
    window_width = max((float(stored.max()) - float(stored.min())) * slope, 1.0)

    for k, path in enumerate(files):
        sop_uid = _uid(uid_seed, "instance", series_number, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)

        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = sequence.image_type.split("\\")
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = time
        ds.AccessionNumber = ""
        ds.Modality = "MR"
        ds.Manufacturer = manufacturer
        ds.ManufacturerModelName = model_name
        ds.ReferringPhysicianName = ""
        ds.StudyDescription = "BRAIN"
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name if patient_name is not None else patient_id
        ds.PatientID = patient_id
        ds.PatientBirthDate = ""
        ds.PatientSex = ""
        ds.BodyPartExamined = "BRAIN"
        ds.ScanningSequence = sequence.scanning_sequence.split("\\")
        ds.SequenceVariant = sequence.sequence_variant.split("\\")
        ds.ScanOptions = sequence.scan_options.split("\\")
        ds.MRAcquisitionType = sequence.mr_acquisition_type
        ds.SequenceName = sequence.sequence_name
        ds.SliceThickness = _ds(spacing[2])
        ds.RepetitionTime = _ds(sequence.repetition_time_ms)
        ds.EchoTime = _ds(sequence.echo_time_ms)
        if sequence.inversion_time_ms is not None:
            ds.InversionTime = _ds(sequence.inversion_time_ms)
        ds.ImagingFrequency = _ds(42.576 * field_strength)
        ds.ImagedNucleus = "1H"
        ds.MagneticFieldStrength = _ds(field_strength)
        ds.SpacingBetweenSlices = _ds(spacing[2])
        ds.ProtocolName = protocol_name if protocol_name is not None else series_description
        ds.FlipAngle = _ds(sequence.flip_angle_deg)
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = series_number
        ds.AcquisitionNumber = 1
        ds.InstanceNumber = k + 1
        position = origin + k * spacing[2] * slice_dir
        ds.ImagePositionPatient = [_ds(v) for v in position]
        ds.ImageOrientationPatient = [_ds(v) for v in (*row_dir, *col_dir)]
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.SliceLocation = _ds(float(position @ normal))
        ds.ImagesInAcquisition = n_slices
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = n_rows
        ds.Columns = n_cols
        ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 1
        ds.WindowCenter = _ds(window_center)
        ds.WindowWidth = _ds(window_width)
        ds.RescaleIntercept = _ds(intercept)
        ds.RescaleSlope = _ds(slope)
        ds.RescaleType = "US"
        # Row r, column c of the slice is voxel (c, r, k): transpose, then C order = row by row.
        ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).astype("<i2").tobytes()
        ds.save_as(path, enforce_file_format=True)
    return files


def read_dicom_header(path: Path) -> pydicom.Dataset:
    """The header of one DICOM file (pixel data not read), for checks and tests.

    Args:
        path: a DICOM file.
    Returns:
        The pydicom dataset without PixelData.
    """
    return pydicom.dcmread(path, stop_before_pixels=True)
