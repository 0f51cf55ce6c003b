"""Long recordings (issue 24): read as a stream, windows over the speech only, pauses left out, any length in
bounded memory; short clips scored exactly as before."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import soundfile as sf
from support import ANGRY_CLIP, run_cli

from emotion_monitor.realtime.analysis import score_clip
from emotion_monitor.realtime.audio import MAX_AUDIO_S, PreprocessOptions, load_audio, prepare_clip
from emotion_monitor.realtime.batch import FileScorer, ScoreOptions
from emotion_monitor.realtime.file_scoring import SPEECH_PAD_S, WHOLE_CLIP_S, GatedVAD, SpeechTiler
from emotion_monitor.realtime.sources import REPLAY_HEAD_S, FileReplaySource, SourceError
from emotion_monitor.realtime.vad import FrameVAD

RATE = 16_000
WINDOW = 3 * RATE


class LoudIsSpeech(FrameVAD):
    """A stand-in VAD: a frame is speech when it is loud (the real one is tested in test_realtime_vad)."""

    def frame_probability(self, frame: np.ndarray) -> float:
        return float(np.abs(frame).mean() > 0.05)


def tone(seconds: float) -> np.ndarray:
    return (0.5 * np.sin(np.arange(round(seconds * RATE)) / 7.0)).astype(np.float32)


def tiles(audio: np.ndarray, chunk: int, vad: bool = True) -> list[tuple[np.ndarray, float]]:
    tiler, gate = SpeechTiler(WINDOW, RATE), GatedVAD(LoudIsSpeech(), RATE)
    out = []
    for i in range(0, len(audio), chunk):
        block = audio[i : i + chunk]
        out += [(w, 1.0) for w in tiler.feed(block, gate.process(block) if vad else None)]
    if vad:
        out += [(w, 1.0) for w in tiler.feed(audio[:0], gate.flush())]
    return out + tiler.flush(), tiler.kept


def test_speech_tiler_leaves_out_long_pauses_and_keeps_short_gaps():
    silence = np.zeros
    parts = [tone(5.0), silence(4 * RATE, np.float32), tone(2.0), silence(RATE // 2, np.float32), tone(3.0)]
    audio = np.concatenate(parts)
    windows, kept = tiles(audio, 10_000)
    # 5 s + a pad after it + a pad before the 2 s + 2 s + the 0.5 s gap + 3 s (to frame accuracy)
    assert kept / RATE == pytest.approx(10.5 + 2 * SPEECH_PAD_S, abs=0.07)
    assert [len(w) for w, _ in windows] == [WINDOW] * 4  # full windows; the last reaches back
    assert sum(share for _, share in windows) * WINDOW == pytest.approx(kept, abs=1)
    assert all(np.abs(w).max() > 0.4 for w, _ in windows)  # no window of pause only
    for chunk in (777, 100_000):  # any chunking: the same windows
        again, _ = tiles(audio, chunk)
        assert all(np.array_equal(a, b) and s == t for (a, s), (b, t) in zip(windows, again, strict=True))


def test_speech_tiler_without_vad_covers_everything_and_short_streams_are_one_window():
    windows, kept = tiles(tone(10.0), 4096, vad=False)
    assert kept == 10 * RATE and len(windows) == 4 and windows[-1][1] == pytest.approx(1 / 3)
    short, kept = tiles(tone(1.2), 4096, vad=False)
    assert kept == len(short[0][0]) == round(1.2 * RATE) and short[0][1] == 1.0


class TonalIsSpeech(FrameVAD):
    """A stand-in VAD that tells a tone (speech here) from noise or silence at any level, counting its calls."""

    calls = 0

    def frame_probability(self, frame: np.ndarray) -> float:
        self.calls += 1
        power = np.abs(np.fft.rfft(frame)) ** 2
        return float(power.max() > 0.1 * power.sum())


def gate_parts(parts: list[np.ndarray]) -> tuple[np.ndarray, list[int], np.ndarray]:
    """``GatedVAD`` (on ``TonalIsSpeech``) fed the parts in turn: its flags, the VAD calls each part cost, and
    each part's first frame."""
    vad = TonalIsSpeech()
    gate = GatedVAD(vad, RATE)
    flags, calls = [], []
    for part in parts:
        flags.append(gate.process(part))
        calls.append(vad.calls - sum(calls))
    starts = np.cumsum([0] + [len(p) for p in parts]) // 512
    return np.concatenate([*flags, gate.flush()]), calls, starts


