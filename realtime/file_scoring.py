"""Scoring a recording as it is read (``audio.AudioStream``): windows are formed and scored as the audio arrives
and only their scores are kept, so memory does not depend on the recording's length.

Whole files (``score_file_clip``): a file up to ``WHOLE_CLIP_S`` is scored exactly as a training clip is
(``analysis.score_clip``: trimmed, ``clip_bounds`` windows), so short clips keep their labels and the windows the
training features were computed on. A longer file is read as a stream and ``SpeechTiler`` places full windows
end to end over it as it arrives; with a VAD, over its speech only (see ``SpeechTiler``); its label is the mean
of the windows' probabilities, weighted by the seconds of audio each contributes.

Timelines (``score_file_timeline``): the live monitor's ``StreamWindower`` and speech gate over the stream,
every window scored, its samples dropped once scored.

``on_block`` (progress) is called in the caller's thread each time a block of audio is taken in.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emotion_monitor.realtime.analysis import (
    ClipScores,
    TimelineScores,
    check_level,
    score_clip,
)
from emotion_monitor.realtime.audio import AudioError, AudioStream, report_notices
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
SPEECH_PAD_S = 0.1
"""Audio kept before the first and after the last speech frame of a stretch of speech (as much as a training
clip keeps around its sound, ``PreprocessOptions.trim_pad_s``)."""
PENDING_BATCHES = 4
"""Windows wait until this many model batches are pending, so that windows of one length (after trimming each
window's edges) share batches."""


LOUD_FRAME_DB = 20.0
"""A VAD frame within this of the loudest frame so far is speech without asking the VAD (``GatedVAD``)."""
SPEECH_OVER_NOISE_DB = 20.0
"""Once a pause's noise level is known (the VAD called ``NOISE_FRAMES`` of it non-speech), a frame this far above
it, and ``SPEECH_RISE_DB`` above the quietest frame of the second before it, is speech without asking the VAD
(quiet speech after loud speech: ``GatedVAD``), down to ``QUIET_SPEECH_DB`` below the loudest frame."""
SPEECH_RISE_DB = 10.0
"""How far a quiet frame must rise above the quietest frame of the second before it to count as speech by the
known noise (speech rises and falls by syllables; a steady noise, a room's louder than the noise known, does not)."""
QUIET_SPEECH_DB = 50.0
"""The furthest below the loudest frame so far that a frame above the known noise counts as speech unasked."""
NOISE_FRAMES = 8
"""Frames of a pause the VAD must have called non-speech before quieter frames go unasked (``GatedVAD``)."""
NOISE_MARGIN_DB = 3.0
"""Inside a pause, a frame less than this above the pause's median noise level is the pause going on; a new quiet
stretch within this of the last pause's noise, either side, is that room's quiet again."""
NOISE_WARM_UP_FRAMES = 4
"""Frames skipped just before a louder one in a pause that the VAD is fed, unasked, before it is asked."""
WARM_UP_FRAMES = 16
"""VAD frames (0.5 s) before a quiet stretch that the VAD is fed, unasked, before it is asked about the stretch."""


class SpeechTiler:
    """Full windows over a stream's speech, cut as the audio arrives, pauses left out.

    ``feed(samples, speech)``: ``speech`` holds one bool per 512-sample VAD frame completed so far (None: all of
    it is speech). A gap of non-speech shorter than ``min_pause_s`` stays in (between words, a breath); a longer
    one is left out but for ``pad_s`` after the speech before it and ``pad_s`` before the speech after it. The
    speech that remains is cut into windows of ``window`` samples end to end; the last one (``flush``) ends at
    the end of the speech, reaching back into the one before (full length; ``new_share``, its part that no other
    window holds, is its weight). Less speech than a window in all: one shorter window, as a short clip is.
    ``vad`` None: every sample is kept, so the windows tile the whole stream. Memory: about a window and a pause.
    """

    def __init__(
        self, window: int, sample_rate: int, min_pause_s: float = MIN_PAUSE_S, pad_s: float = SPEECH_PAD_S
    ):
        self.window = window
        self.pad = round(pad_s * sample_rate)
        self.min_pause = max(round(min_pause_s * sample_rate), self.pad)
        self.received = 0
        self.kept = 0
        """Samples of speech kept so far (what the windows cover)."""
        self._unframed = np.zeros(0, np.float32)  # samples whose VAD frame is not complete yet
        self._gap = np.zeros(0, np.float32)  # non-speech since the last speech frame (undecided)
        self._in_speech = False  # the last speech frame was less than min_pause ago
        self._kept = np.zeros(0, np.float32)  # kept audio from the start of the next window (or the last one)
        self._next = 0  # start of the next window in _kept

    def feed(self, samples: np.ndarray, speech: np.ndarray | None = None) -> list[np.ndarray]:
        """Append ``samples`` and the speech flags of the VAD frames they complete; return finished windows."""
        samples = np.asarray(samples, np.float32).reshape(-1)
        self.received += len(samples)
        if speech is None:
            self._keep(samples)
        else:
            audio = np.concatenate([self._unframed, samples])
            used = len(speech) * FRAME_SAMPLES
            self._unframed = audio[used:]
            kept, gap = [], self._gap
            # runs of equal flags, handled a run at a time
            edges = np.flatnonzero(np.diff(speech.astype(np.int8))) + 1
            for lo, hi in zip(np.r_[0, edges], np.r_[edges, len(speech)], strict=True):
                if lo == hi:
                    continue
                part = audio[lo * FRAME_SAMPLES : hi * FRAME_SAMPLES]
                if speech[lo]:
                    kept.append(gap if self._in_speech else gap[len(gap) - self.pad :])
                    kept.append(part)
                    gap = part[:0]
                    self._in_speech = True
                else:
                    gap = np.concatenate([gap, part])
                    if self._in_speech and len(gap) >= self.min_pause:
                        kept.append(gap[: self.pad])
                        self._in_speech = False
                    if not self._in_speech:
                        gap = gap[len(gap) - self.pad :]  # only a pad before the next speech can be needed
            self._gap = gap
            if kept:
                self._keep(np.concatenate(kept))
        return self._windows()

    def flush(self) -> list[tuple[np.ndarray, float]]:
        """End of the stream: the remaining windows as (samples, new_share)."""
        if self._in_speech:
            self._keep(np.concatenate([self._gap, self._unframed])[: self.pad])
        out = [(w, 1.0) for w in self._windows()]
        rest = len(self._kept) - self._next
        if rest > 0:
            tail = self._kept[max(0, len(self._kept) - self.window) :]
            out.append((tail, rest / len(tail)))
        self._kept = self._kept[:0]
        self._next = 0
        return out

    def _keep(self, samples: np.ndarray) -> None:
        self._kept = np.concatenate([self._kept, samples])
        self.kept += len(samples)

    def _windows(self) -> list[np.ndarray]:
        out = []
        while len(self._kept) - self._next >= self.window:
            out.append(self._kept[self._next : self._next + self.window].copy())
            self._next += self.window
        drop = max(0, self._next - self.window)  # the tail window may reach back one window
        if drop:
            self._kept = self._kept[drop:]
            self._next -= drop
        return out


class GatedVAD:
    """Speech flags per 512-sample frame of a stream, for finding pauses, with the VAD asked as little as possible.

    A frame within ``LOUD_FRAME_DB`` of the loudest frame so far is speech (a loud stretch that is not speech,
    music say, is scored as before). A pause has no such frame, so the VAD (``FrameVAD.frame_probability``, in
    stream order, fresh at each stretch) is asked only once a stretch without one has lasted ``min_pause_s``:
    about its frames so far and each next one, until a loud frame ends the stretch (first fed the half second
    before the stretch, unasked, as context). Once the VAD has called ``NOISE_FRAMES`` of a pause non-speech,
    frames of it less than ``NOISE_MARGIN_DB`` above their median level are the pause going on, unasked (speech
    rises above a pause's noise); a later stretch that ends in half a pause within that margin either side of the
    last pause's noise is a pause without asking at all (the same room's quiet: ``_open_pause``). A stretch that
    ends sooner than a pause is speech (a gap between words).
    Once a pause's noise is known, a quieter frame ``SPEECH_OVER_NOISE_DB`` above it that rises ``SPEECH_RISE_DB``
    above the second before it is speech too (a quiet speaker after a loud one; a steady noise, even one louder
    than the pause's, does not rise so and is asked about). Continuous speech thus costs next to no VAD time,
    and pauses in a steady room little; a changing noise, and quiet speech before the first pause, cost the
    VAD's time on them.
    Flags come in stream order, those of an open quiet stretch once it is decided (``flush`` at the end).
    """

    def __init__(self, vad: FrameVAD, sample_rate: int, min_pause_s: float = MIN_PAUSE_S):
        self.vad = vad
        self.min_pause_frames = max(1, round(min_pause_s * sample_rate / FRAME_SAMPLES))
        self._pending = np.zeros(0, np.float32)
        self._loudest_db = -np.inf
        self._quiet: list[np.ndarray] = []  # the frames of the open quiet stretch, undecided
        self._quiet_db: list[float] = []  # and their levels
        self._noise: list[float] = []  # levels of the frames of this pause that the VAD called non-speech
        self._noise_db: float | None = None  # their median, once NOISE_FRAMES (kept until the next pause's)
        self._skipped = 0  # frames of this pause not asked about since the last one that was
        self._asking = False  # the open quiet stretch is a pause's length: the VAD decides each frame
        self._recent: deque[np.ndarray] = deque(maxlen=WARM_UP_FRAMES + 2 * self.min_pause_frames)
        self._levels = np.zeros(0)  # the levels (dB) of the last second's frames
        self.asked = 0
        self.frames = 0

    def process(self, samples: np.ndarray) -> np.ndarray:
        audio = np.concatenate([self._pending, samples])
        n = len(audio) // FRAME_SAMPLES
        self._pending = audio[n * FRAME_SAMPLES :]
        frames = audio[: n * FRAME_SAMPLES].reshape(n, FRAME_SAMPLES)
        level_db = 10 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + 1e-20)
        loudest = np.maximum.accumulate(np.r_[self._loudest_db, level_db])[1:]
        if n:
            self._loudest_db = loudest[-1]
        self.frames += n
        loud = level_db >= loudest - LOUD_FRAME_DB
        rise_db = level_db - self._quietest_before(level_db)
        not_loud = np.flatnonzero(~loud)
        out: list[bool] = []
        i = 0
        while i < n:
            if loud[i]:  # a run of loud frames (most of speech), taken at once
                k = np.searchsorted(not_loud, i)
                end = int(not_loud[k]) if k < len(not_loud) else n
                self._end_quiet(out)
                out += [True] * (end - i)
                self._recent.extend(frames[max(i, end - self._recent.maxlen) : end])
                i = end
                continue
            self._recent.append(frames[i])
            if self._noise_db is not None and level_db[i] >= self._over_noise_db(loudest[i], rise_db[i]):
                self._end_quiet(out)
                out.append(True)
            elif self._asking:
                out.append(self._ask_in_pause(frames[i], level_db[i]))
            else:
                self._quiet.append(frames[i])
                self._quiet_db.append(level_db[i])
                if len(self._quiet) >= self.min_pause_frames:
                    out += self._open_pause()
            i += 1
        return np.array(out, bool)

    def _quietest_before(self, level_db: np.ndarray) -> np.ndarray:
        """For each new frame, the level of the quietest of the ``min_pause_frames`` frames before it (inf for
        the first frame of a stream); keeps the last ones for the next block."""
        span = self.min_pause_frames
        levels = np.concatenate([np.full(span - len(self._levels), np.inf), self._levels, level_db])
        self._levels = levels[-span:]
        return np.lib.stride_tricks.sliding_window_view(levels, span)[: len(level_db)].min(axis=1)

    def _open_pause(self) -> list[bool]:
        """The open quiet stretch has lasted a pause: the flags of its frames once decided, else none (it waits for
        its next frame). When it ends in half a pause or more of frames all within ``NOISE_MARGIN_DB`` either side
        of the noise of the last pause (which the VAD called non-speech), that run is the same room's quiet: a
        pause, without asking (the frames before it are speech, as the VAD would say of a word's fading end or of
        quiet speech; the VAD, fresh, is asked only about a louder frame later). Otherwise, once it has waited half
        a pause for such a run (or at once with no noise known), the VAD is asked about each of its frames, after
        a warm-up on the frames before the stretch."""
        half = max(NOISE_FRAMES, self.min_pause_frames // 2)
        levels = np.array(self._quiet_db)
        noise_db = self._noise_db if self._noise_db is not None else np.inf
        off_noise = np.flatnonzero(np.abs(levels - noise_db) >= NOISE_MARGIN_DB)
        start = int(off_noise[-1]) + 1 if len(off_noise) else 0  # the stretch's last run at the known noise
        if len(levels) - start >= half:
            self.vad.reset()
            self._noise = list(levels[start:])
            self._noise_db = float(np.median(self._noise))
            out = [True] * start + [False] * (len(levels) - start)
            self._skipped = len(levels) - start
        elif self._noise_db is not None and len(levels) < self.min_pause_frames + half:
            return []
        else:
            self._warm_up()
            self._noise = []
            frames = zip(self._quiet, self._quiet_db, strict=True)
            out = [self._ask_in_pause(f, db, warm=False) for f, db in frames]
            self._skipped = 0
        self._asking = True
        self._quiet, self._quiet_db = [], []
        return out

    def _end_quiet(self, out: list[bool]) -> None:
        """A speech frame: the open quiet stretch was a gap between words, part of the speech around it."""
        out += [True] * len(self._quiet)
        self._quiet = []
        self._quiet_db = []
        self._asking = False

    def _over_noise_db(self, loudest_db: float, rise_db: float) -> float:
        """With a pause's noise known, the level from which a frame quieter than ``LOUD_FRAME_DB`` below the
        loudest is speech without asking: ``SPEECH_OVER_NOISE_DB`` above the noise (no lower than
        ``QUIET_SPEECH_DB`` below the loudest), for a frame rising ``SPEECH_RISE_DB`` above the second before it."""
        if rise_db < SPEECH_RISE_DB:
            return np.inf
        return max(self._noise_db + SPEECH_OVER_NOISE_DB, loudest_db - QUIET_SPEECH_DB)

    def flush(self) -> np.ndarray:
        """The flags of a quiet stretch still open at the end (shorter than a pause: speech)."""
        out = np.ones(len(self._quiet), bool)
        self._quiet, self._quiet_db = [], []
        return out

    def _warm_up(self) -> None:
        """A fresh VAD state, fed the frames just before the quiet stretch (it judges a frame by what came before:
        the end of a word is speech to it only after the word)."""
        self.vad.reset()
        before = list(self._recent)[: len(self._recent) - len(self._quiet)]
        for frame in before[-WARM_UP_FRAMES:]:
            self.vad.frame_probability(frame)
        self.asked += min(len(before), WARM_UP_FRAMES)

    def _ask_in_pause(self, frame: np.ndarray, level_db: float, warm: bool = True) -> bool:
        """Inside a pause: a frame no louder than the pause's noise so far (``NOISE_MARGIN_DB``) is the pause
        going on, without asking; a louder one is asked about (after the frames skipped just before it)."""
        if len(self._noise) >= NOISE_FRAMES and level_db < self._noise_db + NOISE_MARGIN_DB:
            self._skipped += 1
            return False
        if warm and self._skipped:
            recent = list(self._recent)[:-1]
            for before in recent[-min(self._skipped, NOISE_WARM_UP_FRAMES) :]:
                self.vad.frame_probability(before)
            self._skipped = 0
        speech = self._ask(frame)
        if not speech:
            self._noise.append(level_db)
            if len(self._noise) >= NOISE_FRAMES:
                self._noise_db = float(np.median(self._noise))
        return speech

    def _ask(self, frame: np.ndarray) -> bool:
        self.asked += 1
        return self.vad.frame_probability(frame) >= SPEECH_THRESHOLD


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
        if len(self._pending) >= PENDING_BATCHES * max(1, self.model.batch_size):
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
    on_block: Callable[[], None] | None = None,
) -> ClipScores | None:
    """A long recording's ``SpeechTiler`` windows (``vad`` None: all of it, no pause left out), scored as the
    audio arrives. ``window_seconds`` weighs each window by the seconds it adds; ``duration_s`` is the seconds
    of speech kept. AudioError when silent; None when the VAD found no speech in it."""
    tiler = SpeechTiler(model.window_spec().window, model.sample_rate)
    batcher = WindowBatcher(model, pooled)
    level = RunningLevel()
    shares: list[float] = []
    with contextlib.closing(_with_speech(blocks, vad, model.sample_rate)) as items:
        for block, speech in items:
            if on_block is not None:
                on_block()
            level.add(block)
            for window in tiler.feed(block, speech):
                batcher.add(window)
                shares.append(1.0)
    for window, share in tiler.flush():
        batcher.add(window)
        shares.append(share)
    check_level(level.dbfs, source)
    probs, seconds, features = batcher.finish()
    if not len(probs):
        return None
    return ClipScores(probs, features, tiler.kept / model.sample_rate, seconds * np.array(shares))


