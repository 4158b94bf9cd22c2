"""NACC MRI session zips (DICOM) -> one T1 NIfTI per zip, with dcm2niix.

NACC ships each MRI session as one zip of DICOM files, named by the MRI table's ``NACCMRFI``
column (``mri1234ni.zip``). A zip may hold several series (the T1 plus FLAIR, localizers, ...),
possibly in nested folders. For every zip this module

1. unpacks it into a temporary folder,
2. runs dcm2niix on it (every series -> NIfTI + BIDS JSON sidecar),
3. picks the T1 series: SeriesDescription or ProtocolName matches the configured pattern, it is
   neither a localizer / scout / calibration series (by name) nor a DERIVED image (ImageType), and
   its NIfTI is one 3-D volume; among several, the 3-D acquisition (MRAcquisitionType) with the
   most voxels, then the lowest series number, wins (logged),
4. writes ``<out_dir>/<zip stem>.nii.gz`` and dcm2niix's sidecar as ``<zip stem>.json``.

A zip that cannot be read, holds no DICOM image, has no usable T1 series, or fails to convert is an
exclusion (``workflow.paths.EXCLUSION_COLUMNS``, stage ``convert``), not a stopped run. Setup errors
(no dcm2niix, no zip folder, an output that already exists) stop the run.
"""

from __future__ import annotations

import gzip
import json
import logging
import os
import re
import shutil
import subprocess
import tempfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import pandas as pd

from workflow import paths

log = logging.getLogger(__name__)

STAGE = "convert"

# Series never taken as the T1 whatever their name says (matched case-insensitively against
# SeriesDescription and ProtocolName): positioning and calibration scans.
NON_IMAGING_SERIES = (
    r"locali[sz]er|\bloc\b|scout|survey|3[-_ ]?plane|tri[-_ ]?pilot|calibration|\bcal\b|asset[-_ ]?cal"
    r"|setter|aahead"
)

# Wall-clock limit of one dcm2niix run (a session zip converts in seconds; a hung run must not
# stall the whole cohort).
DCM2NIIX_TIMEOUT_S = 1800.0

# Columns of the table convert_nacc_zips returns (one row per zip).
RESULT_COLUMNS = ["zip", "image", "series_description", "series_number", "shape", "series_found", "reason"]


@dataclass
class Series:
    """One NIfTI that dcm2niix wrote, with the sidecar fields the T1 choice reads.

    Attributes: nifti / sidecar (files in the temporary output), description (SeriesDescription,
    else ProtocolName), protocol, number (SeriesNumber, -1 if absent), image_type (ImageType
    values, upper case), acquisition_type (MRAcquisitionType or ""), shape (NIfTI shape with
    trailing singleton axes dropped).
    """

    nifti: Path
    sidecar: Path | None
    description: str
    protocol: str
    number: int
    image_type: list[str]
    acquisition_type: str
    shape: tuple[int, ...]

    @property
    def label(self) -> str:
        """How the series is named in logs and exclusion reasons."""
        return self.description or self.protocol or self.nifti.name


@dataclass
class ZipOutcome:
    """What became of one zip: the written image, or the exclusion reason."""

    zip_path: Path
    image: Path | None = None
    chosen: Series | None = None
    series_found: list[str] = field(default_factory=list)
    reason: str = ""


class ZipExcluded(Exception):
    """A zip that yields no T1 image; the message is the exclusion reason (``category: detail``)."""


def zip_stem(zip_path: Path) -> str:
    """The zip's name without ``.zip`` (any case): the NIfTI's name stem, = NACCMRFI without .zip."""
    return zip_path.name[: -len(".zip")] if zip_path.name.lower().endswith(".zip") else zip_path.stem


def find_zips(zip_dir: Path) -> list[Path]:
    """Every ``*.zip`` (any case) under ``zip_dir``, nested folders included, in sorted order.

    Raises:
        FileNotFoundError: ``zip_dir`` is not a folder.
    """
    if not zip_dir.is_dir():
        raise FileNotFoundError(f"{zip_dir}: expected the folder of NACC MRI session zips")
    return sorted(p for p in zip_dir.rglob("*") if p.is_file() and p.name.lower().endswith(".zip"))


