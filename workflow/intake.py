"""Cohort intake: read a cohort's native files into one images table and one visits table.

Three native formats are read (docs/interfaces.md section 1): ``adni`` (ADNIMERGE + BIDS),
``aibl`` (the ``aibl_<table>_<date>.csv`` set + BIDS) and ``nacc`` (UDS visit table + MRI table +
NIfTI folder). Which native columns become which table columns is data, not code: the cohort's
entry in the column definitions file (:mod:`workflow.columns`). Which file is which native table
is config: ``cohorts.<name>.files`` (regular expressions over file names, defaults in
``workflow/schemas/config.schema.yaml``), and so is the prefix of the cohort's subject labels
(``cohorts.<name>.subject_prefix``, default per format: :data:`DEFAULT_SUBJECT_PREFIX`).

Error policy (docs/interfaces.md section 2):

* schema errors stop the run with :class:`IntakeError` naming the file and column: a native
  table or a required column is missing, a name pattern matches several files, a file is empty
  or cannot be parsed (every native read goes through :func:`read_text_table`), two native ids
  give one subject label, no image's subject has a clinical row (a subject-prefix mismatch);
* data errors exclude the visit or image and go on, with a reason naming file, row (the line in
  the file, header = line 1), subject, visit and column: an unsafe subject id, a BIDS folder
  whose label is not alphanumeric, an unparseable visit date, the same subject and visit twice
  with different values, a visit without a usable label, an image without a date or file;
* a bad cell in a feature column (not a number, an unknown code, out of range) only makes that
  cell missing; it is listed in ``cell_qc.tsv`` with file, line, column and the raw text.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path
from typing import NamedTuple

import pandas as pd
import yaml

from workflow import paths
from workflow.columns import cohort_spec, load_columns, normalise_code
from workflow.settings import IntakeSettings

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["cohort", "subject", "session", "source_id", "visit_code", "acq_date", "path"]
VISIT_KEY_COLUMNS = ["cohort", "subject", "source_id", "visit_code", "visit_date", "label", "label_raw"]
# Where each visit came from, so that later stages can name the file and line of a problem.
VISIT_ORIGIN_COLUMNS = ["source_file", "source_row"]
# One row per feature cell that could not be read and became missing (paths.INTAKE_CELL_QC).
CELL_QC_COLUMNS = ["cohort", "subject", "visit_code", "file", "row", "column", "table_column", "value", "reason"]

# Which ``files`` keys (config cohorts.<name>.files) each format reads.
FILE_KEYS = {"adni": ("adnimerge",), "aibl": ("aibl_table",), "nacc": ("nacc_uds", "nacc_mri")}
CONFIG_SCHEMA = Path(__file__).parent / "schemas" / "config.schema.yaml"
# AIBL tables that describe the participant rather than a visit: joined to every visit by RID.
AIBL_SUBJECT_TABLES = ("ptdemog", "apoeres")
# The visit date of an AIBL visit: the first table (in this order) that has one.
AIBL_DATE_TABLES = ("neurobat", "mmse", "cdr")
# Cell texts that R, pandas and SAS exports write for a missing value (compared upper-cased);
# Clinica writes "n/a", SAS a lone ".". They read as missing wherever a number, code or date is
# expected.
NULL_TEXTS = frozenset({"NA", "NAN", "N/A", "NULL", "."})
# Encodings tried, in order, for every native text table: UTF-8 (a byte-order mark, as Excel
# writes, is dropped), then Latin-1, which decodes any byte (older exports from Windows tools).
TEXT_ENCODINGS = ("utf-8-sig", "latin-1")
# The native id column of each format (named in exclusions and errors).
ID_COLUMNS = {"adni": "PTID", "aibl": "RID", "nacc": "NACCID"}
# A native id may hold letters, digits, '_' and '-' (the last two are dropped from the subject label:
# PTID 027_S_0074 -> ADNI027S0074). Anything else (spaces, '/', '.') could turn into a path or
# merge two participants, so such a row is excluded rather than rewritten.
SAFE_ID = re.compile(r"[A-Za-z0-9_-]+")
# A BIDS label (after sub- / ses-) is alphanumeric (BIDS specification); the later stages build paths
# from it.
BIDS_LABEL = re.compile(r"[A-Za-z0-9]+")
# The subject-label prefix of each format when config cohorts.<name>.subject_prefix is not set:
# what Clinica's adni-to-bids / aibl-to-bids write (sub-ADNI027S0074, sub-AIBL123); NACC labels are
# the NACCID itself.
DEFAULT_SUBJECT_PREFIX = {"adni": "ADNI", "aibl": "AIBL", "nacc": ""}

# Clinica's adni-to-bids writes, per conversion run, conversion_info/v<N>/t1_paths.tsv: the T1
# image it chose for each subject and visit. Its scan date is the image date when scans.tsv has no
# acq_time (Clinica fills acq_time only when given LONI's XML metadata). Column names in one place.
CLINICA_CONVERSION_DIR = "conversion_info"
CLINICA_T1_PATHS_FILE = "t1_paths.tsv"
CLINICA_T1_PATHS_COLUMNS = {"subject": "Subject_ID", "visit_code": "VISCODE", "scan_date": "Scan_Date",
                            "image_id": "Image_ID"}
# Clinica's aibl-to-bids lists in conversion_info/t1_paths.tsv the LONI image folder of each T1
# (<RID>/<series>/<YYYY-MM-DD_HH_MM_SS.0>/I<id>): that folder's date is the acquisition date.
# scans.tsv acq_time is not: it is the MRI table's date of the session, and Clinica files every
# "MPRAGE SAG ISO" series under session M000 (M054 for two RIDs) whatever its date.
CLINICA_AIBL_T1_PATHS_COLUMNS = {"subject": "Subjects_ID", "session": "Session_ID", "path": "Path_to_T1"}
LONI_DATE_FOLDER = re.compile(r"(\d{4}-\d{2}-\d{2})_\d{2}_\d{2}_\d{2}(\.\d+)?")
# Clinica's aibl-to-bids dates sessions in sub-<id>_sessions.tsv; the first of these columns found
# is the image date when scans.tsv gives none (acq_time n/a).
SESSIONS_DATE_COLUMNS = ("examination_date",)
# Visit codes of the baseline session (Clinica's ses-M000).
BASELINE_VISIT_CODES = ("bl", "sc", "scmri", "init")


class IntakeError(ValueError):
    """A cohort's files do not have the expected layout (a schema error: the run stops)."""


@dataclass
class Exclusions:
    """Rows left out by a stage, with the reason (columns ``workflow.paths.EXCLUSION_COLUMNS``)."""

    stage: str
    cohort: str
    rows: list[dict] = field(default_factory=list)

    def add(self, subject: str, session: str, file: str, row: int | str, column: str, reason: str) -> None:
        """Record one excluded visit or image.

        Args:
            subject, session: the BIDS subject label and the visit code or session label.
            file, row, column: where the problem is (row = line in the file, header = 1; '' if none).
            reason: ``<category>: <detail>``.
        """
        self.rows.append({
            "stage": self.stage, "cohort": self.cohort, "subject": subject, "session": session,
            "file": str(file), "row": row, "column": column, "reason": reason,
        })

    def frame(self) -> pd.DataFrame:
        """The rows as a table with ``paths.EXCLUSION_COLUMNS``."""
        return pd.DataFrame(self.rows, columns=paths.EXCLUSION_COLUMNS)


class CohortTables(NamedTuple):
    """What :func:`read_cohort` returns (docs/interfaces.md section 2)."""

    images: pd.DataFrame
    visits: pd.DataFrame
    exclusions: pd.DataFrame
    cell_qc: pd.DataFrame


# --- where a cohort's files are ------------------------------------------------------------------

def default_files() -> dict[str, str]:
    """The default file-name patterns of ``cohorts.<name>.files``, read from the config schema (the
    one place they are written), so that a direct call without config gets the same files."""
    schema = yaml.safe_load(CONFIG_SCHEMA.read_text())
    properties = schema["properties"]["cohorts"]["additionalProperties"]["properties"]["files"]["properties"]
    return {key: spec["default"] for key, spec in properties.items()}


