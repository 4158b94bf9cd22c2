"""Raw downloads made from synthetic cohorts (workflow/raw_download.py), converted by the REAL
Clinica 0.12 ``adni-to-bids`` / ``aibl-to-bids`` (workflow/clinica.py), and NACC zips by dcm2niix.

The Clinica tests are marked slow and skip when no clinica executable is found: set
``CITAB_CLINICA`` to one (e.g. ``.venv-convert/bin/clinica``), or put ``clinica`` on PATH. Each
cohort is converted once (module fixtures), from a raw download of three subjects of the tiny
synthetic cohorts: the two with an off-schedule MRI (unscheduled, unmatched) and one without.
Run with ``-s`` to see what Clinica wrote and how long each conversion took.
"""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO

from workflow import clinica as clinica_module
from workflow.clinica import (ClinicaError, check_xml_dir, clinica_command, missing_clinical_tables,
                              run_clinica_converter)
from workflow.raw_download import (ADNI_OFF_SCHEDULE_VISIT, RawDownloadError, adni_visit_name, loni_date_folder,
                                   loni_folder_name, write_raw_download)

FORMATS = {"ADNI": "adni", "AIBL": "aibl", "NACC": "nacc"}
DCM2NIIX = Path(sys.executable).parent / "dcm2niix"
NACC_T1_PATTERN = "mprage|mp-rage|mp_rage|spgr|ir-fspgr|bravo|tfe|t1"  # config.yaml convert.nacc_t1_series
ADNI_T1_PATHS_COLUMNS = ["Subject_ID", "VISCODE", "Visit", "Sequence", "Scan_Date", "Study_ID", "Series_ID",
                         "Image_ID", "Field_Strength", "Original", "Is_Dicom", "Path"]


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def read_csv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def sessions_of(root: Path) -> pd.DataFrame:
    return read_tsv(root / "truth" / "sessions.tsv")


def pick_subjects(root: Path) -> list[str]:
    """The two subjects with an off-schedule MRI (unscheduled, unmatched) and the first other one."""
    sessions = sessions_of(root)
    special = sorted(set(sessions.loc[sessions["kind"] != "scheduled", "subject"]))[:2]
    plain = sorted(set(sessions["subject"]) - set(special))[:1]
    return special + plain



def canonical_voxels(path: Path) -> np.ndarray:
    """Voxel values in RAS voxel order, rounded (Clinica rescales ints through float64)."""
    return np.rint(nib.as_closest_canonical(nib.load(path)).get_fdata())


# --- raw download (no Clinica needed) ---------------------------------------------------------------

@pytest.fixture(scope="module")
def raw_downloads(tiny_synthetic_cohorts, tmp_path_factory) -> dict[str, Path]:
    """A raw download of three subjects per tiny cohort (about a second each)."""
    base = tmp_path_factory.mktemp("raw")
    roots = {}
    for name, fmt in FORMATS.items():
        roots[name] = base / name
        summary = write_raw_download(tiny_synthetic_cohorts[name], fmt, roots[name],
                                     subjects=pick_subjects(tiny_synthetic_cohorts[name]))
        print(f"\nraw {name}: {summary}")
    return roots


