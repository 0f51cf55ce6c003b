"""Ring buffer, window placement, smoothing: the pieces between the audio callback and the display."""

from __future__ import annotations

import io
import threading
import time

import numpy as np
import pytest

from emotion_monitor.realtime.display import LiveHop, Summary, make_view
from emotion_monitor.realtime.ringbuffer import RingBuffer
from emotion_monitor.realtime.smoothing import Smoother, SmootherOptions
from emotion_monitor.realtime.stream import StreamResult
from emotion_monitor.realtime.vad import FRAME_SAMPLES, FrameVAD
from emotion_monitor.realtime.windowing import StreamWindower, WindowSpec, tile_bounds


# -- ring buffer ---------------------------------------------------------------------------------------------
def test_ring_buffer_wraps_around_in_order():
    ring = RingBuffer(10)
    ring.write(np.arange(7, dtype=np.float32))
    assert ring.read(5, timeout_s=0).tolist() == [0, 1, 2, 3, 4]
    ring.write(np.arange(7, 13, dtype=np.float32))  # crosses the end of the storage
    assert ring.available() == 8
    assert ring.read(timeout_s=0).tolist() == [5, 6, 7, 8, 9, 10, 11, 12]
    assert ring.stats().dropped == 0 and ring.stats().overruns == 0


def test_ring_buffer_overrun_drops_oldest_and_counts():
    ring = RingBuffer(8)
    ring.write(np.arange(6, dtype=np.float32))
    ring.write(np.arange(6, 11, dtype=np.float32))  # 11 > 8: the 3 oldest are lost
    stats = ring.stats()
    assert (stats.written, stats.dropped, stats.overruns) == (11, 3, 1)
    assert ring.read(timeout_s=0).tolist() == list(range(3, 11))
    ring.write(np.arange(20, dtype=np.float32))  # bigger than the whole ring
    stats = ring.stats()
    assert (stats.written, stats.dropped, stats.overruns) == (31, 15, 2)
    assert ring.read(timeout_s=0).tolist() == list(range(12, 20))


def test_ring_buffer_remembers_when_each_sample_arrived():
    ring = RingBuffer(100)
    ring.write(np.zeros(10, dtype=np.float32))
    time.sleep(0.02)
    ring.write(np.zeros(10, dtype=np.float32))
    first, second = ring.arrival_time(10), ring.arrival_time(11)
    assert first is not None and second is not None
    assert second - first >= 0.015  # sample 10 (index 10) came with the second write
    assert ring.arrival_time(1) == first
    assert ring.arrival_time(21) is None  # not written yet


def test_ring_buffer_read_times_out_and_close_ends_the_stream():
    ring = RingBuffer(4)
    t0 = time.monotonic()
    assert ring.read(timeout_s=0.1).size == 0
    assert 0.05 < time.monotonic() - t0 < 1.0
    assert not ring.closed
    ring.write(np.ones(2, np.float32))
    ring.close()
    assert not ring.closed  # unread audio is still delivered after close
    assert ring.read(timeout_s=0).size == 2
    assert ring.closed


def test_ring_buffer_hands_producer_errors_to_the_reader():
    ring = RingBuffer(4)
    threading.Timer(0.05, lambda: ring.fail(RuntimeError("device gone"))).start()
    with pytest.raises(RuntimeError, match="device gone"):
        ring.read(timeout_s=2.0)


def test_ring_buffer_backpressure_loses_nothing_across_threads():
    ring = RingBuffer(100)
    data = np.arange(5_000, dtype=np.float32)

    def produce():
        for i in range(0, data.size, 37):
            ring.write(data[i : i + 37], wait_s=2.0)
        ring.close()

    threading.Thread(target=produce).start()
    got = []
    while not ring.closed:
        got.append(ring.read(64, timeout_s=1.0))
    assert np.array_equal(np.concatenate(got), data)
    assert ring.stats().dropped == 0


# -- windows -------------------------------------------------------------------------------------------------
SPEC = WindowSpec(window_s=3.0, hop_s=0.5, sample_rate=16_000, min_window_s=1.0)


def window_bounds(n_samples: int, spec: WindowSpec, final: bool = True) -> list[tuple[int, int]]:
    """The window placement of ``emotion_monitor.realtime.windowing``'s module doc in closed form: ``(start, end)`` of every window
    over ``n_samples`` (the oracle the streaming windower is checked against)."""
    bounds = []
    end = spec.hop
    while end <= n_samples:
        if end >= spec.min_window:
            bounds.append((max(0, end - spec.window), end))
        end += spec.hop
    last_end = end - spec.hop
    if final and n_samples >= spec.min_window and n_samples - last_end >= spec.min_tail:
        bounds.append((max(0, n_samples - spec.window), n_samples))
    return bounds