def unpack(zip_path: Path, into: Path) -> int:
    """Extract ``zip_path`` into ``into``, checking every member's CRC first.

    Args:
        zip_path: the session zip.
        into: an empty folder.
    Returns:
        The number of files extracted.
    Raises:
        ZipExcluded: ``unreadable: ...`` for a truncated / corrupt / encrypted zip or a bad member,
            ``no image: ...`` for a zip without files.
    """
    try:
        with zipfile.ZipFile(zip_path) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise ZipExcluded(f"unreadable: member {bad!r} fails its CRC check")
            members = [info for info in archive.infolist() if not info.is_dir()]
            if not members:
                raise ZipExcluded("no image: the zip holds no files")
            # zipfile.extractall drops '..' and absolute path parts, so members stay inside `into`.
            archive.extractall(into)
    except ZipExcluded:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, RuntimeError, NotImplementedError,
            ValueError) as error:
        raise ZipExcluded(f"unreadable: {type(error).__name__}: {error}") from error
    return len(members)


def run_dcm2niix(dcm2niix: str, dicom_dir: Path, out_dir: Path, timeout_s: float) -> subprocess.CompletedProcess:
    """Convert every series under ``dicom_dir`` to uncompressed NIfTI + BIDS sidecar in ``out_dir``.

    Uncompressed output (``-z n``) because this module gzips the one chosen file itself (no time
    stamp or name in the gzip header, so reruns give identical bytes). ``-d 9`` searches nested
    folders to dcm2niix's maximum depth; ``-i n`` keeps derived and localizer series so that an
    exclusion can list what the zip held.

    Args:
        dcm2niix: the executable.
        dicom_dir: the unpacked zip.
        out_dir: an empty folder for dcm2niix's output.
        timeout_s: wall-clock limit.
    Returns:
        The finished process (stdout and stderr merged into stdout).
    Raises:
        ZipExcluded: ``conversion failed: ...`` when dcm2niix runs past ``timeout_s``.
    """
    command = [dcm2niix, "-z", "n", "-b", "y", "-ba", "y", "-d", "9", "-i", "n", "-f", "%s_%d",
               "-o", str(out_dir), str(dicom_dir)]
    try:
        return subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              errors="replace", timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as error:
        raise ZipExcluded(f"conversion failed: dcm2niix ran longer than {timeout_s:.0f} s") from error


def dcm2niix_complaints(output: str, dicom_dir: Path, limit: int = 3) -> str:
    """dcm2niix's error and warning lines (at most ``limit``), with the temporary folder's path
    replaced by ``<zip>`` so that an exclusion reason does not name a folder that is gone.

    Args:
        output: dcm2niix's merged stdout / stderr.
        dicom_dir: the folder the zip was unpacked into.
        limit: the most lines kept.
    Returns:
        The lines joined by `` | `` (its last lines when none is an error or warning).
    """
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    complaints = [line for line in lines if line.lower().startswith(("error", "warning"))] or lines[-limit:]
    return " | ".join(line.replace(str(dicom_dir), "<zip>") for line in complaints[:limit])