def test_adni_raw_layout_is_lonis_and_consistent_with_the_tables(raw_downloads, tiny_synthetic_cohorts):
    root = raw_downloads["ADNI"]
    truth = read_tsv(root / "truth" / "raw_images.tsv")
    assert set(truth["subject"]) == set(pick_subjects(tiny_synthetic_cohorts["ADNI"]))
    assert truth["image_id"].is_unique and truth["series_id"].is_unique
    clinical = root / "clinical"
    assert missing_clinical_tables("adni", clinical) == []
    names = sorted(p.name for p in clinical.iterdir())
    assert names == sorted(f"{t}_05Jun2024.csv" for t in (
        "ADNIMERGE", "ADNIMERGE_DICT", "MPRAGEMETA", "MRILIST", "MRIQUALITY", "MAYOADIRL_MRI_IMAGEQC_05_07_15",
        "DXSUM_PDXCONV_ADNIALL", "APOERES"))
    meta = read_csv(clinical / "MPRAGEMETA_05Jun2024.csv")
    assert list(meta.columns) == ["SubjectID", "Visit", "ScanDate", "Orig/Proc", "Sequence", "SeriesID", "StudyID",
                                  "ImageUID", "MagStrength"]
    merge = read_csv(clinical / "ADNIMERGE_05Jun2024.csv")
    synthetic = read_csv(next((tiny_synthetic_cohorts["ADNI"] / "clinical").glob("ADNIMERGE*.csv")))
    # The synthetic columns are kept as they are; Clinica's extra columns are added.
    assert merge[synthetic.columns].equals(synthetic)
    assert {"EXAMDATE_bl", "MMSE_bl", "ADASQ4_bl", "MOCA_bl", "TRABSCOR_bl", "mPACCdigit_bl", "PIB", "AV45",
            "IMAGEUID"} <= set(merge.columns)
    for row in truth.itertuples():
        folder = root / row.path
        files = sorted(folder.glob("*.dcm"))
        assert files and all(f.name.startswith(f"ADNI_{row.source_id}_MR_") for f in files)
        assert all(f.name.endswith(f"_S{row.series_id}_I{row.image_id}.dcm") for f in files)
        assert folder.parent.name == loni_date_folder(pd.Timestamp(row.acq_time).to_pydatetime())
        assert folder.parent.parent.name == loni_folder_name(row.series_description)
        if row.series == "T1":
            [listed] = meta[meta["ImageUID"] == row.image_id].to_dict("records")
            assert listed["SubjectID"] == row.source_id and listed["Sequence"] == row.series_description
            assert listed["ScanDate"] == row.acq_time[:10] and listed["Visit"] == row.visit
            assert (root / "images" / f"ADNI_{row.source_id}_{loni_folder_name(row.series_description)}"
                    f"_S{row.series_id}_I{row.image_id}.xml").exists()
        else:
            assert row.image_id not in set(meta["ImageUID"])  # MPRAGEMETA lists T1 series only
    off = truth[(truth["series"] == "T1") & (truth["kind"] != "scheduled")]
    assert len(off) == 2 and set(off["visit"]) == {ADNI_OFF_SCHEDULE_VISIT}


def test_aibl_raw_layout_and_mri_tables_match_the_folder_dates(raw_downloads, tiny_synthetic_cohorts):
    root = raw_downloads["AIBL"]
    clinical = root / "clinical"
    assert missing_clinical_tables("aibl", clinical) == []
    for table in ("ptdemog", "pdxconv", "mmse", "cdr", "neurobat", "apoeres"):
        [copied] = clinical.glob(f"aibl_{table}_*.csv")
        assert filecmp.cmp(copied, tiny_synthetic_cohorts["AIBL"] / "clinical" / copied.name, shallow=False)
    mri = pd.concat([read_csv(clinical / f"aibl_{t}_01-Jun-2018.csv") for t in ("mrimeta", "mri3meta")])
    truth = read_tsv(root / "truth" / "raw_images.tsv")
    for row in truth[truth["series"] == "T1"].itertuples():
        folder = root / row.path
        assert folder.parts[-4:-2] == (row.source_id, "MPRAGE_ADNI_confirmed")
        day = pd.Timestamp(row.acq_time)
        [listed] = mri[(mri["RID"] == row.source_id) & (mri["EXAMDATE"] == day.strftime("%m/%d/%Y"))].to_dict("records")
        assert listed["VISCODE"] == ("bl" if row.session == "M000" else f"m{int(row.session[1:]):02d}")
    for tracer in ("av45", "pib", "flute"):
        assert len(read_csv(clinical / f"aibl_{tracer}meta_01-Jun-2018.csv").columns) >= 36


