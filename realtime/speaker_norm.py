"""Per-speaker normalisation: judge a window against the speaker's own average voice, not everyone's.

Speakers differ more from each other than one speaker's emotions do, so a head that sees features minus the
current speaker's mean is more accurate -- when that mean comes from a varied history of the speaker (measured by
``emotion-train experiment=head task=bundle``; figures in the README). A history of a single mood lowers it
(centring then subtracts part of that mood).
``blend`` (the default) averages the centred head's probabilities with the plain head's, weighted by how varied
the speaker's history sounds to the plain head (``PredictionSpread``, ``blend_weight``): a speaker heard in many
moods gets the even blend, one who keeps a single mood little or none of the centred head (centring would subtract
that mood). ``centred`` uses the centred head alone. A fixed calm baseline is always blended evenly.

    norm = SpeakerNormaliser(model.speaker_norm_head())
    scores = model.score_windows(windows, pooled=True)
    probs, pooled = scores.probs, scores.pooled
    norm.update(pooled, speech_s=hop_s * len(windows), probs=probs)
    probs = norm.apply(probs, pooled)    # plain probabilities until min_speech_s of speech was heard
    norm.reset()                         # a new speaker

A running mean drifts towards any mood that lasts, and then hides it. A calm baseline recorded once (about 10 s
of the speaker talking at rest) does not: ``SpeakerNormaliser.from_baseline(model.speaker_norm_head("baseline"),
pooled_of_the_recording)`` judges every window against it, with a head trained for exactly that.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

import numpy as np
import onnxruntime as ort

from emotion_monitor.realtime.metadata import POOLED_NAME, PROBS_NAME, SPEAKER_MEAN_NAME

SPEAKER_NORM_MODES = ("blend", "centred")
DEFAULT_MIN_SPEECH_S = 10.0
"""Speech heard before the speaker's mean is used: about five short utterances; fewer give a noisy mean (the
evaluation protocol's running-mean rows use the same threshold, ``emotion_monitor.core.protocol.session_scores``)."""

SPREAD_LOW = 0.05
SPREAD_HIGH = 0.15
"""The blend weight of the centred head rises from 0 at a history spread (``PredictionSpread``) of ``SPREAD_LOW``
to 0.5 at ``SPREAD_HIGH``. A speaker who keeps one mood gets consistent plain estimates (a low spread), one heard
in several moods varied ones. Chosen under the evaluation protocol's mixed and one-mood sessions
(docs/evaluation.md)."""


def blend_weight(spread: float) -> float:
    """The centred head's weight in ``blend`` for a history of this spread: 0 to 0.5."""
    return 0.5 * float(np.clip((spread - SPREAD_LOW) / (SPREAD_HIGH - SPREAD_LOW), 0.0, 1.0))


class PredictionSpread:
    """How varied a speaker's history sounds to the plain head: the mean squared distance of each heard window's
    plain probabilities to their mean (0 when every window got the same estimate). Running sums, any length."""

    def __init__(self):
        self.windows = 0
        self._sum: np.ndarray | None = None
        self._square = 0.0

    def add(self, probs: np.ndarray) -> None:
        """Plain probabilities ``[N, classes]`` of windows heard."""
        probs = np.asarray(probs, dtype=np.float64)
        if len(probs) == 0:
            return
        total = probs.sum(axis=0)
        self._sum = total if self._sum is None else self._sum + total
        self._square += float(np.square(probs).sum())
        self.windows += len(probs)

    @property
    def value(self) -> float:
        if not self.windows:
            return 0.0
        mean = self._sum / self.windows
        return max(0.0, self._square / self.windows - float(np.square(mean).sum()))


class SpeakerNormHead:
    """The centred head stored in a model's metadata, on ONNX Runtime: ``(pooled, mean) → probabilities``."""

    def __init__(self, encoded: str, providers: list[str] | None = None):
        """``encoded``: the base64 ONNX graph from ``SPEAKER_NORM_HEAD_KEY``."""
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1  # a few small matrix products: threads would cost more than they save
        so.log_severity_level = 4
        self.session = ort.InferenceSession(
            base64.b64decode(encoded), so, providers=providers or ["CPUExecutionProvider"]
        )

    def probs(self, pooled: np.ndarray, speaker_mean: np.ndarray) -> np.ndarray:
        """``pooled [N, L+1, H]``, ``speaker_mean [L+1, H]`` → probabilities ``[N, classes]``."""
        feeds = {
            POOLED_NAME: np.ascontiguousarray(pooled, dtype=np.float32),
            SPEAKER_MEAN_NAME: np.ascontiguousarray(speaker_mean, dtype=np.float32),
        }
        return self.session.run([PROBS_NAME], feeds)[0]