def read_series(nifti: Path) -> Series:
    """The :class:`Series` of one dcm2niix output (its sidecar is the same name with ``.json``).

    Raises:
        ZipExcluded: ``conversion failed: ...`` when dcm2niix's NIfTI cannot be read.
    """
    sidecar = nifti.with_name(nifti.name[: -len(".nii")] + ".json")
    meta: dict = {}
    if sidecar.is_file():
        try:
            meta = json.loads(sidecar.read_text(errors="replace"))
        except json.JSONDecodeError:
            # A sidecar dcm2niix could not write cleanly: the series is still described by its
            # NIfTI (shape), just without names, so it can never match the T1 pattern.
            meta = {}
    try:
        shape = tuple(int(n) for n in nib.load(nifti).shape)
    except Exception as error:  # nibabel raises several types for a bad header
        raise ZipExcluded(f"conversion failed: dcm2niix wrote an unreadable NIfTI {nifti.name}: {error}") from error
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    image_type = meta.get("ImageType", [])
    if isinstance(image_type, str):
        image_type = image_type.split("\\")
    number = meta.get("SeriesNumber", -1)
    return Series(
        nifti=nifti,
        sidecar=sidecar if sidecar.is_file() else None,
        description=str(meta.get("SeriesDescription", "")).strip(),
        protocol=str(meta.get("ProtocolName", "")).strip(),
        number=int(number) if isinstance(number, (int, float)) else -1,
        image_type=[str(v).upper() for v in image_type],
        acquisition_type=str(meta.get("MRAcquisitionType", "")).upper(),
        shape=shape,
    )


def choose_t1(series: list[Series], t1_pattern: str) -> Series:
    """The session's T1 among dcm2niix's outputs.

    Args:
        series: every series of the zip.
        t1_pattern: regular expression (case-insensitive) that SeriesDescription or ProtocolName
            must match.
    Returns:
        The qualifying 3-D series that sorts first by (not a 3-D acquisition, fewer voxels,
        series number, file name), i.e. a 3-D acquisition with the most voxels.
    Raises:
        ZipExcluded: ``no image: ...`` (no name matches, or only localizers / derived images do)
            or ``not 3-D: ...`` (the T1 series found are not single 3-D volumes).
    """
    wanted = re.compile(t1_pattern, re.IGNORECASE)
    unwanted = re.compile(NON_IMAGING_SERIES, re.IGNORECASE)
    named = [s for s in series if wanted.search(s.description) or wanted.search(s.protocol)]
    found = [s.label for s in series]
    if not named:
        raise ZipExcluded(f"no image: no T1 series among {found} (pattern {t1_pattern!r})")
    usable = [s for s in named if not unwanted.search(s.description) and not unwanted.search(s.protocol)
              and "DERIVED" not in s.image_type]
    if not usable:
        raise ZipExcluded(f"no image: the series matching {t1_pattern!r} are localizers or derived images "
                          f"({[s.label for s in named]}; series in zip: {found})")
    volumes = [s for s in usable if len(s.shape) == 3 and min(s.shape) > 1]
    if not volumes:
        raise ZipExcluded("not 3-D: T1 series " + ", ".join(f"{s.label!r} has shape {s.shape}" for s in usable))

    def rank(s: Series) -> tuple:
        voxels = s.shape[0] * s.shape[1] * s.shape[2]
        return (s.acquisition_type != "3D", -voxels, s.number, s.nifti.name)

    return sorted(volumes, key=rank)[0]


def write_gzip(source: Path, target: Path) -> None:
    """Gzip ``source`` to ``target`` with no name or time in the header (reruns: same bytes);
    written under a temporary name and renamed, so a stopped run leaves no half file."""
    partial = target.with_name(target.name + ".part")
    with open(source, "rb") as raw, open(partial, "wb") as out:
        with gzip.GzipFile(filename="", mode="wb", fileobj=out, compresslevel=6, mtime=0) as packed:
            shutil.copyfileobj(raw, packed, length=1 << 20)
    os.replace(partial, target)