def test_nacc_zips_hold_a_t1_and_a_flair_and_dcm2niix_gets_the_voxels_back(raw_downloads, tiny_synthetic_cohorts,
                                                                            tmp_path):
    import re

    root = raw_downloads["NACC"]
    synthetic = tiny_synthetic_cohorts["NACC"]
    assert sorted(p.name for p in (root / "clinical").iterdir()) == ["investigator_ftldlbd_nacc66.csv",
                                                                      "investigator_mri_nacc66.csv"]
    assert filecmp.cmp(root / "clinical" / "investigator_ftldlbd_nacc66.csv",
                       synthetic / "clinical" / "investigator_nacc66.csv", shallow=False)
    truth = read_tsv(root / "truth" / "raw_images.tsv")
    zips = sorted((root / "mri").glob("*.zip"))
    assert len(zips) == len(truth.drop_duplicates(["subject", "session"])) == len(truth) // 2
    for path in zips:
        with zipfile.ZipFile(path) as archive:
            folders = sorted({name.split("/")[0] for name in archive.namelist()})
            assert len(folders) == 2
            descriptions = {f: f.split("_", 1)[1].replace("_", " ") for f in folders}
            t1 = [f for f in folders if re.search(NACC_T1_PATTERN, descriptions[f], re.IGNORECASE)]
            assert len(t1) == 1, descriptions  # the FLAIR does not look like a T1
            archive.extractall(tmp_path / path.stem)
    if not DCM2NIIX.exists():
        pytest.skip(f"{DCM2NIIX} missing (pip install dcm2niix)")
    row = truth[truth["series"] == "T1"].iloc[0]
    zip_name, folder = row["path"].split(":")
    out = tmp_path / "nifti"
    out.mkdir()
    subprocess.run([str(DCM2NIIX), "-z", "y", "-b", "n", "-f", "t1", "-o", str(out),
                    str(tmp_path / Path(zip_name).stem / folder)], check=True, capture_output=True, timeout=60)
    [converted] = out.glob("t1*.nii.gz")
    original = synthetic / "images" / Path(zip_name).name.replace(".zip", ".nii.gz")
    assert np.array_equal(canonical_voxels(converted), canonical_voxels(original))
    assert np.allclose(nib.as_closest_canonical(nib.load(converted)).affine,
                       nib.as_closest_canonical(nib.load(original)).affine, atol=1e-3)


def test_same_input_gives_the_same_bytes_and_a_subset_keeps_its_ids(raw_downloads, tiny_synthetic_cohorts, tmp_path):
    for name, fmt in FORMATS.items():
        again = tmp_path / name
        subjects = pick_subjects(tiny_synthetic_cohorts[name])
        write_raw_download(tiny_synthetic_cohorts[name], fmt, again, subjects=subjects)
        files = sorted(str(p.relative_to(again)) for p in again.rglob("*") if p.is_file())
        assert files == sorted(str(p.relative_to(raw_downloads[name])) for p in raw_downloads[name].rglob("*")
                               if p.is_file())
        assert filecmp.cmpfiles(raw_downloads[name], again, files, shallow=False)[1:] == ([], [])
    whole = tmp_path / "whole"
    write_raw_download(tiny_synthetic_cohorts["ADNI"], "adni", whole)
    all_ids = read_tsv(whole / "truth" / "raw_images.tsv").set_index(["subject", "session", "series"])["image_id"]
    subset = read_tsv(raw_downloads["ADNI"] / "truth" / "raw_images.tsv").set_index(["subject", "session", "series"])
    assert subset["image_id"].equals(all_ids.loc[subset.index])


def test_refuses_a_non_empty_output_and_unknown_subjects(tiny_synthetic_cohorts, raw_downloads, tmp_path):
    with pytest.raises(FileExistsError, match="not empty"):
        write_raw_download(tiny_synthetic_cohorts["AIBL"], "aibl", raw_downloads["AIBL"])
    with pytest.raises(RawDownloadError, match=r"no MRI session for subjects \['ADNI999S9999'\]"):
        write_raw_download(tiny_synthetic_cohorts["ADNI"], "adni", tmp_path / "x", subjects=["ADNI999S9999"])
    with pytest.raises(RawDownloadError, match="unknown format"):
        write_raw_download(tiny_synthetic_cohorts["ADNI"], "oasis", tmp_path / "y")


