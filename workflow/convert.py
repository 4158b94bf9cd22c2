"""Convert stage: a raw download, as the data centre ships it, -> the folders intake reads.

A cohort's ``source`` (config) says what its ``root`` holds:

* ``raw``: the data centre's download. ADNI / AIBL: ``images/`` (LONI's image folders, one per
  participant) and ``clinical/`` (the study-data CSVs); Clinica's ``adni-to-bids`` /
  ``aibl-to-bids`` write a BIDS tree to ``results/convert/<cohort>/bids``. NACC: ``mri/`` (one
  DICOM zip per MRI session, named by ``NACCMRFI``) and ``clinical/`` (UDS and MRI tables);
  dcm2niix writes ``results/convert/<cohort>/images/<NACCMRFI stem>.nii.gz``.
* ``real``: what the convert stage would have written, held by the user: ``clinical/`` plus
  ``bids/`` (ADNI, AIBL) or ``images/`` (NACC).
* ``synthetic``: the ``real`` layout, generated under ``results/synthetic/<cohort>``.
* ``synthetic_raw``: that synthetic cohort rewritten as the data centre's raw download
  (:mod:`workflow.raw_download`, ``results/synthetic_raw/<cohort>``), then converted like ``raw``:
  the raw path end to end without access-controlled data.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from pathlib import Path

import pandas as pd

from workflow import paths
from workflow.settings import ConvertSettings

log = logging.getLogger(__name__)

# Sub-folders of a cohort root, per source and format.
CLINICAL_SUBDIR = "clinical"
RAW_IMAGE_SUBDIR = {"adni": "images", "aibl": "images", "nacc": "mri"}
CONVERTED_IMAGE_SUBDIR = {"adni": "bids", "aibl": "bids", "nacc": "images"}


FOLDER_CONTENTS = {
    "clinical": "the cohort's clinical CSVs as downloaded",
    "images": {"raw": "LONI's image download: one folder per participant", "real": "the T1 NIfTI files"},
    "mri": "NACC's MRI session zips (DICOM), named by NACCMRFI",
    "bids": "a BIDS tree of T1w images, e.g. written by Clinica's converter",
}


def expected_folders(source: str, fmt: str) -> dict[str, str]:
    """The folders a ``raw`` or ``real`` cohort root must hold -> what each holds (for errors)."""
    subdirs = RAW_IMAGE_SUBDIR if source == "raw" else CONVERTED_IMAGE_SUBDIR
    image_folder = subdirs[fmt]
    holds = FOLDER_CONTENTS[image_folder]
    if isinstance(holds, dict):
        holds = holds[source]
    return {CLINICAL_SUBDIR: FOLDER_CONTENTS[CLINICAL_SUBDIR], image_folder: holds}


def converted_images(cohort: str, fmt: str) -> str:
    """Where the convert stage writes a raw cohort's images (a BIDS tree or a NIfTI folder)."""
    return (paths.CONVERTED_NIFTI if fmt == "nacc" else paths.CONVERTED_BIDS).format(cohort=cohort)


def is_raw(settings: dict) -> bool:
    """Whether a cohort's root holds a raw download that the convert stage must convert."""
    return settings["source"] in ("raw", "synthetic_raw")


def is_generated(settings: dict) -> bool:
    """Whether a cohort's root is written by a rule of this workflow (synthetic cohorts)."""
    return settings["source"] in ("synthetic", "synthetic_raw")


def raw_cohort_pattern(config: dict, *formats: str) -> str:
    """Wildcard constraint of a convert rule: the raw cohorts of these formats (``(?!)``, which
    matches nothing, when there are none, so the rule never applies)."""
    names = [name for name, cohort in config["cohorts"].items() if is_raw(cohort) and cohort["format"] in formats]
    return "|".join(names) or "(?!)"


def cohort_root(config: dict, cohort: str) -> Path:
    """The folder holding a cohort's files: ``cohorts.<cohort>.root``, or for generated cohorts the
    synthetic natives (``paths.SYNTHETIC_ROOT``) or their raw download (``paths.SYNTHETIC_RAW_ROOT``)."""
    settings = config["cohorts"][cohort]
    if settings["source"] == "synthetic":
        return Path(paths.SYNTHETIC_ROOT.format(cohort=cohort))
    if settings["source"] == "synthetic_raw":
        return Path(paths.SYNTHETIC_RAW_ROOT.format(cohort=cohort))
    return Path(settings["root"])