def convert_zip(zip_path: Path, out_dir: Path, *, dcm2niix: str, t1_pattern: str,
                timeout_s: float = DCM2NIIX_TIMEOUT_S, tmp_root: Path | None = None) -> ZipOutcome:
    """Convert one session zip: its T1 -> ``out_dir/<zip stem>.nii.gz`` (+ ``.json`` sidecar).

    Args:
        zip_path: the session zip.
        out_dir: the images folder (exists).
        dcm2niix: the dcm2niix executable.
        t1_pattern: see :func:`choose_t1`.
        timeout_s: dcm2niix's wall-clock limit.
        tmp_root: where temporary folders go (None: the system's).
    Returns:
        The outcome; ``reason`` is set (and ``image`` None) when the zip is an exclusion.
    Raises:
        FileExistsError: the output NIfTI already exists (never overwritten).
    """
    stem = zip_stem(zip_path)
    target = out_dir / f"{stem}.nii.gz"
    if target.exists():
        raise FileExistsError(f"{target}: expected no existing image for {zip_path} (outputs are never overwritten)")
    outcome = ZipOutcome(zip_path=zip_path)
    with tempfile.TemporaryDirectory(prefix=f"nacc-{stem}-", dir=tmp_root) as tmp:
        dicom_dir, nifti_dir = Path(tmp) / "dicom", Path(tmp) / "nifti"
        dicom_dir.mkdir()
        nifti_dir.mkdir()
        try:
            n_files = unpack(zip_path, dicom_dir)
            process = run_dcm2niix(dcm2niix, dicom_dir, nifti_dir, timeout_s)
            log.debug("%s: dcm2niix output:\n%s", zip_path, process.stdout)
            niftis = sorted(nifti_dir.rglob("*.nii"))
            if not niftis:
                tail = dcm2niix_complaints(process.stdout, dicom_dir)
                if process.returncode in (0, 2):
                    # dcm2niix exits 2 when it finds no DICOM image at all.
                    raise ZipExcluded(f"no image: dcm2niix found no DICOM image among the zip's {n_files} files ({tail})")
                raise ZipExcluded(f"conversion failed: dcm2niix exited {process.returncode} without output ({tail})")
            if process.returncode != 0:
                log.warning("%s: dcm2niix exited %d but wrote %d files; choosing among them", zip_path,
                            process.returncode, len(niftis))
            series = [read_series(nifti) for nifti in niftis]
            outcome.series_found = [s.label for s in series]
            chosen = choose_t1(series, t1_pattern)
        except ZipExcluded as excluded:
            outcome.reason = str(excluded)
            log.warning("%s excluded: %s", zip_path, outcome.reason)
            return outcome
        others = [s.label for s in series if s is not chosen]
        log.info("%s: T1 = series %d %r, shape %s (other series: %s)", zip_path, chosen.number, chosen.label,
                 chosen.shape, others)
        write_gzip(chosen.nifti, target)
        if chosen.sidecar is not None:
            shutil.copyfile(chosen.sidecar, out_dir / f"{stem}.json")
        outcome.image, outcome.chosen = target, chosen
    return outcome