def resolve_files(files: Mapping[str, str] | None, cohort: str) -> dict[str, str]:
    """The cohort's file-name patterns: config values over the schema defaults, checked.

    Args:
        files: ``config["cohorts"][cohort]["files"]`` (None or partial: defaults fill the rest).
        cohort: the cohort name (for messages).
    Returns:
        ``{key: regular expression}`` for every key of :data:`FILE_KEYS`.
    Raises:
        IntakeError: an unknown key, a pattern that is not a regular expression, or an
            ``aibl_table`` pattern without the ``{table}`` placeholder.
    """
    merged = default_files()
    unknown = sorted(set(files or {}) - set(merged))
    if unknown:
        raise IntakeError(f"config cohorts.{cohort}.files: unknown key(s) {unknown} (known: {sorted(merged)})")
    merged.update(files or {})
    for key, pattern in merged.items():
        try:
            re.compile(pattern.replace("{table}", "x"))
        except (re.error, AttributeError) as error:
            raise IntakeError(f"config cohorts.{cohort}.files.{key}: {pattern!r} is not a regular expression ({error})") from None
    if "{table}" not in merged["aibl_table"]:
        raise IntakeError(f"config cohorts.{cohort}.files.aibl_table: {merged['aibl_table']!r} lacks the "
                          f"'{{table}}' placeholder (where the AIBL table name, e.g. mmse, goes)")
    return merged


class ClinicalFiles:
    """The files of a cohort's clinical folder, at any depth, listed once.

    Data centres ship the CSVs in nested folders (AIBL: ``aibl_<date>/Data_extract_3.3.0/``), so a
    native table is found by its file name wherever it lies; two files of one table (two releases,
    or a copy) stop the run rather than one of them being picked silently.
    """

    def __init__(self, folder: str | Path, cohort: str):
        """Args:
            folder: the clinical folder.
            cohort: the cohort name (for messages).
        Raises:
            IntakeError: when the folder does not exist.
        """
        self.folder, self.cohort = Path(folder), cohort
        if not self.folder.is_dir():
            raise IntakeError(f"{self.folder}: the clinical folder of cohort {cohort} does not exist "
                              f"(docs/interfaces.md section 1)")
        self.files = sorted(p for p in self.folder.rglob("*") if p.is_file())

    def find_one(self, pattern: str, key: str) -> Path:
        """The single file whose name fully matches ``pattern``.

        Args:
            pattern: a regular expression over file names (not paths).
            key: the ``files`` key the pattern came from (for messages).
        Raises:
            IntakeError: when no file or several files match, naming them.
        """
        regex = re.compile(pattern)
        matches = [p for p in self.files if regex.fullmatch(p.name)]
        setting = f"config cohorts.{self.cohort}.files.{key}"
        if not matches:
            raise IntakeError(f"{self.folder}: no file (at any depth) has a name matching '{pattern}' ({setting}; "
                              f"docs/interfaces.md section 1)")
        if len(matches) > 1:
            found = ", ".join(str(m.relative_to(self.folder)) for m in matches)
            raise IntakeError(f"{self.folder}: several files match '{pattern}' ({setting}): {found}; keep one (for "
                              f"example the latest release) or set {setting} to the name of the one to read")
        return matches[0]


def read_text_table(path: str | Path, sep: str = ",", expected: str = "a table with a header line",
                    error: type[Exception] = IntakeError, quiet: bool = False,
                    encodings: tuple[str, ...] = TEXT_ENCODINGS, **options) -> pd.DataFrame:
    """Read one delimited text file: the single guarded entry of every native read.

    Tries :data:`TEXT_ENCODINGS` in turn (UTF-8 with or without a byte-order mark, then Latin-1)
    and logs which one was used (INFO, or DEBUG when ``quiet``; a Latin-1 read is always a
    WARNING).

    Args:
        path: the file.
        sep: the delimiter (``","`` CSV, ``"\t"`` TSV).
        expected: what the file should hold (ends the error messages).
        error: the exception class to raise (IntakeError at intake, TableError at the tables stage).
        quiet: log a UTF-8 read at DEBUG (files read once per image, e.g. scans.tsv).
        encodings: the encodings to try, in order (a second read of one file starts from the one
            its first read used, ``table.attrs["encoding"]``).
        options: passed to :func:`pandas.read_csv` (``dtype``, ``usecols``, ``nrows`` ...).
    Returns:
        The table as pandas reads it with ``options``; ``attrs["encoding"]`` names the encoding.
    Raises:
        ``error``: naming the file when it is missing or unreadable, empty (0 bytes, or nothing but
            blank lines) or not parseable, and saying what was expected.
    """
    path = Path(path)
    kind = "TSV" if sep == "\t" else "CSV"
    try:
        size = path.stat().st_size
    except OSError as problem:
        raise error(f"{path}: cannot be opened ({problem.strerror}); expected {expected}") from None
    if size == 0:
        raise error(f"{path}: empty file (0 bytes); expected {expected}") from None
    for encoding in encodings:
        try:
            table = pd.read_csv(path, sep=sep, encoding=encoding, **options)
        except UnicodeDecodeError:
            continue  # not UTF-8: the next encoding (Latin-1 decodes any byte)
        except pd.errors.EmptyDataError:
            raise error(f"{path}: no header line (the file holds only blank lines); expected {expected}") from None
        except (pd.errors.ParserError, ValueError, OSError) as problem:
            raise error(f"{path}: cannot be read as a {kind} table ({problem}); expected {expected}") from None
        if encoding != encodings[0]:
            log.warning("%s: not valid UTF-8; read as %s (check accented text in the file)", path, encoding)
        else:  # the first encoding tried (a second read of a Latin-1 file was warned about already)
            log.log(logging.DEBUG if quiet else logging.INFO, "%s: read as %s", path, encoding)
        table.attrs["encoding"] = encoding
        return table
    raise error(f"{path}: cannot be decoded as any of {list(encodings)}; expected {expected}")


def read_native_csv(path: Path, required: list[str], sep: str = ",", optional: Iterable[str] = (),
                    quiet: bool = False) -> pd.DataFrame:
    """The needed columns of a native CSV (or TSV with ``sep="\t"``) as text cells ('' when blank,
    surrounding spaces removed) plus ``_line`` (the line in the file, header = 1).

    Only ``required`` and ``optional`` columns are kept in memory (NACC's UDS table has ~1,900
    columns), in that order; an optional column absent from the file is absent from the result.
    Read through :func:`read_text_table` (encodings, empty files).

    Args:
        path: the file.
        required: columns that must be present.
        sep: the delimiter.
        optional: columns kept when present.
        quiet: log the encoding at DEBUG (per-image files).
    Raises:
        IntakeError: naming the file and every required column it lacks, a needed column that
            appears twice, an empty file, or what the parser could not read.
    """
    expected = f"a header line with the column(s) {list(dict.fromkeys(required))}"
    first = read_text_table(path, sep, expected, quiet=True, nrows=0, dtype=str)
    header = [str(c) for c in first.columns]
    names = [c.strip() for c in header]
    absent = [column for column in dict.fromkeys(required) if column not in names]
    if absent:
        raise IntakeError(f"{path}: required column(s) {absent} not found (columns present: {names[:60]}"
                          f"{' ...' if len(names) > 60 else ''})")
    wanted = [c for c in dict.fromkeys([*required, *optional]) if c in names]
    twice = [c for c in wanted if names.count(c) > 1]
    if twice:
        raise IntakeError(f"{path}: column(s) {twice} appear more than once in the header; keep one of each")
    positions = sorted(names.index(c) for c in wanted)
    # Positions, not names: pandas renames repeated header names, and the header may have spaces.
    # Start from the header's encoding: a Latin-1 file is then tried (and logged) as UTF-8 once only.
    encodings = TEXT_ENCODINGS[TEXT_ENCODINGS.index(first.attrs["encoding"]):]
    table = read_text_table(path, sep, expected, quiet=quiet, encodings=encodings, usecols=positions, dtype=str,
                            keep_default_na=False, na_values=[])
    table.columns = [names[p] for p in positions]
    table = table[wanted]
    for column in wanted:
        table[column] = _stripped(table[column])
    table["_line"] = range(2, len(table) + 2)
    return table


