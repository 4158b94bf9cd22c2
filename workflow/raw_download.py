"""A synthetic cohort -> the raw download its data centre would ship (LONI IDA, NACC).

The convert stage (``workflow/convert.py``) runs the real converters on what a user downloads:
Clinica 0.12's ``adni-to-bids`` / ``aibl-to-bids`` on LONI image folders plus study-data CSVs, and
dcm2niix on NACC's per-session DICOM zips. :func:`write_raw_download` makes such a download from a
synthetic cohort root (``docs/interfaces.md`` section 1), so tests and users can run the real
converters on data whose voxels and visits are known. Layout under ``out_root``:

* ``adni``: ``images/<PTID>/<series folder>/<YYYY-MM-DD_HH_MM_SS.0>/I<image id>/*.dcm`` (a sagittal
  T1 series named as LONI names the MPRAGE of that protocol, plus a small axial FLAIR series), the
  LONI XML metadata ``images/ADNI_<PTID>_<series folder>_S<series id>_I<image id>.xml`` beside the
  participant folders (read by Clinica's ``--xml_path``), and ``clinical/`` with the study-data
  tables Clinica opens for T1: ``ADNIMERGE_<date>.csv`` (the synthetic table plus the columns
  Clinica requires), ``ADNIMERGE_DICT_<date>.csv``, ``MPRAGEMETA``, ``MRIQUALITY``,
  ``MAYOADIRL_MRI_IMAGEQC_05_07_15``, ``DXSUM_PDXCONV_ADNIALL``, ``APOERES`` and ``MRILIST``
  (all ``_<date>.csv``).
* ``aibl``: ``images/<RID>/MPRAGE_ADNI_confirmed/<date folder>/I<image id>/*.dcm`` plus an
  ``AXIAL_FLAIR`` series; ``clinical/`` holds the synthetic ``aibl_<table>_01-Jun-2018.csv`` files
  unchanged, ``aibl_mrimeta`` (1.5 T sessions) and ``aibl_mri3meta`` (3 T sessions) rewritten
  with the MRI form's columns, and header-only PET tables (``av45meta``, ``pibmeta``,
  ``flutemeta``) that ``aibl-to-bids`` insists on reading.
* ``nacc``: ``clinical/investigator_ftldlbd_nacc66.csv`` (the UDS table under its current release
  name), ``clinical/investigator_mri_nacc66.csv``, and ``mri/<NACCMRFI>``: one zip per MRI session
  holding a sagittal T1 series and a small ``AX FLAIR`` series, so the converter has to choose.
* ``truth/raw_images.tsv`` (every format): which synthetic session each written series is, with
  its ids, series description, LONI visit name and folder (for tests and QC; not part of a real
  download).

Image, series and study ids are numbered over the whole cohort in acquisition order, so a subset
(``subjects``) gets the same ids as the full download. Same input -> byte-identical output: every
DICOM UID derives from the cohort, subject and session, and zip entries carry fixed time stamps.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import shutil
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from xml.etree import ElementTree

import nibabel as nib
import numpy as np
import pandas as pd
from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

from workflow.dicom import FLAIR, MPRAGE, MRSequence, write_dicom_series
from workflow.synthetic_clinical import ADNI_PHASES, stable_hash

log = logging.getLogger(__name__)

FORMATS = ("adni", "aibl", "nacc")
TRUTH_TABLE = "truth/raw_images.tsv"
RAW_IMAGE_COLUMNS = ["subject", "session", "source_id", "kind", "acq_time", "series", "series_description",
                     "visit", "image_id", "series_id", "study_id", "field_strength", "manufacturer", "path"]

# LONI appends the download date to every study-data CSV (Clinica accepts `_<d>MonYYYY`).
ADNI_DOWNLOAD_DATE = "05Jun2024"
ADNI_UPDATE_STAMP = "2024-06-05 04:19:58.0"
AIBL_RELEASE = "01-Jun-2018"
NACC_RELEASE = "66"

# Series numbers inside one session (a localizer would be 1; it is not written).
T1_SERIES_NUMBER = 2
OTHER_SERIES_NUMBER = 4
# The second series is a coarse axial FLAIR: every 2nd voxel of the T1 grid, contrast inverted.
OTHER_SERIES_STEP = 2
# Minutes between the T1 and the FLAIR of one session.
OTHER_SERIES_DELAY_MIN = 6
# T1 series are written sagittally, as ADNI / AIBL / NACC acquire them: DICOM columns run
# anterior -> posterior, rows superior -> inferior, slices along the left-right axis.
SAGITTAL_AXCODES = ("P", "I", "R")

# Id ranges per format (ADNI ids in the tens of thousands, like ADNI1/2 images; AIBL higher).
ID_BASES = {"adni": {"image": 10000, "series": 5000, "study": 2000},
            "aibl": {"image": 200000, "series": 100000, "study": 50000},
            "nacc": {"image": 0, "series": 0, "study": 0}}

# Scanner vendors and models by field strength; a site keeps one vendor.
VENDORS = ("SIEMENS", "GE MEDICAL SYSTEMS", "Philips Medical Systems")
MODELS = {("SIEMENS", 1.5): "Symphony", ("SIEMENS", 3.0): "TrioTim",
          ("GE MEDICAL SYSTEMS", 1.5): "SIGNA EXCITE", ("GE MEDICAL SYSTEMS", 3.0): "DISCOVERY MR750",
          ("Philips Medical Systems", 1.5): "Intera", ("Philips Medical Systems", 3.0): "Achieva"}
# ADNI T1 series descriptions by vendor and protocol phase. Clinica's ADNI1/GO/2 selection takes
# an original series whose description contains mprage / mp-rage (and no '2') or spgr (and no
# 'acc'); its ADNI3 selection needs 'accel' (ADNI3 protocols are accelerated).
ADNI_T1_SERIES = {
    "SIEMENS": {"ADNI1": "MPRAGE", "ADNIGO": "MPRAGE", "ADNI2": "MPRAGE", "ADNI3": "Accelerated Sagittal MPRAGE"},
    "GE MEDICAL SYSTEMS": {"ADNI1": "MP-RAGE", "ADNIGO": "IR-SPGR", "ADNI2": "IR-SPGR",
                           "ADNI3": "Accelerated Sagittal IR-FSPGR"},
    "Philips Medical Systems": {"ADNI1": "MP-RAGE", "ADNIGO": "MPRAGE", "ADNI2": "MPRAGE",
                                "ADNI3": "Accelerated Sagittal MPRAGE"},
}
ADNI_OTHER_SERIES = "Axial T2-FLAIR"
# A scan that belongs to no protocol visit is filed by LONI under this visit name.
ADNI_OFF_SCHEDULE_VISIT = "No Visit Defined"
# Mayo's image QC table covers 3 T scans up to its release (May 7, 2015).
MAYO_QC_RELEASE = date(2015, 5, 7)
# One of the series descriptions aibl-to-bids accepts as T1 (it matches the LONI folder name).
AIBL_T1_SERIES = "MPRAGE ADNI confirmed"
AIBL_OTHER_SERIES = "AXIAL FLAIR"
# AIBL sessions from this date on are 3 T (aibl_mri3meta), earlier ones 1.5 T (aibl_mrimeta) [ours].
AIBL_3T_FROM = date(2013, 1, 1)
NACC_T1_SERIES = {"SIEMENS": "MPRAGE", "GE MEDICAL SYSTEMS": "SAG 3D IR-FSPGR",
                  "Philips Medical Systems": "SAG T1 3D TFE"}
NACC_OTHER_SERIES = "AX FLAIR"
# Fixed compression settings keep the NACC zips byte-identical between runs.
ZIP_COMPRESSLEVEL = 6


class RawDownloadError(ValueError):
    """The synthetic cohort root lacks something the raw download is made from."""


@dataclass(frozen=True)
class SessionPlan:
    """What is written for one MRI session: ids, names, scanner and where it goes."""

    subject: str
    session: str
    source_id: str
    kind: str
    acquired: datetime
    image: Path
    t1_description: str
    visit: str
    image_id: int
    series_id: int
    study_id: int
    field_strength: float
    manufacturer: str


# --- entry point ----------------------------------------------------------------------------------

def write_raw_download(synthetic_root: Path, fmt: str, out_root: Path, *,
                       subjects: list[str] | None = None) -> dict:
    """Write the raw download of a synthetic cohort (layout: this module's docstring).

    Args:
        synthetic_root: a cohort root written by ``workflow.synthesize.synthesize_cohort``.
        fmt: ``adni``, ``aibl`` or ``nacc`` (the cohort's native format).
        out_root: the download folder to create; must not exist or be empty.
        subjects: write images for these subjects only (BIDS labels such as ``ADNI027S0074`` or
            native ids such as ``027_S_0074``, ``288``, ``NACC123456``); the clinical tables always
            cover the whole cohort, as a real study-data download does. None = every subject.
    Returns:
        A summary: ``format, out_root, subjects, sessions, series, dicom_files, tables`` (the
        clinical files written, relative to ``out_root``), ``seconds``.
    Raises:
        FileExistsError: ``out_root`` exists and is not empty.
        RawDownloadError: ``fmt`` is unknown, the cohort root lacks a file, or a subject is unknown.
    """
    started = time.perf_counter()
    synthetic_root, out_root = Path(synthetic_root), Path(out_root)
    if fmt not in FORMATS:
        raise RawDownloadError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if out_root.exists() and any(out_root.iterdir()):
        raise FileExistsError(f"{out_root} exists and is not empty; remove it to write the raw download again")
    sessions = _read_sessions(synthetic_root)
    wanted = _select_subjects(sessions, subjects, synthetic_root)
    out_root.mkdir(parents=True, exist_ok=True)
    writer = {"adni": _write_adni, "aibl": _write_aibl, "nacc": _write_nacc}[fmt]
    tables, rows = writer(synthetic_root, out_root, sessions, wanted)
    truth = pd.DataFrame(rows, columns=RAW_IMAGE_COLUMNS)
    (out_root / TRUTH_TABLE).parent.mkdir(parents=True, exist_ok=True)
    truth.to_csv(out_root / TRUTH_TABLE, sep="\t", index=False, lineterminator="\n")
    dicom_files = sum(1 for _ in out_root.rglob("*.dcm"))
    if fmt == "nacc":
        dicom_files = sum(len([n for n in zipfile.ZipFile(p).namelist() if n.endswith(".dcm")])
                          for p in sorted((out_root / "mri").glob("*.zip")))
    summary = {"format": fmt, "out_root": str(out_root), "subjects": len(wanted),
               "sessions": len(truth.drop_duplicates(["subject", "session"])), "series": len(truth),
               "dicom_files": dicom_files, "tables": tables, "seconds": round(time.perf_counter() - started, 1)}
    log.info("raw %s download of %s: %d subjects, %d series, %d DICOM files, %d tables in %.1f s -> %s", fmt,
             synthetic_root, summary["subjects"], summary["series"], dicom_files, len(tables), summary["seconds"],
             out_root)
    return summary


def _read_sessions(root: Path) -> pd.DataFrame:
    """``truth/sessions.tsv`` of the cohort, as strings, in a fixed order."""
    path = root / "truth" / "sessions.tsv"
    if not path.exists():
        raise RawDownloadError(f"{path}: missing; expected a synthetic cohort root written by synthesize_cohort")
    table = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
    needed = {"subject", "session", "source_id", "acq_date", "kind", "image"}
    if missing := needed - set(table.columns):
        raise RawDownloadError(f"{path}: expected columns {sorted(needed)}, missing {sorted(missing)}")
    return table.sort_values(["subject", "session"], kind="stable").reset_index(drop=True)


def _select_subjects(sessions: pd.DataFrame, subjects: list[str] | None, root: Path) -> set[str]:
    """The subject labels whose images are written (all when ``subjects`` is None)."""
    if subjects is None:
        return set(sessions["subject"])
    by_source = dict(zip(sessions["source_id"], sessions["subject"]))
    known = set(sessions["subject"])
    chosen, unknown = set(), []
    for name in subjects:
        label = name if name in known else by_source.get(name)
        if label is None:
            unknown.append(name)
        else:
            chosen.add(label)
    if unknown:
        raise RawDownloadError(f"{root / 'truth' / 'sessions.tsv'}: no MRI session for subjects {unknown}")
    return chosen


# --- shared helpers -------------------------------------------------------------------------------

def _scan_datetimes(root: Path, sessions: pd.DataFrame) -> list[datetime]:
    """Acquisition date and time of every session: the BIDS ``scans.tsv`` ``acq_time`` when the
    cohort has one (ADNI, AIBL), else the acquisition date at a time of day fixed by the session."""
    times = []
    for row in sessions.itertuples():
        label = f"sub-{row.subject}_ses-{row.session}"
        scans = root / "bids" / f"sub-{row.subject}" / f"ses-{row.session}" / f"{label}_scans.tsv"
        if scans.exists():
            table = pd.read_csv(scans, sep="\t", dtype=str)
            if "acq_time" not in table.columns or table.empty:
                raise RawDownloadError(f"{scans}: expected an acq_time column with one row")
            times.append(datetime.fromisoformat(table["acq_time"].iloc[0]))
        else:
            minutes = stable_hash(f"{row.subject}/{row.session}") % 600
            times.append(datetime.fromisoformat(row.acq_date) + timedelta(hours=8, minutes=minutes))
    return times


def _numbering(sessions: pd.DataFrame, acquired: list[datetime], fmt: str) -> dict[tuple[str, str], dict]:
    """Image, series and study ids of every session, numbered over the whole cohort in acquisition
    order (the T1 image id is even, the second series' id follows it)."""
    order = sorted(range(len(sessions)), key=lambda i: (acquired[i], sessions["subject"].iloc[i],
                                                        sessions["session"].iloc[i]))
    bases = ID_BASES[fmt]
    ids = {}
    for rank, i in enumerate(order):
        key = (sessions["subject"].iloc[i], sessions["session"].iloc[i])
        ids[key] = {"image": bases["image"] + 2 * rank, "series": bases["series"] + 2 * rank,
                    "study": bases["study"] + rank}
    return ids


def _vendor(site: object) -> str:
    """The scanner vendor of a site (fixed by the site number)."""
    return VENDORS[stable_hash(f"site/{site}") % len(VENDORS)]


def loni_folder_name(description: str) -> str:
    """A series description as LONI names its folder: characters other than letters, digits,
    '-' and '.' become '_' (``MPRAGE ADNI confirmed`` -> ``MPRAGE_ADNI_confirmed``)."""
    return re.sub(r"[^A-Za-z0-9.\-]", "_", description)


def loni_date_folder(acquired: datetime) -> str:
    """LONI's acquisition folder name, ``YYYY-MM-DD_HH_MM_SS.0``."""
    return acquired.strftime("%Y-%m-%d_%H_%M_%S") + ".0"


def _archive_stamp(acquired: datetime, key: str) -> str:
    """The ``br_raw`` time stamp of LONI file names (when the image was archived: some days after
    the scan), ``YYYYMMDDHHMMSSmmm``, fixed by ``key``."""
    h = stable_hash(f"archive/{key}")
    archived = acquired.replace(hour=0, minute=0, second=0) + timedelta(days=1 + h % 20, seconds=h % 86400)
    return archived.strftime("%Y%m%d%H%M%S") + f"{h % 1000:03d}"


def _sagittal(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """The same volume with its voxel axes reordered to a sagittal acquisition."""
    transform = ornt_transform(io_orientation(image.affine), axcodes2ornt(SAGITTAL_AXCODES))
    return image.as_reoriented(transform)


def _other_series_image(image: nib.Nifti1Image) -> nib.Nifti1Image:
    """A small axial second series (a stand-in FLAIR) on a coarser grid of the same head: every
    ``OTHER_SERIES_STEP``-th voxel, intensities inverted inside the head."""
    step = OTHER_SERIES_STEP
    data = np.asanyarray(image.dataobj)[::step, ::step, ::step].astype(np.int32)
    flair = np.where(data > 0, int(data.max()) - data // 2, 0).astype(np.int16)
    affine = image.affine.copy()
    affine[:3, :3] = affine[:3, :3] * step
    return nib.Nifti1Image(flair, affine)


def _write_series(image: nib.Nifti1Image, final_dir: Path, file_stem: str | None, **dicom: object) -> list[Path]:
    """Write one DICOM series (``workflow.dicom.write_dicom_series``) into ``final_dir``.

    Args:
        image: the volume; its third voxel axis is the slice axis.
        final_dir: the series folder (created).
        file_stem: None keeps the writer's file names; else the LONI file name with a ``{slice}``
            field (Clinica's ADNI converter finds a series by the ``_I<image id>`` ending).
        dicom: keyword arguments of ``write_dicom_series``.
    Returns:
        The files written, in slice order.
    """
    final_dir.mkdir(parents=True, exist_ok=True)
    if file_stem is None:
        return write_dicom_series(image, final_dir, **dicom)
    with tempfile.TemporaryDirectory(dir=final_dir.parent) as scratch:
        written = write_dicom_series(image, Path(scratch), **dicom)
        renamed = []
        for k, path in enumerate(written, start=1):
            target = final_dir / file_stem.format(slice=k)
            shutil.move(str(path), target)
            renamed.append(target)
    return renamed


def _truth_row(plan: SessionPlan, series: str, description: str, image_id: int | str, series_id: int | str,
               path: Path, out_root: Path) -> dict:
    """One row of ``truth/raw_images.tsv`` (``series`` is ``T1`` or ``other``)."""
    return {"subject": plan.subject, "session": plan.session, "source_id": plan.source_id, "kind": plan.kind,
            "acq_time": plan.acquired.isoformat(), "series": series, "series_description": description,
            "visit": plan.visit, "image_id": image_id, "series_id": series_id, "study_id": plan.study_id,
            "field_strength": plan.field_strength, "manufacturer": plan.manufacturer,
            "path": str(path.relative_to(out_root))}


def _write_csv(table: pd.DataFrame, path: Path) -> str:
    """Write ``table`` as a comma-separated file with LF line ends; returns the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, lineterminator="\n")
    return str(path)


def _read_csv(path: Path) -> pd.DataFrame:
    """A native CSV as strings, empty cells kept empty (so copies keep their values)."""
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def _one_file(folder: Path, pattern: str, exclude: str | None = None) -> Path:
    """The single file of ``folder`` matching ``pattern`` (optionally not containing ``exclude``)."""
    matches = sorted(p for p in folder.glob(pattern) if exclude is None or exclude not in p.name)
    if len(matches) != 1:
        found = [p.name for p in matches]
        raise RawDownloadError(f"{folder}: expected exactly one file matching {pattern}, found {found}")
    return matches[0]


# --- ADNI -----------------------------------------------------------------------------------------

def _adni_phase(day: date) -> str:
    """The ADNI protocol phase running on ``day``."""
    return next(name for end, name in ADNI_PHASES if day < end)


def adni_visit_name(viscode: str, colprot: str, origprot: str, first_month_in_phase: int) -> str:
    """The LONI visit name of a protocol MRI (MPRAGEMETA ``Visit``).

    Args:
        viscode: ADNIMERGE VISCODE (``bl``, ``m06``...).
        colprot: protocol phase of the visit (ADNIMERGE COLPROT).
        origprot: phase the participant was enrolled in (ORIGPROT).
        first_month_in_phase: month (since baseline) of the participant's first visit in ``colprot``;
            a participant continuing into ADNI2 / ADNI3 has an "Initial Visit-Cont Pt" there.
    Returns:
        The visit name: screening names per enrolment phase, ``ADNI1/GO Month <m>`` in ADNI1 and
        ADNIGO, ``ADNI2 Year <n> Visit`` / ``ADNI3 Year <n> Visit`` later (synthetic 6-month
        offsets that ADNI2 / ADNI3 never scheduled get ``... Month <m> Visit``).
    """
    month = 0 if viscode == "bl" else int(viscode[1:])
    if viscode == "bl":
        return {"ADNI1": "ADNI Screening", "ADNIGO": "ADNIGO Screening MRI", "ADNI2": "ADNI2 Screening MRI-New Pt",
                "ADNI3": "ADNI Screening"}[origprot]
    if colprot in ("ADNI1", "ADNIGO"):
        if month == 3:
            return "ADNIGO Month 3 MRI"
        return f"ADNI{'1/' if month < 54 else ''}GO Month {month}"
    if origprot == colprot:
        if colprot == "ADNI2" and month in (3, 6):
            return {3: "ADNI2 Month 3 MRI-New Pt", 6: "ADNI2 Month 6-New Pt"}[month]
        since = month
    else:
        if month == first_month_in_phase:
            return f"{colprot} Initial Visit-Cont Pt"
        since = month - first_month_in_phase
    return f"{colprot} Year {since // 12} Visit" if since % 12 == 0 else f"{colprot} Month {since} Visit"


def _adni_plans(root: Path, sessions: pd.DataFrame, merge: pd.DataFrame) -> list[SessionPlan]:
    """Ids, visit names, protocol, scanner and series description of every ADNI MRI session."""
    acquired = _scan_datetimes(root, sessions)
    ids = _numbering(sessions, acquired, "adni")
    visits = {ptid: group for ptid, group in merge.groupby("PTID")}
    plans = []
    for i, row in enumerate(sessions.itertuples()):
        if row.source_id not in visits:
            raise RawDownloadError(f"ADNIMERGE of {root}: no rows for PTID {row.source_id} (MRI session {row.session})")
        subject_visits = visits[row.source_id]
        month = int(row.session[1:]) if re.fullmatch(r"M\d+", row.session) else -1
        viscode = "bl" if month == 0 else f"m{month:02d}"
        matches = subject_visits[subject_visits["VISCODE"] == viscode]
        site = subject_visits["SITE"].iloc[0]
        if row.kind == "scheduled" and len(matches):
            visit = matches.iloc[0]
            # A protocol scan is acquired with its visit's protocol, even a few days across a phase change.
            protocol = visit["COLPROT"]
            in_phase = subject_visits[subject_visits["COLPROT"] == protocol]["VISCODE"]
            first = min(0 if v == "bl" else int(v[1:]) for v in in_phase)
            visit_name = adni_visit_name(viscode, protocol, visit["ORIGPROT"], first)
        else:
            protocol = _adni_phase(acquired[i].date())
            visit_name = ADNI_OFF_SCHEDULE_VISIT
        field = 1.5 if protocol == "ADNI1" else 3.0
        vendor = _vendor(site)
        key = ids[(row.subject, row.session)]
        plans.append(SessionPlan(row.subject, row.session, row.source_id, row.kind, acquired[i], root / row.image,
                                 ADNI_T1_SERIES[vendor][protocol], visit_name, key["image"], key["series"],
                                 key["study"], field, vendor))
    return plans


def _write_adni(root: Path, out_root: Path, sessions: pd.DataFrame, wanted: set[str]) -> tuple[list[str], list[dict]]:
    """ADNI: image folders and XML for the ``wanted`` subjects, study-data tables for everyone.

    Returns:
        (clinical files written, relative to ``out_root``; rows of ``truth/raw_images.tsv``).
    """
    merge_path = _one_file(root / "clinical", "ADNIMERGE*.csv", exclude="_DICT")
    merge = _read_csv(merge_path)
    for column in ("RID", "PTID", "VISCODE", "EXAMDATE", "COLPROT", "ORIGPROT", "SITE", "DX", "DX_bl"):
        if column not in merge.columns:
            raise RawDownloadError(f"{merge_path}: expected column {column}")
    plans = _adni_plans(root, sessions, merge)
    images = out_root / "images"
    rows = []
    for plan in plans:
        if plan.subject not in wanted:
            continue
        rows.extend(_write_adni_session(plan, images, out_root, merge))
    clinical = out_root / "clinical"
    suffix = f"_{ADNI_DOWNLOAD_DATE}.csv"
    full_merge = adnimerge_with_clinica_columns(merge, plans)
    tables = [
        _write_csv(full_merge, clinical / f"ADNIMERGE{suffix}"),
        _write_csv(adnimerge_dictionary(list(full_merge.columns)), clinical / f"ADNIMERGE_DICT{suffix}"),
        _write_csv(mprage_meta(plans), clinical / f"MPRAGEMETA{suffix}"),
        _write_csv(mri_list(plans), clinical / f"MRILIST{suffix}"),
        _write_csv(mri_quality(plans, merge), clinical / f"MRIQUALITY{suffix}"),
        _write_csv(mayo_image_qc(plans, merge), clinical / f"MAYOADIRL_MRI_IMAGEQC_05_07_15{suffix}"),
        _write_csv(dxsum(merge), clinical / f"DXSUM_PDXCONV_ADNIALL{suffix}"),
        _write_csv(apoeres(merge), clinical / f"APOERES{suffix}"),
    ]
    return [str(Path(t).relative_to(out_root)) for t in tables], rows


def _write_loni_session(plan: SessionPlan, images: Path, out_root: Path, study: str, t1_description: str,
                        other_description: str, model_name: str, merge: pd.DataFrame | None = None) -> list[dict]:
    """The T1 and decoy FLAIR series of one LONI (ADNI / AIBL) session, in LONI's folder and file
    names, and for ADNI (``merge`` given) the LONI XML file of each image."""
    volume = nib.load(plan.image)
    rows = []
    series = [("T1", t1_description, _sagittal(volume), plan.image_id, plan.series_id, T1_SERIES_NUMBER,
               MPRAGE, plan.acquired),
              ("other", other_description, _other_series_image(volume), plan.image_id + 1, plan.series_id + 1,
               OTHER_SERIES_NUMBER, FLAIR, plan.acquired + timedelta(minutes=OTHER_SERIES_DELAY_MIN))]
    for kind, description, image, image_id, series_id, number, sequence, acquired in series:
        folder = loni_folder_name(description)
        target = images / plan.source_id / folder / loni_date_folder(plan.acquired) / f"I{image_id}"
        stem = (f"{study}_{plan.source_id}_MR_{folder}_br_raw_{_archive_stamp(acquired, f'{image_id}')}"
                f"_{{slice}}_S{series_id}_I{image_id}.dcm")
        _write_series(image, target, stem, patient_id=plan.source_id, series_description=description,
                      acquisition=acquired, uid_seed=f"{study.lower()}/{plan.subject}/{plan.session}",
                      series_number=number, field_strength=plan.field_strength, manufacturer=plan.manufacturer,
                      model_name=model_name, sequence=sequence)
        if merge is not None:
            xml = images / f"{study}_{plan.source_id}_{folder}_S{series_id}_I{image_id}.xml"
            thickness = float(np.linalg.norm(image.affine[:3, 2]))
            xml.write_bytes(loni_xml(plan, description, image_id, series_id, sequence, thickness, merge))
        rows.append(_truth_row(plan, kind, description, image_id, series_id, target, out_root))
    return rows


def _write_adni_session(plan: SessionPlan, images: Path, out_root: Path, merge: pd.DataFrame) -> list[dict]:
    """The T1 and FLAIR series of one ADNI session, and their LONI XML files."""
    return _write_loni_session(plan, images, out_root, "ADNI", plan.t1_description, ADNI_OTHER_SERIES,
                               MODELS[(plan.manufacturer, plan.field_strength)], merge)


def loni_xml(plan: SessionPlan, description: str, image_id: int, series_id: int, sequence: MRSequence,
             thickness: float, merge: pd.DataFrame) -> bytes:
    """LONI's XML metadata of one original ADNI image (what ``--xml_path`` reads).

    The element order is the one Clinica 0.12's parser checks: ``idaxs/project`` (4 children,
    ``projectIdentifier`` first), ``subject`` (5 children, ``study`` last), ``study`` (7 children:
    5 leaves, ``series`` with ``seriesIdentifier, modality, dateAcquired``, then
    ``imagingProtocol`` with ``imageUID, description, protocolTerm``). ``dateAcquired`` holds the
    date only, so Clinica's ``acq_time`` from it is ``YYYY-MM-DDT00:00:00``.

    Args:
        plan: the session (participant, visit name, study id, scanner, acquisition time).
        description: the series description.
        image_id, series_id: LONI ids of the image and its series.
        sequence: the acquisition parameters written into the protocol terms.
        thickness: slice thickness in mm.
        merge: ADNIMERGE (baseline age, sex and diagnosis of the participant).
    Returns:
        The UTF-8 XML document.
    """
    rows = merge[merge["PTID"] == plan.source_id]
    baseline = rows[rows["VISCODE"] == "bl"]
    first = baseline.iloc[0] if len(baseline) else rows.iloc[0]
    age = float(first["AGE"]) + (plan.acquired.date() - date.fromisoformat(first["EXAMDATE"])).days / 365.25
    root = ElementTree.Element("idaxs", {"xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
                                         "xsi:noNamespaceSchemaLocation": "http://ida.loni.usc.edu/xml/idaxs.xsd"})
    project = ElementTree.SubElement(root, "project")
    _leaf(project, "projectIdentifier", "ADNI")
    _leaf(project, "projectDescription", "Alzheimer's Disease Neuroimaging Initiative")
    _leaf(project, "siteKey", plan.source_id.split("_")[0])
    subject = ElementTree.SubElement(project, "subject")
    _leaf(subject, "subjectIdentifier", plan.source_id)
    _leaf(subject, "researchGroup", first["DX_bl"] or "Patient")
    _leaf(subject, "subjectSex", "M" if first.get("PTGENDER", "") == "Male" else "F")
    visit = ElementTree.SubElement(subject, "visit")
    _leaf(visit, "visitIdentifier", plan.visit)
    study = ElementTree.SubElement(subject, "study")
    _leaf(study, "studyIdentifier", str(plan.study_id))
    _leaf(study, "subjectAge", f"{age:.4f}")
    _leaf(study, "ageQualifier", "Y")
    _leaf(study, "subjectWeight", f"{55 + stable_hash(plan.source_id) % 45:.1f}")
    _leaf(study, "postMortem", "F")
    series = ElementTree.SubElement(study, "series")
    _leaf(series, "seriesIdentifier", str(series_id))
    _leaf(series, "modality", "MRI")
    _leaf(series, "dateAcquired", plan.acquired.date().isoformat())
    protocol = ElementTree.SubElement(study, "imagingProtocol")
    _leaf(protocol, "imageUID", str(image_id))
    _leaf(protocol, "description", description)
    terms = ElementTree.SubElement(protocol, "protocolTerm")
    for term, value in (("Acquisition Type", sequence.mr_acquisition_type),
                        ("Weighting", "T1" if sequence is MPRAGE else "T2"),
                        ("Pulse Sequence", sequence.scanning_sequence.replace("\\", "/")),
                        ("Slice Thickness", f"{thickness:g}"), ("Field Strength", f"{plan.field_strength:.1f}"),
                        ("Manufacturer", plan.manufacturer),
                        ("Mfg Model", MODELS[(plan.manufacturer, plan.field_strength)]),
                        ("TE", f"{sequence.echo_time_ms:g}"), ("TR", f"{sequence.repetition_time_ms:g}"),
                        ("TI", f"{sequence.inversion_time_ms:g}" if sequence.inversion_time_ms else ""),
                        ("Flip Angle", f"{sequence.flip_angle_deg:g}")):
        element = ElementTree.SubElement(terms, "protocol", {"term": term})
        element.text = value or None
    ElementTree.indent(root, space="\t")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ElementTree.tostring(root, encoding="utf-8") + b"\n"


def _leaf(parent: ElementTree.Element, tag: str, text: str) -> None:
    ElementTree.SubElement(parent, tag).text = text


def _insert_after(columns: list[str], anchor: str, new: list[str]) -> list[str]:
    at = columns.index(anchor) + 1 if anchor in columns else len(columns)
    return columns[:at] + [c for c in new if c not in columns] + columns[at:]


# Baseline copies of visit columns, as ADNIMERGE carries them (Clinica's participants.tsv reads
# MMSE_bl, ADAS11_bl, ADAS13_bl, ADASQ4_bl, RAVLT_immediate_bl, MOCA_bl, TRABSCOR_bl,
# mPACCdigit_bl and mPACCtrailsB_bl, and its sessions.tsv needs EXAMDATE_bl to age each visit).
ADNI_BL_COLUMNS = ["CDRSB", "ADAS11", "ADAS13", "ADASQ4", "MMSE", "RAVLT_immediate", "RAVLT_learning",
                   "RAVLT_forgetting", "TRABSCOR", "FAQ", "MOCA", "mPACCdigit", "mPACCtrailsB", "FDG", "PIB",
                   "AV45", "ABETA", "TAU", "PTAU", "FLDSTRENG", "IMAGEUID"]


def adnimerge_with_clinica_columns(merge: pd.DataFrame, plans: list[SessionPlan]) -> pd.DataFrame:
    """The synthetic ADNIMERGE with the real file's further columns that Clinica reads.

    Values of the synthetic columns are unchanged. Added: ``PIB, AV45, FBB`` (empty: no amyloid
    PET), ``ADASQ4, TRABSCOR, FAQ, MOCA, mPACCdigit, mPACCtrailsB`` (empty: not simulated),
    ``FLDSTRENG`` and ``IMAGEUID`` (the T1 of a visit's protocol scan), ``EXAMDATE_bl`` and the
    ``<column>_bl`` baseline copies, ``update_stamp``.
    """
    table = merge.copy()
    for column in ("PIB", "AV45", "FBB", "ADASQ4", "TRABSCOR", "FAQ", "MOCA", "mPACCdigit", "mPACCtrailsB"):
        if column not in table.columns:
            table[column] = ""
    protocol_scans = {(p.source_id, _viscode_of(p.session)): p for p in plans
                      if p.kind == "scheduled" and p.visit != ADNI_OFF_SCHEDULE_VISIT}
    scans = [protocol_scans.get((ptid, viscode)) for ptid, viscode in zip(table["PTID"], table["VISCODE"])]
    table["FLDSTRENG"] = ["" if p is None else ("1.5 Tesla MRI" if p.field_strength == 1.5 else "3 Tesla MRI")
                          for p in scans]
    table["IMAGEUID"] = ["" if p is None else str(p.image_id) for p in scans]
    baseline = table[table["VISCODE"] == "bl"].drop_duplicates("PTID").set_index("PTID")
    table["EXAMDATE_bl"] = table["PTID"].map(baseline["EXAMDATE"]).fillna("")
    for column in ADNI_BL_COLUMNS:
        table[f"{column}_bl"] = table["PTID"].map(baseline[column]).fillna("")
    table["update_stamp"] = ADNI_UPDATE_STAMP
    columns = [c for c in merge.columns if c != "update_stamp"]
    columns = _insert_after(columns, "FDG", ["PIB", "AV45", "FBB"])
    columns = _insert_after(columns, "ADAS13", ["ADASQ4"])
    columns = _insert_after(columns, "RAVLT_forgetting", ["TRABSCOR", "FAQ", "MOCA", "FLDSTRENG", "IMAGEUID"])
    columns = _insert_after(columns, "DX", ["mPACCdigit", "mPACCtrailsB", "EXAMDATE_bl",
                                            *[f"{c}_bl" for c in ADNI_BL_COLUMNS]])
    return table[columns + ["update_stamp"]]


def _viscode_of(session: str) -> str:
    month = int(session[1:])
    return "bl" if month == 0 else f"m{month:02d}"


# Descriptions of the ADNIMERGE columns for the dictionary file.
ADNIMERGE_TEXT = {
    "RID": "Participant roster ID", "PTID": "Original study ID (site_S_roster)", "VISCODE": "Visit code",
    "SITE": "Site", "COLPROT": "Study protocol of data collection", "ORIGPROT": "Original study protocol",
    "EXAMDATE": "Date", "DX_bl": "Baseline Dx", "AGE": "Age at baseline", "PTGENDER": "Sex",
    "PTEDUCAT": "Education", "PTETHCAT": "Ethnicity", "PTRACCAT": "Race", "PTMARRY": "Marital",
    "APOE4": "ApoE4 alleles", "FDG": "Average FDG-PET of angular, temporal, and posterior cingulate",
    "PIB": "Average PIB SUVR of frontal cortex, anterior cingulate, precuneus cortex, and parietal cortex",
    "AV45": "Reference region - florbetapir mean of whole cerebellum", "FBB": "Florbetaben SUVR",
    "ABETA": "CSF ABETA", "TAU": "CSF TAU", "PTAU": "CSF PTAU", "CDRSB": "CDR-SB", "ADAS11": "ADAS 11",
    "ADAS13": "ADAS 13", "ADASQ4": "ADAS Delayed Word Recall", "MMSE": "MMSE",
    "RAVLT_immediate": "RAVLT Immediate (sum of 5 trials)", "RAVLT_learning": "RAVLT Learning (trial 5 - trial 1)",
    "RAVLT_forgetting": "RAVLT Forgetting (trial 5 - delayed)", "TRABSCOR": "Trails B", "FAQ": "FAQ",
    "MOCA": "MOCA", "FLDSTRENG": "MRI Field Strength", "IMAGEUID": "LONI Image ID", "DX": "Diagnosis",
    "mPACCdigit": "ADNI modified Preclinical Alzheimer's Cognitive Composite (PACC) with Digit Symbol Substitution",
    "mPACCtrailsB": "ADNI modified Preclinical Alzheimer's Cognitive Composite (PACC) with Trails B",
    "EXAMDATE_bl": "Baseline date", "Years_bl": "Years since baseline", "Month_bl": "Months since baseline",
    "Month": "Months since baseline (visit code)", "M": "Month since baseline (visit code)",
    "update_stamp": "Date and time of the last update of the row",
}


def adnimerge_dictionary(columns: list[str]) -> pd.DataFrame:
    """``ADNIMERGE_DICT``: one row per ADNIMERGE column (field name, table, description, codes)."""
    codes = {"PTGENDER": "Male; Female", "DX": "CN; MCI; Dementia", "DX_bl": "CN; EMCI; LMCI; AD; SMC",
             "APOE4": "0; 1; 2", "FLDSTRENG": "1.5 Tesla MRI; 3 Tesla MRI"}
    rows = []
    for column in columns:
        base = column[:-3] if column.endswith("_bl") and column not in ADNIMERGE_TEXT else column
        text = ADNIMERGE_TEXT.get(column) or (f"{ADNIMERGE_TEXT.get(base, base)} at baseline")
        rows.append({"FLDNAME": column, "TBLNAME": "ADNIMERGE", "CRFNAME": "Key ADNI tables merged into one table",
                     "TEXT": text, "CODE": codes.get(base, "")})
    return pd.DataFrame(rows, columns=["FLDNAME", "TBLNAME", "CRFNAME", "TEXT", "CODE"])


def mprage_meta(plans: list[SessionPlan]) -> pd.DataFrame:
    """``MPRAGEMETA``: one row per original T1 image (Clinica's T1 selection table)."""
    rows = [{"SubjectID": p.source_id, "Visit": p.visit, "ScanDate": p.acquired.date().isoformat(),
             "Orig/Proc": "Original", "Sequence": p.t1_description, "SeriesID": p.series_id, "StudyID": p.study_id,
             "ImageUID": p.image_id, "MagStrength": f"{p.field_strength:.1f}"} for p in plans]
    return pd.DataFrame(rows).sort_values(["SubjectID", "ScanDate"], kind="stable")


def mri_list(plans: list[SessionPlan]) -> pd.DataFrame:
    """``MRILIST``: every MRI series of the archive (T1 and FLAIR), one row each."""
    rows = []
    for p in plans:
        for description, image_id, series_id in ((p.t1_description, p.image_id, p.series_id),
                                                 (ADNI_OTHER_SERIES, p.image_id + 1, p.series_id + 1)):
            rows.append({"SUBJECT": p.source_id, "VISIT": p.visit, "STUDYID": p.study_id, "SERIESID": series_id,
                         "IMAGEUID": image_id, "SCANDATE": p.acquired.date().isoformat(), "SEQUENCE": description,
                         "MAGSTRENGTH": f"{p.field_strength:.1f}"})
    return pd.DataFrame(rows).sort_values(["SUBJECT", "SCANDATE", "IMAGEUID"], kind="stable")


def _rid_site(merge: pd.DataFrame) -> dict[str, tuple[str, str]]:
    return {ptid: (rid, site) for ptid, rid, site in zip(merge["PTID"], merge["RID"], merge["SITE"])}


def mri_quality(plans: list[SessionPlan], merge: pd.DataFrame) -> pd.DataFrame:
    """``MRIQUALITY``: the ADNI1 / GO / 2 quality review of each T1 series (every one passed)."""
    ids = _rid_site(merge)
    rows = [{"RID": ids[p.source_id][0], "SITEID": ids[p.source_id][1],
             "VISCODE": _viscode_of(p.session) if p.visit != ADNI_OFF_SCHEDULE_VISIT else "uns1",
             "LONIUID": f"S{p.series_id}", "PASS": 1, "COMMENTS": ""}
            for p in plans if _adni_phase(p.acquired.date()) != "ADNI3"]
    return pd.DataFrame(rows, columns=["RID", "SITEID", "VISCODE", "LONIUID", "PASS", "COMMENTS"])


def mayo_image_qc(plans: list[SessionPlan], merge: pd.DataFrame) -> pd.DataFrame:
    """``MAYOADIRL_MRI_IMAGEQC_05_07_15``: Mayo's image QC of the 3 T T1 series acquired before its
    release; each series is its session's selected one, with a passing quality grade (1-3)."""
    ids = _rid_site(merge)
    rows = [{"RID": ids[p.source_id][0], "loni_study": p.study_id, "loni_series": f"S{p.series_id}",
             "loni_image": f"I{p.image_id}", "series_type": "T1", "series_description": p.t1_description,
             "series_date": p.acquired.date().isoformat(), "series_quality": 1 + stable_hash(f"qc/{p.image_id}") % 3,
             "series_selected": 1, "study_overallpass": 1}
            for p in plans if p.field_strength == 3.0 and p.acquired.date() < MAYO_QC_RELEASE]
    return pd.DataFrame(rows, columns=["RID", "loni_study", "loni_series", "loni_image", "series_type",
                                       "series_description", "series_date", "series_quality", "series_selected",
                                       "study_overallpass"])


def dxsum(merge: pd.DataFrame) -> pd.DataFrame:
    """``DXSUM_PDXCONV_ADNIALL``: the diagnostic summary form of every ADNIMERGE visit.

    The diagnosis is coded per phase (ADNI1 ``DXCURREN``, ADNIGO / ADNI2 ``DXCHANGE``, ADNI3
    ``DIAGNOSIS``: 1 CN, 2 MCI, 3 dementia; empty for a visit without diagnosis). ADNI3 enrolees'
    first diagnosis is the screening one (``VISCODE2 = sc``), which Clinica looks up for their
    ``diagnosis_sc``. The first participant's first form was entered twice (a corrected re-entry
    with a later ``USERDATE2``), as happens in the real table: Clinica 0.12 reads this table with
    ``.loc[(PTID, "sc"), "DIAGNOSIS"].values`` and crashes ('numpy.float64' object has no attribute
    'values') when no (PTID, VISCODE2) pair repeats anywhere in it.

    Args:
        merge: the ADNIMERGE table (strings).
    Returns:
        One row per form: ``ID, Phase, RID, PTID, SITEID, VISCODE, VISCODE2, USERDATE, USERDATE2,
        EXAMDATE, DXCHANGE, DXCURREN, DIAGNOSIS``.
    """
    codes = {"CN": 1, "MCI": 2, "Dementia": 3}
    change = {(1, 1): 1, (2, 2): 2, (3, 3): 3, (1, 2): 4, (2, 3): 5, (1, 3): 6, (2, 1): 7, (3, 2): 8, (3, 1): 9}
    rows, previous = [], {}
    for visit in merge.itertuples():
        code = codes.get(visit.DX)
        phase = visit.COLPROT
        viscode2 = "sc" if visit.VISCODE == "bl" and visit.ORIGPROT == "ADNI3" else visit.VISCODE
        before = previous.get(visit.PTID)
        entered = (date.fromisoformat(visit.EXAMDATE) + timedelta(days=2 + stable_hash(f"dx/{visit.PTID}/{viscode2}")
                                                                   % 12)).isoformat()
        row = {"ID": 0, "Phase": phase, "RID": visit.RID, "PTID": visit.PTID, "SITEID": visit.SITE,
               "VISCODE": viscode2, "VISCODE2": viscode2, "USERDATE": entered, "USERDATE2": "",
               "EXAMDATE": visit.EXAMDATE, "DXCHANGE": "", "DXCURREN": "", "DIAGNOSIS": ""}
        if code is not None:
            if phase == "ADNI1":
                row["DXCURREN"] = code
            elif phase == "ADNI3":
                row["DIAGNOSIS"] = code
            else:
                row["DXCHANGE"] = change[(before or code, code)]
            previous[visit.PTID] = code
        rows.append(row)
    if rows:
        reentry = dict(rows[0])
        reentry["USERDATE2"] = (date.fromisoformat(reentry["USERDATE"]) + timedelta(days=30)).isoformat()
        rows.insert(1, reentry)
    table = pd.DataFrame(rows)
    table["ID"] = 2 * np.arange(1, len(table) + 1)
    return table


def apoeres(merge: pd.DataFrame) -> pd.DataFrame:
    """``APOERES``: the APOE genotype of every participant with a known APOE4 count (two alleles
    consistent with ADNIMERGE ``APOE4``)."""
    rows = []
    for ptid, group in merge.groupby("PTID", sort=False):
        first = group.iloc[0]
        if first["APOE4"] == "":
            continue
        count = int(float(first["APOE4"]))
        other = 2 if stable_hash(f"apoe/{ptid}") % 10 == 0 else 3
        alleles = {0: (other, 3), 1: (3 if other == 3 else 2, 4), 2: (4, 4)}[count]
        rows.append({"Phase": first["ORIGPROT"], "RID": first["RID"], "SITEID": first["SITE"], "VISCODE": "sc",
                     "APGEN1": alleles[0], "APGEN2": alleles[1], "APVOLUME": "", "APRECEIVE": 1})
    return pd.DataFrame(rows).sort_values("RID", key=lambda r: r.astype(int), kind="stable")


# --- AIBL -----------------------------------------------------------------------------------------

# The columns of the MRI forms (1.5 T and 3 T): conducted, reason if not, structural MPRAGE done.
AIBL_MRI_COLUMNS = ["RID", "SITEID", "VISCODE", "EXAMDATE", "MMCONDCT", "MMREASON", "MMSMPRAGE"]
# aibl-to-bids reads columns 0-35 of each PET table, so a header-only table needs at least 36 [ours:
# named after the PET scan information form; only RID, SITEID, VISCODE and EXAMDATE are read].
AIBL_PET_COLUMNS = ["RID", "SITEID", "VISCODE", "EXAMDATE", "PETCONDCT", "PETREASON", "PETDOSE", "PETDOSEU",
                    "PETINJTIME", "PETSCANSTART", "PETSCANEND", "PETFRAMES", "PETSCANNER", "PETSCANMODEL",
                    "PETATTEN", "PETRECON", "PETMATRIX", "PETSLICE", "PETFOV", "PETZOOM", "PETFILTER",
                    "PETITER", "PETSUBSETS", "PETWEIGHT", "PETHEIGHT", "PETGLUCOSE", "PETMOTION", "PETCOMM",
                    "PETTRANSFR", "PETTRNDATE", "PETQC", "PETQCCOMM", "PETSUVR", "PETREF", "PETCENTILOID",
                    "PETSTATUS"]


def _write_aibl(root: Path, out_root: Path, sessions: pd.DataFrame, wanted: set[str]) -> tuple[list[str], list[dict]]:
    """AIBL: image folders for the ``wanted`` subjects, the ``aibl_*`` tables for everyone.

    Returns:
        (clinical files written, relative to ``out_root``; rows of ``truth/raw_images.tsv``).
    """
    clinical_in = root / "clinical"
    demog = _read_csv(_one_file(clinical_in, "aibl_ptdemog_*.csv"))
    site_of = dict(zip(demog["RID"], demog["SITEID"]))
    acquired = _scan_datetimes(root, sessions)
    ids = _numbering(sessions, acquired, "aibl")
    plans = []
    for i, row in enumerate(sessions.itertuples()):
        key = ids[(row.subject, row.session)]
        field = 3.0 if acquired[i].date() >= AIBL_3T_FROM else 1.5
        month = int(row.session[1:])
        plans.append(SessionPlan(row.subject, row.session, row.source_id, row.kind, acquired[i], root / row.image,
                                 AIBL_T1_SERIES, "bl" if month == 0 else f"m{month:02d}", key["image"],
                                 key["series"], key["study"], field, "SIEMENS"))
    rows = []
    for plan in plans:
        if plan.subject in wanted:
            rows.extend(_write_aibl_session(plan, out_root / "images", out_root))
    clinical = out_root / "clinical"
    tables = []
    for name in ("ptdemog", "pdxconv", "mmse", "cdr", "neurobat", "apoeres"):
        source = _one_file(clinical_in, f"aibl_{name}_*.csv")
        target = clinical / source.name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, target)
        tables.append(str(target))
    meta = aibl_mri_meta(plans, site_of)
    tables.append(_write_csv(meta[meta["_field"] == 1.5].drop(columns="_field"),
                             clinical / f"aibl_mrimeta_{AIBL_RELEASE}.csv"))
    tables.append(_write_csv(meta[meta["_field"] == 3.0].drop(columns="_field"),
                             clinical / f"aibl_mri3meta_{AIBL_RELEASE}.csv"))
    for tracer in ("av45", "pib", "flute"):
        empty = pd.DataFrame(columns=AIBL_PET_COLUMNS)
        tables.append(_write_csv(empty, clinical / f"aibl_{tracer}meta_{AIBL_RELEASE}.csv"))
    return [str(Path(t).relative_to(out_root)) for t in tables], rows


def aibl_mri_meta(plans: list[SessionPlan], site_of: dict[str, str]) -> pd.DataFrame:
    """The MRI form rows of every session (``_field`` says which table, 1.5 or 3 T). ``EXAMDATE``
    is the scan date as ``MM/DD/YYYY``: aibl-to-bids gives an image folder the ``VISCODE`` of the
    row whose date equals the folder's date, and writes it as ``acq_time``."""
    rows = [{"RID": int(p.source_id), "SITEID": int(site_of.get(p.source_id, "1")), "VISCODE": p.visit,
             "EXAMDATE": p.acquired.strftime("%m/%d/%Y"), "MMCONDCT": 1, "MMREASON": -4, "MMSMPRAGE": 1,
             "_field": p.field_strength, "_day": p.acquired} for p in plans]
    table = pd.DataFrame(rows, columns=AIBL_MRI_COLUMNS + ["_field", "_day"])
    return table.sort_values(["RID", "_day"], kind="stable").drop(columns="_day")


def _write_aibl_session(plan: SessionPlan, images: Path, out_root: Path) -> list[dict]:
    """The T1 and FLAIR series of one AIBL session (aibl-to-bids converts a whole I<id> folder)."""
    return _write_loni_session(plan, images, out_root, "AIBL", AIBL_T1_SERIES, AIBL_OTHER_SERIES,
                               "Avanto" if plan.field_strength == 1.5 else "TrioTim")


# --- NACC -----------------------------------------------------------------------------------------

def _write_nacc(root: Path, out_root: Path, sessions: pd.DataFrame, wanted: set[str]) -> tuple[list[str], list[dict]]:
    """NACC: the two investigator tables, and one zip per MRI session of the ``wanted`` subjects.

    Returns:
        (clinical files written, relative to ``out_root``; rows of ``truth/raw_images.tsv``).
    """
    clinical_in = root / "clinical"
    uds = _one_file(clinical_in, "investigator_nacc*.csv")
    mri_table = _one_file(clinical_in, "investigator_mri_nacc*.csv")
    clinical = out_root / "clinical"
    clinical.mkdir(parents=True, exist_ok=True)
    # The current NACC release names the UDS file after the FTLD / LBD modules it includes.
    ftldlbd = clinical / f"investigator_ftldlbd_nacc{NACC_RELEASE}.csv"
    shutil.copyfile(uds, ftldlbd)
    shutil.copyfile(mri_table, clinical / mri_table.name)
    mri = _read_csv(mri_table)
    for column in ("NACCID", "NACCMRFI"):
        if column not in mri.columns:
            raise RawDownloadError(f"{mri_table}: expected column {column}")
    acquired = _scan_datetimes(root, sessions)
    zip_dir = out_root / "mri"
    zip_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for i, row in enumerate(sessions.itertuples()):
        if row.subject not in wanted:
            continue
        zip_name = Path(row.image).name.replace(".nii.gz", ".zip")
        if not ((mri["NACCID"] == row.subject) & (mri["NACCMRFI"] == zip_name)).any():
            raise RawDownloadError(f"{mri_table}: no row for {row.subject} with NACCMRFI {zip_name} ({row.image})")
        vendor = _vendor(f"nacc/{row.subject}")
        plan = SessionPlan(row.subject, row.session, row.source_id, row.kind, acquired[i], root / row.image,
                           NACC_T1_SERIES[vendor], "", 0, 0, 0, 3.0, vendor)
        rows.extend(_write_nacc_zip(plan, zip_dir / zip_name, out_root))
    return [str(p.relative_to(out_root)) for p in (ftldlbd, clinical / mri_table.name)], rows


def _write_nacc_zip(plan: SessionPlan, zip_path: Path, out_root: Path) -> list[dict]:
    """One session's zip: ``<series folder>/<file>.dcm`` for the T1 and the FLAIR series, entries
    sorted, dated at the acquisition, so the bytes depend on the input only."""
    volume = nib.load(plan.image)
    series = [("T1", plan.t1_description, _sagittal(volume), T1_SERIES_NUMBER, MPRAGE, plan.acquired),
              ("other", NACC_OTHER_SERIES, _other_series_image(volume), OTHER_SERIES_NUMBER, FLAIR,
               plan.acquired + timedelta(minutes=OTHER_SERIES_DELAY_MIN))]
    rows, entries = [], []
    with tempfile.TemporaryDirectory(dir=zip_path.parent) as scratch:
        for kind, description, image, number, sequence, acquired in series:
            folder = f"{number:02d}_{loni_folder_name(description)}"
            files = _write_series(image, Path(scratch) / folder, None, patient_id=plan.subject,
                                  series_description=description, acquisition=acquired,
                                  uid_seed=f"nacc/{plan.subject}/{plan.session}", series_number=number,
                                  field_strength=plan.field_strength, manufacturer=plan.manufacturer,
                                  model_name=MODELS[(plan.manufacturer, plan.field_strength)], sequence=sequence)
            entries.extend((f"{folder}/{f.name}", f) for f in files)
            # NACC has no image ids: the row names the zip and the series folder inside it.
            rows.append(_truth_row(plan, kind, description, "", "", zip_path, out_root)
                        | {"study_id": "", "path": f"{zip_path.relative_to(out_root)}:{folder}"})
        stamp = plan.acquired.timetuple()[:6]
        with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=ZIP_COMPRESSLEVEL) as zf:
            for name, path in sorted(entries):
                info = zipfile.ZipInfo(name, date_time=stamp)
                info.compress_type = zipfile.ZIP_DEFLATED
                info.create_system = 3
                info.external_attr = 0o644 << 16
                zf.writestr(info, path.read_bytes())
    return rows


# --- command line ---------------------------------------------------------------------------------

def _format_of(root: Path) -> str:
    """The format recorded in the cohort's ``.complete`` summary."""
    marker = root / ".complete"
    if not marker.exists():
        raise RawDownloadError(f"{marker}: missing; pass --format or give a cohort root written by synthesize_cohort")
    return json.loads(marker.read_text())["format"]


def main(argv: list[str] | None = None) -> int:
    """``python -m workflow.raw_download <synthetic_root> <out_root> [--format adni] [--subjects ...]``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("synthetic_root", type=Path, help="a cohort root written by synthesize_cohort")
    parser.add_argument("out_root", type=Path, help="the download folder to create (must be absent or empty)")
    parser.add_argument("--format", choices=FORMATS, help="native format (default: the cohort's .complete)")
    parser.add_argument("--subjects", nargs="+", help="write images of these subjects only")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    fmt = args.format or _format_of(args.synthetic_root)
    summary = write_raw_download(args.synthetic_root, fmt, args.out_root, subjects=args.subjects)
    print(json.dumps(summary, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