def convert_nacc_zips(zip_dir: Path, out_dir: Path, exclusions_out: Path, *, cohort: str, dcm2niix: str,
                      t1_pattern: str, threads: int, timeout_s: float = DCM2NIIX_TIMEOUT_S,
                      tmp_root: Path | None = None) -> pd.DataFrame:
    """Convert every ``*.zip`` under ``zip_dir``; write the images and the exclusions table.

    Args:
        zip_dir: the NACC download's zip folder (searched recursively).
        out_dir: images folder to write ``<zip stem>.nii.gz`` (+ ``.json``) into (created).
        exclusions_out: TSV of the zips without an image (``workflow.paths.EXCLUSION_COLUMNS``).
        cohort: the cohort name for the exclusions.
        dcm2niix: the dcm2niix executable (name on PATH or path).
        t1_pattern: see :func:`choose_t1`.
        threads: zips converted at once.
        timeout_s: one dcm2niix run's wall-clock limit.
        tmp_root: where temporary folders go (None: the system's).
    Returns:
        One row per zip (``RESULT_COLUMNS``): ``image`` is the written file or "" (then ``reason``
        says why), ``series_found`` the series dcm2niix made of the zip.
    Raises:
        FileNotFoundError: no ``zip_dir`` folder or no ``dcm2niix`` executable.
        FileExistsError: ``exclusions_out`` or an output image already exists.
    """
    zip_dir, out_dir, exclusions_out = Path(zip_dir), Path(out_dir), Path(exclusions_out)
    executable = shutil.which(dcm2niix)
    if executable is None:
        raise FileNotFoundError(f"{dcm2niix}: expected the dcm2niix executable (pip install dcm2niix)")
    zips = find_zips(zip_dir)
    if exclusions_out.exists():
        raise FileExistsError(f"{exclusions_out}: expected no existing exclusions table (never overwritten)")
    out_dir.mkdir(parents=True, exist_ok=True)

    # Two zips of one name in different sub-folders would write the same image: the first (sorted
    # path) is converted, the others are exclusions.
    first_of_stem: dict[str, Path] = {}
    to_convert: list[Path] = []
    duplicates: list[ZipOutcome] = []
    for path in zips:
        stem = zip_stem(path)
        if stem in first_of_stem:
            duplicates.append(ZipOutcome(zip_path=path, reason=f"duplicate image: same name as {first_of_stem[stem]}"))
        else:
            first_of_stem[stem] = path
            to_convert.append(path)
    existing = [out_dir / f"{zip_stem(p)}.nii.gz" for p in to_convert if (out_dir / f"{zip_stem(p)}.nii.gz").exists()]
    if existing:
        raise FileExistsError(f"{existing[0]}: expected no existing image in {out_dir} (never overwritten)")

    def convert(path: Path) -> ZipOutcome:
        return convert_zip(path, out_dir, dcm2niix=executable, t1_pattern=t1_pattern, timeout_s=timeout_s,
                           tmp_root=tmp_root)

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        outcomes = list(pool.map(convert, to_convert)) + duplicates
    outcomes.sort(key=lambda o: str(o.zip_path))

    exclusions = pd.DataFrame(
        [{"stage": STAGE, "cohort": cohort, "subject": "", "session": "", "file": str(o.zip_path), "row": "",
          "column": "", "reason": o.reason} for o in outcomes if o.image is None],
        columns=paths.EXCLUSION_COLUMNS,
    )
    exclusions_out.parent.mkdir(parents=True, exist_ok=True)
    exclusions.to_csv(exclusions_out, sep="\t", index=False)
    return pd.DataFrame(
        [{"zip": str(o.zip_path), "image": str(o.image) if o.image else "",
          "series_description": o.chosen.label if o.chosen else "",
          "series_number": o.chosen.number if o.chosen else "",
          "shape": "x".join(map(str, o.chosen.shape)) if o.chosen else "",
          "series_found": "; ".join(o.series_found), "reason": o.reason} for o in outcomes],
        columns=RESULT_COLUMNS,
    )


def convert_nacc(zip_dir: str, cohort: str, images_out: str, exclusions_out: str, dcm2niix: str,
                 t1_pattern: str, threads: int) -> None:
    """Rule ``convert_nacc``: a NACC download's session zips -> ``images_out/<zip stem>.nii.gz``.

    Args:
        zip_dir: the download's zip folder.
        cohort: the cohort name.
        images_out: the images folder to write (``paths.CONVERTED_NIFTI``).
        exclusions_out: the exclusions TSV (``paths.CONVERT_EXCLUSIONS``).
        dcm2niix: the dcm2niix executable.
        t1_pattern: regular expression (case-insensitive) naming T1 series.
        threads: zips converted at once.
    """
    results = convert_nacc_zips(Path(zip_dir), Path(images_out), Path(exclusions_out), cohort=cohort,
                                dcm2niix=dcm2niix, t1_pattern=t1_pattern, threads=threads)
    converted = results["image"].ne("")
    log.info("%s: %d of %d zips converted to %s; %d excluded (%s)", cohort, int(converted.sum()), len(results),
             images_out, int((~converted).sum()), exclusions_out)
    if (~converted).any():
        categories = results.loc[~converted, "reason"].str.split(":", n=1).str[0].value_counts()
        log.info("%s: exclusions by category: %s", cohort, categories.to_dict())
