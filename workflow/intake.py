"""Cohort intake: read a cohort's native files into one images table and one visits table.

Three native formats are read (docs/interfaces.md section 1): ``adni`` (ADNIMERGE + BIDS),
``aibl`` (the ``aibl_<table>_<date>.csv`` set + BIDS) and ``nacc`` (UDS visit table + MRI table +
NIfTI folder). Which native columns become which table columns is data, not code: the cohort's
entry in the column definitions file (:mod:`workflow.columns`).

Error policy (docs/interfaces.md section 2):

* schema errors stop the run with :class:`IntakeError` naming the file and column: a native
  table or a required column is missing, a glob matches several files;
* data errors exclude the visit or image and go on, with a reason naming file, row (the line in
  the file, header = line 1), subject, visit and column: a value that is not a number, an unknown
  categorical code, a value outside its range, an unparseable date, the same subject and visit
  twice with different values, a visit without a usable label, an image without a date or file.
"""

from __future__ import annotations

import logging
import math
import re
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

import pandas as pd

from workflow import paths
from workflow.columns import LABEL_CLASSES, cohort_spec, load_columns, normalise_code

log = logging.getLogger(__name__)

IMAGE_COLUMNS = ["cohort", "subject", "session", "source_id", "visit_code", "acq_date", "path"]
VISIT_KEY_COLUMNS = ["cohort", "subject", "source_id", "visit_code", "visit_date", "label", "label_raw"]
# Where each visit came from, so that later stages can name the file and line of a problem.
VISIT_ORIGIN_COLUMNS = ["source_file", "source_row"]

# Native files per format, as globs under the cohort root (docs/interfaces.md section 1).
ADNI_TABLE_GLOB = "clinical/ADNIMERGE*.csv"
AIBL_TABLE_GLOB = "clinical/aibl_{table}_*.csv"
NACC_UDS_GLOB = "clinical/investigator_nacc*.csv"
NACC_MRI_GLOB = "clinical/investigator_mri_nacc*.csv"
# AIBL tables that describe the participant rather than a visit: joined to every visit by RID.
AIBL_SUBJECT_TABLES = ("ptdemog", "apoeres")
# The visit date of an AIBL visit: the first table (in this order) that has one.
AIBL_DATE_TABLES = ("neurobat", "mmse", "cdr")


class IntakeError(ValueError):
    """A cohort's files do not have the expected layout (a schema error: the run stops)."""


@dataclass
class Exclusions:
    """Rows left out by a stage, with the reason (columns ``workflow.paths.EXCLUSION_COLUMNS``)."""

    stage: str
    cohort: str
    rows: list[dict] = field(default_factory=list)

    def add(self, subject: str, session: str, file: str, row: int | str, column: str, reason: str) -> None:
        self.rows.append({
            "stage": self.stage, "cohort": self.cohort, "subject": subject, "session": session,
            "file": str(file), "row": row, "column": column, "reason": reason,
        })

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(self.rows, columns=paths.EXCLUSION_COLUMNS)


# --- where a cohort's files are ------------------------------------------------------------------

def cohort_root(config: dict, cohort: str) -> str:
    """The folder holding a cohort's native files.

    Args:
        config: the workflow config (``config["cohorts"][cohort]`` has ``source`` and ``root``).
        cohort: the cohort name.
    Returns:
        ``results/synthetic/<cohort>`` for a synthetic cohort, else ``cohorts.<cohort>.root``.
    """
    settings = config["cohorts"][cohort]
    if settings["source"] == "synthetic":
        return paths.SYNTHETIC_ROOT.format(cohort=cohort)
    return settings["root"]


def find_one(root: Path, pattern: str) -> Path:
    """The single file under ``root`` matching ``pattern``; IntakeError if none or several."""
    matches = sorted(root.glob(pattern))
    if not matches:
        raise IntakeError(f"{root}: no file matches '{pattern}' (see docs/interfaces.md section 1)")
    if len(matches) > 1:
        raise IntakeError(
            f"{root}: several files match '{pattern}': {', '.join(m.name for m in matches)}; keep one "
            f"(for example the latest release) so that the choice is explicit"
        )
    return matches[0]


def read_native_csv(path: Path, required: list[str], sep: str = ",") -> pd.DataFrame:
    """A native CSV (or TSV with ``sep="\t"``) as text cells ('' when blank) plus ``_line``
    (the line in the file, header = 1).

    Raises:
        IntakeError: naming the file and every required column it lacks.
    """
    table = pd.read_csv(path, sep=sep, dtype=str, keep_default_na=False, na_values=[])
    table.columns = [str(c).strip() for c in table.columns]
    absent = [column for column in dict.fromkeys(required) if column not in table.columns]
    if absent:
        raise IntakeError(f"{path}: required column(s) {absent} not found (columns present: {list(table.columns)})")
    table = table.apply(lambda column: column.str.strip())
    table["_line"] = range(2, len(table) + 2)
    return table


