"""Whole clips and timelines: how a recording becomes model windows, and how their scores become results.

A *clip* is a recording scored as one (``emotion-score``, ``predict_file``): trimmed like a training clip, cut
into ``tile_bounds`` windows, its label the mean of the windows' probabilities weighted by their seconds. A
*timeline* is the live monitor's windows over a recording (``emotion-score --segments``, ``predict_segments``):
the same ``StreamWindower`` and speech gate as ``emotion-live``, one ``Segment`` per window. These functions take
an ``EmotionModel`` (``emotion_monitor.realtime.model``) and use only its ``score_windows`` and metadata.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from emotion_monitor.realtime.audio import AudioError, prepare_clip, rms_dbfs
from emotion_monitor.realtime.audio import to_model_rate as _resample
from emotion_monitor.realtime.vad import FrameVAD, load_vad
from emotion_monitor.realtime.windowing import AudioWindow, StreamWindower, tile_bounds

if TYPE_CHECKING:
    from emotion_monitor.realtime.model import EmotionModel

SILENT_DBFS = -70.0
"""A clip whose overall level is below this is reported as silent instead of being scored. Real quiet speech
goes lower than one might think: the quietest RAVDESS clips (soft "calm" takes) sit at -62 dBFS RMS after
trimming, so the bar is 8 dB under that; a muted input or digital silence is far below it."""
SILENCE_LABEL = "silence"
MIN_CLIP_S = 0.1
"""Shortest clip scored: below this the speech encoders' front ends have too few samples (and it says nothing)."""


@dataclass(frozen=True)
class Prediction:
    """The estimate for one clip.

    label: most probable emotion; confidence: its probability; probs: every label's probability.
    duration_s: length of the audio scored (after trimming silence); windows: model inputs averaged.
    """

    label: str
    confidence: float
    probs: dict[str, float]
    duration_s: float
    windows: int


@dataclass(frozen=True)
class Segment:
    """One window of a timeline: ``[start_s, end_s)``, whether it holds speech, label (``silence`` when not).

    ``probs`` is None for a silence window: it is not judged (as in the live monitor), so it carries no emotion.
    """

    start_s: float
    end_s: float
    speech: bool
    label: str
    probs: dict[str, float] | None = None


@dataclass(frozen=True)
class ClipScores:
    """A clip's scored windows: probabilities ``[W, classes]``, pooled features ``[W, layers + 1, hidden]`` (None
    unless asked for), ``duration_s``, the seconds of sound after trimming, and ``window_seconds`` ``[W]``, the
    seconds of audio each window's model input holds (its weight in the clip's mean)."""

    probs: np.ndarray
    pooled: np.ndarray | None
    duration_s: float
    window_seconds: np.ndarray


@dataclass(frozen=True)
class TimelineScores:
    """The live monitor's windows over a recording and every window's scores: probabilities ``[W, classes]``,
    pooled features ``[W, layers + 1, hidden]`` or None unless asked for."""

    windows: list[AudioWindow]
    probs: np.ndarray
    pooled: np.ndarray | None


def model_rate_audio(model: EmotionModel, samples: np.ndarray, sample_rate: int, source: str = "<array>"):
    """Any channels/rate → mono float32 at the model's rate; AudioError when empty or not finite."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.size == 0:
        raise AudioError(source, "no audio samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(source, "audio contains NaN or infinite samples")
    return _resample(samples, sample_rate, model.sample_rate)


def ensure_audible(audio: np.ndarray, source: str = "<array>") -> np.ndarray:
    """``audio`` unchanged, or AudioError when its overall level is below ``SILENT_DBFS`` (nothing to judge)."""
    check_level(rms_dbfs(audio), source)
    return audio


def check_level(level_dbfs: float, source: str = "<array>") -> None:
    """AudioError when a recording's overall RMS level is below ``SILENT_DBFS`` (nothing to judge)."""
    if level_dbfs < SILENT_DBFS:
        raise AudioError(
            source, f"silent (level {max(level_dbfs, -120.0):.0f} dBFS, below {SILENT_DBFS:.0f})"
        )


