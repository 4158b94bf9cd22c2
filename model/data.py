"""Datasets for pretraining and fine-tuning: model-ready volumes + one cohort's table rows.

A cohort's rows come from its ``table.tsv`` and ``columns.yaml`` (docs/interfaces.md section 4).
Each row keeps its own columns: its values, the ids of its column headers in the global header
bank, and a pad mask when rows of several cohorts are stacked to the longest cohort (docs/model.md 1.4 and
1.6). Images are the ``.npy`` model-ready volumes named in the table's ``volume`` column, scaled
per volume to [0, 1] and resized to the configured input shape only when their shape differs
(docs/model.md 2.1). Random augmentation (docs/model.md 2.2) and fine-tuning corruption (docs/model.md 6.3) are seeded by
(seed, epoch, row), so a run gives the same samples whatever the worker count and after a resume.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from torch.utils.data import Dataset

from model.augment import AugmentSettings, augment_volume, build_augmentation, resize_volume

SPLITS = ("train", "val", "test")
KEY_COLUMNS = ["cohort", "subject", "session"]
# The tables stage writes a 0/1 flag ``missing__<name>`` beside every column (docs/interfaces.md 4).
MISSING_PREFIX = "missing__"


class DataError(ValueError):
    """An input file does not hold what the training stage expects (the message names it)."""


@dataclass
class CohortRows:
    """The rows of one cohort and split.

    Attributes:
        cohort: the cohort's name.
        keys: one (cohort, subject, session) tuple per row.
        volumes: the model-ready volume path of each row.
        values: standardised cell values, float32 [N, C_t] (missing cells are 0).
        missing: True where a cell is missing, bool [N, C_t] (the baselines' missing-value input;
            CITab itself sees the 0 only, as the official code).
        col_ids: header-bank row of each of the cohort's columns, int64 [C_t].
        column_names: the cohort's column names, in table order.
        labels: class per row, int64 [N].
    """

    cohort: str
    keys: list[tuple[str, str, str]]
    volumes: list[str]
    values: np.ndarray
    missing: np.ndarray
    col_ids: np.ndarray
    column_names: list[str]
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.keys)


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
    required = [*KEY_COLUMNS, "volume", "split", "label", *names]
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


def load_volume(path: str | Path, shape: Sequence[int]) -> torch.Tensor:
    """Load a model-ready ``.npy`` volume as float32 [1, *shape], min-max scaled to [0, 1] (docs/model.md 2.1).

    Raises DataError naming the file when it cannot be read, is not 3D, is not finite or is constant.
    """
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as error:
        raise DataError(f"{path}: cannot read the model-ready volume ({error})") from None
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise DataError(f"{path}: expected a 3D volume, got shape {array.shape}")
    volume = torch.from_numpy(np.asarray(array, dtype=np.float32))
    if not torch.isfinite(volume).all():
        raise DataError(f"{path}: the volume holds NaN or infinite values")
    low, high = volume.min(), volume.max()
    if high <= low:
        raise DataError(f"{path}: the volume is constant ({float(low)}), nothing to learn from")
    volume = ((volume - low) / (high - low)).unsqueeze(0)
    return resize_volume(volume, tuple(shape))


@dataclass
class SampleSettings:
    """How samples are drawn.

    Attributes:
        image_shape: model input shape (X, Y, Z).
        augment_probability: probability that a sample's image is augmented (docs/model.md 2.2 / 6.3).
        corruption_rate: with an augmented sample (every sample with ``corrupt_every_row``), the
            fraction of its columns replaced by values of the same column drawn from other training
            rows (docs/model.md 6.3; 0 = off).
        augment: augmentation strengths.
        seed: base seed of every random draw.
        cache_volumes: keep loaded volumes in memory (per process).
        load_images: read the volumes; False for a model that never sees them (the tabular-only
            baseline): items then have no ``image``.
        corrupt_every_row: corrupt the table of every sample, whatever the augmentation coin says:
            the corrupted contrastive view of the MMCL and TIP pretraining (docs/baselines.md 7).
            False: only augmented samples are corrupted (fine-tuning, docs/model.md 6.3).
    """

    image_shape: tuple[int, int, int]
    augment_probability: float = 0.0
    corruption_rate: float = 0.0
    augment: AugmentSettings = field(default_factory=AugmentSettings)
    seed: int = 0
    cache_volumes: bool = True
    load_images: bool = True
    corrupt_every_row: bool = False


class ImageTableDataset(Dataset):
    """Rows of one or more cohorts, padded to the longest, with their images.

    Item ``i`` is a dict: ``image`` float32 [1, X, Y, Z] (absent when images are not loaded),
    ``values`` float32 [C_max], ``missing`` bool [C_max] (True = missing cell or padding),
    ``original_values`` / ``original_missing`` the same before any corruption (TIP reconstructs
    them), ``col_ids`` int64 [C_max], ``pad_mask`` bool [C_max] (True = padding), ``label`` int64,
    ``cohort_index`` int64 (position in ``cohorts``; for logging and sampling, never fed to the
    model), ``index``.
    """

    def __init__(
        self,
        cohorts: Sequence[CohortRows],
        settings: SampleSettings,
        corruption_pools: Sequence[np.ndarray] | None = None,
        c_max: int | None = None,
    ) -> None:
        """
        Args:
            cohorts: the rows, one entry per cohort (concatenated in this order).
            settings: sampling settings.
            corruption_pools: per cohort, the training rows to draw corrupted cells from: a pair
                (values float32 [N_train, C_t], missing bool [N_train, C_t]), e.g.
                ``(rows.values, rows.missing)``; needed when ``settings.corruption_rate > 0``.
            c_max: pad length (default: the longest cohort's column count).
        """
        if not cohorts:
            raise ValueError("ImageTableDataset needs at least one cohort")
        self.cohorts = list(cohorts)
        self.settings = settings
        widths = [len(rows.col_ids) for rows in self.cohorts]
        self.c_max = c_max or max(widths)
        if self.c_max < max(widths):
            raise ValueError(f"c_max={self.c_max} is shorter than a cohort's {max(widths)} columns")
        if settings.corruption_rate > 0 and corruption_pools is None:
            raise ValueError("corruption_rate > 0 needs corruption_pools (the cohorts' training values)")
        self.corruption_pools = list(corruption_pools) if corruption_pools is not None else None
        self.row_index = [(c, r) for c, rows in enumerate(self.cohorts) for r in range(len(rows))]
        self.augmentation = build_augmentation(settings.augment)
        self.epoch = 0
        self._cache: dict[str, torch.Tensor] = {}

    def __len__(self) -> int:
        return len(self.row_index)

    def set_epoch(self, epoch: int) -> None:
        """Select the random draws of ``epoch`` (call before iterating)."""
        self.epoch = epoch

    def labels(self) -> np.ndarray:
        """Class of every item, int64 [N]."""
        return np.concatenate([rows.labels for rows in self.cohorts])

    def key(self, index: int) -> tuple[str, str, str]:
        """(cohort, subject, session) of item ``index``."""
        cohort, row = self.row_index[index]
        return self.cohorts[cohort].keys[row]

    def image(self, index: int) -> torch.Tensor:
        """The un-augmented image of item ``index``, float32 [1, X, Y, Z]."""
        cohort, row = self.row_index[index]
        path = self.cohorts[cohort].volumes[row]
        volume = self._cache.get(path)
        if volume is None:
            volume = load_volume(path, self.settings.image_shape)
            if self.settings.cache_volumes:
                self._cache[path] = volume
        return volume

    def preload(self) -> None:
        """Load every volume now (fails early on a bad file; shared by forked workers)."""
        if not self.settings.load_images:
            return
        for index in range(len(self)):
            self.image(index)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        cohort, row = self.row_index[index]
        rows = self.cohorts[cohort]
        width = len(rows.col_ids)
        # One generator per (seed, epoch, item): the same draws whatever the worker or resume point.
        generator = np.random.default_rng([self.settings.seed, self.epoch, index])
        augmented = bool(generator.random() < self.settings.augment_probability)
        image = self.image(index) if self.settings.load_images else None
        values, missing = rows.values[row].copy(), rows.missing[row].copy()
        if augmented and image is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(int(generator.integers(2**62)))
                image = augment_volume(image, self.augmentation)
        if (augmented or self.settings.corrupt_every_row) and self.settings.corruption_rate > 0:
            pool_values, pool_missing = self.corruption_pools[cohort]
            values, missing = corrupt_row(values, pool_values, self.settings.corruption_rate, generator,
                                          missing, pool_missing)
        col_ids = np.zeros(self.c_max, dtype=np.int64)
        col_ids[:width] = rows.col_ids
        pad_mask = np.ones(self.c_max, dtype=bool)
        pad_mask[:width] = False
        item = {} if image is None else {"image": image}
        return {
            **item,
            "values": self._padded(values, 0.0),
            "missing": self._padded(missing, True),  # a padded cell is missing too
            "original_values": self._padded(rows.values[row], 0.0),
            "original_missing": self._padded(rows.missing[row], True),
            "col_ids": torch.from_numpy(col_ids),
            "pad_mask": torch.from_numpy(pad_mask),
            "label": torch.tensor(rows.labels[row], dtype=torch.int64),
            "cohort_index": torch.tensor(cohort, dtype=torch.int64),
            "index": torch.tensor(index, dtype=torch.int64),
        }

    def _padded(self, cells: np.ndarray, fill: float | bool) -> torch.Tensor:
        """One row's cells [C_t] padded with ``fill`` to [C_max] (float32 or bool, as ``fill``)."""
        padded = np.full(self.c_max, fill, dtype=bool if isinstance(fill, bool) else np.float32)
        padded[: len(cells)] = cells
        return torch.from_numpy(padded)


def corrupt_row(
    values: np.ndarray,
    pool: np.ndarray,
    rate: float,
    generator: np.random.Generator,
    missing: np.ndarray | None = None,
    pool_missing: np.ndarray | None = None,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Replace floor(rate * C) random cells of ``values`` [C] by the same column of random ``pool`` rows.

    ``pool`` is float32 [N, C]: the cohort's training rows, i.e. each column's empirical distribution
    (docs/model.md 6.3), imputed zeros included. With ``missing`` [C] and ``pool_missing`` [N, C] the
    replaced cells take the donor's missing flag too and (values, missing) is returned; otherwise
    the new values alone.
    """
    count = math.floor(rate * len(values))
    with_flags = missing is not None
    if count == 0 or len(pool) == 0:
        return (values, missing) if with_flags else values
    corrupted = values.copy()
    columns = generator.choice(len(values), size=count, replace=False)
    donors = generator.integers(len(pool), size=count)
    corrupted[columns] = pool[donors, columns]
    if not with_flags:
        return corrupted
    flags = missing.copy()
    flags[columns] = pool_missing[donors, columns]
    return corrupted, flags