def _stripped(column: pd.Series) -> pd.Series:
    # Strip each distinct text once and map: the parser shares one object per distinct cell text,
    # and a plain .str.strip() would give every one of NACC's ~8 million cells its own copy.
    mapping = {text: text.strip() for text in column.unique()}
    if all(text == clean for text, clean in mapping.items()):
        return column
    return column.map(mapping)


# --- one cell: native text -> harmonised number ----------------------------------------------------

class CellError(ValueError):
    """A data error in one cell; the message says what was expected."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


def is_blank(code: str) -> bool:
    """Whether a normalised cell means "no value": empty, or an export's null text (NA, NaN, N/A, NULL)."""
    return code == "" or code.upper() in NULL_TEXTS


def parse_number(column: str, text: str, missing: list[str], censored: bool = False) -> float:
    """Native text to a float; NaN when blank, a null text or a missing code.

    Args:
        column: native column name (for the error).
        text: the cell.
        missing: normalised missing codes.
        censored: accept limit strings such as ``<200`` or ``>1700`` (taken at the limit).
    Raises:
        CellError: when the cell is not a number.
    """
    code = normalise_code(text)
    if is_blank(code) or code in missing:
        return math.nan
    if censored:
        code = code.lstrip("<>").strip()
    try:
        value = float(code)
    except ValueError:
        raise CellError(column, f"'{text}' is not a number") from None
    if not math.isfinite(value):
        raise CellError(column, f"'{text}' is not a finite number")
    return value


def birth_year(column: str, text: str, missing: list[str]) -> float:
    """The year of a birth date written ``/YYYY``, ``MM/YYYY`` or ``YYYY``; NaN when missing."""
    code = normalise_code(text)
    if is_blank(code) or code in missing:
        return math.nan
    found = re.fullmatch(r"(?:\d{1,2}/)?/?(\d{4})", code)
    if not found:
        raise CellError(column, f"'{text}' is not a birth date of the form /YYYY")
    return float(found.group(1))


def harmonise(column: dict, cells: dict[str, str], visit_date: date | None, crosswalks: dict) -> float:
    """One configured column's value for one visit.

    Args:
        column: a column definition (:func:`workflow.columns.cohort_columns`).
        cells: native column name -> cell text for this visit (all of ``column["source"]`` and the
            fallback source).
        visit_date: the visit's date (for ``age_from_birth_year``), or None.
        crosswalks: the crosswalk tables of the column definitions file.
    Returns:
        The harmonised value: a number for continuous columns, the integer level code for
        categorical ones, NaN when missing.
    Raises:
        CellError: naming the native column and what was expected.
    """
    transform, sources, missing = column["transform"], column["source"], column["missing"]
    if column["type"] == "categorical" and transform == "number":
        value = _categorical_code(column, sources[0], cells[sources[0]])
    elif transform in ("number", "censored"):
        value = parse_number(sources[0], cells[sources[0]], missing, censored=transform == "censored")
    elif transform == "sum":
        parts = [parse_number(source, cells[source], missing) for source in sources]
        value = math.nan if any(math.isnan(p) for p in parts) else float(sum(parts))
    elif transform == "count_equal":
        codes = [normalise_code(cells[source]) for source in sources]
        if any(is_blank(code) or code in missing for code in codes):
            value = math.nan
        else:
            value = float(sum(code == column["value"] for code in codes))
    elif transform == "age_from_birth_year":
        year = birth_year(sources[0], cells[sources[0]], missing)
        value = math.nan if visit_date is None or math.isnan(year) else float(visit_date.year - year)
    else:  # the column loader only lets known transforms through
        raise AssertionError(transform)
    if math.isnan(value) and column["fallback"] is not None:
        value = _fallback_value(column["fallback"], cells, crosswalks)
    if math.isnan(value):
        return value
    if column["type"] == "categorical" and transform != "number":
        value = _categorical_code(column, "+".join(sources), normalise_code(value))
    if column["range"] is not None and column["type"] == "continuous":
        low, high = column["range"]
        if not low <= value <= high:
            raise CellError(sources[0], f"value {value:g} is outside the expected range [{low:g}, {high:g}]")
    return value


def _categorical_code(column: dict, source: str, text: str) -> float:
    code = normalise_code(text)
    if is_blank(code) or code in column["missing"]:
        return math.nan
    level = column["map"].get(code) if column["map"] is not None else code
    if level is None or level not in column["levels"]:
        expected = list(column["map"]) if column["map"] is not None else list(column["levels"])
        raise CellError(source, f"unknown categorical code '{text}' (expected one of {expected} or a missing code {column['missing']})")
    return float(column["levels"][level])


def _fallback_value(fallback: dict, cells: dict[str, str], crosswalks: dict) -> float:
    value = parse_number(fallback["source"], cells[fallback["source"]], fallback["missing"])
    if math.isnan(value) or fallback["crosswalk"] is None:
        return value
    table = crosswalks[fallback["crosswalk"]]
    code = normalise_code(value)
    if code not in table:
        raise CellError(fallback["source"], f"score {value:g} is not in crosswalk '{fallback['crosswalk']}' (scores {list(table)})")
    return table[code]


# --- labels ----------------------------------------------------------------------------------------

def map_label(label_spec: dict, text: str) -> tuple[str, str | None]:
    """A native diagnosis cell to ``CN | MCI | DE``.

    Returns:
        ``(label, None)`` when usable, else ``("", why)``.
    """
    code = normalise_code(text)
    if is_blank(code) or code in label_spec["missing"]:
        return "", f"no label: {label_spec['column']} is empty or a missing code ('{text}')"
    if label_spec["transition_strings"] and " to " in code:
        code = code.rsplit(" to ", 1)[1].strip()
    label = label_spec["map"].get(code)
    if label is None:
        return "", f"no label: {label_spec['column']}='{text}' maps to no class (map: {label_spec['map']})"
    return label, None


# --- visits: native clinical rows -> harmonised visits --------------------------------------------

def parse_date(text: str, fmt: str) -> date | None:
    """A date cell; None when blank or a null text. Raises ValueError when present but not in ``fmt``."""
    code = normalise_code(text)
    if is_blank(code) or code == "-4":
        return None
    return datetime.strptime(text, fmt).date()


def subject_label(prefix: str, source_id: str) -> str:
    """The BIDS participant label (without ``sub-``) of a native id: the cohort's prefix plus the
    id without ``_`` and ``-`` (``ADNI`` + ``027_S_0074`` -> ``ADNI027S0074``; see workflow/paths.py).

    The id must pass :func:`subject_id_problem` first; :class:`SubjectLabels` checks both and that
    no two ids share a label.
    """
    return prefix + re.sub(r"[_-]", "", source_id)


def subject_id_problem(source_id: str) -> str | None:
    """Why a native id cannot become a subject label, or None when it can.

    Args:
        source_id: the id cell (PTID, RID, NACCID), surrounding spaces already removed.
    Returns:
        None, or a description (an empty or null cell; characters outside letters, digits, ``_``
        and ``-``; an id of only ``_`` / ``-``).
    """
    if is_blank(normalise_code(source_id)):
        return f"the subject id is empty or a null text ('{source_id}')"
    if not SAFE_ID.fullmatch(source_id):
        bad = sorted({c for c in source_id if not SAFE_ID.fullmatch(c)})
        return (f"the subject id {source_id!r} has characters outside letters, digits, '_' and '-' ({bad}); "
                f"it is not rewritten (two ids could become one participant, or a path)")
    if not re.sub(r"[_-]", "", source_id):
        return f"the subject id {source_id!r} has no letter or digit"
    return None