@dataclass(frozen=True)
class SpeakerNormOptions:
    """mode: ``blend`` (mean of plain and centred probabilities) or ``centred`` (centred head only).
    min_speech_s: seconds of the speaker's speech needed before the running mean is used."""

    mode: str = "blend"
    min_speech_s: float = DEFAULT_MIN_SPEECH_S

    def __post_init__(self):
        if self.mode not in SPEAKER_NORM_MODES:
            raise ValueError(
                f"speaker normalisation mode {self.mode!r}: choose {' or '.join(SPEAKER_NORM_MODES)}"
            )
        if self.min_speech_s < 0:
            raise ValueError(f"min_speech_s {self.min_speech_s}: must be >= 0")


class SpeakerNormaliser:
    """Running mean of one speaker's pooled features and the estimates it allows. ``reset()`` for a new speaker.

    The mean is over every window given to ``update`` (speech windows only: silence says nothing about the
    voice), kept in float64 so hours of windows do not lose precision.
    """

    def __init__(self, head: SpeakerNormHead, options: SpeakerNormOptions | None = None):
        self.head = head
        self.options = options or SpeakerNormOptions()
        self.fixed = False  # True for a calm baseline (``from_baseline``): the mean no longer changes
        self.reset()

    @classmethod
    def from_baseline(
        cls,
        head: SpeakerNormHead,
        pooled: np.ndarray,
        speech_s: float,
        options: SpeakerNormOptions | None = None,
    ) -> SpeakerNormaliser:
        """A normaliser fixed on a calm baseline recording's windows ``pooled [N, L+1, H]`` (``speech_s`` seconds):
        ``update`` and ``reset`` leave it unchanged, and it is ready at once. ``head``: the ``baseline`` head."""
        norm = cls(head, options)
        norm.update(pooled, speech_s)
        norm.fixed = True
        return norm

    def reset(self) -> None:
        """Forget the speaker: plain estimates until ``min_speech_s`` of new speech (a baseline is kept)."""
        if self.fixed:
            return
        self._sum: np.ndarray | None = None
        self.windows = 0
        self.speech_s = 0.0
        self.spread = PredictionSpread()

    def update(self, pooled: np.ndarray, speech_s: float, probs: np.ndarray | None = None) -> None:
        """Add windows ``pooled [N, L+1, H]`` that carry ``speech_s`` seconds of new speech in total, with their plain
        probabilities ``probs [N, classes]`` (what ``blend`` weighs the centred head by; None: an even blend)."""
        pooled = np.asarray(pooled, dtype=np.float64)
        if len(pooled) == 0 or self.fixed:
            return
        total = pooled.sum(axis=0)
        self._sum = total if self._sum is None else self._sum + total
        self.windows += len(pooled)
        self.speech_s += float(speech_s)
        if probs is not None:
            self.spread.add(probs)

    @property
    def ready(self) -> bool:
        """Whether enough speech was heard for the mean to be used (always, with a baseline)."""
        if self.fixed:
            return True
        return self.windows > 0 and self.speech_s >= self.options.min_speech_s

    @property
    def mean(self) -> np.ndarray | None:
        """``[L+1, H]`` float32 mean of the windows so far, None before the first."""
        return None if self._sum is None else (self._sum / self.windows).astype(np.float32)

    def apply(self, probs: np.ndarray, pooled: np.ndarray) -> np.ndarray:
        """Plain ``probs [N, C]`` → speaker-normalised probabilities (``probs`` unchanged until ``ready``)."""
        if not self.ready or len(pooled) == 0:
            return probs
        weight = self.weight
        if weight == 0.0:
            return probs
        centred = self.head.probs(pooled, self.mean)
        return centred if weight == 1.0 else (1.0 - weight) * probs + weight * centred

    @property
    def weight(self) -> float:
        """The centred head's share in what ``apply`` returns once ``ready``: 1 for ``centred``; for ``blend``, even
        with a baseline or a history given without plain probabilities, else by the spread of the plain estimates
        heard (``blend_weight``)."""
        if self.options.mode == "centred":
            return 1.0
        if self.fixed or self.spread.windows < self.windows:
            return 0.5
        return blend_weight(self.spread.value)
