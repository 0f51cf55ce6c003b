"""The one evaluation protocol: speaker-independent, per corpus, at clip and live-window level.

- **Speaker k-fold** (``speaker_folds``): every corpus's speakers dealt into k folds; each fold is tested by a head
  trained on the other folds' speakers of *all* corpora. No voice is ever on both sides.
- **Clip level**: exactly ``emotion-score``: a file's windows (one for a clip up to the window length), the mean
  of their probabilities, the top class.
- **Live-window level**: the speech windows of the file's ``--segments`` timeline (the live monitor's windows and
  speech gate), each scored on its own against the file's label. ``coverage``: share of files with at least one
  such window (a clip with too little speech gets no live estimate at all).
- **Leave one corpus out** (``loco``): train on the other corpora (each on its own classes), test on this one:
  the estimate of what a voice, language, microphone and room never seen in training will get.
- **Sessions** (``session_scores``): the live monitor's speaker adaptation judged as it runs, on a running mean of
  what it heard before: *mixed* sessions (all of a speaker's clips in random order, every emotion) and *one-mood*
  sessions (only that speaker's clips of one emotion: a speaker who keeps one mood, as in natural speech).

Every level is scored two ways: among the classes the test corpus can hold (``clip``, ``window``; CREMA-D: six),
and as the product answers, the top class among every class the heads were trained on (``clip_all``,
``window_all``; a ``calm`` answer on a corpus without calm is wrong). Metrics come from confusion matrices per fold
(``emotion_monitor.core.metrics``) and are reported as mean ± std over folds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.feature_data import FeatureSet
from emotion_monitor.core.metrics import METRIC_NAMES, confusion_matrix, metrics_from_confusion
from emotion_monitor.core.window_features import CLIP, SEGMENT
from emotion_monitor.realtime.speaker_norm import PredictionSpread, blend_weight
from emotion_monitor.realtime.windowing import SpeechGate

LEVELS = ("clip", "window", "clip_all", "window_all")
"""Clip and live-window level, each among the corpus's own classes and among all the heads' classes (``_all``)."""
SESSIONS = ("mixed", "one_mood")


@torch.no_grad()
def predict_rows(
    model, fs: FeatureSet, rows: np.ndarray, centre: np.ndarray | None = None, batch: int = 4096
):
    """Probabilities ``[len(rows), C]`` of cached windows through a head (``classify_pooled``); ``centre``: the
    per-speaker means to subtract (``FeatureSet.speaker_means``)."""
    model.eval()
    out = []
    for i in range(0, len(rows), batch):
        chunk = rows[i : i + batch]
        x = fs.pooled[chunk].astype(np.float32)
        if centre is not None:
            x = x - centre[fs.centre_index(chunk)]
        out.append(torch.softmax(model.classify_pooled(torch.from_numpy(x)), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, len(EMOTIONS)), np.float32)


def _top(probs: np.ndarray, classes: Sequence[int]) -> np.ndarray:
    masked = np.full_like(probs, -1.0)
    masked[:, list(classes)] = probs[:, list(classes)]
    return masked.argmax(axis=1)


@dataclass
class FoldScores:
    """Confusion matrices of one fold, by corpus and level, plus live coverage counts by corpus; ``variant``: the
    same fold's heads scored on another encoder's clip features (``dataset.test_model``, e.g. its int8 copy)."""

    confusion: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    coverage: dict[str, tuple[int, int]] = field(default_factory=dict)
    variant: FoldScores | None = None
    clip_probs: dict[str, list[tuple[np.ndarray, np.ndarray]]] = field(default_factory=dict)
    """Per corpus: the clips' probabilities ``[N, C]`` and true labels, for calibration (``core.calibration``)."""


def scored_classes(corpus, classes: Sequence[int] | None) -> list[int]:
    """The classes a corpus's utterances are scored among: the corpus's own, within the heads' ``classes`` (None:
    all; leave-one-corpus-out: the shared ones)."""
    return sorted(set(corpus.classes) & set(classes if classes is not None else range(len(EMOTIONS))))


def heads_classes(classes: Sequence[int] | None) -> list[int]:
    """The classes the product answers among (the ``_all`` levels): every class the heads were trained on."""
    return sorted(classes) if classes is not None else list(range(len(EMOTIONS)))