def test_adni_visit_names():
    assert adni_visit_name("bl", "ADNI1", "ADNI1", 0) == "ADNI Screening"
    assert adni_visit_name("bl", "ADNI2", "ADNI2", 0) == "ADNI2 Screening MRI-New Pt"
    assert adni_visit_name("m06", "ADNI1", "ADNI1", 0) == "ADNI1/GO Month 6"
    assert adni_visit_name("m60", "ADNIGO", "ADNI1", 60) == "ADNIGO Month 60"
    assert adni_visit_name("m36", "ADNI2", "ADNI1", 36) == "ADNI2 Initial Visit-Cont Pt"
    assert adni_visit_name("m60", "ADNI2", "ADNI1", 36) == "ADNI2 Year 2 Visit"
    assert adni_visit_name("m24", "ADNI3", "ADNI3", 0) == "ADNI3 Year 2 Visit"


# --- workflow.clinica without Clinica ---------------------------------------------------------------

def fake_clinica(folder: Path, body: str) -> str:
    """An executable named clinica that answers --version and otherwise runs ``body`` (sh)."""
    path = folder / "clinica"
    path.write_text(f'#!/bin/sh\nif [ "$1" = "--version" ]; then echo "clinica, version 0.12.0"; exit 0; fi\n{body}\n')
    path.chmod(0o755)
    return str(path)


def test_clinica_command_order_and_error(tmp_path, monkeypatch):
    exe = fake_clinica(tmp_path, "exit 0")
    assert clinica_command(exe) == str(Path(exe).absolute())
    monkeypatch.setattr(clinica_module, "REPO_CLINICA", tmp_path / "absent" / "clinica")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert clinica_command(str(tmp_path / "missing")) == str(Path(exe).absolute())  # falls back to PATH
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    with pytest.raises(FileNotFoundError, match=r"tried: .*missing, .*absent/clinica, clinica on PATH"):
        clinica_command(str(tmp_path / "missing"))


def test_failing_or_silent_clinica_is_reported(raw_downloads, tmp_path):
    root = raw_downloads["AIBL"]
    failing = fake_clinica(tmp_path, 'echo "\033[31mTraceback: something broke\033[0m"; exit 3')
    log = tmp_path / "convert.log"
    with pytest.raises(ClinicaError, match=r"(?s)aibl-to-bids .* failed with exit code 3.*Traceback: something broke"):
        run_clinica_converter("aibl", root / "images", root / "clinical", tmp_path / "bids", clinica=failing,
                              log_path=log)
    assert "Traceback: something broke" in log.read_text() and "\033[" not in log.read_text()
    (tmp_path / "silent").mkdir()
    silent = fake_clinica(tmp_path / "silent", 'echo "nothing to do"')
    with pytest.raises(ClinicaError, match=r"(?s)wrote no sub-\*/ses-\*/anat/\*_T1w.nii.gz.*nothing to do"):
        run_clinica_converter("aibl", root / "images", root / "clinical", tmp_path / "bids2", clinica=silent)
    with pytest.raises(FileNotFoundError, match="aibl_mri3meta"):
        clinical = tmp_path / "clinical"
        clinical.mkdir()
        for path in (root / "clinical").glob("*.csv"):
            if "mri3meta" not in path.name:
                (clinical / path.name).write_bytes(path.read_bytes())
        run_clinica_converter("aibl", root / "images", clinical, tmp_path / "bids3", clinica=silent)


def test_xml_folder_of_original_images_only_is_refused(raw_downloads):
    with pytest.raises(ValueError, match="image_proc_id"):
        check_xml_dir(raw_downloads["ADNI"] / "images")


# --- the real Clinica -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def clinica_exe() -> str:
    try:
        return clinica_command(os.environ.get("CITAB_CLINICA"))
    except FileNotFoundError as error:
        pytest.skip(f"no clinica executable (set CITAB_CLINICA or put clinica on PATH): {error}")


def _convert(fmt: str, raw: Path, out: Path, clinica: str) -> dict:
    started = time.perf_counter()
    log = out.parent / f"{fmt}.log"
    run_clinica_converter(fmt, raw / "images", raw / "clinical", out, clinica=clinica, log_path=log, threads=1)
    seconds = time.perf_counter() - started
    print(f"\nclinica {fmt}-to-bids on {raw}: {seconds:.1f} s")
    return {"bids": out, "log": log, "seconds": seconds, "raw": raw}


