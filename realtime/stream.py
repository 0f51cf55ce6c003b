"""``EmotionStream``: the live pipeline as one object: feed audio chunks, get one result per completed hop.

    import soundfile as sf
    from emotion_monitor.realtime import EmotionStream, StreamOptions, load_model

    stream = EmotionStream(load_model(), StreamOptions(hop_s=0.5))
    for block in sf.blocks("talk.wav", blocksize=320, dtype="float32"):   # any size, rate, channels
        for result in stream.process(block, sample_rate=16_000):
            print(result.end_s, result.speaker, result.label, result.confidence)
    for result in stream.flush():                                        # end of input
        print(result.to_json())

Every rule of the live monitor lives here or in the small classes composed here: ``StreamWindower`` (windows
ending every hop, the VAD and the model's speech gate), ``EmotionModel.score_windows`` (trimming, level,
non-finite outputs), ``SpeakerEncoder`` and ``TurnDetector`` (who speaks), ``SpeakerRegistry`` (a
``SpeakerNormaliser`` per speaker) and ``Smoother`` (EMA weighted by seconds of speech, hysteresis, reset after
silence). No threads, no I/O while streaming, no clock: time is the stream's own (seconds of audio received since
the last ``reset``), so a recording gives the same results whatever the chunk sizes. ``emotion-live`` is an audio source, a ring buffer and a view around this object.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import numpy as np
import soxr

from emotion_monitor.realtime.analysis import SILENCE_LABEL, probs_dict
from emotion_monitor.realtime.audio import to_mono
from emotion_monitor.realtime.errors import NonFiniteOutputError
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.model import EmotionModel
from emotion_monitor.realtime.smoothing import Smoother, SmootherOptions
from emotion_monitor.realtime.speaker_embedding import SAMPLE_RATE as SPEAKER_RATE
from emotion_monitor.realtime.speaker_embedding import SpeakerEncoder
from emotion_monitor.realtime.speaker_norm import SpeakerNormaliser, SpeakerNormOptions
from emotion_monitor.realtime.speakers import SpeakerRegistry
from emotion_monitor.realtime.turns import TurnDetector, TurnOptions
from emotion_monitor.realtime.vad import FrameVAD, load_vad
from emotion_monitor.realtime.windowing import AudioWindow, StreamWindower


@dataclass(frozen=True)
class StreamOptions:
    """How an ``EmotionStream`` listens.

    window_s: analysis window (None: the model's); hop_s: seconds between results.
    vad: speech gate's frame detector, ``auto`` (Silero when available), ``silero`` or ``energy``.
    smoothing: the EMA and hysteresis (``SmootherOptions``, incl. the reset after ``reset_after_silence_s``).
    speaker_norm: judge each speaker against their own running mean (True) or not (False, the default: under the
        evaluation protocol it helps a speaker heard in many moods and hurts one who keeps a single mood, see the
        model card); None = on when the model has a running speaker head and no baseline is given.
    speaker_norm_options: its mode (``blend``/``centred``) and the speech needed first (``min_speech_s``).
    speaker_turns: detect changes of speaker from the voice (``SpeakerEncoder`` + ``TurnDetector``): each
        speaker gets an id and, with speaker_norm, a running mean of their own; a speaker who returns gets theirs
        back. Needs the speaker model (built on first use from the ``speakers`` extra).
    turn_options: the detector's settings (``TurnOptions``).
    """

    window_s: float | None = None
    hop_s: float = DEFAULT_HOP_S
    vad: str = "auto"
    smoothing: SmootherOptions = field(default_factory=SmootherOptions)
    speaker_norm: bool | None = False
    speaker_norm_options: SpeakerNormOptions = field(default_factory=SpeakerNormOptions)
    speaker_turns: bool = False
    turn_options: TurnOptions = field(default_factory=TurnOptions)


@dataclass(frozen=True)
class StreamResult:
    """One hop: the window ``[start_s, end_s)`` in seconds of stream audio, and what was heard in it.

    speech: the speech gate's verdict. label/confidence: the smoothed, steady label and its smoothed probability
    (``silence`` and 0 when not speech). probs: the window's own probabilities (speaker-adapted when adaptation
    is active; None for silence: not scored). smoothed: the EMA probabilities the label comes from (None for
    silence). inference_ms: model time for the window (None for silence). speaker: the current speaker's id,
    stable within the session (``S1``, ``S2``, ...). speaker_norm: None when adaptation is off, else ``warming``
    (too little of this speaker's speech yet: plain probabilities), ``active`` (their running mean was used) or
    ``baseline`` (a calm recording was used). speaker_speech_s: seconds of this speaker's speech behind it.
    speaker_norm_weight: the speaker-adapted head's share in ``probs`` (``blend``: 0 while everything heard from
    the speaker sounded alike, up to 0.5; ``centred``: 1; 0 while warming).
    """

    start_s: float
    end_s: float
    speech: bool
    label: str
    confidence: float
    probs: dict[str, float] | None
    smoothed: dict[str, float] | None
    inference_ms: float | None
    speaker: str
    speaker_norm: str | None = None
    speaker_speech_s: float | None = None
    speaker_norm_weight: float | None = None

    def to_dict(self) -> dict:
        """The JSON-ready record (times rounded to ms; ``speaker_norm`` fields only when adaptation is on)."""
        data = dict(
            start_s=round(self.start_s, 3),
            end_s=round(self.end_s, 3),
            speech=self.speech,
            label=self.label,
            confidence=round(self.confidence, 6),
            probs=self.probs,
            smoothed=self.smoothed,
            inference_ms=None if self.inference_ms is None else round(self.inference_ms, 2),
            speaker=self.speaker,
        )
        if self.speaker_norm is not None:
            data.update(
                speaker_norm=self.speaker_norm,
                speaker_speech_s=round(self.speaker_speech_s or 0.0, 2),
                speaker_norm_weight=round(self.speaker_norm_weight or 0.0, 3),
            )
        return data

    def to_json(self) -> str:
        """``to_dict`` as one line of strict JSON (a NaN is an error, never written)."""
        return json.dumps(self.to_dict(), allow_nan=False)


MIN_TAIL_S = 0.5
"""A speech window whose newest speech (before its trailing silence) is shorter is not used for turns."""


def speech_tail(window: AudioWindow, seconds: float) -> np.ndarray | None:
    """The last ``seconds`` of ``window`` before its trailing silence; None when under ``MIN_TAIL_S`` remain."""
    keep = len(window.samples) - round(window.trailing_silence_s * window.sample_rate)
    if keep < MIN_TAIL_S * window.sample_rate:
        return None
    return window.samples[max(0, keep - round(seconds * window.sample_rate)) : keep]


class EmotionStream:
    """Audio chunks in, one ``StreamResult`` per completed hop out. See the module docstring for an example."""

    def __init__(
        self,
        model: EmotionModel,
        options: StreamOptions | None = None,
        *,
        baseline: SpeakerNormaliser | None = None,
        vad: FrameVAD | None = None,
        speaker_encoder: SpeakerEncoder | None = None,
    ):
        """``model``: a loaded ``EmotionModel``. ``baseline``: a normaliser fixed on a calm recording of the speaker
        (``model.speaker_baseline(path)``), used for every speaker instead of running means. ``vad``: a frame VAD
        instead of ``options.vad`` (``vad_notice`` then stays None). ``speaker_encoder``: the speaker model for
        ``speaker_turns`` (default: ``SpeakerEncoder.load()``, the cached one)."""
        self.model = model
        self.options = options = options or StreamOptions()
        if baseline is not None and options.speaker_norm:
            raise ValueError("speaker_norm (a running mean) and a calm baseline exclude each other")
        self.vad_notice: str | None = None
        if vad is None:
            vad, self.vad_notice = load_vad(options.vad)
        self.spec = model.window_spec(options.window_s, options.hop_s)
        self.windower = StreamWindower(self.spec, vad, model.speech_gate)
        self.smoother = Smoother(options.smoothing)
        running = options.speaker_norm
        if running is None:
            running = baseline is None and model.has_speaker_head("running")
        self.adaptation: str | None = "baseline" if baseline is not None else ("running" if running else None)
        """``running`` (a mean per speaker), ``baseline`` (a calm recording) or None (off)."""
        make = None
        if running:
            head = model.speaker_norm_head("running")  # loaded once, shared by every speaker's normaliser
            make = lambda: SpeakerNormaliser(head, options.speaker_norm_options)  # noqa: E731
        self.speakers = SpeakerRegistry(make, baseline)
        self.turns = self.speaker_encoder = None
        if options.speaker_turns:
            self.speaker_encoder = speaker_encoder or SpeakerEncoder.load()
            self.turns = TurnDetector(options.turn_options)
        self.reset()

    # -- control -----------------------------------------------------------------------------------------------
    def reset(self) -> None:
        """Start a new session: time 0 again, fresh VAD, resampler and smoother, every speaker forgotten."""
        self.windower.reset()
        self.smoother.reset()
        self.speakers.reset()
        if self.turns is not None:
            self.turns.reset()
            self.turns.begin(self.speakers.current)
        self._resampler: soxr.ResampleStream | None = None
        self._input_rate: int | None = None
        self._last_end_s = 0.0
        self.skipped_windows = 0
        """Windows not analysed because ``process(..., newest_only=True)`` was given several at once."""
        self.failed_windows = 0
        """Speech windows without a result because the model returned NaN/inf for them."""
        self.first_failure: str | None = None
        """Why the first of them failed, one line with its times (None while none did)."""

    def new_speaker(self) -> str:
        """From the next hop on, a new speaker: a new id, a fresh baseline (running mean) and smoother."""
        self.smoother.reset()
        speaker = self.speakers.new()
        if self.turns is not None:
            self.turns.begin(speaker)
        return speaker

    @property
    def speaker(self) -> str:
        """The current speaker's id."""
        return self.speakers.current

    @property
    def received_s(self) -> float:
        """Seconds of audio received since the last ``reset`` (at the model's rate)."""
        return self.windower.received_s

    # -- audio -------------------------------------------------------------------------------------------------
    def process(self, samples: np.ndarray, sample_rate: int, newest_only: bool = False) -> list[StreamResult]:
        """Add a chunk: ``samples`` ``[frames]`` or ``[frames, channels]`` (float; channels are averaged) at
        ``sample_rate`` Hz, resampled to the model's rate across chunks. Returns the results of the hops it
        completed, oldest first (often none for a short chunk, several for a long one).

        ``newest_only``: when the chunk completes several hops, analyse only the newest (the others count in
        ``skipped_windows``): for a live source after analysis fell behind, so results stay current.
        ValueError for a bad shape, a non-positive rate, or NaN/infinite samples.
        """
        windows = self.windower.feed(self._to_model_rate(samples, sample_rate))
        if newest_only and len(windows) > 1:
            self.skipped_windows += len(windows) - 1
            windows = windows[-1:]
        return self._analyse(windows)

    def flush(self) -> list[StreamResult]:
        """End of input: the resampler's last samples and a last window over the tail (when long enough). Call
        ``reset`` before streaming again."""
        windows = []
        if self._resampler is not None:
            windows += self.windower.feed(self._resampler.resample_chunk(np.zeros(0, np.float32), last=True))
            self._resampler = self._input_rate = None
        return self._analyse(windows + self.windower.flush())

    def _to_model_rate(self, samples: np.ndarray, sample_rate: int) -> np.ndarray:
        mono = to_mono(samples)
        if not np.isfinite(mono).all():
            raise ValueError("audio chunk contains NaN or infinite samples")
        sample_rate = int(sample_rate)
        if sample_rate <= 0:
            raise ValueError(f"invalid sample rate {sample_rate}")
        if sample_rate == self.model.sample_rate and self._resampler is None:
            return mono
        if sample_rate != self._input_rate:  # a new rate: finish the old resampler's stream first
            tail = np.zeros(0, np.float32)
            if self._resampler is not None:
                tail = self._resampler.resample_chunk(tail, last=True)
            self._resampler = None
            self._input_rate = None
            if sample_rate == self.model.sample_rate:
                return np.concatenate([tail, mono])
            self._resampler = soxr.ResampleStream(sample_rate, self.model.sample_rate, 1, dtype="float32")
            self._input_rate = sample_rate
            return np.concatenate([tail, self._resampler.resample_chunk(mono)])
        return self._resampler.resample_chunk(mono)

    # -- one window --------------------------------------------------------------------------------------------
    def _analyse(self, windows: list[AudioWindow]) -> list[StreamResult]:
        results = []
        for window in windows:
            result = self._result(window)
            if result is not None:
                results.append(result)
        return results

    def _result(self, window: AudioWindow) -> StreamResult | None:
        """The window's result; None when the model returned NaN/inf for it (counted, never a NaN row)."""
        silent_s = window.end_s - self._last_end_s
        self._last_end_s = window.end_s
        labels = self.model.labels
        if not window.speech:
            self.smoother.silence(silent_s)
            return self._record(window, SILENCE_LABEL, 0.0, None, None, None)
        try:
            probs, ms = self._score(window)
        except NonFiniteOutputError as exc:
            self.failed_windows += 1
            if self.first_failure is None:
                self.first_failure = f"{window.start_s:.1f}-{window.end_s:.1f} s: {exc}"
            return None
        state = self.smoother.update(probs, speech_s=window.speech_s)
        return self._record(
            window,
            labels[state.index],
            state.confidence,
            probs_dict(labels, probs),
            probs_dict(labels, state.probs),
            ms,
        )

    def _score(self, window: AudioWindow) -> tuple[np.ndarray, float]:
        """Probabilities of a speech window (adapted to the current speaker when on) and inference milliseconds."""
        if self.turns is not None:
            self._follow_turns(window)
        pooled = self.speakers.normaliser is not None
        started = time.perf_counter()
        scores = self.model.score_windows([window.samples], pooled=pooled)
        ms = (time.perf_counter() - started) * 1000.0
        normaliser = self.speakers.normaliser
        if normaliser is None:
            return scores.probs[0], ms
        # Each speech window brings one hop of new speech (windows overlap by window - hop).
        normaliser.update(
            scores.pooled, speech_s=min(self.spec.hop_s, window.end_s - window.start_s), probs=scores.probs
        )
        probs = normaliser.apply(scores.probs, scores.pooled)[0]
        if not np.isfinite(probs).all():
            raise NonFiniteOutputError("speaker-normalised probabilities are NaN or infinite")
        return probs, ms

    def _follow_turns(self, window: AudioWindow) -> None:
        """Let the turn detector see the window's newest speech; on a change, switch to (or add) the speaker,
        smoother afresh."""
        newest = speech_tail(window, self.options.turn_options.embedding_s)
        if newest is None:
            return
        if window.sample_rate != SPEAKER_RATE:
            newest = soxr.resample(newest, window.sample_rate, SPEAKER_RATE)
        change = self.turns.observe(self.speaker_encoder.embed(newest))
        if change is None:
            return
        self.smoother.reset()
        if change.to is None:
            self.turns.begin(self.speakers.new())
        else:
            self.speakers.switch(change.to)

    def _record(
        self,
        window: AudioWindow,
        label: str,
        confidence: float,
        probs: dict[str, float] | None,
        smoothed: dict[str, float] | None,
        ms: float | None,
    ) -> StreamResult:
        normaliser = self.speakers.normaliser
        state = speech_s = weight = None
        if normaliser is not None:
            speech_s = normaliser.speech_s
            state = "baseline" if normaliser.fixed else ("active" if normaliser.ready else "warming")
            weight = normaliser.weight if normaliser.ready else 0.0
        return StreamResult(
            start_s=window.start_s,
            end_s=window.end_s,
            speech=window.speech,
            label=label,
            confidence=confidence,
            probs=probs,
            smoothed=smoothed,
            inference_ms=ms,
            speaker=self.speakers.current,
            speaker_norm=state,
            speaker_speech_s=speech_s,
            speaker_norm_weight=weight,
        )