def resolve_subject_prefix(prefix: str | None, fmt: str, cohort: str) -> str:
    """The cohort's subject-label prefix: config ``cohorts.<name>.subject_prefix``, else the
    format's default (:data:`DEFAULT_SUBJECT_PREFIX`).

    Raises:
        IntakeError: a prefix with characters other than letters and digits.
    """
    if prefix is None:
        return DEFAULT_SUBJECT_PREFIX[fmt]
    if not isinstance(prefix, str) or (prefix and not BIDS_LABEL.fullmatch(prefix)):
        raise IntakeError(f"config cohorts.{cohort}.subject_prefix: {prefix!r}; expected letters and digits only "
                          f"(it starts every BIDS subject label), or '' for none")
    return prefix


@dataclass
class SubjectLabels:
    """The subject labels of one cohort's native ids, checked as they are met.

    Every native id (visit rows, NACC MRI rows) goes through :meth:`label`: an id that cannot be a
    label is refused (the caller excludes its row), and two different ids that give the same label
    (``005_S_5735`` and ``005S5735``) stop the run: their rows would otherwise be merged into one
    participant.
    """

    prefix: str
    # label -> (native id, file, line) of its first occurrence
    seen: dict[str, tuple[str, str, int | str]] = field(default_factory=dict)
    # native id -> its label, once checked: NACC repeats each id over ~200,000 visit rows
    checked: dict[str, str] = field(default_factory=dict)

    def label(self, source_id: str, file: str | Path, line: int | str, column: str) -> tuple[str, str | None]:
        """The label of one native id.

        Args:
            source_id: the id cell.
            file, line, column: where it was read (for the error and the exclusion).
        Returns:
            ``(label, None)``, or ``("", why)`` when the id is refused.
        Raises:
            IntakeError: when another native id already gave the same label, naming both ids
                with their files and lines.
        """
        if source_id in self.checked:
            return self.checked[source_id], None
        why = subject_id_problem(source_id)
        if why is not None:
            return "", why
        label = subject_label(self.prefix, source_id)
        first = self.seen.setdefault(label, (source_id, str(file), line))
        if first[0] != source_id:
            raise IntakeError(
                f"{file}: line {line}, column {column}: subject id '{source_id}' and subject id '{first[0]}' "
                f"({first[1]}, line {first[2]}) both become subject label '{label}' (prefix '{self.prefix}' "
                f"plus the id without '_' and '-'), which would merge two participants; correct the id that "
                f"is wrong in the native file")
        self.checked[source_id] = label
        return label, None


def native_id(subject: str, prefix: str, fmt: str) -> str:
    """The native id of a BIDS subject label that no clinical row names (the label without the
    cohort's prefix; ADNI labels of the PTID form ``<site>S<number>`` get their underscores back)."""
    rest = subject.removeprefix(prefix) if prefix else subject
    found = re.fullmatch(r"(\d{3})S(\d{4})", rest) if fmt == "adni" else None
    return f"{found.group(1)}_S_{found.group(2)}" if found else rest


def read_cohort(clinical_dir: str | Path, images_dir: str | Path, cohort: str, columns_path: str | Path, fmt: str,
                files: Mapping[str, str] | None = None, subject_prefix: str | None = None) -> CohortTables:
    """Read one cohort's native files.

    Args:
        clinical_dir: the folder of native clinical CSVs (searched at any depth).
        images_dir: the BIDS tree (adni, aibl) or the NIfTI folder (nacc).
        cohort: the cohort name (an entry of the column definitions file).
        columns_path: the column definitions file.
        fmt: the cohort's format in config; must equal the format in the column definitions.
        files: ``config["cohorts"][cohort]["files"]`` (file-name patterns); None = the defaults.
        subject_prefix: ``config["cohorts"][cohort]["subject_prefix"]``: what starts every subject
            label; None = the format's default (:data:`DEFAULT_SUBJECT_PREFIX`).
    Returns:
        ``(images, visits, exclusions, cell_qc)`` as described in docs/interfaces.md section 2.
    Raises:
        IntakeError: on schema errors (see the module docstring), when two native ids give one
            subject label, or when images were found but none of their subjects has a clinical row.
    """
    spec = cohort_spec(columns_path, cohort)
    if spec["format"] != fmt:
        raise IntakeError(
            f"{columns_path}: cohorts.{cohort}.format is '{spec['format']}' but config cohorts.{cohort}.format is '{fmt}'"
        )
    patterns = resolve_files(files, cohort)
    labels = SubjectLabels(resolve_subject_prefix(subject_prefix, fmt, cohort))
    clinical = ClinicalFiles(clinical_dir, cohort)
    crosswalks = load_columns(columns_path)["crosswalks"]
    exclusions = Exclusions("intake", cohort)
    cell_qc: list[dict] = []
    reader = {"adni": _adni_visit_rows, "aibl": _aibl_visit_rows, "nacc": _nacc_visit_rows}[fmt]
    visits = _harmonise_visits(reader(clinical, spec, patterns), cohort, fmt, spec, crosswalks, labels, exclusions,
                               cell_qc)
    clinical_labels = set(labels.seen)
    if fmt == "nacc":
        images = _nacc_images(clinical, Path(images_dir), patterns, cohort, labels, exclusions)
    else:
        images = _bids_images(Path(images_dir), cohort, fmt, labels.prefix, exclusions)
    _check_images_meet_visits(images, clinical_labels, cohort, fmt, labels.prefix, subject_prefix is None)
    source_ids = dict(zip(visits["subject"], visits["source_id"]))
    images["source_id"] = [source_ids.get(s, native) for s, native in zip(images["subject"], images["source_id"])]
    log.info("%s: %d visits (%d labelled), %d images, %d exclusions, %d unreadable cells made missing", cohort,
             len(visits), int((visits["label"] != "").sum()), len(images), len(exclusions.rows), len(cell_qc))
    return CohortTables(images[IMAGE_COLUMNS], visits, exclusions.frame(), pd.DataFrame(cell_qc, columns=CELL_QC_COLUMNS))


def _check_images_meet_visits(images: pd.DataFrame, clinical_labels: set[str], cohort: str, fmt: str, prefix: str,
                              default_prefix: bool) -> None:
    """Stop when images were found but no image's subject has a row in the clinical tables.

    That is a naming mismatch (BIDS folders ``sub-OAS30001`` against labels ``ADNIOAS30001``), not
    a data problem: every image would later fail alignment, after preprocessing all of them.

    Args:
        images: the images table.
        clinical_labels: the subject labels of every clinical row read (excluded visits too).
        cohort, fmt, prefix: for the message.
        default_prefix: whether ``prefix`` is the format's default (config has no subject_prefix).
    Raises:
        IntakeError: naming examples of both sets of labels and the setting that joins them.
    """
    if images.empty or images["subject"].isin(clinical_labels).any():
        return
    image_subjects = sorted(set(images["subject"]))
    source = "the format's default" if default_prefix else f"config cohorts.{cohort}.subject_prefix"
    raise IntakeError(
        f"cohort {cohort}: none of the {len(image_subjects)} subjects with images (e.g. {image_subjects[:3]}) has a "
        f"row in the clinical tables, whose ids give the labels {sorted(clinical_labels)[:3] or 'none'} "
        f"(prefix '{prefix}', {source}, plus the {ID_COLUMNS[fmt]} without '_' and '-'). Set "
        f"cohorts.{cohort}.subject_prefix in config so that these labels equal the image folders' names "
        f"(sub-<label>), e.g. '' when the folders are named by the native id alone"
    )


@dataclass
class NativeVisit:
    """One visit as read from the native files, before harmonisation."""

    source_id: str
    visit_code: str
    date_text: str
    date_format: str
    cells: dict[str, str]
    file: str
    line: int
    # native column -> (file, line) where its cell came from, when the cells of one visit come from
    # several files (AIBL); None when they all come from ``file`` at ``line``.
    origin: dict[str, tuple[str, int]] | None = None

    def where(self, column: str) -> tuple[str, int]:
        """The file and line of ``column``'s cell."""
        if self.origin is None:
            return self.file, self.line
        return self.origin.get(column, (self.file, self.line))