def test_quiet_speech_after_a_known_pause_costs_no_vad_time_and_a_steady_noise_is_still_a_pause():
    rng = np.random.default_rng(0)
    envelope = lambda s: 0.5 + 0.49 * np.sin(2 * np.pi * 4 * np.arange(round(s * RATE)) / RATE)  # noqa: E731
    speech = lambda s, db: (10 ** (db / 20) * envelope(s) * tone(s) / 0.5).astype(np.float32)  # noqa: E731
    parts = [
        speech(3.0, 0),  # loud speech
        np.zeros(2 * RATE, np.float32),  # a pause: digital silence (its noise level is now known)
        speech(1.0, 0),
        speech(10.0, -40),  # a quiet speaker, 40 dB below: by the noise known, speech unasked
        rng.normal(0, 10 ** (-50 / 20), 4 * RATE).astype(np.float32),  # a room noise louder than that pause's
        speech(1.0, 0),
    ]
    flags, calls, starts = gate_parts(parts)
    assert flags[starts[3] : starts[4]].all() and calls[3] == 0  # quiet speech: no VAD time
    # both pauses left out (the noise after a second or so)
    assert not flags[starts[1] + 32 : starts[2]].any()
    assert not flags[starts[4] + 2 * 32 : starts[5]].any() and 0 < calls[4] < 60
    _, calls, _ = gate_parts(parts[2:4])  # the same quiet speech with no pause known before it:
    assert sum(calls) > 250  # the VAD is asked throughout


def test_a_pause_in_the_same_room_costs_no_vad_time_and_quiet_speech_in_a_quieter_room_is_still_asked_about():
    rng = np.random.default_rng(1)
    noise = lambda s, db: rng.normal(0, 10 ** (db / 20), round(s * RATE)).astype(np.float32)  # noqa: E731
    envelope = 0.5 + 0.49 * np.sin(2 * np.pi * 4 * np.arange(2 * RATE) / RATE)
    quiet_speech = (10 ** (-50 / 20) * envelope * tone(2.0) / 0.5).astype(np.float32) + noise(2.0, -75)
    parts = [tone(2.0), noise(3.0, -60), tone(2.0), noise(3.0, -60), tone(2.0), noise(1.0, -75), quiet_speech]
    flags, calls, starts = gate_parts(parts)
    # the first pause is asked about; the second, the same noise, is not
    assert calls[1] > 0 and calls[3] == 0
    assert not flags[starts[3] + 4 : starts[4]].any() and flags[starts[4] : starts[5]].all()
    # quiet speech at the level of that noise, in a quieter room: asked about, and kept
    assert calls[5] + calls[6] > 30 and flags[starts[6] + 8 : starts[7]].mean() > 0.9


@pytest.fixture
def joined(tmp_path, ravdess_16k):
    """Real clips (trimmed) joined twice: back to back, and with 3 s pauses of quiet room-like noise (these
    clips are quiet: their loudest frames are about -25 dBFS; the noise is 45 dB below)."""
    files = sorted((ravdess_16k / "Actor_01").glob("*.flac"))[:16]
    clips = [prepare_clip(load_audio(f), PreprocessOptions()) for f in files]
    noise = np.random.default_rng(0).normal(0, 3e-4, 3 * RATE).astype(np.float32)  # -70 dBFS
    sf.write(tmp_path / "speech.wav", np.concatenate(clips), RATE)
    sf.write(tmp_path / "paused.wav", np.concatenate([x for c in clips for x in (c, noise)]), RATE)
    return tmp_path, sum(len(c) for c in clips) / RATE, len(clips)


def test_pauses_cost_no_windows(tiny_model, joined):
    folder, speech_s, n_clips = joined
    assert speech_s > WHOLE_CLIP_S
    out = folder / "r.jsonl"
    result = run_cli(
        "score",
        "--model",
        str(tiny_model),
        str(folder / "speech.wav"),
        str(folder / "paused.wav"),
        "--out",
        str(out),
    )
    assert result.returncode == 0, result.stderr
    rows = {r["path"].rsplit("/", 1)[-1]: r for r in map(json.loads, out.read_text().splitlines())}
    plain, paused = rows["speech.wav"], rows["paused.wav"]
    assert plain["duration_s"] == pytest.approx(speech_s, abs=0.5)
    # the pauses are left out but for a pad on either side of each stretch of speech (and the VAD's hangover)
    assert speech_s - 1.0 <= paused["duration_s"] <= speech_s + (2 * SPEECH_PAD_S + 0.1) * n_clips
    assert paused["windows"] <= plain["windows"] + 2


