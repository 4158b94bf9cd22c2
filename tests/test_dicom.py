"""workflow.dicom: NIfTI -> DICOM series, checked by converting back with the real dcm2niix."""

from __future__ import annotations

import subprocess
import sys
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest

from workflow.dicom import FLAIR, read_dicom_header, write_dicom_series

# dcm2niix ships as a PyPI wheel whose script lands next to this interpreter (the project venv).
DCM2NIIX = Path(sys.executable).parent / "dcm2niix"
ACQUISITION = datetime(2012, 5, 17, 14, 3, 27, 250000)
SHAPE = (20, 24, 22)


def _rotation(x_deg: float, y_deg: float, z_deg: float) -> np.ndarray:
    """3x3 rotation R_z @ R_y @ R_x (degrees)."""
    ax, ay, az = np.deg2rad([x_deg, y_deg, z_deg])
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


AFFINES = {
    # RAS voxel order (ADNI / AIBL synthetic volumes).
    "ras": np.array([[4.0, 0, 0, -38.0], [0, 4.0, 0, -52.5], [0, 0, 4.0, -41.0], [0, 0, 0, 1]]),
    # x running right-to-left (NACC synthetic volumes).
    "x_flipped": np.array([[-4.0, 0, 0, 40.0], [0, 4.0, 0, -47.0], [0, 0, 4.0, -30.0], [0, 0, 0, 1]]),
    # Anisotropic sagittal-like grid with an oblique tilt: slices along world x.
    "oblique_sagittal": np.vstack([
        np.hstack([_rotation(7, -4, 11) @ np.array([[0, 0, 3.5], [4.0, 0, 0], [0, 4.5, 0]]),
                   [[12.0], [-60.0], [-35.0]]]),
        [0, 0, 0, 1],
    ]),
}


def _volume(seed: int = 0) -> np.ndarray:
    """A small int16 volume with structure (a gradient) plus noise, negative values included."""
    rng = np.random.default_rng(seed)
    grid = np.indices(SHAPE).sum(axis=0) * 40
    return (grid + rng.integers(-200, 200, SHAPE)).astype(np.int16)