def needed_columns(spec: dict, table: str) -> list[str]:
    """The native columns of ``table`` that the cohort's column definitions read (sources,
    fallback sources and the label column), each once, in definition order."""
    needed = []
    for column in spec["columns"]:
        if column["table"] == table:
            needed += column["source"]
            if column["fallback"] is not None:
                needed.append(column["fallback"]["source"])
    if spec["label"].get("table", table) in (None, table):
        needed.append(spec["label"]["column"])
    return list(dict.fromkeys(needed))


def _drop_duplicate_keys(table: pd.DataFrame, keys: list[str], compare: list[str], file: Path,
                         key_names: tuple[str, str], bad: dict) -> pd.DataFrame:
    """Keep the first row per key; keys repeated with different values are marked bad.

    ``bad`` collects ``(source_id, visit_code) -> (file, line, column, reason)`` for the caller.
    Identical repeats are dropped with a log line (they carry no extra information).
    """
    compare = [c for c in dict.fromkeys(compare) if c in table.columns]
    repeated = table.duplicated(keys, keep=False)
    # Only the repeated keys need a group-by (a python loop over all 200,000 NACC visits is slow).
    for key, group in table[repeated].groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        differing = [c for c in compare if group[c].nunique() > 1]
        lines = ", ".join(str(x) for x in group["_line"])
        if not differing:
            log.info("%s: rows %s repeat %s=%s with identical values; kept the first", file, lines, key_names, key)
            continue
        visit = key[1] if len(key) > 1 else ""
        bad[(key[0], visit)] = (str(file), int(group["_line"].iloc[0]), differing[0],
                                f"duplicate conflicting rows: lines {lines} of {file.name} have the same "
                                f"{key_names[0]} and {key_names[1]} but different {differing}")
    return table[~table.duplicated(keys, keep="first")]


def _merge_participant_rows(table: pd.DataFrame, compare: list[str], file: Path, bad: dict) -> pd.DataFrame:
    """One row per RID from a participant-level table; conflicting rows mark the RID bad."""
    compare = list(dict.fromkeys(compare))
    merged = []
    for rid, group in table.groupby("RID", sort=False):
        row = group.iloc[0].to_dict()
        for column in compare:
            present = [v for v in group[column] if not is_blank(normalise_code(v)) and normalise_code(v) != "-4"]
            if len(set(map(normalise_code, present))) > 1:
                lines = ", ".join(str(x) for x in group["_line"])
                bad[(rid, "")] = (str(file), int(group["_line"].iloc[0]), column,
                                  f"duplicate conflicting rows: lines {lines} of {file.name} give RID {rid} "
                                  f"different {column} values {present}")
            row[column] = present[0] if present else row[column]
        merged.append(row)
    return pd.DataFrame(merged, columns=table.columns)


def _row_visits(table: pd.DataFrame, path: Path, id_column: str, visit_code, date_text, date_format: str,
                needed: list[str]) -> Iterator[NativeVisit]:
    """One NativeVisit per row of a one-row-per-visit table, built as they are consumed (a list of
    200,000 NACC visits at once would double the reader's memory)."""
    columns = [table[c].tolist() for c in needed]
    for line, values in zip(table["_line"].tolist(), zip(*columns)):
        cells = dict(zip(needed, values))
        yield NativeVisit(cells[id_column], visit_code(cells), date_text(cells), date_format, cells, str(path), line)


def _adni_visit_rows(clinical: ClinicalFiles, spec: dict, files: dict[str, str]) -> tuple[Iterable[NativeVisit], dict]:
    path = clinical.find_one(files["adnimerge"], "adnimerge")
    needed = list(dict.fromkeys(["PTID", "VISCODE", "EXAMDATE"] + needed_columns(spec, "ADNIMERGE")))
    table = read_native_csv(path, needed)
    bad: dict = {}
    table = _drop_duplicate_keys(table, ["PTID", "VISCODE"], needed, path, ("PTID", "VISCODE"), bad)
    return _row_visits(table, path, "PTID", lambda c: c["VISCODE"], lambda c: c["EXAMDATE"], "%Y-%m-%d", needed), bad


def _aibl_visit_rows(clinical: ClinicalFiles, spec: dict, files: dict[str, str]) -> tuple[Iterable[NativeVisit], dict]:
    tables, sources = {}, {}
    bad: dict = {}
    label_table = spec["label"]["table"] or "pdxconv"
    used = {column["table"] for column in spec["columns"]} | {label_table} | set(AIBL_DATE_TABLES)
    for name in sorted(used):
        path = clinical.find_one(files["aibl_table"].replace("{table}", re.escape(name)), "aibl_table")
        needed = list(dict.fromkeys(["RID", "VISCODE"] + needed_columns(spec, name)
                                    + ([spec["label"]["column"]] if name == label_table else [])
                                    + (["EXAMDATE"] if name in AIBL_DATE_TABLES else [])))
        table = read_native_csv(path, needed)
        if name in AIBL_SUBJECT_TABLES:
            # Participant facts: rows of one RID are merged (blank cells filled from the other
            # rows); two different values are a conflict for every visit of the subject.
            table = _merge_participant_rows(table, needed[2:], path, bad)
        else:
            table = _drop_duplicate_keys(table, ["RID", "VISCODE"], needed[2:], path, ("RID", "VISCODE"), bad)
        tables[name], sources[name] = table, path
    # The visits are the (RID, VISCODE) pairs of the diagnosis table and the visit-level tables.
    keys: dict[tuple[str, str], None] = {}
    for name, table in tables.items():
        if name not in AIBL_SUBJECT_TABLES:
            for rid, viscode in zip(table["RID"], table["VISCODE"]):
                keys.setdefault((rid, viscode), None)
    by_visit = {name: {(r["RID"], r["VISCODE"]): r for r in t.to_dict("records")}
                for name, t in tables.items() if name not in AIBL_SUBJECT_TABLES}
    by_subject = {name: {r["RID"]: r for r in t.to_dict("records")}
                  for name, t in tables.items() if name in AIBL_SUBJECT_TABLES}
    not_cells = ("RID", "VISCODE", "SITEID", "EXAMDATE", "_line")
    visits = []
    for rid, viscode in keys:
        cells: dict[str, str] = {}
        origin: dict[str, tuple[str, int]] = {}
        for name in tables:
            row = by_subject[name].get(rid) if name in AIBL_SUBJECT_TABLES else by_visit[name].get((rid, viscode))
            for column in tables[name].columns:
                if column in not_cells or row is None:
                    continue
                cells.setdefault(column, row[column])
                origin.setdefault(column, (str(sources[name]), row["_line"]))
        # Columns of tables that have no row for this visit are blank (missing), not absent.
        for name, table in tables.items():
            for column in table.columns:
                if column not in not_cells:
                    cells.setdefault(column, "")
                    origin.setdefault(column, (str(sources[name]), 0))
        date_text, file, line = "", str(sources[label_table]), 0
        for name in AIBL_DATE_TABLES:
            row = by_visit[name].get((rid, viscode))
            if row is not None and not is_blank(normalise_code(row["EXAMDATE"])) and normalise_code(row["EXAMDATE"]) != "-4":
                date_text, file, line = row["EXAMDATE"], str(sources[name]), row["_line"]
                break
        label_row = by_visit[label_table].get((rid, viscode))
        if label_row is not None:
            file, line = str(sources[label_table]), label_row["_line"]
        visits.append(NativeVisit(rid, viscode, date_text, "%m/%d/%Y", cells, file, line, origin))
    # A conflict in a participant table concerns every visit of that RID.
    for (rid, visit), reason in list(bad.items()):
        if visit == "":
            for key in keys:
                if key[0] == rid:
                    bad[key] = reason
    return visits, bad


def _nacc_date_text(cells: dict[str, str], columns: tuple[str, str, str]) -> str:
    parts = [normalise_code(cells[c]) for c in columns]
    return "-".join("" if is_blank(p) else p for p in parts)


