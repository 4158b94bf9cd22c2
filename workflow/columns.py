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

import functools
import math
from pathlib import Path
from typing import Any

import yaml

from workflow.smk import REPO_ROOT

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
# The file's shape (keys, types, allowed values); the checks here cover what spans keys or cohorts.
SCHEMA = Path(__file__).parent / "schemas" / "columns.schema.yaml"


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
    _check_shape(path, document)
    crosswalks = {name: {normalise_code(k): float(v) for k, v in table.items()}
                  for name, table in (document.get("crosswalks") or {}).items()}
    cohorts = {str(cohort): _check_cohort(path, str(cohort), spec, crosswalks)
               for cohort, spec in document["cohorts"].items()}
    return {"crosswalks": crosswalks, "cohorts": cohorts}


@functools.cache
def _schema_validator():
    """The validator of :data:`SCHEMA`, built once per process (the file is loaded many times)."""
    import jsonschema

    return jsonschema.Draft202012Validator(yaml.safe_load(SCHEMA.read_text()))


def _check_shape(path: Path, document: Any) -> None:
    """The file against :data:`SCHEMA`; the first error names its place, e.g.
    ``cohorts.ADNI.columns[3] (mmse).type``, what was found and what is expected."""
    import jsonschema

    error = jsonschema.exceptions.best_match(_schema_validator().iter_errors(document))
    if error is None:
        return
    parts = list(error.absolute_path)
    where = ""
    for position, part in enumerate(parts):
        where += f"[{part}]" if isinstance(part, int) else f".{part}" if where else str(part)
        if position and parts[position - 1] == "columns" and isinstance(part, int):
            column = document["cohorts"][parts[1]]["columns"][part]
            where += f" ({column.get('name')})" if isinstance(column, dict) else ""
    expected = error.schema.get("description", "") if isinstance(error.schema, dict) else ""
    raise ColumnsError(f"{path}: {where or 'top level'}: {error.message}" + (f" (expected: {expected.strip()})" if expected else ""))


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


def _check_cohort(path: Path, cohort: str, spec: dict, crosswalks: dict) -> dict:
    where = f"{path}: cohorts.{cohort}"
    fmt = spec["format"]
    checked = [_check_column(f"{where}.columns[{i}]", fmt, column, crosswalks) for i, column in enumerate(spec["columns"])]
    names = [column["name"] for column in checked]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ColumnsError(f"{where}.columns: column names must be unique; repeated: {duplicated}")
    return {"format": fmt, "label": _label(spec["label"]), "columns": checked}


def _label(label: dict) -> dict:
    return {
        "table": label.get("table"),
        "column": str(label["column"]),
        "map": {normalise_code(k): str(v) for k, v in label["map"].items()},
        "missing": [normalise_code(v) for v in label.get("missing", [])],
        "transition_strings": bool(label.get("transition_strings", False)),
    }


def _check_column(where: str, fmt: str, column: dict, crosswalks: dict) -> dict:
    """One column of the schema-checked file, normalised, after the checks that span its keys."""
    name, kind = column["name"], column["type"]
    where = f"{where} ({name})"
    levels = _levels(where, kind, column.get("levels"))
    table = column.get("table", FORMAT_TABLES[fmt][0] if len(FORMAT_TABLES[fmt]) == 1 else None)
    if table not in FORMAT_TABLES[fmt]:
        raise ColumnsError(f"{where}: 'table' must be one of {FORMAT_TABLES[fmt]} for format {fmt}, got {table!r}")
    source = column["source"]
    sources = [source] if isinstance(source, str) else source
    transform = column.get("transform", "number")
    if transform in ("sum", "count_equal") and len(sources) < 2:
        raise ColumnsError(f"{where}: transform {transform} needs a list of at least two source columns")
    if transform not in ("sum", "count_equal") and len(sources) != 1:
        raise ColumnsError(f"{where}: transform {transform} takes exactly one source column")
    mapping = column.get("map")
    if mapping is not None:
        if kind != "categorical":
            raise ColumnsError(f"{where}: 'map' (raw code -> level) is for categorical columns only")
        mapping = {normalise_code(k): str(v) for k, v in mapping.items()}
        unknown_levels = sorted(set(mapping.values()) - set(levels))
        if unknown_levels:
            raise ColumnsError(f"{where}: 'map' names levels {unknown_levels} that are not in 'levels' {list(levels)}")
    value_range = column.get("range")
    if value_range is not None and not value_range[0] <= value_range[1]:
        raise ColumnsError(f"{where}: 'range' must be [low, high] with low <= high, got {value_range!r}")
    fallback = column.get("fallback")
    if fallback is not None:
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
        "header": column["header"].strip(),
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


def _levels(where: str, kind: str, levels: list | dict | None) -> dict[str, int] | None:
    """``{normalised level: integer code}`` of a categorical column (the schema made sure it has
    levels), ``None`` for a continuous one."""
    if kind == "continuous":
        if levels is not None:
            raise ColumnsError(f"{where}: 'levels' is for categorical columns only")
        return None
    if isinstance(levels, list):
        return {normalise_code(level): code for code, level in enumerate(levels)}
    codes = list(levels.values())
    if len(set(codes)) != len(codes):
        raise ColumnsError(f"{where}: 'levels' codes must be distinct integers, got {codes}")
    return {normalise_code(level): code for level, code in levels.items()}
