"""Focal loss (hand-computed values, label smoothing, class weights, soft targets) and the metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, balanced_accuracy_score, f1_score
from sklearn.metrics import confusion_matrix as sk_confusion

from emotion_monitor.core.losses import FocalLoss, class_weights_from_labels, soft_targets
from emotion_monitor.core.metrics import (
    classification_report,
    confusion_matrix,
    metrics_from_confusion,
    plot_confusion,
)


def test_focal_loss_matches_hand_computed_value():
    logits = torch.tensor([[2.0, 0.0, -1.0]])
    # softmax by hand: p0 = e^2 / (e^2 + 1 + e^-1)
    p0 = math.exp(2) / (math.exp(2) + 1 + math.exp(-1))
    expected = -((1 - p0) ** 1.0) * math.log(p0)
    assert expected == pytest.approx(0.0265308, abs=1e-6)
    loss = FocalLoss(gamma=1.0)(logits, torch.tensor([0]))
    assert loss.item() == pytest.approx(expected, rel=1e-5)
    # gamma=2 focuses harder: the well-classified example weighs even less.
    assert FocalLoss(gamma=2.0)(logits, torch.tensor([0])).item() == pytest.approx(
        -((1 - p0) ** 2) * math.log(p0), rel=1e-5
    )


def test_focal_loss_with_smoothing_and_weights_by_hand():
    logits = torch.tensor([[1.0, 0.5, -0.5], [0.2, 0.1, 2.0]])
    target = torch.tensor([1, 2])
    w = np.array([1.0, 2.0, 0.5])
    eps, gamma, c = 0.05, 1.0, 3
    p = torch.softmax(logits, -1).numpy().astype(np.float64)
    q = np.full((2, c), eps / c)
    q[0, 1] += 1 - eps
    q[1, 2] += 1 - eps
    per = -(w * q * (1 - p) ** gamma * np.log(p)).sum()
    expected = per / (w * q).sum()
    loss = FocalLoss(gamma=gamma, class_weights=w.tolist(), label_smoothing=eps)(logits, target)
    assert loss.item() == pytest.approx(expected, rel=1e-5)


def test_gamma_zero_is_torch_cross_entropy():
    torch.manual_seed(0)
    logits = torch.randn(16, 8)
    target = torch.randint(0, 8, (16,))
    weights = torch.rand(8) + 0.5
    assert FocalLoss(0.0, weights.tolist())(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, weight=weights).item(), rel=1e-5
    )
    assert FocalLoss(0.0, label_smoothing=0.05)(logits, target).item() == pytest.approx(
        F.cross_entropy(logits, target, label_smoothing=0.05).item(), rel=1e-5
    )


def test_label_smoothing_and_class_weights_change_the_loss():
    logits = torch.tensor([[4.0, 0.0, 0.0], [0.0, 4.0, 0.0]])
    target = torch.tensor([0, 1])
    plain = FocalLoss(1.0)(logits, target)
    assert (
        FocalLoss(1.0, label_smoothing=0.1)(logits, target) > plain
    )  # confident and right: smoothing penalises
    # Up-weighting a sample with a larger loss raises the weighted mean.
    logits2 = torch.tensor([[4.0, 0.0, 0.0], [2.0, 1.0, 0.0]])
    base = FocalLoss(1.0)(logits2, target)
    assert FocalLoss(1.0, class_weights=[1.0, 5.0, 1.0])(logits2, target) > base


def test_soft_targets_are_mixup_compatible():
    torch.manual_seed(1)
    logits = torch.randn(4, 5)
    a, b, lam = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 3, 2, 1]), 0.3
    q = lam * F.one_hot(a, 5).float() + (1 - lam) * F.one_hot(b, 5).float()
    mixed = FocalLoss(0.0)(logits, q)
    separate = lam * F.cross_entropy(logits, a) + (1 - lam) * F.cross_entropy(logits, b)
    assert mixed.item() == pytest.approx(separate.item(), rel=1e-5)
    smoothed = soft_targets(torch.tensor([2]), 4, 0.2)
    assert torch.allclose(smoothed, torch.tensor([[0.05, 0.05, 0.85, 0.05]]))


def test_class_weights_from_training_labels():
    labels = [0] * 4 + [1] * 8 + [2] * 8  # RAVDESS-like: neutral half as frequent
    weights = class_weights_from_labels(labels, 4)
    assert weights[0] == pytest.approx(20 / (4 * 4))
    assert weights[1] == weights[2] == pytest.approx(20 / (4 * 8))
    assert weights[3] == 0.0  # absent class
    with pytest.raises(ValueError):
        FocalLoss(gamma=-1)


def test_metrics_agree_with_sklearn():
    rng = np.random.default_rng(0)
    y_true = rng.integers(0, 8, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 8, 200))
    cm = confusion_matrix(y_true, y_pred, 8)
    assert np.array_equal(cm, sk_confusion(y_true, y_pred, labels=range(8)))
    m = metrics_from_confusion(cm)
    assert m["accuracy"] == pytest.approx(accuracy_score(y_true, y_pred))
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["weighted_f1"] == pytest.approx(f1_score(y_true, y_pred, average="weighted"))
    assert m["uar"] == pytest.approx(balanced_accuracy_score(y_true, y_pred))


def test_report_and_png(tmp_path):
    labels = ["a", "b", "c"]
    report = classification_report([0, 1, 2, 2], [0, 2, 2, 2], labels)
    assert report["confusion_matrix"] == [[1, 0, 0], [0, 0, 1], [0, 0, 2]]
    assert report["per_class_recall"] == {"a": 1.0, "b": 0.0, "c": 1.0}
    assert report["uar"] == pytest.approx(2 / 3)
    path = plot_confusion(np.array(report["confusion_matrix"]), labels, tmp_path / "cm.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
