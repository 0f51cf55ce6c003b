"""Sliding analysis windows over a stream, with a speech flag per window.

One ``StreamWindower`` serves both the live monitor (fed ring-buffer reads as they come) and
``emotion-score --segments`` (fed a whole file), so both see the very same windows.

Placement: a window ENDS every ``hop_s`` (at hop, 2·hop, ...) and spans the last ``window_s`` before its end,
or everything since the start while less than ``window_s`` has arrived. Windows shorter than ``min_window_s``
are skipped: an estimate appears after ``min_window_s`` rather than after a full window ("at once"), and later
windows all have the model's trained length. At the end of input, a last window ends at the final sample when
at least ``MIN_TAIL_S`` arrived since the previous window.

Speech flag: from the VAD's 32 ms frames inside the window, by ``SpeechGate``: enough speech in the window, and
speech recently enough (so the display follows the speaker, and turns to silence a second after they stop).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from emotion_monitor.realtime.vad import FRAME_SAMPLES, SPEECH_THRESHOLD, FrameVAD

MIN_WINDOW_S = 1.0
"""Shortest input the model is asked about: under ~1 s an utterance carries too little prosody."""
MIN_TAIL_S = 0.1
"""At the end of input, audio since the last window that earns one more window ending at the last sample."""
MIN_SPEECH_SHARE = 0.25
"""Share of speech frames in a window's newest hop (reported as ``speech_share``)."""
MIN_SPEECH_S = 1.0
"""Seconds of speech a window needs before it gets an emotion (see ``SpeechGate``)."""
MAX_TRAILING_SILENCE_S = 1.0
"""A window whose last speech ended longer ago than this is silence (see ``SpeechGate``)."""


@dataclass(frozen=True)
class SpeechGate:
    """When a window is a speech window, i.e. gets an emotion: it holds at least ``min_speech_s`` of VAD speech
    and its last speech frame is at most ``max_trailing_silence_s`` before its end.

    The first condition keeps the model from judging a syllable (a window at an utterance's onset holds a few
    hundred ms of speech, and such windows are mostly wrong; the evaluation protocol measures accuracy by
    seconds of speech). The second lets the window that holds a whole utterance, just after the speaker stops,
    still be judged (it is the best-informed one), and turns the display to silence a second later.
    """

    min_speech_s: float = MIN_SPEECH_S
    max_trailing_silence_s: float = MAX_TRAILING_SILENCE_S

    def is_speech(self, speech_s, trailing_silence_s):
        """The rule for one window (floats → bool) or many at once (arrays → bool array)."""
        return (speech_s >= self.min_speech_s) & (trailing_silence_s <= self.max_trailing_silence_s)


@dataclass(frozen=True)
class WindowSpec:
    """Window geometry in seconds, converted once to samples."""

    window_s: float
    hop_s: float
    sample_rate: int
    min_window_s: float = MIN_WINDOW_S

    def __post_init__(self):
        if self.window_s <= 0 or self.hop_s <= 0:
            raise ValueError(f"window_s and hop_s must be positive (got {self.window_s}, {self.hop_s})")

    @property
    def window(self) -> int:
        return round(self.window_s * self.sample_rate)

    @property
    def hop(self) -> int:
        return round(self.hop_s * self.sample_rate)

    @property
    def min_window(self) -> int:
        return min(self.window, round(self.min_window_s * self.sample_rate))

    @property
    def min_tail(self) -> int:
        return round(MIN_TAIL_S * self.sample_rate)