def test_window_count_and_placement():
    bounds = window_bounds(10 * 16_000, SPEC)
    ends_s = [e / 16_000 for _, e in bounds]
    assert ends_s == [1.0 + 0.5 * k for k in range(19)]  # 1.0, 1.5, ..., 10.0
    assert [s / 16_000 for s, _ in bounds[:6]] == [0.0] * 5 + [0.5]  # grows to 3 s, then slides
    assert all(e - s == 3 * 16_000 for s, e in bounds[4:])


def test_tail_window_ends_at_the_last_sample():
    n = int(4.3 * 16_000)
    bounds = window_bounds(n, SPEC)
    assert bounds[-1] == (n - 3 * 16_000, n)
    assert bounds[-2][1] == 4 * 16_000
    assert window_bounds(int(4.05 * 16_000), SPEC)[-1][1] == 4 * 16_000  # 50 ms tail: no extra window
    assert window_bounds(int(0.9 * 16_000), SPEC) == []  # shorter than min_window_s


@pytest.mark.parametrize("n", [48_001, 60_000, 100_000, 1_600_003])
def test_file_tiles_cover_every_sample_about_once(n):
    bounds = tile_bounds(n, 48_000)
    assert {e - s for s, e in bounds} == {48_000}  # full windows of one length: one batch
    assert bounds[0][0] == 0 and bounds[-1][1] == n
    assert all(b[0] <= a[1] for a, b in zip(bounds, bounds[1:], strict=False))  # no gap
    assert len(bounds) == -(-n // 48_000)  # as few as cover it: under one window of overlap in all
    assert tile_bounds(30_000, 48_000) == [(0, 30_000)]  # fits: the whole clip, one input


class _FirstHalfSpeech(FrameVAD):
    """A fake VAD: frames in the first 2 s are speech."""

    def __init__(self):
        super().__init__()
        self.frame = 0

    def reset(self):
        super().reset()
        self.frame = 0

    def frame_probability(self, frame):
        self.frame += 1
        return 1.0 if self.frame * FRAME_SAMPLES <= 2 * 16_000 else 0.0


def test_stream_windower_matches_window_bounds_for_any_chunking():
    rng = np.random.default_rng(1)
    audio = rng.standard_normal(int(5.3 * 16_000)).astype(np.float32)
    windower = StreamWindower(SPEC, _FirstHalfSpeech())
    windows, pos = [], 0
    while pos < audio.size:
        step = int(rng.integers(1, 9_000))
        windows += windower.feed(audio[pos : pos + step])
        pos += step
    windows += windower.flush()
    assert [(w.start, w.end) for w in windows] == window_bounds(audio.size, SPEC)
    for w in windows:
        assert np.array_equal(w.samples, audio[w.start : w.end])
    # Speech until 2.0 s. The gate: at least 1 s of speech (the 1.0 s window holds 31 whole 32 ms frames, 0.99 s),
    # and speech no longer than 1 s before the window's end (the last speech frame ends at 1.984 s, so the window
    # ending 2.5 s, holding it all, still counts; the one ending 3.0 s, 1.016 s later, does not).
    assert [w.speech for w in windows] == [1.5 <= w.end_s <= 2.5 for w in windows]
    by_end = {round(w.end_s, 2): w for w in windows}
    assert by_end[1.5].speech_s == pytest.approx(46 * FRAME_SAMPLES / 16_000)
    assert by_end[3.0].trailing_silence_s == pytest.approx(3.0 - 62 * FRAME_SAMPLES / 16_000)
    assert by_end[4.0].speech_s == pytest.approx(30 * FRAME_SAMPLES / 16_000)  # frames 32-61 of [1.0, 4.0) s


# -- smoothing -----------------------------------------------------------------------------------------------
def _onehot(i: int, p: float = 0.9, n: int = 4) -> np.ndarray:
    v = np.full(n, (1 - p) / (n - 1))
    v[i] = p
    return v


def test_smoother_stays_a_distribution():
    rng = np.random.default_rng(0)
    smoother = Smoother(SmootherOptions(alpha=0.3))
    for _ in range(50):
        out = smoother.update(rng.dirichlet(np.ones(5)))
        assert np.all(out.probs >= 0) and np.all(out.probs <= 1)
        assert out.probs.sum() == pytest.approx(1.0)
        assert 0 <= out.index < 5


def test_smoother_hysteresis_needs_margin_for_patience_hops():
    smoother = Smoother(SmootherOptions(alpha=1.0, margin=0.2, patience_hops=2))
    assert smoother.update(_onehot(0)).index == 0
    # A challenger that leads by less than the margin never takes over.
    near = np.array([0.4, 0.5, 0.05, 0.05])
    for _ in range(5):
        assert smoother.update(near).index == 0
    # A clear lead must last 2 hops: one hop is a blip.
    assert smoother.update(_onehot(1)).index == 0
    assert smoother.update(_onehot(0)).index == 0
    assert smoother.update(_onehot(1)).index == 0
    assert smoother.update(_onehot(1)).index == 1


def test_smoother_ema_and_reset():
    smoother = Smoother(SmootherOptions(alpha=0.5, margin=0.0, patience_hops=1))
    smoother.update(_onehot(0, 1.0))
    out = smoother.update(_onehot(2, 1.0))
    assert out.probs[0] == pytest.approx(0.5) and out.probs[2] == pytest.approx(0.5)
    smoother.reset()
    assert smoother.state is None
    out = smoother.update(_onehot(3))  # fresh start: the old mood is forgotten at once
    assert out.index == 3 and out.probs == pytest.approx(_onehot(3))


def test_smoother_rejects_bad_options():
    with pytest.raises(ValueError):
        SmootherOptions(alpha=0.0)
    with pytest.raises(ValueError):
        SmootherOptions(patience_hops=0)


# -- display -------------------------------------------------------------------------------------------------
class _Tty(io.StringIO):
    def isatty(self):
        return True


def _record(end_s: float, speech: bool) -> LiveHop:
    probs = {"calm": 0.25, "angry": 0.75} if speech else None
    label, ms = ("angry", 12.0) if speech else ("silence", None)
    return LiveHop(StreamResult(end_s - 2, end_s, speech, label, 0.75, probs, probs, ms, "S1"))


def test_plain_lines_when_not_a_terminal_and_ansi_redraw_on_a_terminal():
    plain = io.StringIO()
    view = make_view(plain, ("calm", "angry"), ["header"])
    view.show(_record(2.0, True))
    view.show(_record(2.5, False))
    lines = plain.getvalue().splitlines()
    assert lines[0] == "header" and len(lines) == 3 and "\x1b[" not in plain.getvalue()
    assert "angry" in lines[1] and "12.0 ms" in lines[1] and "silence" in lines[2]

    tty = _Tty()
    view = make_view(tty, ("calm", "angry"), ["header"])
    view.show(_record(2.0, True))
    assert "\x1b[J" not in tty.getvalue()  # nothing to redraw yet
    view.show(_record(2.5, True))
    assert tty.getvalue().count("\x1b[J") == 1  # the panel is redrawn in place, not appended
    assert "█" * 22 in tty.getvalue()  # 0.75 of a 30-character bar


def test_summary_shares_time_per_label():
    summary = Summary(hop_s=0.5)
    for rec in [_record(2.0, True), _record(2.5, True), _record(3.0, True), _record(3.5, False)]:
        summary.add(rec)
    text = summary.render(audio_s=3.5, dropped_samples=7, device_overflows=1)
    assert "angry       75.0%  (1.5 s)" in text and "silence     25.0%  (0.5 s)" in text
    assert "mean 12.0 ms" in text and "dropped samples: 7" in text


def test_smoother_lets_stronger_later_evidence_outweigh_an_early_window():
    """An onset window (little speech) must not hold its label against a later window with far more speech."""
    plain, weighted = (
        Smoother(SmootherOptions(alpha=0.5, margin=0.1, patience_hops=1)),
        Smoother(SmootherOptions(alpha=0.5, margin=0.1, patience_hops=1)),
    )
    early, later = np.array([0.1, 0.9, 0.0]), np.array([0.65, 0.35, 0.0])
    plain.update(early, speech_s=1.0)
    weighted.update(early, speech_s=0.3)
    assert plain.update(later, speech_s=1.0).index == 1  # equal evidence: the plain EMA keeps the early label
    assert weighted.update(later, speech_s=1.5).index == 0  # five times the speech: the later window wins
    assert weighted.state.probs.sum() == pytest.approx(1.0)


def test_one_line_is_the_first_line_or_the_type_name():
    from emotion_monitor.realtime.errors import MAX_LINE_CHARS, one_line

    multi = RuntimeError("shape mismatch\n  at layer 3\n  at layer 4")
    assert one_line(multi) == "shape mismatch"
    assert one_line(multi, with_type=True) == "RuntimeError: shape mismatch"
    assert one_line(ValueError("   ")) == "ValueError" == one_line(ValueError(), with_type=True)
    assert len(one_line(OSError("x" * 5000))) == MAX_LINE_CHARS