def raw_folders(config: dict, cohort: str) -> dict[str, str]:
    """The folders of a raw download that its conversion reads: ``images`` (LONI's image folders,
    or NACC's zips), ``clinical`` and, when configured, ``xml`` (ADNI's XML metadata)."""
    settings = config["cohorts"][cohort]
    root = cohort_root(config, cohort)
    folders = {"images": str(root / RAW_IMAGE_SUBDIR[settings["format"]]), "clinical": str(root / CLINICAL_SUBDIR)}
    if settings.get("xml_path"):
        folders["xml"] = settings["xml_path"]
    return folders


def raw_inputs(config: dict, cohort: str) -> dict[str, str]:
    """What a conversion job waits for: the download's folders, or for a generated download the
    generator's output directory (Snakemake tracks that directory, not folders inside it)."""
    if is_generated(config["cohorts"][cohort]):
        return {"root": str(cohort_root(config, cohort))}
    return raw_folders(config, cohort)


def intake_folders(config: dict, cohort: str) -> dict[str, str]:
    """The folders intake reads for ``cohort``: ``clinical`` (native CSVs) and ``images`` (a BIDS
    tree for ADNI / AIBL, a NIfTI folder for NACC; for a raw cohort, the convert stage's output)."""
    settings = config["cohorts"][cohort]
    root = cohort_root(config, cohort)
    images = (converted_images(cohort, settings["format"]) if is_raw(settings)
              else str(root / CONVERTED_IMAGE_SUBDIR[settings["format"]]))
    return {"clinical": str(root / CLINICAL_SUBDIR), "images": images}


def intake_inputs(config: dict, cohort: str) -> dict[str, str]:
    """What rule ``intake_cohort`` waits for: the folders of :func:`intake_folders` (a generated
    cohort's root directory in place of folders inside it) and, for a raw cohort, the conversion's
    exclusions, which intake carries into its own."""
    settings = config["cohorts"][cohort]
    inputs = intake_folders(config, cohort)
    if is_generated(settings):
        inputs["root"] = str(cohort_root(config, cohort))
        del inputs["clinical"]
        if not is_raw(settings):
            del inputs["images"]
    if is_raw(settings):
        inputs["convert_exclusions"] = paths.CONVERT_EXCLUSIONS.format(cohort=cohort)
    return inputs


# --- ADNI / AIBL: Clinica -------------------------------------------------------------------------

# Where Clinica lists the image folders it converted: ADNI (``conversion_info/v<N>/``) and AIBL.
CLINICA_T1_LISTS = {"adni": ("conversion_info/v*/t1_paths.tsv", "Path"),
                    "aibl": ("conversion_info/t1_paths.tsv", "Path_to_T1")}


def loni_image_folders(images_dir: Path) -> list[Path]:
    """Every image folder of a LONI download: ``<participant>/<series>/<date>/I<image id>``."""
    return sorted(path for path in images_dir.glob("*/*/*/I*") if path.is_dir())


def unconverted_t1_series(fmt: str, cohort: str, images_dir: Path, bids_dir: Path, t1_series: str) -> pd.DataFrame:
    """Exclusions for every T1-looking image folder of the download that Clinica did not convert.

    Clinica keeps one T1 per visit and leaves out, with a log line only, series it does not accept,
    second scans of one visit and scans it cannot match to a visit. Here each one is named with
    its folder. "T1-looking" means the series folder matches ``t1_series`` (case-insensitive), so
    the other sequences of a download (FLAIR, DTI...) are not listed.
    """
    pattern, column = CLINICA_T1_LISTS[fmt]
    converted: set[str] = set()
    for listing in bids_dir.glob(pattern):
        table = pd.read_csv(listing, sep="\t", dtype=str, keep_default_na=False)
        converted |= {Path(path).name for path in table.get(column, [])}
    wanted = re.compile(t1_series, re.IGNORECASE)
    rows = []
    for folder in loni_image_folders(images_dir):
        participant, series, acquired = folder.parts[-4], folder.parts[-3], folder.parts[-2]
        if folder.name in converted or not wanted.search(series.replace("_", " ")):
            continue
        rows.append({"stage": "convert", "cohort": cohort, "subject": participant_label(fmt, participant),
                     "session": acquired, "file": str(folder), "row": "", "column": "",
                     "reason": f"not converted: Clinica did not convert T1 series '{series}' of {acquired[:10]} "
                               "(a second scan of one visit, a scan it matched to no visit, or a series it does "
                               "not accept; see the convert log)"})
    return pd.DataFrame(rows, columns=paths.EXCLUSION_COLUMNS)