def score_speakers(
    model,
    fs: FeatureSet,
    speakers: Sequence[str],
    gate: SpeechGate,
    classes: Sequence[int] | None = None,
    centre: np.ndarray | None = None,
    view: str = "clean",
) -> FoldScores:
    """Score every test utterance of ``speakers`` at clip and live-window level, per corpus, on the windows of
    ``view`` (a clip-only view has no live windows: their level counts none). ``classes``: the classes the heads
    were trained on (None: all); utterances of other classes are not scored."""
    scores = FoldScores()
    k = len(EMOTIONS)
    every = heads_classes(classes)
    for corpus in fs.corpora:
        corpus_speakers = [s for s in speakers if s in set(corpus.speakers)]
        if not corpus_speakers:
            continue
        allowed = scored_classes(corpus, classes)
        clip_rows = fs.rows(corpus_speakers, [view], [CLIP], classes=allowed)
        p = predict_rows(model, fs, clip_rows, centre)
        utts, inverse = np.unique(fs.utt[clip_rows], return_inverse=True)
        # emotion-score's clip label: the mean of its windows' probabilities, weighted by their seconds.
        mean = np.zeros((len(utts), k))
        np.add.at(mean, inverse, p * fs.speech_s[clip_rows, None])
        y = fs.utt_label[utts]
        win_rows = fs.rows(corpus_speakers, [view], [SEGMENT], gate=gate, classes=allowed)
        pw = predict_rows(model, fs, win_rows, centre)
        yw = fs.utt_label[fs.utt[win_rows]]
        cm = scores.confusion.setdefault(corpus.name, {})
        for suffix, among in (("", allowed), ("_all", every)):
            cm[f"clip{suffix}"] = confusion_matrix(y, _top(mean, among), k)
            cm[f"window{suffix}"] = confusion_matrix(yw, _top(pw, among), k)
        scores.coverage[corpus.name] = (len(np.unique(fs.utt[win_rows])), len(utts))
        scores.clip_probs.setdefault(corpus.name, []).append((mean / mean.sum(axis=1, keepdims=True), y))
    return scores


def summarise(folds: list[FoldScores]) -> dict:
    """``{corpus: {level: {metric: [mean, std]}, "coverage": share, "folds": n, "confusion": {level: summed}}}``."""
    out: dict = {}
    corpora = sorted({c for f in folds for c in f.confusion})
    for corpus in corpora:
        present = [f for f in folds if corpus in f.confusion]
        entry: dict = {"folds": len(present), "confusion": {}}
        for level in LEVELS:
            if level not in present[0].confusion[corpus]:
                continue
            per_fold = [metrics_from_confusion(f.confusion[corpus][level]) for f in present]
            entry[level] = {
                m: [
                    round(float(np.mean([s[m] for s in per_fold])), 4),
                    round(float(np.std([s[m] for s in per_fold])), 4),
                ]
                for m in METRIC_NAMES
            }
            entry[level]["n"] = int(sum(f.confusion[corpus][level].sum() for f in present))
            entry["confusion"][level] = sum(f.confusion[corpus][level] for f in present).tolist()
        covered = sum(f.coverage[corpus][0] for f in present)
        total = sum(f.coverage[corpus][1] for f in present)
        entry["coverage"] = round(covered / total, 4) if total else 0.0
        out[corpus] = entry
    return out


def variant_deltas(folds: list[FoldScores]) -> dict:
    """Clip accuracy of each fold's heads on the training encoder's features and on the ``variant``'s, and the
    difference per fold: ``{corpus: {"n", "folds", "accuracy", "variant_accuracy", "delta": [mean, std],
    "delta_per_fold"}}`` (the same heads and test speakers on both sides)."""
    out: dict = {}
    corpora = sorted({c for f in folds if f.variant is not None for c in f.variant.confusion})
    for corpus in corpora:
        present = [f for f in folds if f.variant is not None and corpus in f.variant.confusion]
        base = np.array([metrics_from_confusion(f.confusion[corpus]["clip"])["accuracy"] for f in present])
        other = np.array(
            [metrics_from_confusion(f.variant.confusion[corpus]["clip"])["accuracy"] for f in present]
        )
        delta = other - base

        def stats(x):
            return [round(float(x.mean()), 4), round(float(x.std()), 4)]

        out[corpus] = {
            "n": int(sum(f.variant.confusion[corpus]["clip"].sum() for f in present)),
            "folds": len(present),
            "accuracy": stats(base),
            "variant_accuracy": stats(other),
            "delta": stats(delta),
            "delta_per_fold": [round(float(d), 4) for d in delta],
        }
    return out