def _nacc_visit_rows(clinical: ClinicalFiles, spec: dict, files: dict[str, str]) -> tuple[Iterable[NativeVisit], dict]:
    path = clinical.find_one(files["nacc_uds"], "nacc_uds")
    date_columns = ("VISITYR", "VISITMO", "VISITDAY")
    needed = list(dict.fromkeys(["NACCID", "NACCVNUM", *date_columns] + needed_columns(spec, "uds")))
    table = read_native_csv(path, needed)
    bad: dict = {}
    table = _drop_duplicate_keys(table, ["NACCID", "NACCVNUM"], needed, path, ("NACCID", "NACCVNUM"), bad)
    # bad is keyed by the normalised visit number, as the visits are
    bad = {(source_id, normalise_code(visit)): value for (source_id, visit), value in bad.items()}
    return _row_visits(table, path, "NACCID", lambda c: normalise_code(c["NACCVNUM"]),
                       lambda c: _nacc_date_text(c, date_columns), "%Y-%m-%d", needed), bad


def _harmonise_visits(rows: tuple[Iterable[NativeVisit], dict], cohort: str, fmt: str, spec: dict, crosswalks: dict,
                      labels: SubjectLabels, exclusions: Exclusions, cell_qc: list[dict]) -> pd.DataFrame:
    """Native visits -> the visits table; refused subject ids, bad dates and conflicts go to
    ``exclusions``, bad feature cells (made missing) to ``cell_qc`` (:data:`CELL_QC_COLUMNS`).

    Raises:
        IntakeError: when two native ids give one subject label (:class:`SubjectLabels`).
    """
    native_visits, bad = rows
    names = [column["name"] for column in spec["columns"]]
    table_columns = VISIT_KEY_COLUMNS + VISIT_ORIGIN_COLUMNS + names
    data: dict[str, list] = {name: [] for name in table_columns}
    date_column = "EXAMDATE" if fmt != "nacc" else "VISITYR/VISITMO/VISITDAY"
    for visit in native_visits:
        file, line = visit.where(ID_COLUMNS[fmt])
        subject, refused = labels.label(visit.source_id, file, line, ID_COLUMNS[fmt])
        if refused is not None:
            exclusions.add(visit.source_id, visit.visit_code, file, line, ID_COLUMNS[fmt], f"bad subject id: {refused}")
            continue
        if (visit.source_id, visit.visit_code) in bad:
            file, line, column, reason = bad[(visit.source_id, visit.visit_code)]
            exclusions.add(subject, visit.visit_code, file, line, column, reason)
            continue
        try:
            visit_date = parse_date(visit.date_text, visit.date_format) if visit.date_text.strip("-") else None
        except ValueError:
            exclusions.add(subject, visit.visit_code, visit.file, visit.line, date_column,
                           f"bad value: visit date '{visit.date_text}' is not a date ({visit.date_format})")
            continue
        label_text = visit.cells.get(spec["label"]["column"], "")
        label, why = map_label(spec["label"], label_text)
        record = {"cohort": cohort, "subject": subject, "source_id": visit.source_id, "visit_code": visit.visit_code,
                  "visit_date": visit_date.isoformat() if visit_date else "", "label": label, "label_raw": label_text,
                  "source_file": visit.file, "source_row": visit.line}
        for column in spec["columns"]:
            try:
                record[column["name"]] = harmonise(column, visit.cells, visit_date, crosswalks)
            except CellError as error:
                # One unreadable cell costs that cell, not the visit and its label.
                file, line = visit.where(error.column)
                cell_qc.append({"cohort": cohort, "subject": subject, "visit_code": visit.visit_code, "file": file,
                                "row": line, "column": error.column, "table_column": column["name"],
                                "value": visit.cells.get(error.column, ""), "reason": f"bad value: {error}"})
                record[column["name"]] = math.nan
        if why is not None:
            exclusions.add(subject, visit.visit_code, visit.file, visit.line, spec["label"]["column"], why)
        for name in table_columns:
            data[name].append(record[name])
    return pd.DataFrame(data, columns=table_columns)


# --- images ----------------------------------------------------------------------------------------

def session_visit_code(session: str) -> str:
    """The ADNI/AIBL VISCODE of a Clinica session label: ``M000`` -> ``bl``, ``M018`` -> ``m18``."""
    found = re.fullmatch(r"M(\d+)", session)
    if not found:
        return ""
    months = int(found.group(1))
    return "bl" if months == 0 else f"m{months:02d}"


def visit_code_months(visit_code: str) -> int | None:
    """Months since baseline of an ADNI/AIBL visit code (``bl``/``sc`` -> 0, ``m06`` -> 6), the way
    Clinica names sessions (``ses-M006``); None for codes without a month (``uns1``, ``f``)."""
    code = visit_code.strip().lower()
    if code in BASELINE_VISIT_CODES:
        return 0
    found = re.fullmatch(r"m(\d+)", code)
    return int(found.group(1)) if found else None


def bids_relative_name(text: str) -> str:
    """A scans.tsv ``filename`` with the spaces around ``/`` removed: Clinica >= 0.10 writes
    ``anat / <file>`` for AIBL, older versions ``anat/<file>``."""
    return re.sub(r"\s*/\s*", "/", text.strip())


def parse_image_date(text: str) -> date:
    """An image date written ISO (``YYYY-MM-DD``, optionally with ``THH:MM:SS``) or ``MM/DD/YYYY``
    (AIBL's EXAMDATE, copied by Clinica into sessions.tsv). Raises ValueError otherwise."""
    try:
        return datetime.fromisoformat(text).date()
    except ValueError:
        return datetime.strptime(text, "%m/%d/%Y").date()


@dataclass
class ImageDate:
    """Where an image date came from: the date, or why there is none (an exclusion)."""

    value: str | None
    file: str
    row: int | str
    column: str
    reason: str = ""