def tile_bounds(n_samples: int, window: int) -> list[tuple[int, int]]:
    """``(start, end)`` of the windows that score a whole recording of ``n_samples``, each sample encoded about once.

    Up to ``window`` samples: the recording itself, one window. Longer: ``k = ceil(n / window)`` full windows,
    the first at the start, the last ending at the final sample, the others evenly between: they overlap by less
    than one window in all (100 s at 3 s: 34 windows, 102 s encoded). Full windows are what the model was
    trained on, and one common length lets the model batch them all.
    """
    if n_samples <= window:
        return [(0, n_samples)]
    k = -(-n_samples // window)
    starts = [round(i * (n_samples - window) / (k - 1)) for i in range(k)]
    return [(start, start + window) for start in starts]


@dataclass(frozen=True)
class AudioWindow:
    """One analysis window: ``samples`` [end - start] float32 at ``sample_rate``, as received (not normalised)."""

    start: int
    end: int
    samples: np.ndarray
    speech: bool
    speech_share: float
    sample_rate: int
    speech_s: float = 0.0
    """Seconds of VAD speech frames anywhere inside the window (how much speech the model is asked about)."""
    trailing_silence_s: float = 0.0
    """Seconds from the window's last speech frame to its end (the whole window when it holds no speech)."""

    @property
    def start_s(self) -> float:
        return self.start / self.sample_rate

    @property
    def end_s(self) -> float:
        return self.end / self.sample_rate


class StreamWindower:
    """Feed audio in chunks of any size; get the windows that became complete, each with its speech flag.

    Memory is bounded: only the audio a future window can still need is kept.
    """

    def __init__(self, spec: WindowSpec, vad: FrameVAD, gate: SpeechGate | None = None):
        self.spec = spec
        self.vad = vad
        self.gate = gate or SpeechGate()
        self.reset()

    def reset(self) -> None:
        """Start a new stream (sample 0 again, fresh VAD state)."""
        self.vad.reset()
        self._history = np.zeros(0, dtype=np.float32)
        self._history_start = 0  # absolute index of _history[0]
        self._received = 0
        self._next_end = self.spec.hop
        self._last_end = 0
        self._frame_probs = np.zeros(0, dtype=np.float32)  # VAD frames from _frames_start on
        self._frames_start = 0  # absolute index of the first kept VAD frame

    @property
    def received(self) -> int:
        """Samples fed since the last reset."""
        return self._received

    @property
    def received_s(self) -> float:
        return self._received / self.spec.sample_rate

    def feed(self, samples: np.ndarray) -> list[AudioWindow]:
        """Append ``samples`` ([n] float32 at ``spec.sample_rate``); return the windows completed by them."""
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        self._history = np.concatenate([self._history, samples])
        self._received += samples.size
        self._frame_probs = np.concatenate([self._frame_probs, self.vad.process(samples)])
        windows = []
        while self._next_end <= self._received:
            if self._next_end >= self.spec.min_window:
                windows.append(self._window_ending_at(self._next_end))
            self._last_end = self._next_end
            self._next_end += self.spec.hop
        # The tail window of ``flush`` may reach back one window from just after ``_last_end``.
        self._forget_before(self._last_end - self.spec.window)
        return windows

    def flush(self) -> list[AudioWindow]:
        """End of input: the last window over the tail, if enough audio came since the previous window."""
        n = self._received
        if n >= self.spec.min_window and n - self._last_end >= self.spec.min_tail:
            self._last_end = n
            return [self._window_ending_at(n)]
        return []

    def _window_ending_at(self, end: int) -> AudioWindow:
        start = max(0, end - self.spec.window)
        samples = self._history[start - self._history_start : end - self._history_start].copy()
        share = self._speech_share(max(0, end - self.spec.hop), end)
        rate = self.spec.sample_rate
        frames = self._frames(start, end) >= SPEECH_THRESHOLD
        speech_s = int(np.count_nonzero(frames)) * FRAME_SAMPLES / rate
        if frames.any():
            last_speech_end = (
                -(-start // FRAME_SAMPLES) + int(np.flatnonzero(frames)[-1]) + 1
            ) * FRAME_SAMPLES
            trailing = max(0, end - last_speech_end) / rate
        else:
            trailing = (end - start) / rate
        return AudioWindow(
            start=start,
            end=end,
            samples=samples,
            speech=self.gate.is_speech(speech_s, trailing),
            speech_share=share,
            sample_rate=rate,
            speech_s=speech_s,
            trailing_silence_s=trailing,
        )

    def _frames(self, start: int, end: int) -> np.ndarray:
        """Speech probabilities of the VAD frames lying wholly inside ``[start, end)``."""
        first = -(-start // FRAME_SAMPLES)  # ceil: first frame starting at or after ``start``
        last = end // FRAME_SAMPLES  # frames ending at or before ``end``
        lo = max(0, first - self._frames_start)  # frames before the kept range were forgotten (hop > window)
        return self._frame_probs[lo : max(lo, last - self._frames_start)]

    def _speech_share(self, start: int, end: int) -> float:
        """Share of VAD frames lying wholly inside ``[start, end)`` that are speech (0 when none does)."""
        probs = self._frames(start, end)
        return float(np.mean(probs >= SPEECH_THRESHOLD)) if probs.size else 0.0

    def _forget_before(self, index: int) -> None:
        drop = index - self._history_start
        if drop > 0:
            self._history = self._history[drop:]
            self._history_start += drop
        drop_frames = index // FRAME_SAMPLES - self._frames_start
        if drop_frames > 0:
            self._frame_probs = self._frame_probs[drop_frames:]
            self._frames_start += drop_frames
