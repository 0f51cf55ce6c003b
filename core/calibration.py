"""Confidence that means what it says: calibration of the clip probabilities under the evaluation protocol.

- ``expected_calibration_error``: the gap between confidence (the top probability) and accuracy, averaged over
  equal-width confidence bins, weighted by their clips.
- ``label_shares``: how often each label is answered against how often it is true (a model that answers one label
  for a third of everything shows here).
- ``fit_temperature``: the temperature ``T`` that minimises the negative log-likelihood of ``softmax(log p / T)``;
  the shipped heads divide their logits by it (``core.bundle``), so every output's confidence is calibrated.

Probabilities are the product's answers: a clip's probabilities over every class the heads know (the mean over
its windows, as ``emotion-score`` gives it), scored against its true label.
"""

from __future__ import annotations

import numpy as np

BINS = 15
TEMPERATURES = np.exp(np.linspace(np.log(0.25), np.log(8.0), 241))
"""The grid ``fit_temperature`` searches (0.25 to 8, 1.5 % apart)."""


def with_temperature(probs: np.ndarray, temperature: float) -> np.ndarray:
    """``softmax(log(probs) / temperature)`` row by row (classes with probability 0 stay 0)."""
    logp = np.log(np.clip(probs, 1e-12, None)) / temperature
    logp[probs <= 0] = -np.inf
    logp -= logp.max(axis=1, keepdims=True)
    out = np.exp(logp)
    return out / out.sum(axis=1, keepdims=True)


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Mean |accuracy − confidence| over ``bins`` equal-width confidence bins, weighted by their share of clips."""
    if not len(labels):
        return 0.0
    confidence = probs.max(axis=1)
    correct = probs.argmax(axis=1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1]), 0, bins - 1)
    error = 0.0
    for b in range(bins):
        mine = which == b
        if mine.any():
            error += mine.mean() * abs(correct[mine].mean() - confidence[mine].mean())
    return float(error)


def negative_log_likelihood(probs: np.ndarray, labels: np.ndarray) -> float:
    return float(-np.log(np.clip(probs[np.arange(len(labels)), labels], 1e-12, None)).mean())


def fit_temperature(probs: np.ndarray, labels: np.ndarray) -> float:
    """The grid temperature (``TEMPERATURES``) with the lowest negative log-likelihood on these clips."""
    losses = [negative_log_likelihood(with_temperature(probs, t), labels) for t in TEMPERATURES]
    return float(TEMPERATURES[int(np.argmin(losses))])


def label_shares(probs: np.ndarray, labels: np.ndarray, names: list[str]) -> dict[str, list[float]]:
    """``{label: [share answered, share true]}`` for every label answered or true at least once."""
    answered = np.bincount(probs.argmax(axis=1), minlength=len(names)) / max(len(labels), 1)
    true = np.bincount(labels, minlength=len(names)) / max(len(labels), 1)
    return {
        name: [round(float(answered[i]), 4), round(float(true[i]), 4)]
        for i, name in enumerate(names)
        if answered[i] or true[i]
    }


def calibration_report(by_corpus: dict[str, tuple[np.ndarray, np.ndarray]], names: list[str]) -> dict:
    """Calibration of held-out corpora's clips (``{corpus: (probs [N, C], labels [N])}``, leave-one-corpus-out).

    ``temperature``: fitted on every corpus's clips (what ships). Per corpus: ECE as it is, with the shipped
    temperature, and with a temperature fitted on the *other* corpora only (``ece_cross``: the honest estimate
    for a corpus never seen), plus the label shares as it is.
    """
    corpora = sorted(by_corpus)
    all_probs = np.concatenate([by_corpus[c][0] for c in corpora])
    all_labels = np.concatenate([by_corpus[c][1] for c in corpora])
    temperature = fit_temperature(all_probs, all_labels)
    out: dict = {"temperature": round(temperature, 4), "corpora": {}}
    for corpus in corpora:
        probs, labels = by_corpus[corpus]
        others = [c for c in corpora if c != corpus]
        cross = temperature
        if others:
            cross = fit_temperature(
                np.concatenate([by_corpus[c][0] for c in others]),
                np.concatenate([by_corpus[c][1] for c in others]),
            )
        out["corpora"][corpus] = {
            "clips": int(len(labels)),
            "accuracy": round(float((probs.argmax(axis=1) == labels).mean()), 4),
            "mean_confidence": round(float(probs.max(axis=1).mean()), 4),
            "ece": round(expected_calibration_error(probs, labels), 4),
            "ece_calibrated": round(
                expected_calibration_error(with_temperature(probs, temperature), labels), 4
            ),
            "ece_cross": round(expected_calibration_error(with_temperature(probs, cross), labels), 4),
            "temperature_cross": round(cross, 4),
            "label_shares": label_shares(probs, labels, names),
        }
    return out


def format_calibration(title: str, report: dict) -> str:
    """A Markdown table of ``calibration_report``, and each corpus's label shares."""
    lines = [
        f"**{title}** (temperature fitted on all held-out corpora: {report['temperature']:.2f})",
        "",
        "| corpus | clips | accuracy | mean confidence | ECE | ECE, calibrated | ECE, T fitted on the others (T) |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, r in report["corpora"].items():
        lines.append(
            f"| {corpus} | {r['clips']} | {r['accuracy']:.3f} | {r['mean_confidence']:.3f} | {r['ece']:.3f} | "
            f"{r['ece_calibrated']:.3f} | {r['ece_cross']:.3f} ({r['temperature_cross']:.2f}) |"
        )
    lines += [
        "",
        "Share of clips answered with each label / truly of it (leave one corpus out, as it is):",
        "",
    ]
    for corpus, r in report["corpora"].items():
        shares = ", ".join(f"{name} {a:.0%}/{t:.0%}" for name, (a, t) in r["label_shares"].items())
        lines.append(f"- {corpus}: {shares}")
    return "\n".join(lines)
