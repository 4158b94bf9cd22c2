"""How sure a result table is: bootstrap intervals over test subjects and paired tests between rows.

Both work on the test predictions of an evaluation (``paths.EVAL_PREDICTIONS``: one row per test
subject with its class probabilities), so they need nothing but the files the evaluate rule writes.

* **Bootstrap interval** of a cell (config ``report.interval: bootstrap95``): the test subjects are
  resampled with replacement (``report.bootstrap.resamples`` times, seeded); every fine-tuning seed
  of the row is scored on the same resample and the scores are averaged over the seeds, as the
  cell's point estimate is. The 2.5th and 97.5th percentiles of those averages bound the interval.
  Resampling subjects is what a different test set would change; averaging seeds in every
  resample keeps the training noise in the estimate instead of treating seeds as extra subjects.
* **Paired test** of a row against a reference row (CITab): a permutation test that swaps, subject by
  subject, the two rows' predictions (all seeds of that subject together) with probability 1/2 and
  recomputes the difference of the seed-averaged metric. Under "the two models predict alike" every
  swap is as likely as the observed assignment, so the p-value is the share of swaps whose absolute
  difference reaches the observed one (counting the observed assignment itself). Identical
  predictions give p = 1. With few subjects (2^n swaps at most ``report.paired_test.permutations``)
  every swap is enumerated and the p-value is exact.

The metrics are those of ``model.metrics.classification_metrics`` (accuracy, macro one-vs-rest AUC
over the classes a sample can score, macro F1 over the classes in labels or predictions), written
here with numpy alone so that the report stage needs no torch or scikit-learn and thousands of
resamples cost seconds. tests/test_uncertainty.py checks that both agree.
"""

from __future__ import annotations

import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from model.metrics import confusion_counts, macro_f1, macro_ovr_auc, per_class_scores

METRIC_NAMES = ("accuracy", "auc", "f1")
KEY_COLUMNS = ["cohort", "subject", "session"]
PROBABILITY_PREFIX = "prob_"
BOOTSTRAP_NOTE = ("[lo, hi]: 95 % bootstrap interval over test subjects ({resamples} resamples, seed {seed}; "
                  "each resample scores every fine-tuning seed and averages them, like the point estimate).")
PAIRED_TEST_NAME = "paired permutation test"
# How the test works, in the words every table note uses.
PAIRED_TEST_METHOD = ("paired permutation test on the same test subjects (each subject's predictions, all seeds "
                      "together, swapped between the two models at random; {permutations} permutations, or every "
                      "swap when there are fewer; seed {seed})")
PAIRED_TEST_NOTE = "{marker} p < {alpha} against {reference}: " + PAIRED_TEST_METHOD + ". p-values: {tests_file}."


