"""Classification metrics for speaker-independent evaluation (SPEC §8), in numpy only.

- accuracy = weighted average recall (WAR): correct / total;
- UAR = unweighted average recall: the mean of the per-class recalls over the classes present in `y_true`
  (a class with no test clip has no recall);
- macro-F1: the mean of the per-class F1 over the classes present in `y_true` or `y_pred` (scikit-learn's
  convention); precision or F1 of a class never predicted is 0.

All values are fractions in [0, 1].
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """int64 `(num_classes, num_classes)`: row = true class, column = predicted class."""
    y_true, y_pred = np.asarray(y_true, np.int64), np.asarray(y_pred, np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true and y_pred must be 1-D of the same length, got {y_true.shape} and {y_pred.shape}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
            raise ValueError(f"{name} holds a class outside 0-{num_classes - 1}: {sorted(set(arr.tolist()))}")
    cm = np.zeros((num_classes, num_classes), np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def per_class_scores(cm: np.ndarray) -> dict[str, np.ndarray]:
    """Per-class `precision`, `recall`, `f1` (float64 `(C,)`, 0 where undefined) and `support` (int64 `(C,)`)."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(support > 0, tp / np.maximum(support, 1), 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / np.where(denom > 0, denom, 1), 0.0)
    return {"precision": precision, "recall": recall, "f1": f1, "support": support}


def classification_metrics(
    y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]
) -> dict:
    """Accuracy (WAR), UAR, macro-F1, per-class scores and the confusion matrix.

    Returns:
        `{"accuracy", "uar", "macro_f1", "num_samples", "per_class": {label: {"precision", "recall", "f1",
        "support"}}, "confusion_matrix": [[int]]}` (plain Python types, JSON-ready).
    """
    num_classes = len(labels)
    cm = confusion_matrix(y_true, y_pred, num_classes)
    scores = per_class_scores(cm)
    total = int(cm.sum())
    present = scores["support"] > 0
    present_or_predicted = present | (cm.sum(axis=0) > 0)
    return {
        "accuracy": float(np.trace(cm) / total) if total else float("nan"),
        "uar": float(scores["recall"][present].mean()) if present.any() else float("nan"),
        "macro_f1": float(scores["f1"][present_or_predicted].mean()) if present_or_predicted.any() else float("nan"),
        "num_samples": total,
        "per_class": {
            label: {
                "precision": float(scores["precision"][i]),
                "recall": float(scores["recall"][i]),
                "f1": float(scores["f1"][i]),
                "support": int(scores["support"][i]),
            }
            for i, label in enumerate(labels)
        },
        "confusion_matrix": cm.tolist(),
    }


def mean_std(values: Sequence[float]) -> dict:
    """`{"mean", "std", "values"}` over folds; `std` is the sample standard deviation (ddof=1), 0 for one value."""
    vals = [float(v) for v in values]
    if not vals:
        return {"mean": float("nan"), "std": float("nan"), "values": []}
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return {"mean": mean, "std": std, "values": vals}


def plot_confusion_matrix(cm, labels: Sequence[str], path, title: str = "", normalize: bool = True) -> None:
    """Save the confusion matrix as a PNG (matplotlib, Agg backend): colours are row-normalised recall,
    each cell shows the percentage of its row and the clip count."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    frac = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0) if normalize else cm / max(cm.max(), 1)
    n = len(labels)
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * n, 0.8 + 0.7 * n), dpi=120)
    im = ax.imshow(frac, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(n), labels, rotation=45, ha="right")
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(n):
        for j in range(n):
            if cm[i, j] == 0:
                continue
            colour = "white" if frac[i, j] > 0.55 else "black"
            ax.text(j, i, f"{100 * frac[i, j]:.0f}%\n{int(cm[i, j])}", ha="center", va="center", fontsize=7,
                    color=colour)
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


__all__ = ["classification_metrics", "confusion_matrix", "mean_std", "per_class_scores", "plot_confusion_matrix"]