def test_short_clips_are_scored_exactly_as_before(tiny_model, ravdess_16k):
    scorer = FileScorer(ScoreOptions(("x",), model=str(tiny_model), threads=1))
    path = ravdess_16k / ANGRY_CLIP
    before = score_clip(scorer.model, load_audio(path), RATE, str(path))
    now = scorer.analyse(path)
    assert np.array_equal(now.probs, before.probs) and now.speech_s == before.duration_s


def test_a_recording_over_an_hour_is_scored_within_a_memory_cap(constant_model, ravdess_16k, tmp_path):
    """65 minutes (the old limit refused it; decoding it whole took 250 MB, its windows more): a stream under a
    1 GiB address-space cap. A real sentence every 20 minutes, quiet noise between (the VAD is asked
    about loud frames only, so the test stays fast)."""
    path = tmp_path / "meeting.wav"
    rng = np.random.default_rng(0)
    sentence = prepare_clip(load_audio(ravdess_16k / ANGRY_CLIP), PreprocessOptions())
    with sf.SoundFile(path, "w", RATE, 1, subtype="PCM_16") as f:
        for minute in range(65):
            f.write(sentence if minute % 20 == 0 else rng.normal(0, 1e-3, len(sentence)).astype(np.float32))
            f.write(rng.normal(0, 1e-3, 60 * RATE - len(sentence)).astype(np.float32))
    assert sf.info(str(path)).duration > 3600 and MAX_AUDIO_S >= 24 * 3600
    out = tmp_path / "r.jsonl"
    result = run_cli(
        "score", "--model", str(constant_model), str(path), "--out", str(out), preexec_fn=_capped, timeout=300
    )
    assert result.returncode == 0, result.stderr
    (row,) = map(json.loads, out.read_text().splitlines())
    speech_s = 4 * len(sentence) / RATE  # the hour of pauses is left out, but for pads
    assert speech_s - 0.5 <= row["duration_s"] <= speech_s + 8 * SPEECH_PAD_S + 0.1
    assert row["windows"] == math.ceil(row["duration_s"] / 2.0)  # the stand-in model's 2 s windows


def test_predict_file_reads_a_long_file_as_a_stream_as_emotion_score_does(tiny_model, joined, monkeypatch):
    folder, _, _ = joined
    scorer = FileScorer(ScoreOptions(("x",), model=str(tiny_model), threads=1))
    expected = scorer.analyse(folder / "paused.wav")
    monkeypatch.setattr("emotion_monitor.realtime.audio.decode_audio", _no_whole_file)
    predicted = scorer.model.predict_file(folder / "paused.wav")
    row = expected.rows(expected.probs)[0]
    assert predicted.windows == row["windows"] > 1 and round(predicted.duration_s, 3) == row["duration_s"]
    assert predicted.probs == row["probs"]


def test_a_replayed_file_is_decoded_as_it_goes_and_fails_part_way_in_one_line(tmp_path, ravdess_16k):
    audio = np.tile(load_audio(ravdess_16k / ANGRY_CLIP), 20)  # 70 s
    path = tmp_path / "long.wav"
    sf.write(path, audio, RATE, subtype="FLOAT")
    source = FileReplaySource(path, RATE, realtime=False)
    assert sum(map(len, source._head)) < (REPLAY_HEAD_S + 5) * RATE < len(audio)
    assert np.array_equal(_replayed(source), audio)  # every sample, in order, as the whole file decodes
    audio[50 * RATE] = np.nan
    sf.write(path, audio, RATE, subtype="FLOAT")
    source = FileReplaySource(path, RATE, realtime=False)  # the first 30 s are fine: it starts
    with pytest.raises(SourceError) as failed:
        _replayed(source)
    assert str(failed.value) == f"{path}: NaN or infinite sample values (first at 50.000 s)"


def _replayed(source: FileReplaySource) -> np.ndarray:
    source.start()
    try:
        out = []
        while not source.ring.closed:
            out.append(source.ring.read(timeout_s=1.0))
        return np.concatenate(out)
    finally:
        source.stop()


def _no_whole_file(*args, **kwargs):
    raise AssertionError("the whole file was decoded into memory")


def _capped():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))