# --- one cell: native text -> harmonised number ----------------------------------------------------

class CellError(ValueError):
    """A data error in one cell; the message says what was expected."""

    def __init__(self, column: str, message: str):
        super().__init__(message)
        self.column = column


def parse_number(column: str, text: str, missing: list[str], censored: bool = False) -> float:
    """Native text to a float; NaN when blank or a missing code.

    Args:
        column: native column name (for the error).
        text: the cell.
        missing: normalised missing codes.
        censored: accept limit strings such as ``<200`` or ``>1700`` (taken at the limit).
    Raises:
        CellError: when the cell is not a number.
    """
    code = normalise_code(text)
    if code == "" or code in missing:
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
    if code == "" or code in missing:
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
        if any(code == "" or code in missing for code in codes):
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
    if code == "" or code in column["missing"]:
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
    if code == "" or code in label_spec["missing"]:
        return "", f"no label: {label_spec['column']} is empty or a missing code ('{text}')"
    if label_spec["transition_strings"] and " to " in code:
        code = code.rsplit(" to ", 1)[1].strip()
    label = label_spec["map"].get(code)
    if label is None:
        return "", f"no label: {label_spec['column']}='{text}' maps to no class (map: {label_spec['map']})"
    return label, None


# --- visits: native clinical rows -> harmonised visits --------------------------------------------

def parse_date(text: str, fmt: str) -> date | None:
    """A date cell; None when blank. Raises ValueError when present but not in ``fmt``."""
    if text == "" or normalise_code(text) == "-4":
        return None
    return datetime.strptime(text, fmt).date()


def subject_label(fmt: str, source_id: str) -> str:
    """The BIDS participant label (without ``sub-``) of a native id (see workflow/paths.py)."""
    if fmt == "adni":
        return "ADNI" + re.sub(r"[^A-Za-z0-9]", "", source_id)
    if fmt == "aibl":
        return "AIBL" + re.sub(r"[^A-Za-z0-9]", "", source_id)
    return re.sub(r"[^A-Za-z0-9]", "", source_id)


