"""workflow.nacc_zips: NACC DICOM session zips -> T1 NIfTI, with the real dcm2niix on tiny series
written by workflow.dicom."""

from __future__ import annotations

import logging
import sys
import zipfile
from datetime import datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest

from workflow import paths
from workflow.dicom import FLAIR, MRSequence, write_dicom_series
from workflow.nacc_zips import RESULT_COLUMNS, Series, ZipExcluded, choose_t1, convert_nacc, convert_nacc_zips

DCM2NIIX = str(Path(sys.executable).parent / "dcm2niix")
PATTERN = "mprage|mp-rage|mp_rage|spgr|ir-fspgr|bravo|tfe|t1"  # config.yaml's convert.t1_series
ACQUISITION = datetime(2014, 9, 2, 9, 30, 0)
# NACC synthetic volumes run right-to-left along x.
AFFINE = np.array([[-4.0, 0, 0, 40.0], [0, 4.0, 0, -47.0], [0, 0, 4.0, -30.0], [0, 0, 0, 1]])
DERIVED = MRSequence(image_type="DERIVED\\SECONDARY\\MPR")


def _volume(shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """A small int16 volume with a gradient and noise (different seeds, different voxels)."""
    rng = np.random.default_rng(seed)
    return (np.indices(shape).sum(axis=0) * 30 + rng.integers(0, 300, shape)).astype(np.int16)


def _series(folder: Path, data: np.ndarray, description: str, number: int, *, sequence: MRSequence | None = None,
            patient: str = "NACC000001") -> None:
    """Write one DICOM series of ``data`` into ``folder`` (one study per patient)."""
    kwargs = {"sequence": sequence} if sequence is not None else {}
    write_dicom_series(nib.Nifti1Image(data, AFFINE), folder, patient_id=patient, series_description=description,
                       acquisition=ACQUISITION, series_number=number, uid_seed=f"{patient}-{folder.name}", **kwargs)


def _zip(folder: Path, zip_path: Path, prefix: str = "") -> Path:
    """Zip every file of ``folder`` (flat) under ``prefix`` inside the archive."""
    zip_path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as archive:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                archive.write(file, f"{prefix}{file.relative_to(folder).as_posix()}")
    return zip_path


T1_SHAPE = (20, 24, 22)


@pytest.fixture(scope="module")
def download(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A NACC ``mri/`` folder of session zips, one per case; returns the zip folder and source data."""
    root = tmp_path_factory.mktemp("nacc")
    zips = root / "mri"
    build = root / "build"

    # Session 1: T1 MPRAGE + 2-D FLAIR + 3-slice localizer + a bigger DERIVED MPRAGE reformat.
    s1 = build / "s1"
    _series(s1, _volume(T1_SHAPE, 1), "MPRAGE", 2)
    _series(s1, _volume((20, 24, 10), 2), "AX T2 FLAIR", 3, sequence=FLAIR)
    _series(s1, _volume((20, 24, 3), 3), "T1 localizer", 1)
    _series(s1, _volume((24, 26, 28), 4), "MPRAGE_MPR_COR", 4, sequence=DERIVED)
    _zip(s1, zips / "mri0001ni.zip")

    # Session 2: a FLAIR only.
    s2 = build / "s2"
    _series(s2, _volume((20, 24, 10), 5), "AX T2 FLAIR", 1, sequence=FLAIR, patient="NACC000002")
    _zip(s2, zips / "mri0002ni.zip")

    # Session 3: a valid zip cut short (the central directory is lost).
    s3 = build / "s3"
    _series(s3, _volume(T1_SHAPE, 6), "MPRAGE", 1, patient="NACC000003")
    full = _zip(s3, build / "full.zip").read_bytes()
    (zips / "mri0003ni.zip").write_bytes(full[: len(full) // 2])

    # Session 4: DICOMs in nested folders, two T1 candidates (the bigger one wins), in a sub-folder.
    s4 = build / "s4"
    _series(s4 / "study" / "series5", _volume((18, 20, 16), 7), "T1 SPGR low res", 5, patient="NACC000004")
    _series(s4 / "study" / "series6", _volume(T1_SHAPE, 8), "Accelerated Sagittal IR-FSPGR", 6,
            patient="NACC000004")
    _zip(s4, zips / "batch2" / "mri0004ni.zip", prefix="NACC000004/DICOM/")

    # Session 5: a zip of text files, no DICOM.
    s5 = build / "s5"
    s5.mkdir(parents=True)
    (s5 / "readme.txt").write_text("not a DICOM file\n")
    _zip(s5, zips / "mri0005ni.zip")

    return {"zips": zips, "root": root}


@pytest.fixture(scope="module")
def converted(download: dict[str, Path]) -> dict[str, object]:
    """convert_nacc_zips on the whole download (2 threads): the result table and the outputs."""
    out = download["root"] / "images"
    exclusions = download["root"] / "exclusions.tsv"
    results = convert_nacc_zips(download["zips"], out, exclusions, cohort="nacc", dcm2niix=DCM2NIIX,
                                t1_pattern=PATTERN, threads=2)
    return {"results": results.set_index("zip"), "images": out, "exclusions": exclusions}


def _canonical_equal(path: Path, data: np.ndarray) -> None:
    """The NIfTI at ``path`` holds ``data`` (written with AFFINE) at the same world positions."""
    got = nib.as_closest_canonical(nib.load(path))
    want = nib.as_closest_canonical(nib.Nifti1Image(data, AFFINE))
    np.testing.assert_array_equal(np.asarray(got.dataobj), np.asarray(want.dataobj))
    np.testing.assert_allclose(got.affine, want.affine, atol=1e-3)


def test_t1_is_chosen_among_flair_localizer_and_derived(converted: dict, download: dict) -> None:
    image = converted["images"] / "mri0001ni.nii.gz"
    assert image.is_file()
    _canonical_equal(image, _volume(T1_SHAPE, 1))
    row = converted["results"].loc[str(download["zips"] / "mri0001ni.zip")]
    assert row["series_description"] == "MPRAGE" and row["series_number"] == 2 and row["reason"] == ""
    assert "AX T2 FLAIR" in row["series_found"] and "MPRAGE_MPR_COR" in row["series_found"]
    assert '"SeriesDescription": "MPRAGE"' in (converted["images"] / "mri0001ni.json").read_text()


def test_nested_folders_and_largest_t1(converted: dict) -> None:
    _canonical_equal(converted["images"] / "mri0004ni.nii.gz", _volume(T1_SHAPE, 8))


def test_exclusions_table(converted: dict, download: dict) -> None:
    table = pd.read_csv(converted["exclusions"], sep="\t", dtype=str, keep_default_na=False)
    assert list(table.columns) == paths.EXCLUSION_COLUMNS
    reasons = dict(zip(table["file"], table["reason"]))
    zips = download["zips"]
    assert set(reasons) == {str(zips / f"mri000{i}ni.zip") for i in (2, 3, 5)}
    assert reasons[str(zips / "mri0002ni.zip")].startswith("no image: no T1 series among ['AX T2 FLAIR']")
    assert reasons[str(zips / "mri0003ni.zip")].startswith("unreadable: BadZipFile")
    assert reasons[str(zips / "mri0005ni.zip")] == (
        "no image: dcm2niix found no DICOM image among the zip's 1 files "
        "(Error: Unable to find any DICOM images in <zip> (or subfolders 9 deep))")
    assert set(table["stage"]) == {"convert"} and set(table["cohort"]) == {"nacc"}
    assert sorted(p.name for p in converted["images"].iterdir()) == [
        "mri0001ni.json", "mri0001ni.nii.gz", "mri0004ni.json", "mri0004ni.nii.gz"]
    assert list(converted["results"].reset_index().columns) == RESULT_COLUMNS


def test_rerun_gives_identical_bytes_and_never_overwrites(converted: dict, download: dict, tmp_path: Path) -> None:
    again = tmp_path / "images"
    convert_nacc_zips(download["zips"], again, tmp_path / "exclusions.tsv", cohort="nacc", dcm2niix=DCM2NIIX,
                      t1_pattern=PATTERN, threads=1)
    for name in ("mri0001ni.nii.gz", "mri0004ni.nii.gz"):
        assert (again / name).read_bytes() == (converted["images"] / name).read_bytes()
    with pytest.raises(FileExistsError, match="exclusions.tsv"):
        convert_nacc_zips(download["zips"], again, tmp_path / "exclusions.tsv", cohort="nacc", dcm2niix=DCM2NIIX,
                          t1_pattern=PATTERN, threads=1)
    with pytest.raises(FileExistsError, match="expected no existing image"):
        convert_nacc_zips(download["zips"], again, tmp_path / "other.tsv", cohort="nacc", dcm2niix=DCM2NIIX,
                          t1_pattern=PATTERN, threads=1)


def test_rule_entry_point_logs_counts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    zips = tmp_path / "mri"
    folder = tmp_path / "series"
    data = _volume(T1_SHAPE, 9)
    _series(folder, data, "MPRAGE", 1)
    _zip(folder, zips / "mri0009ni.zip")
    # The same NACCMRFI twice (in two sub-folders): one image, one exclusion.
    _zip(folder, zips / "copy" / "mri0009ni.zip")
    with caplog.at_level(logging.INFO, logger="workflow.nacc_zips"):
        convert_nacc(str(zips), "nacc", str(tmp_path / "images"), str(tmp_path / "exclusions.tsv"), DCM2NIIX,
                     PATTERN, 2)
    _canonical_equal(tmp_path / "images" / "mri0009ni.nii.gz", data)
    table = pd.read_csv(tmp_path / "exclusions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert table["reason"].tolist() == [f"duplicate image: same name as {zips / 'copy' / 'mri0009ni.zip'}"]
    assert "1 of 2 zips converted" in caplog.text


def test_setup_errors_stop_the_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="folder of NACC MRI session zips"):
        convert_nacc_zips(tmp_path / "missing", tmp_path / "images", tmp_path / "x.tsv", cohort="nacc",
                          dcm2niix=DCM2NIIX, t1_pattern=PATTERN, threads=1)
    with pytest.raises(FileNotFoundError, match="dcm2niix executable"):
        convert_nacc_zips(tmp_path, tmp_path / "images", tmp_path / "x.tsv", cohort="nacc",
                          dcm2niix=str(tmp_path / "no-dcm2niix"), t1_pattern=PATTERN, threads=1)


def _fake(description: str, shape: tuple[int, ...], number: int, image_type: str = "ORIGINAL\\PRIMARY",
          acquisition: str = "3D") -> Series:
    """A Series as read_series would return it (no files needed for choose_t1)."""
    return Series(nifti=Path(f"{number}_{description}.nii"), sidecar=None, description=description, protocol="",
                  number=number, image_type=image_type.split("\\"), acquisition_type=acquisition, shape=shape)


def test_choose_t1_rules() -> None:
    flair = _fake("AX FLAIR", (256, 256, 40), 3, acquisition="2D")
    scout = _fake("AAHead_Scout T1", (160, 160, 128), 1)
    mpr = _fake("MPRAGE MPR tra", (256, 256, 200), 5, image_type="DERIVED\\SECONDARY\\MPR")
    mprage = _fake("MPRAGE", (176, 256, 256), 4)
    axial_t1 = _fake("AX T1 SE", (256, 256, 30), 2, acquisition="2D")
    # 3-D acquisition first, whatever the voxel count; never a scout or a derived image.
    assert choose_t1([flair, scout, mpr, axial_t1, mprage], PATTERN) is mprage
    assert choose_t1([flair, axial_t1], PATTERN) is axial_t1
    # Equal candidates: the lower series number wins, whatever the input order.
    twin = _fake("MPRAGE repeat", (176, 256, 256), 7)
    assert choose_t1([twin, mprage], PATTERN) is mprage
    with pytest.raises(ZipExcluded, match=r"^no image: the series matching .* are localizers or derived"):
        choose_t1([flair, scout, mpr], PATTERN)
    with pytest.raises(ZipExcluded, match=r"^not 3-D: T1 series 'MPRAGE 4D' has shape \(64, 64, 40, 3\)"):
        choose_t1([_fake("MPRAGE 4D", (64, 64, 40, 3), 1)], PATTERN)
    with pytest.raises(ZipExcluded, match=r"^no image: no T1 series among \['AX FLAIR'\]"):
        choose_t1([flair], PATTERN)


@pytest.mark.slow
def test_a_users_raw_nacc_download_goes_through_the_convert_stage_into_intake(tiny_synthetic_cohorts, tmp_path):
    """`source: raw` as a user has it: a NACC download (written by the raw-download CLI from the tiny
    synthetic cohort) plus one broken zip, under a root of the user's; Snakemake's convert_nacc
    and intake_cohort rules give every image of the MRI table, and the broken zip is an exclusion
    that intake carries, with its reason."""
    import subprocess

    import yaml
    from conftest import TINY_CONFIG, VENV_ON_PATH, run_snakemake

    root = tmp_path / "NACC_download"
    subprocess.run([sys.executable, "-m", "workflow.raw_download", str(tiny_synthetic_cohorts["NACC"]), str(root)],
                   check=True, capture_output=True)
    (root / "mri" / "mri99999ni.zip").write_bytes(b"PK\x03\x04 truncated in transfer")
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["cohorts"] = {"ADNI": {"source": "synthetic"}, "AIBL": {"source": "synthetic"},
                         "NACC": {"source": "raw", "root": str(root)}}
    config_path = tmp_path / "config.yaml"
    config_path.write_text(yaml.safe_dump(config))
    workdir = tmp_path / "run"
    workdir.mkdir()
    run_snakemake(workdir, "--cores", "2", paths.INTAKE_IMAGES.format(cohort="NACC"), configfiles=(config_path,),
                  env=VENV_ON_PATH)

    images = pd.read_csv(workdir / paths.INTAKE_IMAGES.format(cohort="NACC"), sep="\t", dtype=str)
    sessions = pd.read_csv(tiny_synthetic_cohorts["NACC"] / "truth" / "sessions.tsv", sep="\t", dtype=str)
    assert sorted(zip(images["subject"], images["acq_date"])) == sorted(zip(sessions["subject"], sessions["acq_date"]))
    assert images["path"].str.startswith(paths.CONVERTED_NIFTI.format(cohort="NACC")).all()
    exclusions = pd.read_csv(workdir / paths.INTAKE_EXCLUSIONS.format(cohort="NACC"), sep="\t", dtype=str)
    [broken] = exclusions[exclusions["stage"] == "convert"].to_dict("records")
    assert broken["file"].endswith("mri/mri99999ni.zip") and broken["reason"].startswith("unreadable:")