def clip_bounds(model: EmotionModel, n_samples: int) -> list[tuple[int, int]]:
    """Windows scoring a whole clip (``windowing.tile_bounds``): the clip itself when it fits in ``window_s``;
    otherwise as few full windows as cover it, end to end with the overlap spread evenly (each second is encoded
    about once)."""
    return tile_bounds(n_samples, model.window_spec().window)


def score_clip(
    model: EmotionModel, samples: np.ndarray, sample_rate: int, source: str = "<array>", pooled: bool = False
) -> ClipScores:
    """Any rate/channels (``[frames]`` or ``[frames, channels]``) → the clip's scored windows.

    The clip is trimmed like a training clip (``prepare_clip``); a clip up to ``window_s`` long is one model
    input, a longer one is cut into ``clip_bounds`` windows (training saw ``window_s`` crops, so a long clip is
    judged crop by crop, never squeezed into one input). Raises AudioError when silent or too short.
    """
    audio = ensure_audible(model_rate_audio(model, samples, sample_rate, source), source)
    clip = prepare_clip(audio, model.preprocess, model.sample_rate)
    if len(clip) < MIN_CLIP_S * model.sample_rate:
        raise AudioError(
            source, f"too short ({len(clip) / model.sample_rate:.3f} s of sound, minimum {MIN_CLIP_S} s)"
        )
    scores = model.score_windows([clip[s:e] for s, e in clip_bounds(model, len(clip))], pooled)
    return ClipScores(scores.probs, scores.pooled, len(clip) / model.sample_rate, scores.seconds)


def clip_prediction(
    labels: Sequence[str],
    window_probs: np.ndarray,
    duration_s: float,
    window_seconds: np.ndarray | None = None,
) -> Prediction:
    """One Prediction from a clip's window probabilities ``[W, classes]``: their mean, weighted by each window's
    seconds of audio when ``window_seconds`` ``[W]`` is given (``ClipScores.window_seconds``)."""
    probs = np.average(np.asarray(window_probs), axis=0, weights=window_seconds)
    best = int(np.argmax(probs))
    return Prediction(
        label=labels[best],
        confidence=float(probs[best]),
        probs=probs_dict(labels, probs),
        duration_s=duration_s,
        windows=len(window_probs),
    )


def score_timeline(
    model: EmotionModel,
    samples: np.ndarray,
    sample_rate: int,
    window_s: float | None = None,
    hop_s: float | None = None,
    vad: FrameVAD | None = None,
    pooled: bool = False,
) -> TimelineScores:
    """The live monitor's windows over a recording (same ``StreamWindower``, same speech gate), every one scored
    (batched; no per-recording trimming)."""
    audio = model_rate_audio(model, samples, sample_rate)
    windower = StreamWindower(model.window_spec(window_s, hop_s), vad or load_vad()[0], model.speech_gate)
    windows = windower.feed(audio) + windower.flush()
    scores = model.score_windows([w.samples for w in windows], pooled)
    return TimelineScores(windows, scores.probs, scores.pooled)


def timeline_segments(
    labels: Sequence[str], windows: Sequence[AudioWindow], probs: np.ndarray
) -> list[Segment]:
    """Timeline rows: speech windows labelled by their top class with their probabilities; the others ``silence``
    without probabilities (the speech gate says there is not enough speech to judge)."""
    return [
        Segment(
            start_s=w.start_s,
            end_s=w.end_s,
            speech=w.speech,
            label=labels[int(np.argmax(p))] if w.speech else SILENCE_LABEL,
            probs=probs_dict(labels, p) if w.speech else None,
        )
        for w, p in zip(windows, probs, strict=True)
    ]


def probs_dict(labels: Sequence[str], probs: np.ndarray) -> dict[str, float]:
    """``{label: probability}`` for one window's or clip's probabilities ``[classes]``."""
    return {label: float(p) for label, p in zip(labels, probs, strict=True)}