def participant_label(fmt: str, folder: str) -> str:
    """The BIDS participant label Clinica gives a LONI participant folder: ADNI ``027_S_0074`` ->
    ``ADNI027S0074``, AIBL ``123`` -> ``AIBL123``."""
    return ("ADNI" if fmt == "adni" else "AIBL") + re.sub(r"[^A-Za-z0-9]", "", folder)


def convert_clinica_cohort(fmt: str, cohort: str, images_dir: str, clinical_dir: str, xml_dir: str | None,
                           settings: ConvertSettings, threads: int, bids_out: str, exclusions_out: str,
                           log_path: str) -> None:
    """Rule ``convert_clinica``: run Clinica's converter for one ADNI / AIBL download.

    Args:
        fmt: ``adni`` or ``aibl``.
        cohort: the cohort name (for the exclusions).
        images_dir, clinical_dir: the download's image folders and clinical CSVs (:func:`raw_inputs`).
        xml_dir: LONI's XML metadata folder (ADNI, optional): Clinica then fills ``acq_time``.
        settings: the configured Clinica executable or None (:func:`workflow.clinica.clinica_command`),
            and what a T1 series is called (regular expression), for the exclusions.
        threads: Clinica's ``-np``.
        bids_out: the BIDS tree to write (``paths.CONVERTED_BIDS``).
        exclusions_out: T1 series of the download that Clinica did not convert
            (:func:`unconverted_t1_series`).
        log_path: the rule's log (Clinica's own output goes there too).
    """
    from workflow.clinica import clinica_command, run_clinica_converter

    command = clinica_command(settings.converter)
    run_clinica_converter(fmt, Path(images_dir), Path(clinical_dir), Path(bids_out), clinica=command,
                          xml_dir=Path(xml_dir) if xml_dir else None, log_path=Path(log_path), threads=threads)
    exclusions = unconverted_t1_series(fmt, cohort, Path(images_dir), Path(bids_out), settings.t1_series)
    exclusions.to_csv(exclusions_out, sep="\t", index=False)
    log.info("%s: Clinica converted %d T1w images; %d T1 series of the download not converted (listed in %s)",
             cohort, len(list(Path(bids_out).glob("sub-*/ses-*/anat/*_T1w.nii*"))), len(exclusions), exclusions_out)


# --- NACC: dcm2niix ---------------------------------------------------------------------------------

def dcm2niix_command(configured: str | None) -> str:
    """The dcm2niix executable: the configured one, else the one PyPI's ``dcm2niix`` package put
    beside this Python, else ``dcm2niix`` on PATH; an error names what was tried."""
    candidates = [configured] if configured else [str(Path(sys.executable).parent / "dcm2niix"), "dcm2niix"]
    for candidate in candidates:
        found = shutil.which(candidate)
        if found and os.access(found, os.X_OK):
            return found
    raise FileNotFoundError(f"dcm2niix not found (tried {candidates}); install it (pip install dcm2niix) "
                            "or set convert.dcm2niix in the config")


def convert_nacc_cohort(cohort: str, zip_dir: str, settings: ConvertSettings, threads: int,
                        images_out: str, exclusions_out: str) -> None:
    """Rule ``convert_nacc``: every MRI session zip of a NACC download -> ``<zip stem>.nii.gz``
    (:func:`workflow.nacc_zips.convert_nacc`); zips without a usable T1 are exclusions."""
    from workflow.nacc_zips import convert_nacc

    convert_nacc(zip_dir, cohort, images_out, exclusions_out, dcm2niix=dcm2niix_command(settings.converter),
                 t1_pattern=settings.t1_series, threads=threads)
