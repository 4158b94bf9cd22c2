"""Classification metrics of the paper (docs/model.md 6.4): accuracy, macro one-vs-rest AUC, macro F1.

Test sets of the tiny configurations can miss a class entirely, where scikit-learn's multi-class
AUC raises. ``classification_metrics`` then averages the one-vs-rest AUC over the classes that can
be scored and records which ones those were, instead of failing.

Numpy only, with scikit-learn's definitions (a test compares every value with scikit-learn's):
importing scikit-learn's metrics costs each training and evaluation process about 0.9 CPU-s.
"""

from __future__ import annotations

import math

import numpy as np

# How fine-tuning picks its best epoch from the validation metrics (strictly better than the best
# so far wins; a NaN AUC counts as 0):
#   acc_auc_f1: accuracy + AUC + F1, CITab's own evaluator;
#   auc: macro AUC alone, the released baseline harness (its eval_metric "auc");
#   balanced_accuracy: mean recall over the true classes, HyperFusion's original rule.
SELECTION_RULES = ("acc_auc_f1", "auc", "balanced_accuracy")


def selection_score(metrics: dict, rule: str) -> float:
    """The score of ``rule`` (one of :data:`SELECTION_RULES`) from :func:`classification_metrics`' output."""
    auc = 0.0 if math.isnan(metrics["auc"]) else metrics["auc"]
    if rule == "acc_auc_f1":
        return metrics["accuracy"] + auc + metrics["f1"]
    if rule == "auc":
        return auc
    if rule == "balanced_accuracy":
        return metrics["balanced_accuracy"]
    raise ValueError(f"unknown selection rule {rule!r}; expected one of {SELECTION_RULES}")


def macro_ovr_auc(labels: np.ndarray, probabilities: np.ndarray) -> tuple[float, list[int]]:
    """Macro one-vs-rest ROC AUC over the classes that can be scored.

    Args:
        labels: true class per sample, int [N].
        probabilities: class probabilities, float [N, K].

    Returns:
        (auc, scored_classes): the mean of the per-class one-vs-rest AUCs over the classes that
        have both positive and negative samples, and those classes. With all K classes present
        this equals ``roc_auc_score(labels, probabilities, multi_class="ovr", average="macro")``.
        ``auc`` is NaN when no class can be scored (a single-class test set).
    """
    scored_classes = [
        k for k in range(probabilities.shape[1]) if 0 < int(np.sum(labels == k)) < len(labels)
    ]
    if not scored_classes:
        return math.nan, []
    per_class = [binary_auc(labels == k, probabilities[:, k]) for k in scored_classes]
    return float(np.mean(per_class)), scored_classes


def binary_auc(is_positive: np.ndarray, scores: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the positives (bool [N]): the Mann-Whitney U statistic with tied
    scores counted half, as scikit-learn's ``roc_auc_score``; NaN without positives or negatives."""
    is_positive = np.asarray(is_positive, dtype=bool)
    n_positive = int(is_positive.sum())
    n_negative = len(is_positive) - n_positive
    if n_positive == 0 or n_negative == 0:
        return math.nan
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    average_rank = np.cumsum(counts) - (counts - 1) / 2.0  # 1-based rank of each distinct score, ties averaged
    positive_rank_sum = float(average_rank[inverse][is_positive].sum())
    return (positive_rank_sum - n_positive * (n_positive + 1) / 2.0) / (n_positive * n_negative)


def confusion_counts(labels: np.ndarray, predictions: np.ndarray, n_classes: int) -> np.ndarray:
    """Confusion matrix, int [K, K]: rows the true class, columns the predicted one."""
    flat = np.asarray(labels, dtype=np.int64) * n_classes + np.asarray(predictions, dtype=np.int64)
    return np.bincount(flat, minlength=n_classes * n_classes).reshape(n_classes, n_classes)


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    """numerator / denominator, 0 where the denominator is 0 (scikit-learn's ``zero_division=0``)."""
    numerator, denominator = np.asarray(numerator, dtype=np.float64), np.asarray(denominator, dtype=np.float64)
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def per_class_scores(confusion: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class ``precision``, ``recall`` and ``f1`` (float [K], 0 where undefined) of a confusion
    matrix, and ``present``: the classes in the labels or the predictions (bool [K]), over which
    scikit-learn's macro averages run."""
    true_positive = np.diag(confusion)
    predicted, actual = confusion.sum(axis=0), confusion.sum(axis=1)
    return {
        "precision": _ratio(true_positive, predicted),
        "recall": _ratio(true_positive, actual),
        "f1": _ratio(2 * true_positive, predicted + actual),
        "present": (predicted + actual) > 0,
    }


def macro_f1(per_class: dict[str, np.ndarray]) -> float:
    """Macro F1 over the classes in the labels or the predictions (scikit-learn's ``average="macro"``),
    from :func:`per_class_scores`."""
    return float(per_class["f1"][per_class["present"]].mean())


def classification_metrics(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    """All metrics of one evaluation.

    Args:
        labels: true class per sample, int [N].
        probabilities: softmax probabilities, float [N, K]; the prediction is their argmax.

    Returns:
        A JSON-ready dict: ``accuracy``, ``auc`` (macro one-vs-rest over ``auc_classes``),
        ``auc_classes``, ``auc_complete`` (False when some class could not be scored), ``f1``
        (macro over the classes present in labels or predictions, as scikit-learn's default),
        ``balanced_accuracy`` (mean recall over the classes in ``labels``), ``precision_macro``, ``recall_macro``, per-class ``precision`` and ``recall`` (lists of K),
        ``confusion_matrix`` (K x K, rows = true class), ``support`` (K counts), ``n``, and
        ``selection_score`` = accuracy + AUC + F1 (AUC counted as 0 when NaN).
    """
    labels = np.asarray(labels, dtype=np.int64)
    probabilities = np.asarray(probabilities, dtype=np.float64)
    n_classes = probabilities.shape[1]
    predictions = probabilities.argmax(axis=1)
    auc, auc_classes = macro_ovr_auc(labels, probabilities)
    confusion = confusion_counts(labels, predictions, n_classes)
    per_class = per_class_scores(confusion)
    present, in_labels = per_class["present"], confusion.sum(axis=1) > 0
    accuracy = float(np.trace(confusion) / max(len(labels), 1))
    f1 = macro_f1(per_class)
    return {
        "n": int(len(labels)),
        "accuracy": accuracy,
        "auc": auc,
        "auc_classes": auc_classes,
        "auc_complete": len(auc_classes) == n_classes,
        "f1": f1,
        "balanced_accuracy": float(per_class["recall"][in_labels].mean()),
        "precision_macro": float(per_class["precision"][present].mean()),
        "recall_macro": float(per_class["recall"][present].mean()),
        "precision": per_class["precision"].tolist(),
        "recall": per_class["recall"].tolist(),
        "confusion_matrix": confusion.tolist(),
        "support": confusion.sum(axis=1).tolist(),
        "selection_score": accuracy + (0.0 if math.isnan(auc) else auc) + f1,
    }
