"""Column definitions of the per-cohort clinical tables (``config/columns.yaml``), as data.

Each cohort keeps its own ordered column list; every column carries the header text that the
header stage embeds. This module loads and checks that file and answers two questions for the
other stages:

* :func:`all_header_texts` -- every header text of every cohort, ordered and unique;
* :func:`cohort_columns` -- one cohort's ordered column definitions.

Raw codes (map keys, missing codes, crosswalk keys) are compared as *normalised strings*
(:func:`normalise_code`), so ``1``, ``"1"`` and ``"1.0"`` are the same code whatever the CSV
reader or the YAML parser made of them.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import yaml

from workflow.smk import REPO_ROOT

FORMATS = ("adni", "aibl", "nacc")
TYPES = ("continuous", "categorical")
TRANSFORMS = ("number", "censored", "sum", "count_equal", "age_from_birth_year")
LABEL_CLASSES = {"CN": 0, "MCI": 1, "DE": 2}
# Native tables a column may name, per format (the native layouts of docs/interfaces.md section 1).
FORMAT_TABLES = {
    "adni": ("ADNIMERGE",),
    "aibl": ("ptdemog", "pdxconv", "mmse", "cdr", "neurobat", "apoeres", "mrimeta"),
    "nacc": ("uds",),
}
# Codes that a format's native tables write for "not available" in any column (ADNI's per-form
# tables: -4 not applicable / missing, -1 not done; AIBL and NACC: -4 not collected). Every column of
# a cohort of that format lists them under `missing`, unless its `range` makes the code a real
# value (ADNIMERGE's RAVLT_learning is a difference: -1 and -4 are scores): a code left out would
# otherwise be read as a number (a CSF value of -4).
FORMAT_MISSING_CODES = {"adni": ("-4", "-1"), "aibl": ("-4",), "nacc": ("-4",)}
# Transforms whose result is the native number itself, so that a `range` can say whether a code is
# a real value (a sum or a count would hide a -4 inside a plausible total).
RANGED_TRANSFORMS = ("number", "censored")
COLUMN_KEYS = {"name", "header", "type", "levels", "table", "source", "transform", "value", "map",
               "missing", "range", "fallback", "static"}
NAME_PATTERN = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


class ColumnsError(ValueError):
    """The column definitions file is malformed (a schema error: the run stops)."""


def normalise_code(value: Any) -> str:
    """A raw cell or code as a comparable string: whitespace stripped, ``"1.0"`` -> ``"1"``.

    Args:
        value: a cell value (str, int, float, bool or None).
    Returns:
        ``""`` for None/NaN/blank; an integer-valued number as its integer digits; else the text.
    """
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    text = str(value).strip()
    try:
        number = float(text)
    except ValueError:
        return text
    if math.isfinite(number) and number == int(number):
        return str(int(number))
    return text


def resolve_columns_path(value: str | Path, repo_root: str | Path = REPO_ROOT) -> Path:
    """Where the column definitions file named in config (``tables.columns``) lives.

    An absolute path is taken as is. A relative path is looked up in the working directory first
    (a user's own file) and then in the repository (the shipped ``config/columns.yaml``).
    """
    path = Path(value)
    if path.is_absolute() or path.exists():
        return path
    return Path(repo_root) / path


def load_columns(path: str | Path) -> dict:
    """Load, check and normalise the column definitions file.

    Args:
        path: the YAML file (see the comment at its top for the format).
    Returns:
        ``{"crosswalks": {name: {code: float}}, "cohorts": {name: spec}}`` where each spec is
        ``{"format", "label", "columns"}`` and every column is normalised as described in
        :func:`cohort_columns`.
    Raises:
        ColumnsError: naming the file, the cohort, the column and the key that is wrong.
    """
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as error:
        raise ColumnsError(f"{path}: cannot read the column definitions (expected UTF-8 YAML): {error}") from None
    if not isinstance(document, dict) or not isinstance(document.get("cohorts"), dict):
        raise ColumnsError(f"{path}: expected a mapping with a 'cohorts' mapping at the top")
    crosswalks = {}
    for name, table in (document.get("crosswalks") or {}).items():
        if not isinstance(table, dict):
            raise ColumnsError(f"{path}: crosswalks.{name}: expected a mapping of score -> score")
        crosswalks[name] = {normalise_code(k): float(v) for k, v in table.items()}
    cohorts = {}
    for cohort, spec in document["cohorts"].items():
        cohorts[str(cohort)] = _check_cohort(path, str(cohort), spec, crosswalks)
    return {"crosswalks": crosswalks, "cohorts": cohorts}


def cohort_spec(path: str | Path, cohort: str) -> dict:
    """One cohort's entry: ``{"format", "label", "columns"}`` (see :func:`load_columns`).

    Raises:
        ColumnsError: when the file has no entry for ``cohort``.
    """
    cohorts = load_columns(path)["cohorts"]
    if cohort not in cohorts:
        raise ColumnsError(
            f"{path}: no entry for cohort '{cohort}' under 'cohorts:' (entries: {', '.join(cohorts)}). "
            f"Add one: copy the entry of a cohort with the same format and rename it."
        )
    return cohorts[cohort]


def cohort_columns(path: str | Path, cohort: str) -> list[dict]:
    """The ordered column definitions of one cohort.

    Args:
        path: the column definitions file (``config/columns.yaml``).
        cohort: the cohort name, as under ``cohorts:`` in config.yaml.
    Returns:
        One dict per column, in table order, with keys ``name``, ``header``, ``type``
        (continuous | categorical), ``levels`` (categorical: ``{level name: integer code}``, else
        None), ``table``, ``source`` (list of native columns), ``transform``, ``value``, ``map``
        (``{normalised raw code: level name}`` or None), ``missing`` (normalised codes),
        ``range`` (``[low, high]`` or None), ``fallback`` (``{source, missing, crosswalk}`` or None)
        and ``static`` (bool).
    """
    return cohort_spec(path, cohort)["columns"]


def all_header_texts(path: str | Path) -> list[str]:
    """Every header text of every cohort in the file, in file order, each once."""
    texts: list[str] = []
    for spec in load_columns(path)["cohorts"].values():
        for column in spec["columns"]:
            if column["header"] not in texts:
                texts.append(column["header"])
    return texts


def _check_cohort(path: Path, cohort: str, spec: Any, crosswalks: dict) -> dict:
    where = f"{path}: cohorts.{cohort}"
    if not isinstance(spec, dict):
        raise ColumnsError(f"{where}: expected a mapping with format, label and columns")
    unknown = set(spec) - {"format", "label", "columns"}
    if unknown:
        raise ColumnsError(f"{where}: unknown keys {sorted(unknown)} (allowed: format, label, columns)")
    fmt = spec.get("format")
    if fmt not in FORMATS:
        raise ColumnsError(f"{where}.format: expected one of {FORMATS}, got {fmt!r}")
    label = _check_label(f"{where}.label", spec.get("label"))
    columns = spec.get("columns")
    if not isinstance(columns, list) or not columns:
        raise ColumnsError(f"{where}.columns: expected a non-empty list of columns")
    checked = [_check_column(f"{where}.columns[{i}]", fmt, column, crosswalks) for i, column in enumerate(columns)]
    names = [column["name"] for column in checked]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ColumnsError(f"{where}.columns: column names must be unique; repeated: {duplicated}")
    return {"format": fmt, "label": label, "columns": checked}


def _check_label(where: str, label: Any) -> dict:
    if not isinstance(label, dict) or "column" not in label or not isinstance(label.get("map"), dict):
        raise ColumnsError(f"{where}: expected {{column, map: {{raw code: CN|MCI|DE}}, table?, missing?}}")
    mapping = {normalise_code(k): str(v) for k, v in label["map"].items()}
    bad = sorted({v for v in mapping.values() if v not in LABEL_CLASSES})
    if bad:
        raise ColumnsError(f"{where}.map: classes must be CN, MCI or DE; got {bad}")
    return {
        "table": label.get("table"),
        "column": str(label["column"]),
        "map": mapping,
        "missing": [normalise_code(v) for v in label.get("missing", [])],
        "transition_strings": bool(label.get("transition_strings", False)),
    }


def _check_column(where: str, fmt: str, column: Any, crosswalks: dict) -> dict:
    if not isinstance(column, dict):
        raise ColumnsError(f"{where}: expected a mapping with name, header, type, source")
    name = column.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ColumnsError(f"{where}: 'name' must be an identifier (letters, digits, _), got {name!r}")
    where = f"{where} ({name})"
    unknown = set(column) - COLUMN_KEYS
    if unknown:
        raise ColumnsError(f"{where}: unknown keys {sorted(unknown)} (allowed: {sorted(COLUMN_KEYS)})")
    header = column.get("header")
    if not isinstance(header, str) or not header.strip():
        raise ColumnsError(f"{where}: 'header' must be a non-empty text")
    kind = column.get("type")
    if kind not in TYPES:
        raise ColumnsError(f"{where}: 'type' must be one of {TYPES}, got {kind!r}")
    levels = _check_levels(where, kind, column.get("levels"))
    table = column.get("table", FORMAT_TABLES[fmt][0] if len(FORMAT_TABLES[fmt]) == 1 else None)
    if table not in FORMAT_TABLES[fmt]:
        raise ColumnsError(f"{where}: 'table' must be one of {FORMAT_TABLES[fmt]} for format {fmt}, got {table!r}")
    source = column.get("source")
    sources = [source] if isinstance(source, str) else source
    if not isinstance(sources, list) or not sources or not all(isinstance(s, str) for s in sources):
        raise ColumnsError(f"{where}: 'source' must be a native column name or a list of them")
    transform = column.get("transform", "number")
    if transform not in TRANSFORMS:
        raise ColumnsError(f"{where}: 'transform' must be one of {TRANSFORMS}, got {transform!r}")
    if transform in ("sum", "count_equal") and len(sources) < 2:
        raise ColumnsError(f"{where}: transform {transform} needs a list of at least two source columns")
    if transform not in ("sum", "count_equal") and len(sources) != 1:
        raise ColumnsError(f"{where}: transform {transform} takes exactly one source column")
    if transform == "count_equal" and "value" not in column:
        raise ColumnsError(f"{where}: transform count_equal needs 'value' (the code to count)")
    mapping = column.get("map")
    if mapping is not None:
        if kind != "categorical" or not isinstance(mapping, dict):
            raise ColumnsError(f"{where}: 'map' (raw code -> level) is for categorical columns only")
        mapping = {normalise_code(k): str(v) for k, v in mapping.items()}
        unknown_levels = sorted(set(mapping.values()) - set(levels))
        if unknown_levels:
            raise ColumnsError(f"{where}: 'map' names levels {unknown_levels} that are not in 'levels' {list(levels)}")
    value_range = column.get("range")
    if value_range is not None and (
        not isinstance(value_range, list) or len(value_range) != 2 or not value_range[0] <= value_range[1]
    ):
        raise ColumnsError(f"{where}: 'range' must be [low, high] with low <= high, got {value_range!r}")
    fallback = column.get("fallback")
    if fallback is not None:
        if not isinstance(fallback, dict) or not isinstance(fallback.get("source"), str):
            raise ColumnsError(f"{where}: 'fallback' must be {{source, missing?, crosswalk?}}")
        crosswalk = fallback.get("crosswalk")
        if crosswalk is not None and crosswalk not in crosswalks:
            raise ColumnsError(f"{where}: fallback crosswalk '{crosswalk}' is not defined under 'crosswalks:'")
        fallback = {
            "source": fallback["source"],
            "missing": [normalise_code(v) for v in fallback.get("missing", [])],
            "crosswalk": crosswalk,
        }
    missing = [normalise_code(v) for v in column.get("missing", [])]
    ranged = [float(value_range[0]), float(value_range[1])] if value_range else None
    _check_missing_codes(where, fmt, kind, transform, missing, ranged, fallback)
    return {
        "name": name,
        "header": header.strip(),
        "type": kind,
        "levels": levels,
        "table": table,
        "source": sources,
        "transform": transform,
        "value": normalise_code(column["value"]) if "value" in column else None,
        "map": mapping,
        "missing": missing,
        "range": ranged,
        "fallback": fallback,
        "static": bool(column.get("static", False)),
    }


def _check_missing_codes(where: str, fmt: str, kind: str, transform: str, missing: list[str],
                         value_range: list[float] | None, fallback: dict | None) -> None:
    """Every missing code of the format is listed, or is a real value by the column's range.

    Args:
        where: the column's place in the file (for messages).
        fmt: the cohort's format (picks :data:`FORMAT_MISSING_CODES`).
        kind, transform: the column's type and transform.
        missing: its normalised missing codes.
        value_range: its ``[low, high]`` or None.
        fallback: its normalised fallback or None.
    Raises:
        ColumnsError: a format code neither listed nor inside the range, or a listed code inside
            the range (it would hide real values).
    """
    inside = kind == "continuous" and transform in RANGED_TRANSFORMS and value_range is not None
    for code in missing:
        value = _as_number(code)
        if inside and value is not None and value_range[0] <= value <= value_range[1]:
            raise ColumnsError(f"{where}: missing code {code} lies inside 'range' {value_range}, so it would hide "
                               f"real values; drop it from 'missing' or narrow the range")
    absent = [code for code in FORMAT_MISSING_CODES[fmt]
              if code not in missing and not (inside and value_range[0] <= float(code) <= value_range[1])]
    if absent:
        raise ColumnsError(
            f"{where}: 'missing' lacks {', '.join(absent)}: {fmt} tables write {', '.join(FORMAT_MISSING_CODES[fmt])} "
            f"for a missing value, which would otherwise be read as a number. Add them to 'missing' (with the "
            f"column's own codes, e.g. NACC 88, 95-98), or, where one is a real value of this column, give a "
            f"'range' that includes it")
    if fallback is not None:
        absent = [code for code in FORMAT_MISSING_CODES[fmt] if code not in fallback["missing"]]
        if absent:
            raise ColumnsError(f"{where}: fallback 'missing' lacks {absent}, code(s) that {fmt} tables write for a "
                               f"missing value; add them")


def _as_number(code: str) -> float | None:
    try:
        return float(code)
    except ValueError:
        return None


def _check_levels(where: str, kind: str, levels: Any) -> dict[str, int] | None:
    if kind == "continuous":
        if levels is not None:
            raise ColumnsError(f"{where}: 'levels' is for categorical columns only")
        return None
    if isinstance(levels, list) and levels:
        return {normalise_code(level): code for code, level in enumerate(levels)}
    if isinstance(levels, dict) and levels and all(isinstance(code, int) for code in levels.values()):
        codes = list(levels.values())
        if len(set(codes)) != len(codes):
            raise ColumnsError(f"{where}: 'levels' codes must be distinct integers, got {codes}")
        return {normalise_code(level): code for level, code in levels.items()}
    raise ColumnsError(f"{where}: a categorical column needs 'levels' (a list, or a mapping level -> integer code)")
