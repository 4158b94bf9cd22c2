"""Classification metrics of the paper (docs/model.md 6.4): accuracy, macro one-vs-rest AUC, macro F1.

Test sets of the tiny configurations can miss a class entirely, where scikit-learn's multi-class
AUC raises. ``classification_metrics`` then averages the one-vs-rest AUC over the classes that can
be scored and records which ones those were, instead of failing.
"""

from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

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
    per_class = [roc_auc_score(labels == k, probabilities[:, k]) for k in scored_classes]
    return float(np.mean(per_class)), scored_classes


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
    all_classes = list(range(n_classes))
    auc, auc_classes = macro_ovr_auc(labels, probabilities)
    accuracy = float(accuracy_score(labels, predictions))
    f1 = float(f1_score(labels, predictions, average="macro", zero_division=0))
    return {
        "n": int(len(labels)),
        "accuracy": accuracy,
        "auc": auc,
        "auc_classes": auc_classes,
        "auc_complete": len(auc_classes) == n_classes,
        "f1": f1,
        "balanced_accuracy": float(balanced_accuracy_score(labels, predictions)),
        "precision_macro": float(precision_score(labels, predictions, average="macro", zero_division=0)),
        "recall_macro": float(recall_score(labels, predictions, average="macro", zero_division=0)),
        "precision": precision_score(labels, predictions, labels=all_classes, average=None, zero_division=0).tolist(),
        "recall": recall_score(labels, predictions, labels=all_classes, average=None, zero_division=0).tolist(),
        "confusion_matrix": confusion_matrix(labels, predictions, labels=all_classes).tolist(),
        "support": np.bincount(labels, minlength=n_classes).tolist(),
        "selection_score": accuracy + (0.0 if math.isnan(auc) else auc) + f1,
    }