def read_cohort(root: str | Path, cohort: str, columns_path: str | Path, fmt: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Read one cohort's native files.

    Args:
        root: the cohort root (:func:`cohort_root`).
        cohort: the cohort name (an entry of the column definitions file).
        columns_path: the column definitions file.
        fmt: the cohort's format in config; must equal the format in the column definitions.
    Returns:
        ``(images, visits, exclusions)`` as described in docs/interfaces.md section 2.
    Raises:
        IntakeError: on schema errors (see the module docstring).
    """
    root = Path(root)
    spec = cohort_spec(columns_path, cohort)
    if spec["format"] != fmt:
        raise IntakeError(
            f"{columns_path}: cohorts.{cohort}.format is '{spec['format']}' but config cohorts.{cohort}.format is '{fmt}'"
        )
    crosswalks = load_columns(columns_path)["crosswalks"]
    exclusions = Exclusions("intake", cohort)
    reader = {"adni": _adni_visit_rows, "aibl": _aibl_visit_rows, "nacc": _nacc_visit_rows}[fmt]
    rows = reader(root, spec)
    visits = _harmonise_visits(rows, cohort, fmt, spec, crosswalks, exclusions)
    if fmt == "nacc":
        images = _nacc_images(root, cohort, exclusions)
    else:
        images = _bids_images(root, cohort, fmt, exclusions)
    source_ids = dict(zip(visits["subject"], visits["source_id"]))
    images["source_id"] = [source_ids.get(s, native) for s, native in zip(images["subject"], images["source_id"])]
    log.info("%s: %d visits (%d labelled), %d images, %d exclusions", cohort, len(visits),
             int((visits["label"] != "").sum()), len(images), len(exclusions.rows))
    return images[IMAGE_COLUMNS], visits, exclusions.frame()


@dataclass
class NativeVisit:
    """One visit as read from the native files, before harmonisation."""

    source_id: str
    visit_code: str
    date_text: str
    date_format: str
    cells: dict[str, str]
    # native column -> (file, line) where its cell came from, for error messages
    origin: dict[str, tuple[str, int]]
    file: str
    line: int


def _needed_columns(spec: dict, table: str) -> list[str]:
    needed = []
    for column in spec["columns"]:
        if column["table"] == table:
            needed += column["source"]
            if column["fallback"] is not None:
                needed.append(column["fallback"]["source"])
    if spec["label"].get("table", table) in (None, table):
        needed.append(spec["label"]["column"])
    return needed


def _drop_duplicate_keys(table: pd.DataFrame, keys: list[str], compare: list[str], file: Path, fmt: str,
                         key_names: tuple[str, str], bad: dict) -> pd.DataFrame:
    """Keep one row per key; rows that repeat a key with different values are marked bad.

    ``bad`` collects ``(source_id, visit_code) -> (file, line, column, reason)`` for the caller.
    Identical repeats are dropped with a log line (they carry no extra information).
    """
    compare = [c for c in dict.fromkeys(compare) if c in table.columns]
    keep = []
    for key, group in table.groupby(keys, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        if len(group) == 1:
            keep.append(group.index[0])
            continue
        differing = [c for c in compare if group[c].nunique() > 1]
        lines = ", ".join(str(x) for x in group["_line"])
        if not differing:
            log.info("%s: rows %s repeat %s=%s with identical values; kept the first", file, lines, key_names, key)
            keep.append(group.index[0])
            continue
        visit = key[1] if len(key) > 1 else ""
        bad[(key[0], visit)] = (str(file), int(group["_line"].iloc[0]), differing[0],
                                f"duplicate conflicting rows: lines {lines} of {file.name} have the same "
                                f"{key_names[0]} and {key_names[1]} but different {differing}")
        keep.append(group.index[0])
    return table.loc[keep]


def _merge_participant_rows(table: pd.DataFrame, compare: list[str], file: Path, bad: dict) -> pd.DataFrame:
    """One row per RID from a participant-level table; conflicting rows mark the RID bad."""
    compare = list(dict.fromkeys(compare))
    merged = []
    for rid, group in table.groupby("RID", sort=False):
        row = group.iloc[0].to_dict()
        for column in compare:
            present = [v for v in group[column] if normalise_code(v) not in ("", "-4")]
            if len(set(map(normalise_code, present))) > 1:
                lines = ", ".join(str(x) for x in group["_line"])
                bad[(rid, "")] = (str(file), int(group["_line"].iloc[0]), column,
                                  f"duplicate conflicting rows: lines {lines} of {file.name} give RID {rid} "
                                  f"different {column} values {present}")
            row[column] = present[0] if present else row[column]
        merged.append(row)
    return pd.DataFrame(merged, columns=table.columns)


def _adni_visit_rows(root: Path, spec: dict) -> tuple[list[NativeVisit], dict]:
    path = find_one(root, ADNI_TABLE_GLOB)
    needed = ["PTID", "VISCODE", "EXAMDATE"] + _needed_columns(spec, "ADNIMERGE")
    table = read_native_csv(path, needed)
    bad: dict = {}
    table = _drop_duplicate_keys(table, ["PTID", "VISCODE"], needed, path, "adni", ("PTID", "VISCODE"), bad)
    visits = []
    for row in table.to_dict("records"):
        cells = {c: row[c] for c in needed}
        visits.append(NativeVisit(row["PTID"], row["VISCODE"], row["EXAMDATE"], "%Y-%m-%d", cells,
                                  {c: (str(path), row["_line"]) for c in needed}, str(path), row["_line"]))
    return visits, bad


def _aibl_visit_rows(root: Path, spec: dict) -> tuple[list[NativeVisit], dict]:
    tables, files = {}, {}
    bad: dict = {}
    label_table = spec["label"]["table"] or "pdxconv"
    used = {column["table"] for column in spec["columns"]} | {label_table} | set(AIBL_DATE_TABLES)
    for name in sorted(used):
        path = find_one(root, AIBL_TABLE_GLOB.format(table=name))
        needed = ["RID", "VISCODE"] + _needed_columns(spec, name)
        if name == label_table:
            needed.append(spec["label"]["column"])
        if name in AIBL_DATE_TABLES:
            needed.append("EXAMDATE")
        table = read_native_csv(path, needed)
        if name in AIBL_SUBJECT_TABLES:
            # Participant facts: rows of one RID are merged (blank cells filled from the other
            # rows); two different values are a conflict for every visit of the subject.
            table = _merge_participant_rows(table, needed[2:], path, bad)
        else:
            table = _drop_duplicate_keys(table, ["RID", "VISCODE"], needed[2:], path, "aibl", ("RID", "VISCODE"), bad)
        tables[name], files[name] = table, path
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
    visits = []
    for rid, viscode in keys:
        cells: dict[str, str] = {}
        origin: dict[str, tuple[str, int]] = {}
        for name in tables:
            row = by_subject[name].get(rid) if name in AIBL_SUBJECT_TABLES else by_visit[name].get((rid, viscode))
            for column in tables[name].columns:
                if column in ("RID", "VISCODE", "SITEID", "EXAMDATE", "_line") or row is None:
                    continue
                cells.setdefault(column, row[column])
                origin.setdefault(column, (str(files[name]), row["_line"]))
        # Columns of tables that have no row for this visit are blank (missing), not absent.
        for name, table in tables.items():
            for column in table.columns:
                if column not in ("RID", "VISCODE", "SITEID", "EXAMDATE", "_line"):
                    cells.setdefault(column, "")
                    origin.setdefault(column, (str(files[name]), 0))
        date_text, file, line = "", str(files[label_table]), 0
        for name in AIBL_DATE_TABLES:
            row = by_visit[name].get((rid, viscode))
            if row is not None and normalise_code(row["EXAMDATE"]) not in ("", "-4"):
                date_text, file, line = row["EXAMDATE"], str(files[name]), row["_line"]
                break
        label_row = by_visit[label_table].get((rid, viscode))
        if label_row is not None:
            file, line = str(files[label_table]), label_row["_line"]
        visits.append(NativeVisit(rid, viscode, date_text, "%m/%d/%Y", cells, origin, file, line))
    # A conflict in a participant table concerns every visit of that RID.
    for (rid, _), reason in list(bad.items()):
        if _ == "":
            for key in keys:
                if key[0] == rid:
                    bad[key] = reason
    return visits, bad


def _nacc_visit_rows(root: Path, spec: dict) -> tuple[list[NativeVisit], dict]:
    path = find_one(root, NACC_UDS_GLOB)
    needed = ["NACCID", "NACCVNUM", "VISITYR", "VISITMO", "VISITDAY"] + _needed_columns(spec, "uds")
    table = read_native_csv(path, needed)
    bad: dict = {}
    table = _drop_duplicate_keys(table, ["NACCID", "NACCVNUM"], needed, path, "nacc", ("NACCID", "NACCVNUM"), bad)
    visits = []
    for row in table.to_dict("records"):
        cells = {c: row[c] for c in needed}
        date_text = "-".join(normalise_code(row[c]) for c in ("VISITYR", "VISITMO", "VISITDAY"))
        visits.append(NativeVisit(row["NACCID"], normalise_code(row["NACCVNUM"]), date_text, "%Y-%m-%d", cells,
                                  {c: (str(path), row["_line"]) for c in needed}, str(path), row["_line"]))
    return visits, bad


def _harmonise_visits(rows: tuple[list[NativeVisit], dict], cohort: str, fmt: str, spec: dict, crosswalks: dict,
                      exclusions: Exclusions) -> pd.DataFrame:
    native_visits, bad = rows
    records = []
    for visit in native_visits:
        subject = subject_label(fmt, visit.source_id)
        if (visit.source_id, visit.visit_code) in bad:
            file, line, column, reason = bad[(visit.source_id, visit.visit_code)]
            exclusions.add(subject, visit.visit_code, file, line, column, reason)
            continue
        try:
            visit_date = parse_date(visit.date_text, visit.date_format) if visit.date_text.strip("-") else None
        except ValueError:
            exclusions.add(subject, visit.visit_code, visit.file, visit.line, "EXAMDATE" if fmt != "nacc" else "VISITYR/VISITMO/VISITDAY",
                           f"bad value: visit date '{visit.date_text}' is not a date ({visit.date_format})")
            continue
        record = {"cohort": cohort, "subject": subject, "source_id": visit.source_id, "visit_code": visit.visit_code,
                  "visit_date": visit_date.isoformat() if visit_date else ""}
        label_text = visit.cells.get(spec["label"]["column"], "")
        record["label"], why = map_label(spec["label"], label_text)
        record["label_raw"] = label_text
        record["source_file"], record["source_row"] = visit.file, visit.line
        try:
            for column in spec["columns"]:
                record[column["name"]] = harmonise(column, visit.cells, visit_date, crosswalks)
        except CellError as error:
            file, line = visit.origin.get(error.column, (visit.file, visit.line))
            exclusions.add(subject, visit.visit_code, file, line, error.column, f"bad value: {error}")
            continue
        if why is not None:
            exclusions.add(subject, visit.visit_code, visit.file, visit.line, spec["label"]["column"], why)
        records.append(record)
    names = [column["name"] for column in spec["columns"]]
    return pd.DataFrame(records, columns=VISIT_KEY_COLUMNS + VISIT_ORIGIN_COLUMNS + names)


# --- images ----------------------------------------------------------------------------------------

def session_visit_code(session: str) -> str:
    """The ADNI/AIBL VISCODE of a Clinica session label: ``M000`` -> ``bl``, ``M018`` -> ``m18``."""
    found = re.fullmatch(r"M(\d+)", session)
    if not found:
        return ""
    months = int(found.group(1))
    return "bl" if months == 0 else f"m{months:02d}"


def adni_ptid(subject: str) -> str:
    """The ADNI PTID of a BIDS participant label: ``ADNI027S0074`` -> ``027_S_0074``."""
    found = re.fullmatch(r"ADNI(\d{3})S(\d{4})", subject)
    return f"{found.group(1)}_S_{found.group(2)}" if found else subject


def _bids_images(root: Path, cohort: str, fmt: str, exclusions: Exclusions) -> pd.DataFrame:
    bids = root / "bids"
    if not bids.is_dir():
        raise IntakeError(f"{root}: no 'bids' folder (the T1w images of a {fmt} cohort, docs/interfaces.md section 1)")
    records = []
    for session_dir in sorted(bids.glob("sub-*/ses-*")):
        subject, session = session_dir.parent.name[4:], session_dir.name[4:]
        t1s = sorted(session_dir.glob("anat/*_T1w.nii*"))
        if not t1s:
            continue
        for extra in t1s[1:]:
            exclusions.add(subject, session, str(extra), "", "path",
                           f"duplicate image: more than one T1w in this session; kept {t1s[0].name}")
        scans = session_dir / f"sub-{subject}_ses-{session}_scans.tsv"
        relative = f"anat/{t1s[0].name}"
        acq_date = _scan_date(scans, relative, subject, session, exclusions)
        if acq_date is None:
            continue
        source_id = adni_ptid(subject) if fmt == "adni" else re.sub(r"^AIBL", "", subject)
        records.append({"cohort": cohort, "subject": subject, "session": session, "source_id": source_id,
                        "visit_code": session_visit_code(session), "acq_date": acq_date, "path": str(t1s[0])})
    return pd.DataFrame(records, columns=IMAGE_COLUMNS)


def _scan_date(scans: Path, relative: str, subject: str, session: str, exclusions: Exclusions) -> str | None:
    if not scans.exists():
        exclusions.add(subject, session, str(scans), "", "acq_time", "no image date: the session has no scans.tsv")
        return None
    table = read_native_csv(scans, ["filename", "acq_time"], sep="\t") if scans.stat().st_size else None
    if table is None:
        raise IntakeError(f"{scans}: empty file; expected columns filename, acq_time")
    rows = table[table["filename"] == relative]
    if rows.empty:
        exclusions.add(subject, session, str(scans), "", "filename", f"no image date: {relative} is not listed in scans.tsv")
        return None
    text = rows["acq_time"].iloc[0]
    try:
        return datetime.fromisoformat(text).date().isoformat()
    except ValueError:
        exclusions.add(subject, session, str(scans), int(rows["_line"].iloc[0]), "acq_time",
                       f"bad value: acquisition time '{text}' is not a date (YYYY-MM-DDTHH:MM:SS)")
        return None


def _nacc_images(root: Path, cohort: str, exclusions: Exclusions) -> pd.DataFrame:
    path = find_one(root, NACC_MRI_GLOB)
    table = read_native_csv(path, ["NACCID", "MRIYR", "MRIMO", "MRIDY", "NACCMRFI", "MRIT1"])
    records, seen = [], {}
    for row in table.to_dict("records"):
        subject = subject_label("nacc", row["NACCID"])
        text = "-".join(normalise_code(row[c]) for c in ("MRIYR", "MRIMO", "MRIDY"))
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
        image = root / "images" / f"{stem}.nii.gz"
        if not image.exists():
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

def intake_cohort(root: str, columns_path: str, cohort: str, fmt: str, images_out: str, visits_out: str,
                  exclusions_out: str) -> None:
    """Rule ``intake_cohort``: write ``images.tsv``, ``visits.tsv`` and ``exclusions.tsv`` of a cohort.

    Args:
        root: the cohort root folder.
        columns_path: the column definitions file.
        cohort: the cohort name.
        fmt: the cohort's native format (adni | aibl | nacc).
        images_out, visits_out, exclusions_out: output paths (``paths.INTAKE_*``).
    """
    images, visits, exclusions = read_cohort(root, cohort, columns_path, fmt)
    for frame, out in ((images, images_out), (visits, visits_out), (exclusions, exclusions_out)):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        frame.to_csv(out, sep="\t", index=False, na_rep="", float_format="%.10g")