class ClinicaT1Paths:
    """Scan dates from Clinica's ``conversion_info/v<N>/t1_paths.tsv``, read on first use.

    Clinica numbers its conversion runs ``v0, v1, ...``; the latest run that listed T1 images
    (the highest ``N`` whose folder holds ``t1_paths.tsv``) is the one its BIDS tree reflects.
    """

    def __init__(self, bids: Path, prefix: str):
        """Args:
            bids: the BIDS tree Clinica wrote.
            prefix: the cohort's subject-label prefix: rows are keyed by the label of their PTID.
        """
        self.bids, self.prefix = bids, prefix
        self.path: Path | None = None
        self.rows: dict[tuple[str, int], list[dict]] | None = None

    def _load(self) -> None:
        folder = self.bids / CLINICA_CONVERSION_DIR
        runs = []
        if folder.is_dir():
            for run in folder.iterdir():
                found = re.fullmatch(r"v(\d+)", run.name)
                if found and (run / CLINICA_T1_PATHS_FILE).is_file():
                    runs.append((int(found.group(1)), run / CLINICA_T1_PATHS_FILE))
        self.rows = {}
        if not runs:
            return
        self.path = max(runs)[1]
        names = CLINICA_T1_PATHS_COLUMNS
        table = read_native_csv(self.path, list(names.values()), sep="\t")
        for row in table.to_dict("records"):
            months = visit_code_months(row[names["visit_code"]])
            # A row whose PTID cannot be a label matches no session (the folder names are labels).
            if months is not None and subject_id_problem(row[names["subject"]]) is None:
                label = subject_label(self.prefix, row[names["subject"]])
                self.rows.setdefault((label, months), []).append(row)

    def scan_date(self, subject: str, session: str, scan_id: str, why: str) -> ImageDate:
        """The scan date of the T1 of one session.

        Args:
            subject, session: BIDS labels (``ADNI027S0074``, ``M006``).
            scan_id: scans.tsv ``scan_id`` ('' or ``n/a`` when unknown): picks the row when
                several rows match the subject and visit.
            why: why scans.tsv gave no date (starts the exclusion reason).
        Returns:
            The date, or the exclusion (file, row, column, reason).
        """
        if self.rows is None:
            self._load()
        names = CLINICA_T1_PATHS_COLUMNS
        where = f"{self.bids / CLINICA_CONVERSION_DIR}/v<N>/{CLINICA_T1_PATHS_FILE}"
        if self.path is None:
            return ImageDate(None, where, "", names["scan_date"],
                             f"no image date: {why} and there is no {where} (Clinica's adni-to-bids record)")
        ptid, months = native_id(subject, self.prefix, "adni"), visit_code_months(session_visit_code(session))
        rows = self.rows.get((subject, months), []) if months is not None else []
        if not rows:
            return ImageDate(None, str(self.path), "", names["subject"],
                             f"no image date: {why} and {self.path.name} has no row with {names['subject']} "
                             f"{ptid} and a {names['visit_code']} of session {session}")
        lines = ", ".join(str(r["_line"]) for r in rows)
        known_id = _image_id(scan_id)
        if known_id:
            rows = [r for r in rows if _image_id(r[names["image_id"]]) == known_id]
            if not rows:
                return ImageDate(None, str(self.path), lines, names["image_id"],
                                 f"no image date: {why}, and no row of {self.path.name} for {ptid} at session "
                                 f"{session} (lines {lines}) has {names['image_id']} = scans.tsv scan_id '{scan_id}'")
        dates = {r[names["scan_date"]] for r in rows}
        if len(dates) > 1:
            return ImageDate(None, str(self.path), lines, names["scan_date"],
                             f"no image date: {why}, and lines {lines} of {self.path.name} give {ptid} at session "
                             f"{session} different {names['scan_date']} {sorted(dates)} with no scans.tsv scan_id "
                             f"to choose between them")
        row = rows[0]
        text = row[names["scan_date"]]
        if is_blank(normalise_code(text)):
            return ImageDate(None, str(self.path), row["_line"], names["scan_date"],
                             f"no image date: {why} and {names['scan_date']} is '{text}' in {self.path.name}")
        try:
            return ImageDate(parse_image_date(text).isoformat(), str(self.path), row["_line"], names["scan_date"])
        except ValueError:
            return ImageDate(None, str(self.path), row["_line"], names["scan_date"],
                             f"bad value: scan date '{text}' is not a date (YYYY-MM-DD)")


class ClinicaAiblFolders:
    """Acquisition dates of AIBL T1 images from the LONI folder names in Clinica's
    ``conversion_info/t1_paths.tsv`` (read on first use; empty when the file is absent, e.g. a
    BIDS tree not written by Clinica)."""

    def __init__(self, bids: Path, prefix: str):
        """Args:
            bids: the BIDS tree Clinica wrote.
            prefix: the cohort's subject-label prefix: rows are keyed by the label of their RID.
        """
        self.path = bids / CLINICA_CONVERSION_DIR / CLINICA_T1_PATHS_FILE
        self.prefix = prefix
        self.dates: dict[tuple[str, int], tuple[str, int]] | None = None

    def _load(self) -> None:
        self.dates = {}
        if not self.path.is_file():
            return
        names = CLINICA_AIBL_T1_PATHS_COLUMNS
        table = read_native_csv(self.path, list(names.values()), sep="\t")
        for row in table.to_dict("records"):
            months = visit_code_months(row[names["session"]])
            folder = next((part for part in reversed(Path(row[names["path"]]).parts) if LONI_DATE_FOLDER.fullmatch(part)), None)
            rid = normalise_code(row[names["subject"]])
            if months is not None and folder is not None and subject_id_problem(rid) is None:
                self.dates[(subject_label(self.prefix, rid), months)] = (folder[:10], row["_line"])

    def scan_date(self, subject: str, session: str) -> ImageDate | None:
        """The folder date of the T1 of one session (``AIBL123``, ``M018``), or None if not listed."""
        if self.dates is None:
            self._load()
        months = visit_code_months(session_visit_code(session))
        found = self.dates.get((subject, months)) if months is not None else None
        if found is None:
            return None
        return ImageDate(found[0], str(self.path), found[1], CLINICA_AIBL_T1_PATHS_COLUMNS["path"])


def _image_id(text: str) -> str:
    # LONI writes image ids as 'I12345' in some tables and '12345' in others.
    code = normalise_code(text)
    return "" if is_blank(code) else normalise_code(code.removeprefix("I"))


def _sessions_tsv_date(session_dir: Path, subject: str, session: str, why: str) -> ImageDate:
    """The date of one session in Clinica's ``sub-<id>_sessions.tsv`` (AIBL: the visit's EXAMDATE)."""
    path = session_dir.parent / f"sub-{subject}_sessions.tsv"
    if not path.is_file():
        return ImageDate(None, str(path), "", SESSIONS_DATE_COLUMNS[0], f"no image date: {why} and there is no {path.name}")
    table = read_native_csv(path, ["session_id"], sep="\t", optional=SESSIONS_DATE_COLUMNS, quiet=True)
    present = [c for c in SESSIONS_DATE_COLUMNS if c in table.columns]
    if not present:
        return ImageDate(None, str(path), 1, SESSIONS_DATE_COLUMNS[0],
                         f"no image date: {why} and {path.name} has no date column (expected one of {list(SESSIONS_DATE_COLUMNS)})")
    rows = table[table["session_id"] == f"ses-{session}"]
    if rows.empty:
        return ImageDate(None, str(path), "", "session_id", f"no image date: {why} and {path.name} has no row ses-{session}")
    line, text = int(rows["_line"].iloc[0]), rows[present[0]].iloc[0]
    if is_blank(normalise_code(text)) or normalise_code(text) == "-4":
        return ImageDate(None, str(path), line, present[0], f"no image date: {why} and {present[0]} is '{text}' in {path.name}")
    try:
        return ImageDate(parse_image_date(text).isoformat(), str(path), line, present[0])
    except ValueError:
        return ImageDate(None, str(path), line, present[0],
                         f"bad value: {present[0]} '{text}' is not a date (YYYY-MM-DD or MM/DD/YYYY)")


def _bids_images(bids: Path, cohort: str, fmt: str, prefix: str, exclusions: Exclusions) -> pd.DataFrame:
    """One row per BIDS session with a T1w (columns :data:`IMAGE_COLUMNS`).

    Args:
        bids: the BIDS tree.
        cohort, fmt: the cohort's name and format.
        prefix: the cohort's subject-label prefix (to look labels up in Clinica's records and to
            give an image whose subject no clinical row names its native id).
        exclusions: collects sessions with a bad folder label, extra T1s and undated images.
    Raises:
        IntakeError: when ``bids`` is not a folder.
    """
    if not bids.is_dir():
        raise IntakeError(f"{bids}: not a folder (the BIDS tree of T1w images of a {fmt} cohort, docs/interfaces.md section 1)")
    t1_paths = ClinicaT1Paths(bids, prefix)
    aibl_folders = ClinicaAiblFolders(bids, prefix)
    records, sources = [], {}
    for session_dir in sorted(bids.glob("sub-*/ses-*")):
        if not session_dir.is_dir():
            continue
        subject, session = session_dir.parent.name[4:], session_dir.name[4:]
        t1s = sorted(session_dir.glob("anat/*_T1w.nii*"))
        if not t1s:
            continue
        bad_label = _bids_label_problem(session_dir)
        if bad_label is not None:
            # Later stages name files after the labels: caught here, not as a missing input.
            exclusions.add(subject, session, str(session_dir), "", "path", f"bad BIDS label: {bad_label}")
            continue
        for extra in t1s[1:]:
            exclusions.add(subject, session, str(extra), "", "path",
                           f"duplicate image: more than one T1w in this session; kept {t1s[0].name}")
        found = _scan_date(session_dir, subject, session, fmt, t1s[0].name, t1_paths)
        folder_date = aibl_folders.scan_date(subject, session) if fmt == "aibl" else None
        if folder_date is not None:
            if found.value is not None and found.value != folder_date.value:
                log.info("%s %s: image folder date %s (%s) differs from %s %s (%s); the folder date is used",
                         subject, session, folder_date.value, folder_date.file, found.column, found.value, found.file)
            found = folder_date
        if found.value is None:
            exclusions.add(subject, session, found.file, found.row, found.column, found.reason)
            continue
        kind = f"{found.column} of " + re.sub(r"^sub-.*_(scans|sessions)\.tsv$", r"\1.tsv", Path(found.file).name)
        sources[kind] = sources.get(kind, 0) + 1
        records.append({"cohort": cohort, "subject": subject, "session": session, "source_id": native_id(subject, prefix, fmt),
                        "visit_code": session_visit_code(session), "acq_date": found.value, "path": str(t1s[0])})
    log.info("%s: image dates taken from %s", cohort, sources or "nowhere (no dated image)")
    return pd.DataFrame(records, columns=IMAGE_COLUMNS)