@pytest.fixture(scope="module")
def adni_bids(raw_downloads, clinica_exe, tmp_path_factory) -> dict:
    return _convert("adni", raw_downloads["ADNI"], tmp_path_factory.mktemp("adni_bids") / "bids", clinica_exe)


@pytest.fixture(scope="module")
def aibl_bids(raw_downloads, clinica_exe, tmp_path_factory) -> dict:
    return _convert("aibl", raw_downloads["AIBL"], tmp_path_factory.mktemp("aibl_bids") / "bids", clinica_exe)


def converted_t1s(bids: Path) -> dict[tuple[str, str], Path]:
    return {(p.parts[-4][4:], p.parts[-3][4:]): p for p in sorted(bids.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))}


@pytest.mark.slow
def test_clinica_adni_converts_every_t1_and_relabels_off_schedule_scans(adni_bids, tiny_synthetic_cohorts):
    bids, raw = adni_bids["bids"], adni_bids["raw"]
    truth = read_tsv(raw / "truth" / "raw_images.tsv")
    truth = truth[truth["series"] == "T1"]
    merge = read_csv(raw / "clinical" / "ADNIMERGE_05Jun2024.csv")
    t1s = converted_t1s(bids)
    assert len(t1s) == len(truth)
    by_scan_id = {}
    for (subject, session), path in t1s.items():
        scans = read_tsv(path.parent.parent / f"sub-{subject}_ses-{session}_scans.tsv")
        assert list(scans.columns) == ["filename", "scan_id", "mri_field"]  # no acq_time without --xml_path
        [row] = scans.to_dict("records")
        assert row["filename"] == f"anat/sub-{subject}_ses-{session}_T1w.nii.gz"
        assert row["mri_field"] in {"1.5", "3.0"}
        by_scan_id[row["scan_id"]] = (subject, session, path)
    for row in truth.itertuples():
        subject, session, path = by_scan_id[row.image_id]
        assert subject == row.subject
        original = tiny_synthetic_cohorts["ADNI"] / "bids" / f"sub-{row.subject}" / f"ses-{row.session}" / "anat" / \
            f"sub-{row.subject}_ses-{row.session}_T1w.nii.gz"
        assert np.array_equal(canonical_voxels(path), canonical_voxels(original))
        image = nib.load(path)
        # Clinica re-centres the T1: RAS axes, origin in the middle of the field of view.
        zooms = np.array(image.header.get_zooms()[:3])
        assert np.allclose(image.affine[:3, :3], np.diag(zooms))
        assert np.allclose(image.affine[:3, 3], -zooms * np.array(image.shape[:3]) / 2)
        visits = merge[merge["PTID"] == row.source_id]
        if row.kind == "scheduled":
            assert session == row.session
        else:
            # An off-schedule scan takes the code of an ADNIMERGE visit (the closest one in date
            # that has no protocol scan), so its label is not the synthetic one.
            assert session != row.session
            assert ("bl" if session == "M000" else f"m{int(session[1:]):02d}") in set(visits["VISCODE"])
    t1_paths = read_tsv(bids / "conversion_info" / "v0" / "t1_paths.tsv")
    assert list(t1_paths.columns) == ADNI_T1_PATHS_COLUMNS
    assert set(t1_paths["Image_ID"]) == set(truth["image_id"])
    participants = read_tsv(bids / "participants.tsv")
    assert list(participants.columns[:3]) == ["alternative_id_1", "participant_id", "sex"]
    assert set(participants["participant_id"]) == {f"sub-{s}" for s in truth["subject"]}
    for subject in set(truth["subject"]):
        sessions = read_tsv(bids / f"sub-{subject}" / f"sub-{subject}_sessions.tsv")
        assert list(sessions.columns[:6]) == ["RID", "session_id", "examination_date", "age", "current_study",
                                              "diagnosis"]
        # One row per ADNIMERGE visit of the participant, imaged or not.
        assert len(sessions) == (merge["PTID"] == truth.loc[truth["subject"] == subject, "source_id"].iloc[0]).sum()


