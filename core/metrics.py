"""Classification metrics computed from a confusion matrix, so they are exact under DDP (sum the matrices).

Rows are true classes, columns predicted classes (scikit-learn's convention).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

METRIC_NAMES = ("accuracy", "macro_f1", "weighted_f1", "uar")
"""Scalar metrics reported everywhere; ``uar`` is unweighted average recall (mean per-class recall)."""


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], num_classes: int) -> np.ndarray:
    """``[C, C]`` int64 counts; entry ``[t, p]`` counts samples of class t predicted as p."""
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    flat = np.bincount(y_true * num_classes + y_pred, minlength=num_classes * num_classes)
    return flat.reshape(num_classes, num_classes)


def metrics_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """accuracy, macro_f1, weighted_f1 (by support) and uar from a ``[C, C]`` confusion matrix.

    Classes without support are left out of macro-F1 and UAR (they carry no information) but an F1 of 0
    counts for classes that are predicted yet absent, as in scikit-learn with ``labels`` restricted to
    classes present in y_true or y_pred.
    """
    cm = np.asarray(cm, dtype=np.float64)
    total = cm.sum()
    tp = np.diag(cm)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, 0.0)
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (support > 0) | (predicted > 0)
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[present].mean()) if present.any() else 0.0,
        "weighted_f1": float((f1 * support).sum() / support.sum()) if support.sum() else 0.0,
        "uar": float(recall[support > 0].mean()) if (support > 0).any() else 0.0,
    }


def classification_report(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str]) -> dict:
    """Scalar metrics plus the confusion matrix (nested lists) and per-class recall, JSON-ready."""
    cm = confusion_matrix(y_true, y_pred, len(labels))
    return report_from_confusion(cm, labels)


def report_from_confusion(cm: np.ndarray, labels: Sequence[str]) -> dict:
    """Like ``classification_report`` but from an existing ``[C, C]`` matrix (e.g. pooled over folds)."""
    cm = np.asarray(cm, dtype=np.int64)
    support = cm.sum(axis=1)
    recall = {label: (float(cm[i, i] / support[i]) if support[i] else None) for i, label in enumerate(labels)}
    return {
        **metrics_from_confusion(cm),
        "num_samples": int(cm.sum()),
        "labels": list(labels),
        "confusion_matrix": cm.tolist(),
        "per_class_recall": recall,
    }


def save_json(data: dict, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def plot_confusion(cm: np.ndarray, labels: Sequence[str], path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix PNG (counts annotated), drawn with the non-interactive Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(cm, dtype=np.float64)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0)
    fig, ax = plt.subplots(figsize=(1.0 + 0.8 * len(labels), 0.6 + 0.7 * len(labels)))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if title:
        ax.set_title(title)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(
            j, i, f"{int(count)}", ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black"
        )
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
