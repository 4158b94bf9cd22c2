"""Bootstrap intervals over test subjects and the paired permutation test (workflow/uncertainty.py).
Budget: a few seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import classification_case

from model.metrics import classification_metrics
from workflow import uncertainty
from workflow.uncertainty import Predictions


def simulated(count: int, seeds: int, skill: float, rng: np.random.Generator, classes: int = 3) -> Predictions:
    """Predictions of a model that puts ``skill`` extra weight on the true class of each subject."""
    labels = rng.integers(0, classes, size=count)
    logits = rng.normal(size=(seeds, count, classes)) + skill * np.eye(classes)[labels][None]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    keys = [("ADNI", f"S{i:04d}", "M000") for i in range(count)]
    return Predictions(keys=keys, labels=labels, probabilities=probabilities, seeds=list(range(seeds)))


@pytest.mark.parametrize("case", ["all classes", "ties", "a class missing"])
def test_numpy_scores_equal_the_evaluation_metrics(case: str) -> None:
    labels, probabilities = classification_case(case, seed=3)
    expected = classification_metrics(labels, probabilities)
    accuracy, auc, f1 = uncertainty.scores(labels, probabilities)
    assert accuracy == pytest.approx(expected["accuracy"])
    assert auc == pytest.approx(expected["auc"])
    assert f1 == pytest.approx(expected["f1"])


def test_bootstrap_interval_contains_the_estimate_and_shrinks_with_more_subjects() -> None:
    widths = []
    for count in (30, 300):
        predictions = simulated(count, seeds=2, skill=1.5, rng=np.random.default_rng(count))
        point = uncertainty.seed_mean_scores(predictions.labels, predictions.probabilities)
        replicates = uncertainty.bootstrap_replicates(predictions, 400, np.random.default_rng(0))
        low, high = uncertainty.percentile_interval(replicates, 0.95)
        assert np.all(low <= point) and np.all(point <= high), (count, low, point, high)
        widths.append(high - low)
    assert np.all(widths[1] < widths[0] / 2)  # about 1/sqrt(10) of the width with 10x the subjects


def test_bootstrap_is_seeded() -> None:
    predictions = simulated(25, seeds=1, skill=1.0, rng=np.random.default_rng(1))
    first = uncertainty.bootstrap_replicates(predictions, 50, uncertainty.cell_rng(7, "citab", "ADNI"))
    again = uncertainty.bootstrap_replicates(predictions, 50, uncertainty.cell_rng(7, "citab", "ADNI"))
    other = uncertainty.bootstrap_replicates(predictions, 50, uncertainty.cell_rng(7, "citab", "AIBL"))
    assert np.array_equal(first, again) and not np.array_equal(first, other)


@pytest.mark.parametrize("count", [8, 80])  # 8 subjects: every one of the 2^8 swaps (exact); 80: random swaps
def test_paired_test_gives_p_1_for_identical_predictions(count: int) -> None:
    predictions = simulated(count, seeds=2, skill=1.0, rng=np.random.default_rng(2))
    difference, p_values = uncertainty.paired_permutation_test(predictions, predictions, 1000, np.random.default_rng(0))
    assert np.all(difference == 0) and np.all(p_values == 1.0)


def test_paired_test_finds_a_clearly_better_model_and_not_a_lucky_one() -> None:
    rng = np.random.default_rng(4)
    strong = simulated(120, seeds=1, skill=4.0, rng=rng)
    guessing = Predictions(strong.keys, strong.labels, rng.dirichlet(np.ones(3), size=(1, 120)), strong.seeds)
    difference, p_values = uncertainty.paired_permutation_test(guessing, strong, 500, np.random.default_rng(0))
    assert np.all(difference < 0) and np.all(p_values < 0.01)
    # Two draws of the same kind of model: no evidence of a difference.
    alike = Predictions(strong.keys, strong.labels, simulated(120, 1, 4.0, np.random.default_rng(4)).probabilities,
                        strong.seeds)
    _, p_same = uncertainty.paired_permutation_test(alike, strong, 500, np.random.default_rng(0))
    assert np.all(p_same == 1.0)


def test_paired_test_needs_the_same_subjects() -> None:
    first = simulated(10, seeds=1, skill=1.0, rng=np.random.default_rng(5))
    shifted = Predictions([("ADNI", "X", "M000"), *first.keys[1:]], first.labels, first.probabilities, first.seeds)
    with pytest.raises(ValueError, match="same test subjects"):
        uncertainty.paired_permutation_test(first, shifted, 100, np.random.default_rng(0))


def test_predictions_are_read_per_variant_and_cohort_with_seeds_aligned(tmp_path: Path) -> None:
    metric_files, prediction_files = [], []
    for seed, order in ((2, [1, 0]), (1, [0, 1])):
        folder = tmp_path / f"seed-{seed}"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({"variant": "citab", "cohort": "AIBL", "seed": seed}))
        frame = pd.DataFrame({"cohort": "AIBL", "subject": ["A1", "A2"], "session": "M000", "label": [0, 2],
                              "prob_CN": [0.7, 0.1], "prob_MCI": [0.2, 0.2], "prob_DE": [0.1, 0.7 + seed / 100]})
        frame.iloc[order].to_csv(folder / "predictions.tsv", sep="\t", index=False)
        metric_files.append(folder / "metrics.json")
        prediction_files.append(folder / "predictions.tsv")
    read = uncertainty.read_predictions(metric_files, prediction_files)
    predictions = read[("citab", "AIBL")]
    assert predictions.seeds == [1, 2] and predictions.keys == [("AIBL", "A1", "M000"), ("AIBL", "A2", "M000")]
    assert predictions.probabilities.shape == (2, 2, 3)
    assert predictions.probabilities[:, 1, 2] == pytest.approx([0.71, 0.72])