def format_deltas(title: str, deltas: dict) -> str:
    """A Markdown table of ``variant_deltas``."""
    lines = [
        f"**{title}**",
        "",
        "| corpus | clips | accuracy, training encoder | accuracy, test model | Δ per fold | Δ of each fold |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, d in deltas.items():
        cells = " | ".join(f"{d[k][0]:.3f} ± {d[k][1]:.3f}" for k in ("accuracy", "variant_accuracy"))
        delta = f"{d['delta'][0]:+.3f} ± {d['delta'][1]:.3f}"
        each = " ".join(f"{x:+.3f}" for x in d["delta_per_fold"])
        lines.append(f"| {corpus} | {d['n']} | {cells} | {delta} | {each} |")
    return "\n".join(lines)


def format_table(title: str, summary: dict) -> str:
    """A Markdown table of a ``summarise`` result: one row per corpus and level that holds any windows."""
    lines = [
        f"**{title}**",
        "",
        "| corpus | level | n | accuracy | macro-F1 | weighted-F1 | UAR |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for corpus, entry in summary.items():
        for level in LEVELS:
            r = entry.get(level)
            if not r or not r["n"]:
                continue
            cells = " | ".join(f"{r[m][0]:.3f} ± {r[m][1]:.3f}" for m in METRIC_NAMES)
            n = f"{r['n']}" + (f" ({entry['coverage']:.0%} of clips)" if level.startswith("window") else "")
            lines.append(f"| {corpus} | {level} | {n} | {cells} |")
    return "\n".join(lines)


def session_order(fs: FeatureSet, speaker: str, sessions: str, rng: np.random.Generator) -> list[np.ndarray]:
    """The utterances of ``speaker`` as the sessions the monitor would hear: ``mixed`` = one session of all of
    them in random order; ``one_mood`` = one session per emotion, of only that emotion's utterances."""
    utts = rng.permutation(np.flatnonzero(fs.utt_speaker == speaker))
    if sessions == "mixed":
        return [utts]
    if sessions == "one_mood":
        labels = fs.utt_label[utts]
        return [utts[labels == label] for label in np.unique(labels)]
    raise ValueError(f"sessions {sessions!r}: choose from {', '.join(SESSIONS)}")


def session_scores(
    plain,
    centred,
    fs: FeatureSet,
    speakers: Sequence[str],
    gate: SpeechGate,
    sessions: str = "mixed",
    centre_map=None,
    min_speech_s: float = 10.0,
    seed: int = 0,
    view: str = "clean",
    classes: Sequence[int] | None = None,
) -> FoldScores:
    """Scores with the live monitor's running speaker adaptation (``--speaker-norm``, blend), session by session.

    In each session (``session_order``) utterance i is judged against the mean pooled features of utterances
    0..i (what the monitor has heard by then), mapped by ``centre_map`` (``SpeakerSubspace.centre``; None: the
    mean itself), by the plain head's and the centred head's probabilities blended as the runtime blends them
    (``realtime.speaker_norm.blend_weight`` of the spread of the plain head's estimates of the windows of 0..i),
    and by the plain head alone until ``min_speech_s`` seconds were heard (the plain head's scores of the same clips
    are ``score_speakers``').
    ``classes``: the heads' classes; utterances of other classes are neither heard nor scored, as in
    ``score_speakers``.
    """
    scores = FoldScores()
    k = len(EMOTIONS)
    every = heads_classes(classes)
    rng = np.random.default_rng(seed)
    for corpus in fs.corpora:
        corpus_speakers = [s for s in speakers if s in set(corpus.speakers)]
        if not corpus_speakers:
            continue
        allowed = scored_classes(corpus, classes)
        cm = {level: np.zeros((k, k), np.int64) for level in LEVELS}
        covered = total = 0
        for speaker in corpus_speakers:
            speaker_clips = fs.rows([speaker], [view], [CLIP], classes=allowed)
            speaker_windows = fs.rows([speaker], [view], [SEGMENT], gate=gate, classes=allowed)
            for session in session_order(fs, speaker, sessions, rng):
                total_feat, count, heard_s = np.zeros(fs.pooled.shape[1:], np.float64), 0, 0.0
                spread = PredictionSpread()
                for u in session:
                    clip_rows = speaker_clips[fs.utt[speaker_clips] == u]
                    if not len(clip_rows):
                        continue
                    total_feat += fs.pooled[clip_rows].astype(np.float64).sum(axis=0)
                    count += len(clip_rows)
                    heard_s += float(fs.speech_s[clip_rows].sum())
                    plain_clip = predict_rows(plain, fs, clip_rows)  # heard, and judged at clip level
                    spread.add(plain_clip)
                    centre = None  # the plain head alone until min_speech_s of the session was heard
                    if heard_s >= min_speech_s:
                        mean = (total_feat / count).astype(np.float32)[None]
                        mean = centre_map(mean) if centre_map is not None else mean
                        centre = np.broadcast_to(mean, (len(fs.utterances) * len(fs.views), *mean.shape[1:]))
                    weight = blend_weight(spread.value)
                    win_rows = speaker_windows[fs.utt[speaker_windows] == u]
                    y = fs.utt_label[u]
                    for level, rows in (("clip", clip_rows), ("window", win_rows)):
                        if not len(rows):
                            continue
                        p = plain_clip if level == "clip" else predict_rows(plain, fs, rows)
                        if centre is not None and weight > 0:
                            p = (1 - weight) * p + weight * predict_rows(centred, fs, rows, centre)
                        if level == "clip":
                            p = np.average(p, axis=0, weights=fs.speech_s[rows])[None]
                        for suffix, among in (("", allowed), ("_all", every)):
                            np.add.at(cm[f"{level}{suffix}"], (np.full(len(p), y), _top(p, among)), 1)
                    covered += bool(len(win_rows))
                    total += 1
        scores.confusion[corpus.name] = cm
        scores.coverage[corpus.name] = (covered, total)
    return scores
