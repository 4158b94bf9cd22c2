"""Run Clinica's ``adni-to-bids`` / ``aibl-to-bids`` converters (T1 only) as a child process.

Clinica 0.12 lives in its own environment (``make setup`` builds ``.venv-convert``; the conda env
``envs/convert.yaml`` also provides it), so it is run through its command line, never imported.
Its converters call ``dcm2niix`` by name: the folder of the clinica executable (which holds the
dcm2niix of that environment) goes first on the child's PATH. Everything Clinica prints goes to
the log; a failure raises :class:`ClinicaError` with the command, the exit code and the last log
lines. What the converters read and write is described in ``docs/interfaces.md`` (convert stage).
"""

from __future__ import annotations

import collections
import logging
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parent.parent
# The environment `make setup` builds for the convert stage.
REPO_CLINICA = REPO / ".venv-convert" / "bin" / "clinica"
EXPECTED_VERSION = "0.12"
FORMATS = ("adni", "aibl")
# Log lines quoted in an error message.
TAIL_LINES = 40
# Colour codes that Clinica's colorlog handler writes even into a pipe.
ANSI_ESCAPE = re.compile(r"\x1b\[[0-9;]*m")

# The study-data tables each converter opens for T1 (ADNI: file name stem, optionally followed by
# LONI's download date `_<d>MonYYYY`; AIBL: glob pattern). ADNI's diagnosis table may be either name.
ADNI_TABLES = ("ADNIMERGE", "MPRAGEMETA", "MRIQUALITY", "MAYOADIRL_MRI_IMAGEQC_05_07_15", "APOERES",
               ("DXSUM_PDXCONV_ADNIALL", "DXSUM_PDXCONV"))
AIBL_TABLES = ("ptdemog", "apoeres", "pdxconv", "mmse", "cdr", "neurobat", "mrimeta", "mri3meta", "av45meta",
               "pibmeta", "flutemeta")


class ClinicaError(RuntimeError):
    """Clinica failed, or finished without writing a T1w image."""


def clinica_command(configured: str | None) -> str:
    """The clinica executable to run.

    Args:
        configured: ``convert.clinica`` from the config (a path or a command name), or None.
    Returns:
        The absolute path of, in order: ``configured`` when given and found, this repository's
        ``.venv-convert/bin/clinica``, ``clinica`` on PATH.
    Raises:
        FileNotFoundError: none of them exists; the message lists what was tried.
    """
    tried = []
    if configured:
        found = shutil.which(configured)
        if found:
            return str(Path(found).absolute())
        log.warning("configured clinica %s not found; trying %s, then clinica on PATH", configured, REPO_CLINICA)
        tried.append(str(configured))
    tried.append(str(REPO_CLINICA))
    if REPO_CLINICA.is_file() and os.access(REPO_CLINICA, os.X_OK):
        return str(REPO_CLINICA)
    tried.append("clinica on PATH")
    found = shutil.which("clinica")
    if found:
        return str(Path(found).absolute())
    raise FileNotFoundError(f"clinica executable not found (tried: {', '.join(tried)}); run `make setup` to build "
                            f".venv-convert, or set convert.clinica in the config to a Clinica {EXPECTED_VERSION} "
                            "executable")


def missing_clinical_tables(fmt: str, clinical_dir: Path) -> list[str]:
    """The study-data tables that ``fmt``'s converter opens but ``clinical_dir`` lacks (or holds
    more than once: Clinica's ADNI reader wants exactly one match per table)."""
    clinical_dir = Path(clinical_dir)
    files = [p.name for p in clinical_dir.rglob("*.csv") if not p.name.startswith(".")]
    problems = []
    if fmt == "adni":
        for entry in ADNI_TABLES:
            names = entry if isinstance(entry, tuple) else (entry,)
            counts = {name: sum(bool(re.fullmatch(rf"{name}(_\d{{1,2}}[A-Za-z]{{3}}\d{{4}})?\.csv", f)) for f in files)
                      for name in names}
            if not any(counts.values()):
                problems.append(" or ".join(f"{n}[_<d>MonYYYY].csv" for n in names))
            elif all(counts[n] != 1 for n in names):
                problems.append(f"{names[0]}*.csv appears {max(counts.values())} times (Clinica needs exactly one)")
    else:
        for table in AIBL_TABLES:
            if not any(re.fullmatch(rf"aibl_{table}_.*\.csv", f) for f in files):
                problems.append(f"aibl_{table}_*.csv")
    return problems