def _with_speech(blocks: Iterable[np.ndarray], vad: FrameVAD | None, sample_rate: int) -> Iterator[tuple]:
    """Each block with the speech flags of the VAD frames decided by it (None without a VAD); at the end an empty
    block with the last flags."""
    gate = GatedVAD(vad, sample_rate) if vad is not None else None
    for block in blocks:
        yield block, (gate.process(block) if gate is not None else None)
    if gate is not None:
        yield np.zeros(0, np.float32), gate.flush()


def score_file_clip(
    model: EmotionModel,
    blocks: Iterator[np.ndarray],
    vad: FrameVAD | None,
    source: str,
    pooled: bool = False,
    on_block: Callable[[], None] | None = None,
) -> ClipScores | None:
    """A file's clip scores: up to ``WHOLE_CLIP_S``, exactly ``score_clip``'s; longer, ``score_stream_clip``'s
    (None when ``vad`` found no speech: score it again without one)."""
    head, more = read_head(blocks, round(WHOLE_CLIP_S * model.sample_rate))
    if not more:
        audio = np.concatenate(head) if head else np.zeros(0, np.float32)
        return score_clip(model, audio, model.sample_rate, source, pooled)
    return score_stream_clip(model, _chain(head, blocks), vad, source, pooled, on_block)


