"""A cohort's rows for training and evaluation, read from the tables stage's files.

``table.tsv`` and ``columns.yaml`` of a cohort (docs/interfaces.md section 4) become the plain arrays
of :class:`model.data.CohortRows`, with every inconsistency between the table, the column list, the
header bank and the model-ready volumes reported by file, row and column.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from model.data import CohortRows, DataError
from workflow.tables import MISSING_PREFIX, SPLITS

# The columns that name a row (the same subject may have rows in several cohorts' tables).
ROW_KEY = ["cohort", "subject", "session"]


def read_columns(columns_path: str | Path) -> list[dict]:
    """The column list of ``columns.yaml`` (``columns: [{name, header, ...}]``), checked."""
    with open(columns_path) as stream:
        document = yaml.safe_load(stream)
    columns = document.get("columns") if isinstance(document, dict) else None
    if not columns:
        raise DataError(f"{columns_path}: expected a top-level 'columns:' list of {{name, header}} entries")
    for position, column in enumerate(columns):
        if not isinstance(column, dict) or "name" not in column or "header" not in column:
            raise DataError(f"{columns_path}: columns[{position}] needs 'name' and 'header', got {column!r}")
    return columns


def load_cohort_rows(
    cohort: str,
    table_path: str | Path,
    columns_path: str | Path,
    header_ids: dict[str, int],
    split: str,
    check_volumes: bool = True,
) -> CohortRows:
    """Read one cohort's rows of ``split`` from its table.

    Args:
        cohort: the cohort's name (must match the table's ``cohort`` column).
        table_path: the cohort's ``table.tsv``.
        columns_path: the cohort's ``columns.yaml``.
        header_ids: header text -> row of the header bank.
        split: ``train``, ``val`` or ``test``.
        check_volumes: fail when a row's volume file does not exist.

    Raises:
        DataError naming the file, row and column: a missing column, a header absent from the header
        bank, a bad label, or a row whose volume is missing (the table and the preprocessed volumes
        then disagree on subjects).
    """
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    columns = read_columns(columns_path)
    table = pd.read_csv(table_path, sep="\t", dtype={"subject": str, "session": str}, keep_default_na=True)
    names = [column["name"] for column in columns]
    required = [*ROW_KEY, "volume", "split", "label", *names]
    absent = [name for name in required if name not in table.columns]
    if absent:
        raise DataError(f"{table_path}: missing column(s) {absent} (expected by {columns_path} and docs/interfaces.md 4)")
    unknown_headers = [column["header"] for column in columns if column["header"] not in header_ids]
    if unknown_headers:
        raise DataError(
            f"{columns_path}: header text(s) {unknown_headers} of cohort {cohort} are not in the header bank; "
            "rebuild the header bank (rule embed_headers) from the current columns"
        )
    wrong_cohort = table.index[table["cohort"].astype(str) != cohort]
    if len(wrong_cohort):
        row = int(wrong_cohort[0])
        raise DataError(f"{table_path} row {row + 2}, column cohort: {table.at[row, 'cohort']!r}, expected {cohort!r}")
    rows = table[table["split"] == split].reset_index(drop=True)
    labels = pd.to_numeric(rows["label"], errors="coerce")
    bad_label = rows.index[labels.isna() | (labels < 0) | (labels != labels.round())]
    if len(bad_label):
        row = int(bad_label[0])
        raise DataError(f"{table_path} ({split} row {row}, subject {rows.at[row, 'subject']}), column label: "
                        f"{rows.at[row, 'label']!r} is not a class index")
    values = rows[names].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=np.float32)
    missing = _missing_cells(rows, names, values, table_path)
    # The model sees 0 in a missing cell (docs/model.md 1.2: missing -> 0 after standardisation).
    values = np.where(missing, 0.0, np.nan_to_num(values, nan=0.0)).astype(np.float32)
    volumes = [str(path) for path in rows["volume"].fillna("")]
    if check_volumes:
        absent_volumes = [
            f"{subject}/{session} -> '{volume}'"
            for subject, session, volume in zip(rows["subject"], rows["session"], volumes)
            if not volume or not Path(volume).is_file()
        ]
        # A volume named for another subject or session means the table rows and the volumes are misaligned.
        mismatched = [
            f"{subject}/{session} -> '{volume}'"
            for subject, session, volume in zip(rows["subject"], rows["session"], volumes)
            if volume and f"sub-{subject}_ses-{session}" not in Path(volume).name
        ]
        if mismatched:
            raise DataError(
                f"{table_path}: {len(mismatched)} {split} row(s) of cohort {cohort} name the volume of another "
                f"subject/session (the table and the volumes disagree on subjects): " + "; ".join(mismatched[:5])
            )
        if absent_volumes:
            raise DataError(
                f"{table_path}: {len(absent_volumes)} {split} row(s) of cohort {cohort} name a model-ready volume that does "
                f"not exist (the table and the preprocessed volumes disagree on subjects): " + "; ".join(absent_volumes[:5])
                + (" ..." if len(absent_volumes) > 5 else "")
            )
    return CohortRows(
        cohort=cohort,
        keys=[(cohort, s, t) for s, t in zip(rows["subject"], rows["session"])],
        volumes=volumes,
        values=values,
        missing=missing,
        col_ids=np.array([header_ids[column["header"]] for column in columns], dtype=np.int64),
        column_names=names,
        labels=labels.to_numpy(dtype=np.int64),
    )


def _missing_cells(rows: pd.DataFrame, names: list[str], values: np.ndarray, table_path: str | Path) -> np.ndarray:
    """bool [N, C]: the ``missing__<name>`` flags where the table has them (all or none), else empty cells."""
    flags = [MISSING_PREFIX + name for name in names]
    present = [flag for flag in flags if flag in rows.columns]
    if not present:
        return np.isnan(values)
    if len(present) != len(flags):
        absent = [flag for flag in flags if flag not in rows.columns]
        raise DataError(f"{table_path}: missing-value flag column(s) {absent} absent while others are present")
    marked = rows[flags].apply(pd.to_numeric, errors="coerce")
    bad = marked.isna() | ~marked.isin([0, 1])
    if bad.to_numpy().any():
        row, column = np.argwhere(bad.to_numpy())[0]
        raise DataError(f"{table_path} ({len(rows)} rows of the split, row {row}), column {flags[column]}: "
                        f"{rows.iloc[row][flags[column]]!r} is not 0 or 1")
    return marked.to_numpy(dtype=bool) | np.isnan(values)