def check_xml_dir(xml_dir: Path) -> None:
    """Refuse an XML folder that Clinica 0.12's ``--xml_path`` would crash on, before converting.

    Its reader (``_create_mri_meta_df``) indexes the column ``image_proc_id``, which only the XML
    of a processed image (``<derivedProduct>``) provides: with original-image XML files alone it
    stops with ``KeyError: 'image_proc_id'`` after every image has been converted.

    Raises:
        FileNotFoundError: no folder, or no ``ADNI_*.xml`` in it.
        ValueError: no XML file describes a processed image.
    """
    if not xml_dir.is_dir():
        raise FileNotFoundError(f"{xml_dir}: expected a folder holding LONI's ADNI_<PTID>_*.xml metadata")
    files = sorted(xml_dir.glob("ADNI_*.xml"))
    if not files:
        raise FileNotFoundError(f"{xml_dir}: expected LONI's ADNI_<PTID>_*.xml metadata files, found none")
    if not any(b"<derivedProduct" in path.read_bytes() for path in files):
        raise ValueError(f"{xml_dir}: all {len(files)} ADNI_*.xml files describe original images; Clinica 0.12's "
                         "--xml_path fails on those (KeyError 'image_proc_id': it needs at least one processed-image "
                         "XML). Convert without xml_dir, or add the XML of the processed images to the folder")


