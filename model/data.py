"""Datasets for pretraining and fine-tuning: model-ready volumes + one cohort's table rows.

A cohort's rows (:class:`CohortRows`, plain arrays) are read from the pipeline's files by
:mod:`workflow.training_rows`; this package does not know the pipeline's file layout. Each row
keeps its own columns: its values, the ids of its column headers in the global header bank, and a
pad mask when rows of several cohorts are stacked to the longest cohort (docs/model.md 1.4 and
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
import torch
from torch.utils.data import Dataset

from model.augment import augment_volume, build_augmentation, resize_volume
from model.augment_settings import AugmentSettings


class DataError(ValueError):
    """An input file does not hold what training expects (the message names it)."""


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