@dataclass(frozen=True)
class Predictions:
    """The test predictions of one (variant, cohort) over its fine-tuning seeds, subjects aligned.

    Attributes:
        keys: (cohort, subject, session) of every test subject, sorted.
        labels: true class per subject, int [N].
        probabilities: class probabilities, float [S, N, K] (S seeds, in ascending seed order).
        seeds: the fine-tuning seeds.
    """

    keys: list[tuple[str, str, str]]
    labels: np.ndarray
    probabilities: np.ndarray
    seeds: list[int]

    def subset(self, subjects: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(labels [..., n], probabilities [S, ..., n, K]) of the subjects at the given positions."""
        return self.labels[subjects], self.probabilities[:, subjects]


def read_predictions(metric_files: list[str | Path], prediction_files: list[str | Path]) -> dict[tuple[str, str], Predictions]:
    """Every (variant, cohort)'s predictions over its seeds, from aligned lists of evaluation files.

    ``metric_files[i]`` (metrics.json: variant, cohort, seed) names the run whose test predictions
    are ``prediction_files[i]`` (predictions.tsv). Raises ValueError when the lists differ in length
    or the seeds of one (variant, cohort) were evaluated on different subjects.
    """
    if len(metric_files) != len(prediction_files):
        raise ValueError(f"{len(metric_files)} metrics files but {len(prediction_files)} predictions files")
    runs: dict[tuple[str, str], list[tuple[int, pd.DataFrame, str]]] = {}
    for metrics_path, predictions_path in zip(metric_files, prediction_files):
        identity = json.loads(Path(metrics_path).read_text())
        frame = pd.read_csv(predictions_path, sep="\t", dtype={"subject": str, "session": str})
        frame = frame.sort_values(KEY_COLUMNS).reset_index(drop=True)
        runs.setdefault((identity["variant"], identity["cohort"]), []).append(
            (int(identity["seed"]), frame, str(predictions_path)))
    collected = {}
    for (variant, cohort), seeds in runs.items():
        seeds.sort(key=lambda run: run[0])
        first = seeds[0][1]
        keys = list(first[KEY_COLUMNS].itertuples(index=False, name=None))
        probability_columns = [c for c in first.columns if c.startswith(PROBABILITY_PREFIX)]
        for _, frame, path in seeds[1:]:
            if list(frame[KEY_COLUMNS].itertuples(index=False, name=None)) != keys:
                raise ValueError(f"{path}: other test subjects than {seeds[0][2]} ({variant} on {cohort})")
        collected[(variant, cohort)] = Predictions(
            keys=keys, labels=first["label"].to_numpy(dtype=np.int64),
            probabilities=np.stack([frame[probability_columns].to_numpy(dtype=np.float64) for _, frame, _ in seeds]),
            seeds=[seed for seed, _, _ in seeds],
        )
    return collected


# --- the metrics of model.metrics, per bootstrap or permutation replicate ------------------------


def scores(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """[accuracy, AUC, F1] of one run (labels int [N], probabilities float [N, K]), as
    ``model.metrics.classification_metrics`` computes them."""
    n_classes = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1)
    accuracy = float(np.mean(predictions == labels))
    auc, _ = macro_ovr_auc(labels, probabilities)
    return np.array([accuracy, auc, macro_f1(per_class_scores(confusion_counts(labels, predictions, n_classes)))])


def seed_mean_scores(labels: np.ndarray, probabilities: np.ndarray) -> np.ndarray:
    """[accuracy, AUC, F1] averaged over seeds (probabilities [S, N, K]); the AUC of seeds where it
    is defined."""
    per_seed = np.stack([scores(labels, run) for run in probabilities])
    with np.errstate(invalid="ignore"):
        return np.array([np.nanmean(column) if np.isfinite(column).any() else math.nan for column in per_seed.T])


# --- bootstrap intervals ----------------------------------------------------------------------------


def bootstrap_replicates(predictions: Predictions, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """[resamples, 3] seed-averaged (accuracy, AUC, F1) on subject resamples drawn with replacement."""
    count = len(predictions.labels)
    replicates = np.empty((resamples, len(METRIC_NAMES)))
    for index in range(resamples):
        labels, probabilities = predictions.subset(rng.integers(0, count, size=count))
        replicates[index] = seed_mean_scores(labels, probabilities)
    return replicates


def percentile_interval(replicates: np.ndarray, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column of ``replicates`` [R, M] (resamples with an undefined value
    left out); NaN where no resample defines it."""
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.full(replicates.shape[1], math.nan), np.full(replicates.shape[1], math.nan)
    for column in range(replicates.shape[1]):
        defined = replicates[:, column][np.isfinite(replicates[:, column])]
        if len(defined):
            low[column], high[column] = np.percentile(defined, [tail, 100.0 - tail])
    return low, high


def cell_rng(seed: int, *names: str) -> np.random.Generator:
    """A generator of its own for each table cell, the same whatever else the table holds."""
    words = [int.from_bytes(name.encode(), "little") % (2**32) for name in names]
    return np.random.default_rng([seed, *words])


# --- paired test ---------------------------------------------------------------------------------------


def paired_permutation_test(
    candidate: Predictions, reference: Predictions, permutations: int, rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """(candidate - reference difference of the seed-averaged metrics, two-sided p-value), both [3].

    The two must hold the same test subjects and the same number of seeds (seed i of one is paired
    with seed i of the other). ValueError otherwise.
    """
    if candidate.keys != reference.keys:
        raise ValueError("a paired test needs both rows evaluated on the same test subjects")
    if candidate.probabilities.shape != reference.probabilities.shape:
        raise ValueError(f"a paired test needs the same seeds and classes in both rows, got probabilities "
                         f"{candidate.probabilities.shape} and {reference.probabilities.shape}")
    labels = candidate.labels
    count = len(labels)

    def difference(swapped: np.ndarray) -> np.ndarray:
        mask = swapped[None, :, None]
        first = np.where(mask, reference.probabilities, candidate.probabilities)
        second = np.where(mask, candidate.probabilities, reference.probabilities)
        return seed_mean_scores(labels, first) - seed_mean_scores(labels, second)

    observed = difference(np.zeros(count, dtype=bool))
    if count < 63 and 2**count <= permutations:
        # Every swap pattern once: the exact p-value (the observed, all-False pattern included).
        patterns = (np.array(bits, dtype=bool) for bits in itertools.product((False, True), repeat=count))
        differences, add_observed = np.stack([difference(p) for p in patterns]), 0
    else:
        differences = np.stack([difference(rng.random(count) < 0.5) for _ in range(permutations)])
        add_observed = 1  # the observed assignment counts as one of the permutations
    # A small tolerance so that differences equal up to rounding count as reaching the observed one.
    reach = np.abs(differences) >= np.abs(observed) - 1e-12
    with np.errstate(invalid="ignore"):
        p_values = (reach.sum(axis=0) + add_observed) / (len(differences) + add_observed)
    p_values = np.where(np.isfinite(observed), p_values, math.nan)
    return observed, p_values
