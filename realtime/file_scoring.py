"""Scoring a recording as it is read (``audio.AudioStream``): windows are formed and scored as the audio arrives
and only their scores are kept, so memory does not depend on the recording's length.

Whole files (``score_file_clip``): a file up to ``WHOLE_CLIP_S`` is scored exactly as a training clip is
(``analysis.score_clip``: trimmed, ``clip_bounds`` windows), so short clips keep their labels and the windows the
training features were computed on. A longer file is read as a stream and ``SpeechTiler`` places full windows
end to end over it as it arrives; with a VAD, over its speech only (see ``SpeechTiler``); its label is the mean
of the windows' probabilities, weighted by the seconds of audio each contributes.

Timelines (``score_file_timeline``): the live monitor's ``StreamWindower`` and speech gate over the stream,
every window scored, its samples dropped once scored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from emotion_monitor.realtime.analysis import (
    ClipScores,
    TimelineScores,
    check_level,
    score_clip,
)
from emotion_monitor.realtime.audio import AudioError
from emotion_monitor.realtime.vad import FRAME_SAMPLES, SPEECH_THRESHOLD, FrameVAD
from emotion_monitor.realtime.windowing import AudioWindow, StreamWindower

if TYPE_CHECKING:
    from emotion_monitor.realtime.model import EmotionModel

WHOLE_CLIP_S = 30.0
"""Files up to this long (decoded) are scored as one clip, exactly as a training clip (held in memory: 1.9 MB at
16 kHz); longer ones are scored as a stream."""
MIN_PAUSE_S = 1.0
"""Non-speech (by the VAD) lasting at least this long is a pause that a long file's windows skip; shorter gaps
(between words, a breath) stay inside the speech around them."""
SPEECH_PAD_S = 0.25
"""Audio kept before the first and after the last speech frame of a stretch of speech (the VAD marks onsets
and ends a little late and early)."""
PENDING_BATCHES = 4
"""Windows wait until this many model batches are pending, so that windows of one length share batches."""


@dataclass(frozen=True)
class Tile:
    """A window placed by ``SpeechTiler``: samples ``[start, end)``; ``new_share``: the part of it no earlier
    window covered (1 for all but the last window of a stretch of speech, which ends at the stretch's end)."""

    start: int
    end: int
    samples: np.ndarray
    new_share: float


class SpeechTiler:
    """Full windows over a stream's speech, placed as the audio arrives.

    Speech is what ``vad`` marks (each 32 ms frame), padded by ``pad_s``; a pause of ``min_pause_s`` or more ends
    a stretch of speech. Inside a stretch, windows of ``window`` samples follow end to end from its start; the
    last one ends at the stretch's end (reaching back into the one before: full length, the overlap counted
    once). A stretch shorter than a window is one shorter window, as a short clip is. ``vad`` None: the whole
    stream is one stretch (every sample is covered, as ``windowing.tile_bounds`` covers a clip). Memory: the
    audio of about one window and one pause.
    """

    def __init__(
        self,
        window: int,
        vad: FrameVAD | None,
        sample_rate: int,
        min_pause_s: float = MIN_PAUSE_S,
        pad_s: float = SPEECH_PAD_S,
    ):
        self.window = window
        self.vad = vad
        self.pad = round(pad_s * sample_rate)
        self.min_pause = max(round(min_pause_s * sample_rate), self.pad)
        if vad is not None:
            vad.reset()
        self._history = np.zeros(0, np.float32)
        self._history_start = 0
        self.received = 0
        self.covered = 0
        """Samples inside stretches of speech so far (what the windows cover)."""
        self._frames = 0
        self._region_start: int | None = None
        self._speech_end = 0
        self._next = 0
        self._last_end = 0

    def feed(self, samples: np.ndarray) -> list[Tile]:
        """Append ``samples`` ([n] float32); return the windows that became final."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self._history = np.concatenate([self._history, samples])
        self.received += len(samples)
        out: list[Tile] = []
        if self.vad is None:
            if self._region_start is None:
                self._region_start = self._next = 0
            self._speech_end = self.received
        else:
            for p in self.vad.process(samples):
                frame = self._frames
                self._frames += 1
                frame_end = (frame + 1) * FRAME_SAMPLES
                if p >= SPEECH_THRESHOLD:
                    if self._region_start is None:
                        start = max(frame * FRAME_SAMPLES - self.pad, self._last_end, self._history_start)
                        self._region_start = self._next = start
                    self._speech_end = frame_end
                elif self._region_start is not None and frame_end - self._speech_end >= self.min_pause:
                    self._close(out, self._speech_end + self.pad)
        if self._region_start is not None:
            self._emit_full(out, min(self._speech_end + self.pad, self.received))
        self._forget()
        return out

    def flush(self) -> list[Tile]:
        """End of the stream: the last stretch's remaining windows."""
        out: list[Tile] = []
        if self._region_start is not None:
            self._close(out, min(self._speech_end + self.pad, self.received))
        return out

    def _emit_full(self, out: list[Tile], limit: int) -> None:
        while self._next + self.window <= limit:
            out.append(self._tile(self._next, self._next + self.window, 1.0))
            self._next += self.window

    def _close(self, out: list[Tile], end: int) -> None:
        self._emit_full(out, end)
        if self._next < end:
            start = max(self._region_start, end - self.window)
            out.append(self._tile(start, end, (end - self._next) / (end - start)))
        self._region_start = None
        self._last_end = self._next = end

    def _tile(self, start: int, end: int, new_share: float) -> Tile:
        self.covered += round((end - start) * new_share)
        at = start - self._history_start
        return Tile(start, end, self._history[at : at + end - start].copy(), new_share)

    def _forget(self) -> None:
        """Drop the audio no future window can reach."""
        if self._region_start is not None:
            keep = max(self._region_start, self._next - self.window)
        elif self.vad is not None:
            keep = self._frames * FRAME_SAMPLES - self.pad  # a stretch starting at the next frame, padded
        else:
            keep = self.received
        drop = keep - self._history_start
        if drop > 0:
            self._history = self._history[drop:]
            self._history_start += drop


class WindowBatcher:
    """Windows scored by the model a few batches at a time, as they come; only their scores are kept."""

    def __init__(self, model: EmotionModel, pooled: bool = False):
        self.model = model
        self.pooled = pooled
        self._pending: list[np.ndarray] = []
        self._probs: list[np.ndarray] = []
        self._seconds: list[np.ndarray] = []
        self._features: list[np.ndarray] = []

    def add(self, samples: np.ndarray) -> None:
        self._pending.append(samples)
        if len(self._pending) >= PENDING_BATCHES * max(1, self.model.options.batch_size):
            self._run()

    def _run(self) -> None:
        if self._pending:
            scores = self.model.score_windows(self._pending, self.pooled)
            self._pending = []
            self._probs.append(scores.probs)
            self._seconds.append(scores.seconds)
            if self.pooled:
                self._features.append(scores.pooled)

    def finish(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """(probabilities ``[W, classes]``, seconds ``[W]``, pooled ``[W, L+1, H]`` or None) of every window."""
        self._run()
        classes = len(self.model.labels)
        probs = np.concatenate(self._probs) if self._probs else np.zeros((0, classes), np.float32)
        seconds = np.concatenate(self._seconds) if self._seconds else np.zeros(0)
        pooled = np.concatenate(self._features) if self.pooled and self._features else None
        return probs, seconds, pooled


class RunningLevel:
    """The RMS level (dBFS) of everything added so far, in float64 sums."""

    def __init__(self) -> None:
        self.sum_squares = 0.0
        self.samples = 0

    def add(self, samples: np.ndarray) -> None:
        self.sum_squares += float(np.sum(np.square(samples, dtype=np.float64)))
        self.samples += len(samples)

    @property
    def dbfs(self) -> float:
        if self.samples == 0:
            return -200.0
        return float(10.0 * np.log10(self.sum_squares / self.samples + 1e-20))


def read_head(blocks: Iterator[np.ndarray], samples: int) -> tuple[list[np.ndarray], bool]:
    """The first blocks of ``blocks``, up to more than ``samples`` samples, and whether the stream goes on."""
    head, n = [], 0
    for block in blocks:
        head.append(block)
        n += len(block)
        if n > samples:
            return head, True
    return head, False


def score_stream_clip(
    model: EmotionModel,
    blocks: Iterable[np.ndarray],
    vad: FrameVAD | None,
    source: str,
    pooled: bool = False,
) -> ClipScores | None:
    """A long recording's ``SpeechTiler`` windows, scored as the audio arrives (``vad`` None: all of it).
    ``window_seconds`` weighs each window by the seconds it adds; ``duration_s`` is the seconds covered.
    AudioError when silent; None when the VAD found no speech in it."""
    tiler = SpeechTiler(model.window_spec().window, vad, model.sample_rate)
    batcher = WindowBatcher(model, pooled)
    level = RunningLevel()
    shares: list[float] = []
    for block in blocks:
        level.add(block)
        for tile in tiler.feed(block):
            batcher.add(tile.samples)
            shares.append(tile.new_share)
    for tile in tiler.flush():
        batcher.add(tile.samples)
        shares.append(tile.new_share)
    check_level(level.dbfs, source)
    probs, seconds, features = batcher.finish()
    if not len(probs):
        return None
    return ClipScores(probs, features, tiler.covered / model.sample_rate, seconds * np.array(shares))


def score_file_clip(
    model: EmotionModel,
    blocks: Iterator[np.ndarray],
    vad: FrameVAD | None,
    source: str,
    pooled: bool = False,
) -> ClipScores | None:
    """A file's clip scores: up to ``WHOLE_CLIP_S``, exactly ``score_clip``'s; longer, ``score_stream_clip``'s
    (None when ``vad`` found no speech: score it again without one)."""
    head, more = read_head(blocks, round(WHOLE_CLIP_S * model.sample_rate))
    if not more:
        audio = np.concatenate(head) if head else np.zeros(0, np.float32)
        return score_clip(model, audio, model.sample_rate, source, pooled)
    return score_stream_clip(model, _chain(head, blocks), vad, source, pooled)


def _chain(head: list[np.ndarray], rest: Iterator[np.ndarray]) -> Iterator[np.ndarray]:
    """``head``'s blocks (each released once handed on), then ``rest``'s."""
    head.reverse()
    while head:
        yield head.pop()
    yield from rest


def score_file_timeline(
    model: EmotionModel,
    blocks: Iterable[np.ndarray],
    window_s: float | None,
    hop_s: float | None,
    vad: FrameVAD,
    source: str,
    pooled: bool = False,
) -> TimelineScores:
    """The live monitor's windows over a stream (``analysis.score_timeline``'s, every one scored), their samples
    dropped once scored. AudioError when the recording is silent or too short for a window."""
    spec = model.window_spec(window_s, hop_s)
    windower = StreamWindower(spec, vad, model.speech_gate)
    batcher = WindowBatcher(model, pooled)
    level = RunningLevel()
    windows: list[AudioWindow] = []
    empty = np.zeros(0, np.float32)

    def add(new: list[AudioWindow]) -> None:
        for w in new:
            batcher.add(w.samples)
            windows.append(dataclasses.replace(w, samples=empty))

    for block in blocks:
        level.add(block)
        add(windower.feed(block))
    add(windower.flush())
    check_level(level.dbfs, source)
    if not windows:
        raise AudioError(
            source,
            f"too short for a window ({windower.received / model.sample_rate:.2f} s < {spec.min_window_s:g} s)",
        )
    probs, _, features = batcher.finish()
    return TimelineScores(windows, probs, features)
