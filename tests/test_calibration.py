"""Calibration: expected calibration error, label shares, the fitted temperature, and the calibrated confidence
the bundled model carries in its ONNX metadata."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotion_monitor.core.calibration import (
    calibration_report,
    expected_calibration_error,
    fit_temperature,
    label_shares,
    with_temperature,
)
from emotion_monitor.core.paths import BUNDLE_DIR


def overconfident(n: int = 4000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clips whose true class has logit +1 over three others, scored by a model that is 3x too sure."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 4))
    labels = rng.integers(0, 4, n)
    logits[np.arange(n), labels] += 1.0
    sharp = np.exp(3.0 * logits)
    return sharp / sharp.sum(axis=1, keepdims=True), labels


def test_ece_is_zero_for_a_calibrated_model_and_large_for_an_overconfident_one():
    probs, labels = overconfident()
    calibrated = with_temperature(probs, 3.0)  # undoes the 3x
    assert expected_calibration_error(probs, labels) > 0.15
    assert expected_calibration_error(calibrated, labels) < 0.03
    assert (calibrated.argmax(axis=1) == probs.argmax(axis=1)).all()  # labels never change


def test_fitted_temperature_recovers_the_overconfidence():
    probs, labels = overconfident()
    assert fit_temperature(probs, labels) == pytest.approx(3.0, rel=0.1)


def test_label_shares_show_a_model_that_answers_one_label_for_everything():
    labels = np.array([0, 1, 2, 3] * 25)
    probs = np.tile([0.1, 0.1, 0.7, 0.1], (100, 1))
    shares = label_shares(probs, labels, ["a", "b", "c", "d"])
    assert shares == {"a": [0.0, 0.25], "b": [0.0, 0.25], "c": [1.0, 0.25], "d": [0.0, 0.25]}


def test_report_fits_on_all_and_cross_fits_on_the_other_corpora():
    a, b = overconfident(seed=1), overconfident(seed=2)
    report = calibration_report({"a": a, "b": b}, ["w", "x", "y", "z"])
    assert report["temperature"] == pytest.approx(3.0, rel=0.1)
    for r in report["corpora"].values():
        assert r["ece_calibrated"] < r["ece"] and r["ece_cross"] < r["ece"]
        assert r["temperature_cross"] == pytest.approx(3.0, rel=0.15)


def test_bundled_model_metadata_carries_its_calibration(default_model):
    """The default model's ONNX metadata says how its probabilities were calibrated: the temperature fitted
    under leave-one-corpus-out (model.json), already folded into the heads' logits."""
    from emotion_monitor.realtime import load_model

    shipped = json.loads((BUNDLE_DIR / "model.json").read_text())["calibration"]
    info = load_model(default_model).info
    assert info.calibration["method"] == "temperature"
    assert info.calibration["temperature"] == shipped["temperature"] > 0
    for corpus in ("ravdess", "crema-d", "ased", "nemo"):
        entry = info.calibration["corpora"][corpus]
        assert entry["ece_calibrated"] <= entry["ece"] + 0.02