def _bids_label_problem(session_dir: Path) -> str | None:
    """Why the ``sub-<label>/ses-<label>`` folders of a session are not valid BIDS labels, or None."""
    for folder, entity in ((session_dir.parent, "sub"), (session_dir, "ses")):
        label = folder.name[len(entity) + 1:]
        if not BIDS_LABEL.fullmatch(label):
            return (f"folder {folder.name!r} ({folder}): a BIDS {entity}- label has only letters and digits "
                    f"(got {label!r}); rename the folder and the files in it")
    return None


def _scan_date(session_dir: Path, subject: str, session: str, fmt: str, t1_name: str, t1_paths: ClinicaT1Paths) -> ImageDate:
    """The acquisition date of a session's T1: scans.tsv ``acq_time``; when Clinica left it out or
    wrote ``n/a``, ADNI: its t1_paths.tsv ``Scan_Date``, AIBL: the session's sessions.tsv date."""
    scans = session_dir / f"sub-{subject}_ses-{session}_scans.tsv"
    if not scans.exists():
        return ImageDate(None, str(scans), "", "acq_time", "no image date: the session has no scans.tsv")
    table = read_native_csv(scans, ["filename"], sep="\t", optional=["acq_time", "scan_id"], quiet=True)
    relative = f"anat/{t1_name}"
    rows = table[table["filename"].map(bids_relative_name) == relative]
    if rows.empty:
        return ImageDate(None, str(scans), "", "filename", f"no image date: {relative} is not listed in scans.tsv")
    row = rows.iloc[0]
    text = row["acq_time"] if "acq_time" in table.columns else ""
    if not is_blank(normalise_code(text)):
        try:
            return ImageDate(datetime.fromisoformat(text).date().isoformat(), str(scans), int(row["_line"]), "acq_time")
        except ValueError:
            return ImageDate(None, str(scans), int(row["_line"]), "acq_time",
                             f"bad value: acquisition time '{text}' is not a date (YYYY-MM-DDTHH:MM:SS)")
    why = "scans.tsv has no acq_time" if "acq_time" not in table.columns else f"scans.tsv acq_time is '{text}'"
    if fmt == "adni":
        return t1_paths.scan_date(subject, session, row.get("scan_id", ""), why)
    return _sessions_tsv_date(session_dir, subject, session, why)


def _nacc_images(clinical: ClinicalFiles, images_dir: Path, files: dict[str, str], cohort: str, labels: SubjectLabels,
                 exclusions: Exclusions) -> pd.DataFrame:
    path = clinical.find_one(files["nacc_mri"], "nacc_mri")
    if not images_dir.is_dir():
        raise IntakeError(f"{images_dir}: not a folder (the NIfTI images of a nacc cohort, docs/interfaces.md section 1)")
    table = read_native_csv(path, ["NACCID", "MRIYR", "MRIMO", "MRIDY", "NACCMRFI", "MRIT1"])
    records, seen = [], {}
    for row in table.to_dict("records"):
        subject, refused = labels.label(row["NACCID"], path, row["_line"], "NACCID")
        if refused is not None:
            exclusions.add(row["NACCID"], "", str(path), row["_line"], "NACCID", f"bad subject id: {refused}")
            continue
        text = _nacc_date_text(row, ("MRIYR", "MRIMO", "MRIDY"))
        try:
            acq = datetime.strptime(text, "%Y-%m-%d").date()
        except ValueError:
            exclusions.add(subject, "", str(path), row["_line"], "MRIYR/MRIMO/MRIDY", f"bad value: MRI date '{text}' is not a date")
            continue
        session = f"D{acq:%Y%m%d}"
        if normalise_code(row["MRIT1"]) != "1":
            exclusions.add(subject, session, str(path), row["_line"], "MRIT1", f"no image: MRIT1='{row['MRIT1']}' (no T1 in this MRI session)")
            continue
        stem = re.sub(r"\.zip$", "", row["NACCMRFI"])
        image = images_dir / f"{stem}.nii.gz"
        if not stem or not image.exists():
            exclusions.add(subject, session, str(path), row["_line"], "NACCMRFI", f"no image: {image} does not exist")
            continue
        if (subject, session) in seen:
            exclusions.add(subject, session, str(path), row["_line"], "NACCMRFI",
                           f"duplicate image: a second MRI session of this subject on {acq}; kept line {seen[(subject, session)]}")
            continue
        seen[(subject, session)] = row["_line"]
        records.append({"cohort": cohort, "subject": subject, "session": session, "source_id": row["NACCID"],
                        "visit_code": "", "acq_date": acq.isoformat(), "path": str(image)})
    return pd.DataFrame(records, columns=IMAGE_COLUMNS)


# --- the rule's one function -----------------------------------------------------------------------

def read_upstream_exclusions(path: str | Path) -> pd.DataFrame:
    """An exclusions table written by an earlier stage (the convert stage), to carry into intake's.

    Raises:
        IntakeError: when its columns are not exactly ``paths.EXCLUSION_COLUMNS``.
    """
    table = read_text_table(path, "\t", f"an exclusions table with columns {paths.EXCLUSION_COLUMNS}", dtype=str,
                            keep_default_na=False, na_values=[])
    if list(table.columns) != paths.EXCLUSION_COLUMNS:
        raise IntakeError(f"{path}: columns {list(table.columns)}; expected exactly {paths.EXCLUSION_COLUMNS}")
    return table


def intake_cohort(clinical_dir: str, images_dir: str, upstream_exclusions: str | None, columns_path: str, cohort: str,
                  settings: IntakeSettings, images_out: str, visits_out: str, exclusions_out: str,
                  cell_qc_out: str) -> None:
    """Rule ``intake_cohort``: write ``images.tsv``, ``visits.tsv``, ``exclusions.tsv`` and
    ``cell_qc.tsv`` of a cohort.

    Args:
        clinical_dir: the folder of native clinical CSVs (``workflow.convert.intake_folders``).
        images_dir: the BIDS tree (adni, aibl) or NIfTI folder (nacc).
        upstream_exclusions: None, or the convert stage's exclusions TSV: its rows are appended.
        columns_path: the column definitions file.
        cohort: the cohort name.
        settings: how the cohort is read (``workflow.settings.intake_settings``): its native format
            (adni | aibl | nacc), file-name patterns (``config["cohorts"][cohort]["files"]``) and
            subject prefix (None = the format's default, :data:`DEFAULT_SUBJECT_PREFIX`).
        images_out, visits_out, exclusions_out, cell_qc_out: output paths (``paths.INTAKE_*``).
    """
    tables = read_cohort(clinical_dir, images_dir, cohort, columns_path, settings.format, settings.files,
                         settings.subject_prefix)
    exclusions = tables.exclusions
    if upstream_exclusions:
        exclusions = pd.concat([exclusions.astype(str), read_upstream_exclusions(upstream_exclusions)], ignore_index=True)
    outputs = ((tables.images, images_out), (tables.visits, visits_out), (exclusions, exclusions_out),
               (tables.cell_qc, cell_qc_out))
    for frame, out in outputs:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, sep="\t", index=False, na_rep="", float_format="%.10g")