def clinica_version(clinica: str) -> str:
    """``clinica --version`` (e.g. ``0.12.0``), or ``unknown`` if it cannot be read."""
    try:
        result = subprocess.run([clinica, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        log.warning("could not run %s --version: %s", clinica, error)
        return "unknown"
    match = re.search(r"(\d+\.\d+(\.\d+)?)", result.stdout + result.stderr)
    return match.group(1) if match else "unknown"


def converter_command(fmt: str, images_dir: Path, clinical_dir: Path, bids_out: Path, *, clinica: str,
                      xml_dir: Path | None = None, threads: int = 1) -> list[str]:
    """The command line of one conversion (``-v``: Clinica's debug lines say how each scan was
    matched to a visit). ADNI converts the T1 modality only (``-m T1``); ``aibl-to-bids`` has no
    modality option (it also looks for PET, and finds none without PET tables rows)."""
    command = [clinica, "-v", "convert", f"{fmt}-to-bids", str(images_dir), str(clinical_dir), str(bids_out)]
    if fmt == "adni":
        command += ["-m", "T1"]
        if xml_dir is not None:
            command += ["--xml_path", str(xml_dir)]
    command += ["-np", str(max(1, int(threads)))]
    return command


def run_clinica_converter(fmt: str, images_dir: Path, clinical_dir: Path, bids_out: Path, *, clinica: str,
                          xml_dir: Path | None = None, log_path: Path | None = None, threads: int = 1) -> None:
    """Convert a LONI ADNI / AIBL download into a BIDS tree with Clinica (T1 only).

    Args:
        fmt: ``adni`` or ``aibl``.
        images_dir: LONI's image folders (``<PTID>/...`` for ADNI, ``<RID>/...`` for AIBL).
        clinical_dir: the study-data CSVs (see :func:`missing_clinical_tables`).
        bids_out: the BIDS folder to write; must not exist or be empty.
        clinica: the clinica executable (:func:`clinica_command`).
        xml_dir: ADNI only: the folder of LONI's ``ADNI_<PTID>_*.xml`` metadata; Clinica then adds
            ``acq_time`` to each ``scans.tsv`` and a JSON sidecar per T1.
        log_path: file that receives Clinica's output (appended); None: this module's logger.
        threads: Clinica's ``-np``.
    Raises:
        ValueError: unknown ``fmt``, or ``xml_dir`` given for AIBL.
        FileNotFoundError: an input folder or a table the converter opens is missing.
        FileExistsError: ``bids_out`` is not empty.
        ClinicaError: Clinica exited with an error, or wrote no ``sub-*/ses-*/anat/*_T1w.nii.gz``.
    """
    if fmt not in FORMATS:
        raise ValueError(f"Clinica converts formats {FORMATS}, not {fmt!r}")
    if xml_dir is not None and fmt != "adni":
        raise ValueError(f"xml_dir {xml_dir}: only adni-to-bids reads LONI XML metadata, not {fmt}-to-bids")
    images_dir, clinical_dir, bids_out = Path(images_dir), Path(clinical_dir), Path(bids_out)
    for folder, what in ((images_dir, "the LONI image folders"), (clinical_dir, "the study-data CSVs")):
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: expected a folder holding {what}")
    if xml_dir is not None:
        check_xml_dir(Path(xml_dir))
    if missing := missing_clinical_tables(fmt, clinical_dir):
        raise FileNotFoundError(f"{clinical_dir}: {fmt}-to-bids needs these study-data tables: {'; '.join(missing)}")
    if fmt == "aibl":
        # aibl-to-bids takes every sub-folder for an RID and converts it with int().
        odd = sorted(p.name for p in images_dir.iterdir() if p.is_dir() and not p.name.startswith(".")
                     and not p.name.isdigit())
        if odd:
            raise FileNotFoundError(f"{images_dir}: expected only AIBL RID folders (digits), found {odd[:5]}")
    if bids_out.exists() and any(bids_out.iterdir()):
        raise FileExistsError(f"{bids_out} exists and is not empty; remove it to convert again")

    # absolute(), not resolve(): a symlinked clinica must keep its own folder (and dcm2niix) first on PATH.
    clinica = str(Path(shutil.which(clinica) or clinica).absolute())
    version = clinica_version(clinica)
    if not version.startswith(EXPECTED_VERSION):
        log.warning("%s is Clinica %s; the intake readers expect Clinica %s output", clinica, version, EXPECTED_VERSION)
    command = converter_command(fmt, images_dir.resolve(), clinical_dir.resolve(), bids_out.resolve(),
                                clinica=clinica, xml_dir=Path(xml_dir).resolve() if xml_dir else None, threads=threads)
    bids_out.parent.mkdir(parents=True, exist_ok=True)
    tail = _run_logged(command, log_path, clinica_version=version)
    converted = sorted(bids_out.glob("sub-*/ses-*/anat/*_T1w.nii.gz"))
    if not converted:
        raise ClinicaError(
            f"{' '.join(command)} finished but wrote no sub-*/ses-*/anat/*_T1w.nii.gz under {bids_out}; expected at "
            f"least one converted T1 from {images_dir}. Last lines of the log:\n" + "\n".join(tail))
    log.info("Clinica %s %s-to-bids: %d T1w images in %d participants -> %s", version, fmt, len(converted),
             len({p.parts[-4] for p in converted}), bids_out)


def _run_logged(command: list[str], log_path: Path | None, clinica_version: str) -> list[str]:
    """Run ``command``, copying its output line by line to ``log_path`` (or the logger); returns
    the last lines. Raises ClinicaError on a non-zero exit."""
    env = dict(os.environ)
    # dcm2niix is called by name: the clinica environment's own copy comes first.
    env["PATH"] = f"{Path(command[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    env["NO_COLOR"] = "1"
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    # Clinica's nipype setup writes pypeline.log into CLINICA_LOGGING_DIR (default: the working
    # directory); a scratch folder keeps it out of the repository and the BIDS tree.
    with tempfile.TemporaryDirectory(prefix="clinica-") as scratch:
        env["CLINICA_LOGGING_DIR"] = scratch
        stream = open(log_path, "a", buffering=1) if log_path is not None else None
        try:
            header = f"[clinica {clinica_version}] {' '.join(command)}"
            if stream is not None:
                stream.write(header + "\n")
            log.info("%s", header)
            process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                       errors="replace", cwd=scratch, env=env)
            assert process.stdout is not None
            for line in process.stdout:
                line = ANSI_ESCAPE.sub("", line.rstrip("\n"))
                tail.append(line)
                if stream is not None:
                    stream.write(line + "\n")
                else:
                    log.info("clinica: %s", line)
            code = process.wait()
        finally:
            if stream is not None:
                stream.close()
    if code != 0:
        where = f" (full log: {log_path})" if log_path is not None else ""
        raise ClinicaError(f"{' '.join(command)} failed with exit code {code}{where}. Last lines of its output:\n"
                           + "\n".join(tail))
    return list(tail)
