"""Metrics on known predictions, fold aggregation and the confusion-matrix plot."""

import math

import numpy as np
import pytest

from fer_hf.tools.metrics import classification_metrics, confusion_matrix, mean_std, plot_confusion_matrix

LABELS = ["a", "b", "c"]


def test_metrics_on_known_predictions():
    y_true = [0, 0, 0, 0, 1, 1, 2, 2, 2, 2]
    y_pred = [0, 0, 0, 1, 1, 2, 2, 2, 2, 0]
    m = classification_metrics(y_true, y_pred, LABELS)
    assert m["confusion_matrix"] == [[3, 1, 0], [0, 1, 1], [1, 0, 3]]
    assert m["accuracy"] == pytest.approx(7 / 10)
    recalls = [3 / 4, 1 / 2, 3 / 4]
    assert m["uar"] == pytest.approx(sum(recalls) / 3)
    precisions = [3 / 4, 1 / 2, 3 / 4]
    f1 = [2 * p * r / (p + r) for p, r in zip(precisions, recalls)]
    assert m["macro_f1"] == pytest.approx(sum(f1) / 3)
    assert m["per_class"]["b"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert m["num_samples"] == 10


def test_perfect_and_degenerate_predictions():
    perfect = classification_metrics([0, 1, 2], [0, 1, 2], LABELS)
    assert perfect["accuracy"] == perfect["uar"] == perfect["macro_f1"] == 1.0
    # Always predicting "a": precision of b/c is 0 (never predicted), no division warnings.
    constant = classification_metrics([0, 1, 2, 2], [0, 0, 0, 0], LABELS)
    assert constant["accuracy"] == pytest.approx(0.25)
    assert constant["uar"] == pytest.approx(1 / 3)
    assert constant["per_class"]["b"]["precision"] == 0.0
    # A class absent from y_true does not count for UAR (it has no recall).
    absent = classification_metrics([0, 0, 1], [0, 0, 1], LABELS)
    assert absent["uar"] == 1.0 and absent["per_class"]["c"]["support"] == 0
    assert math.isnan(classification_metrics([], [], LABELS)["accuracy"])


def test_confusion_matrix_rejects_bad_input():
    with pytest.raises(ValueError, match="same length"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_mean_std_over_folds():
    agg = mean_std([0.5, 0.7, 0.9])
    assert agg["mean"] == pytest.approx(0.7)
    assert agg["std"] == pytest.approx(np.std([0.5, 0.7, 0.9], ddof=1))
    assert mean_std([0.4]) == {"mean": 0.4, "std": 0.0, "values": [0.4]}


def test_confusion_plot_is_a_png(tmp_path):
    path = tmp_path / "cm.png"
    plot_confusion_matrix([[3, 1, 0], [0, 1, 1], [0, 0, 0]], LABELS, path, title="fold 0")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