def _dcm2niix(dicom_dir: Path, out_dir: Path) -> list[Path]:
    """Convert ``dicom_dir`` with the real dcm2niix; returns the NIfTI files it wrote."""
    out_dir.mkdir()
    result = subprocess.run(
        [str(DCM2NIIX), "-z", "y", "-b", "y", "-f", "%s_%p", "-o", str(out_dir), str(dicom_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return sorted(out_dir.glob("*.nii.gz"))


def _write(image: nib.Nifti1Image, out_dir: Path, **overrides: object) -> list[Path]:
    """write_dicom_series with the test's defaults."""
    kwargs = dict(patient_id="NACC123456", series_description="MPRAGE", acquisition=ACQUISITION,
                  uid_seed="test-seed", field_strength=3.0)
    kwargs.update(overrides)
    return write_dicom_series(image, out_dir, **kwargs)


def test_dcm2niix_binary_is_installed() -> None:
    result = subprocess.run([str(DCM2NIIX), "--version"], capture_output=True, text=True, timeout=30)
    assert "v1.0.20260724" in result.stdout + result.stderr


@pytest.mark.parametrize("name", sorted(AFFINES))
def test_round_trip_through_dcm2niix(tmp_path: Path, name: str) -> None:
    source = nib.Nifti1Image(_volume(), AFFINES[name])
    files = _write(source, tmp_path / "dicom")
    assert len(files) == SHAPE[2]

    converted = _dcm2niix(tmp_path / "dicom", tmp_path / "nifti")
    assert len(converted) == 1, converted
    back = nib.load(converted[0])
    # dcm2niix may reorder / flip voxel axes (it writes the slice stack in its own order).
    assert sorted(back.shape) == sorted(SHAPE)

    # Same voxels at the same world positions: compare both in the closest RAS voxel order.
    want, got = nib.as_closest_canonical(source), nib.as_closest_canonical(back)
    assert got.shape == want.shape
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-3)


def test_header_fields(tmp_path: Path) -> None:
    source = nib.Nifti1Image(_volume(), AFFINES["x_flipped"])
    files = _write(source, tmp_path, series_number=3, field_strength=1.5)
    first, last = read_dicom_header(files[0]), read_dicom_header(files[-1])
    assert first.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    assert first.Modality == "MR" and first.MRAcquisitionType == "3D"
    assert first.PatientID == "NACC123456" and str(first.PatientName) == "NACC123456"
    assert first.StudyDate == first.SeriesDate == first.AcquisitionDate == "20120517"
    assert first.AcquisitionTime == "140327.250000"
    assert float(first.MagneticFieldStrength) == 1.5
    assert first.SeriesNumber == 3 and (first.InstanceNumber, last.InstanceNumber) == (1, SHAPE[2])
    assert (first.Rows, first.Columns) == (SHAPE[1], SHAPE[0])
    assert (first.BitsAllocated, first.PixelRepresentation) == (16, 1)
    assert first.SeriesInstanceUID == last.SeriesInstanceUID
    assert first.SOPInstanceUID != last.SOPInstanceUID
    # The x-flipped NIfTI's first axis runs towards the subject's left = LPS +x; its second axis
    # runs anterior = LPS -y.
    assert [float(v) for v in first.ImageOrientationPatient] == [1.0, 0.0, 0.0, 0.0, -1.0, 0.0]
    assert [float(v) for v in first.ImagePositionPatient] == [-40.0, 47.0, -30.0]
    assert [float(v) for v in last.ImagePositionPatient] == [-40.0, 47.0, -30.0 + 4.0 * (SHAPE[2] - 1)]
    pixels = pydicom.dcmread(files[5]).pixel_array
    np.testing.assert_array_equal(pixels, _volume()[:, :, 5].T)


def test_same_inputs_give_identical_bytes(tmp_path: Path) -> None:
    source = nib.Nifti1Image(_volume(), AFFINES["ras"])
    first = _write(source, tmp_path / "a")
    second = _write(source, tmp_path / "b")
    assert [f.read_bytes() for f in first] == [f.read_bytes() for f in second]
    other = _write(source, tmp_path / "c", uid_seed="another")
    assert read_dicom_header(other[0]).SOPInstanceUID != read_dicom_header(first[0]).SOPInstanceUID


def test_shared_study_and_second_series(tmp_path: Path) -> None:
    source = nib.Nifti1Image(_volume(), AFFINES["ras"])
    t1 = _write(source, tmp_path)
    study = read_dicom_header(t1[0]).StudyInstanceUID
    flair = _write(source, tmp_path, series_number=2, series_description="AX FLAIR", study_uid=study,
                   sequence=FLAIR)
    header = read_dicom_header(flair[0])
    assert header.StudyInstanceUID == study and header.MRAcquisitionType == "2D"
    assert header.SeriesInstanceUID != read_dicom_header(t1[0]).SeriesInstanceUID


def test_float_data_is_rescaled(tmp_path: Path) -> None:
    data = _volume().astype(np.float32) * 0.01 + 0.5
    files = _write(nib.Nifti1Image(data, AFFINES["ras"]), tmp_path / "dicom")
    header = read_dicom_header(files[0])
    assert float(header.RescaleSlope) != 1.0
    back = nib.load(_dcm2niix(tmp_path / "dicom", tmp_path / "nifti")[0])
    got = nib.as_closest_canonical(back).get_fdata()
    np.testing.assert_allclose(got, data, atol=float(header.RescaleSlope))


def test_refusals(tmp_path: Path) -> None:
    sheared = AFFINES["ras"].copy()
    sheared[0, 1] = 1.0
    with pytest.raises(ValueError, match="perpendicular"):
        _write(nib.Nifti1Image(_volume(), sheared), tmp_path / "sheared")
    with pytest.raises(ValueError, match="3-D"):
        _write(nib.Nifti1Image(np.zeros((4, 4, 4, 2), np.int16), AFFINES["ras"]), tmp_path / "4d")
    source = nib.Nifti1Image(_volume(), AFFINES["ras"])
    _write(source, tmp_path / "once")
    with pytest.raises(FileExistsError, match="S001_I0001.dcm"):
        _write(source, tmp_path / "once")