def score_file(
    model: EmotionModel,
    path: str | Path,
    vad: FrameVAD | None,
    pooled: bool = False,
    on_notice: Callable[[str], None] | None = None,
    on_audio: Callable[[float], None] | None = None,
) -> ClipScores:
    """A file's clip scores, read as a stream (``AudioStream``) whatever its length: ``score_file_clip``, and when
    ``vad`` finds no speech in a long file, all of it again without one. AudioError for unusable audio; notices
    (a truncated file scored on the part present) go to ``on_notice``, else to warnings; ``on_audio(seconds)``:
    how far into the file the reading is (progress)."""
    source = str(path)
    with AudioStream(path, model.sample_rate) as stream:
        clip = score_file_clip(model, stream.blocks(), vad, source, pooled, ticker(stream, on_audio))
    if clip is None:  # a long file in which the VAD found no speech: all of it, with no VAD
        with AudioStream(path, model.sample_rate) as again:
            clip = score_stream_clip(model, again.blocks(), None, source, pooled)
    report_notices(stream.notices, on_notice)
    return clip


def ticker(stream: AudioStream, on_audio: Callable[[float], None] | None) -> Callable[[], None] | None:
    """A callback telling ``on_audio`` how many seconds of ``stream`` have been read (None without one)."""
    if on_audio is None:
        return None
    return lambda: on_audio(stream.samples_out / stream.target_rate)


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
    on_block: Callable[[], None] | None = None,
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
        if on_block is not None:
            on_block()
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