@pytest.mark.slow
def test_clinica_aibl_keeps_the_visit_codes_of_the_mri_tables(aibl_bids, tiny_synthetic_cohorts):
    bids, raw = aibl_bids["bids"], aibl_bids["raw"]
    truth = read_tsv(raw / "truth" / "raw_images.tsv")
    truth = truth[truth["series"] == "T1"]
    t1s = converted_t1s(bids)
    assert set(t1s) == set(zip(truth["subject"], truth["session"]))
    for row in truth.itertuples():
        path = t1s[(row.subject, row.session)]
        original = tiny_synthetic_cohorts["AIBL"] / "bids" / f"sub-{row.subject}" / f"ses-{row.session}" / "anat" / \
            f"sub-{row.subject}_ses-{row.session}_T1w.nii.gz"
        assert np.array_equal(canonical_voxels(path), canonical_voxels(original))
        scans = read_tsv(path.parent.parent / f"sub-{row.subject}_ses-{row.session}_scans.tsv")
        assert list(scans.columns) == ["filename", "acq_time"]
        # 'anat / <file>' with spaces; the JSON sidecar is listed too; acq_time is the date at midnight.
        assert set(scans["filename"]) == {f"anat / sub-{row.subject}_ses-{row.session}_T1w.nii.gz",
                                          f"anat / sub-{row.subject}_ses-{row.session}_T1w.json"}
        assert set(scans["acq_time"]) == {f"{row.acq_time[:10]}T00:00:00"}
    t1_paths = read_tsv(bids / "conversion_info" / "t1_paths.tsv")
    assert list(t1_paths.columns) == ["Subjects_ID", "Session_ID", "Path_to_T1"]
    participants = read_tsv(bids / "participants.tsv")
    assert list(participants.columns) == ["participant_id", "date_of_birth", "sex", "site", "apoe_gen1", "apoe_gen2"]
    sessions = read_tsv(next(bids.glob("sub-*/sub-*_sessions.tsv")))
    assert list(sessions.columns) == ["session_id", "examination_date", "cdr_global", "MMS", "diagnosis", "age"]
    assert sessions["examination_date"].str.fullmatch(r"\d\d/\d\d/\d{4}").all()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["adni", "aibl"])
def test_t1_series_clinica_left_out_are_listed_as_exclusions(fmt, adni_bids, aibl_bids, tmp_path):
    """Clinica keeps one T1 per visit and skips the rest with a log line: the convert stage names
    each T1-looking series folder of the download that is not in Clinica's t1_paths.tsv (and no
    FLAIR or other sequence)."""
    from workflow.convert import unconverted_t1_series

    converted = {"adni": adni_bids, "aibl": aibl_bids}[fmt]
    images = converted["raw"] / "images"
    t1_pattern = yaml.safe_load((REPO / "workflow/schemas/convert.schema.yaml").read_text())["properties"]["t1_series"]["default"]
    assert unconverted_t1_series(fmt, "X", images, converted["bids"], t1_pattern).empty

    # The same download with one more T1 scan and one more FLAIR that Clinica never saw.
    copy = tmp_path / "images"
    shutil.copytree(images, copy, ignore=shutil.ignore_patterns("*.dcm", "*.xml"))
    t1_folder = next(p for p in sorted(copy.glob("*/*/*/I*")) if "FLAIR" not in p.parts[-3].upper())
    extra_t1 = t1_folder.parent.parent / "2030-01-02_10_00_00.0" / "I999999"
    extra_t1.mkdir(parents=True)
    flair_series = next(p for p in sorted(copy.glob("*/*")) if "FLAIR" in p.name.upper())
    (flair_series / "2030-01-02_10_10_00.0" / "I999998").mkdir(parents=True)
    listed = unconverted_t1_series(fmt, "X", copy, converted["bids"], t1_pattern)
    assert list(listed["file"]) == [str(extra_t1)]
    assert listed["reason"].iloc[0].startswith("not converted: Clinica did not convert T1 series")
    assert listed["subject"].iloc[0] == ("ADNI" if fmt == "adni" else "AIBL") + t1_folder.parts[-4].replace("_", "")
