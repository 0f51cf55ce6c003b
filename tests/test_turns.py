"""Speaker turns: the detector on embeddings with known speakers, the registry of per-speaker baselines, and the
stream following a real two-speaker conversation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from emotion_monitor.realtime.speakers import SpeakerRegistry
from emotion_monitor.realtime.turns import TurnChange, TurnDetector, TurnOptions

DIMS = 256


def unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x)


def voices(seed: int, count: int) -> list[np.ndarray]:
    """``count`` distinct voices: a unit speaker embedding each (random directions: cosine distance about 1)."""
    rng = np.random.default_rng(seed)
    return [unit(rng.standard_normal(DIMS)) for _ in range(count)]


def windows(voice: np.ndarray, n: int, rng) -> list[np.ndarray]:
    """``n`` windows of a voice: its embedding moved by noise (cosine distance about 0.1 from it)."""
    return [unit(voice + 0.45 * unit(rng.standard_normal(DIMS))) for _ in range(n)]


def follow(detector: TurnDetector, sequence: list[np.ndarray]) -> list[str]:
    """The speaker id after every window, naming new speakers S2, S3, ... as the stream does."""
    detector.begin("S1")
    current, known, ids = "S1", 1, []
    for embedding in sequence:
        change = detector.observe(embedding)
        if change is not None:
            if change.to is None:
                known += 1
                current = f"S{known}"
                detector.begin(current)
            else:
                current = change.to
        ids.append(current)
    return ids


def test_detector_finds_a_new_speaker_and_a_returning_one():
    rng = np.random.default_rng(0)
    a, b = voices(1, 2)
    sequence = windows(a, 10, rng) + windows(b, 10, rng) + windows(a, 10, rng) + windows(b, 6, rng)
    options = TurnOptions(confirm_windows=3)
    ids = follow(TurnDetector(options), sequence)
    assert ids[:10] == ["S1"] * 10
    # A change needs confirm_windows windows in a row: detected on the third window of each new turn.
    assert ids[10:12] == ["S1", "S1"] and ids[12:20] == ["S2"] * 8
    assert ids[22:30] == ["S1"] * 8, "the first speaker came back: their id, not a third one"
    assert ids[-4:] == ["S2"] * 4


def test_detector_ignores_a_single_odd_window_and_waits_for_enough_speech():
    rng = np.random.default_rng(2)
    a, b = voices(3, 2)
    detector = TurnDetector(TurnOptions(confirm_windows=3, hold_windows=4))
    odd = windows(a, 8, rng) + windows(b, 2, rng) + windows(a, 8, rng)
    assert set(follow(detector, odd)) == {"S1"}, "two odd windows are not a turn"
    detector.reset()
    early = windows(a, 2, rng) + windows(b, 2, rng)
    assert set(follow(detector, early)) == {"S1"}, "no decision in the first hold_windows windows"


def test_detector_caps_the_number_of_speakers():
    rng = np.random.default_rng(4)
    vs = voices(5, 4)
    sequence = [w for v in vs for w in windows(v, 8, rng)]
    ids = follow(TurnDetector(TurnOptions(max_speakers=2)), sequence)
    assert set(ids) == {"S1", "S2"}


def test_observe_before_begin_and_bad_options_are_errors():
    with pytest.raises(RuntimeError, match="begin"):
        TurnDetector().observe(np.ones(DIMS))
    with pytest.raises(ValueError, match="change_distance"):
        TurnOptions(change_distance=0)
    assert TurnChange(None).to is None


def test_registry_gives_a_returning_speaker_their_own_normaliser():
    made = []

    def make():
        made.append(object())
        return made[-1]

    registry = SpeakerRegistry(make)
    first = registry.normaliser
    assert registry.current == "S1" and registry.new() == "S2" and registry.normaliser is not first
    registry.switch("S1")
    assert registry.normaliser is first and registry.ids == ["S1", "S2"]
    with pytest.raises(KeyError, match="S9"):
        registry.switch("S9")
    registry.reset()
    assert registry.ids == ["S1"] and len(made) == 3
    assert SpeakerRegistry().normaliser is None


TURN_ACTORS = ("Actor_01", "Actor_02", "Actor_01", "Actor_02")
"""A man and a woman (RAVDESS: odd actors male, even female) taking four turns."""


def two_speaker_recording(ravdess_16k, turn_s: float = 4.0) -> tuple[np.ndarray, list[float]]:
    """RAVDESS actors 1 and 2 taking turns (``TURN_ACTORS``), each turn at least ``turn_s`` of their clips
    (trimmed of silence, several emotions at normal intensity, 0.15 s apart; 4-6 s), 0.5 s between turns, 1 s
    of silence first.
    Returns 16 kHz audio and each turn's first second."""
    from emotion_monitor.realtime.audio import load_audio, trim_silence

    parts, starts, t = [np.zeros(16_000, np.float32)], [], 1.0
    for k, actor in enumerate(TURN_ACTORS):
        starts.append(t)
        spoken = 0.0
        for clip in sorted((ravdess_16k / actor).glob("03-01-0?-01-*.flac"))[k * 7 :: 3]:
            speech = trim_silence(load_audio(clip))
            parts += [speech, np.zeros(2400, np.float32)]
            spoken += len(speech) / 16_000
            t += len(speech) / 16_000 + 0.15
            if spoken >= turn_s:
                break
        parts.append(np.zeros(5600, np.float32))
        t += 0.35
    return np.concatenate(parts), starts


def speaker_runs(records) -> list[tuple[str, float]]:
    """``(speaker, end_s of its first hop)`` for each run of hops with the same ``speaker``."""
    runs = []
    for r in records:
        speaker, end_s = (r["speaker"], r["end_s"]) if isinstance(r, dict) else (r.speaker, r.end_s)
        if not runs or runs[-1][0] != speaker:
            runs.append((speaker, end_s))
    return runs


@pytest.mark.data
def test_stream_finds_the_turns_of_a_two_speaker_recording(tiny_model, speaker_model, ravdess_16k):
    """``EmotionStream(speaker_turns=True)`` fed a real two-speaker recording in 20 ms chunks: the speaker changes
    at each turn (within 3 s), and the first speaker comes back as S1."""
    from emotion_monitor.realtime.model import load_model
    from emotion_monitor.realtime.speaker_embedding import SpeakerEncoder
    from emotion_monitor.realtime.stream import EmotionStream, StreamOptions

    audio, starts = two_speaker_recording(ravdess_16k)
    stream = EmotionStream(
        load_model(tiny_model),
        StreamOptions(speaker_turns=True),
        speaker_encoder=SpeakerEncoder(speaker_model),
    )
    results = [r for k in range(0, len(audio), 320) for r in stream.process(audio[k : k + 320], 16_000)]
    runs = speaker_runs(results + stream.flush())
    assert [speaker for speaker, _ in runs] == ["S1", "S2", "S1", "S2"], runs
    for (_, found_s), turn_s in zip(runs[1:], starts[1:], strict=True):
        assert turn_s < found_s <= turn_s + 3.0, (runs, starts)


@pytest.mark.data
def test_speaker_turns_run_without_torch(tiny_model, speaker_model, ravdess_16k, tmp_path):
    """``emotion-live --speaker-turns`` on a file: the speaker model runs on ONNX Runtime, torch is never imported
    (the speaker model is already built by the fixture, as it is after a first run)."""
    import soundfile as sf
    from support import assert_runs_without

    audio, _ = two_speaker_recording(ravdess_16k, turn_s=2.0)
    wav = tmp_path / "two.wav"
    sf.write(wav, audio, 16_000)
    assert_runs_without(
        [
            "from emotion_monitor.realtime.live import main as live",
            f"assert live(['--model', {str(tiny_model)!r}, '--input', {str(wav)!r}, '--fast', '--speaker-turns']) == 0",
        ],
        ("resemblyzer", "librosa"),
    )


@pytest.mark.audio
@pytest.mark.data
def test_turns_through_pulseaudio_are_found_from_the_voices(
    pulse_sink, tiny_model, speaker_model, ravdess_16k, tmp_path
):
    """A two-speaker recording played into a PulseAudio null sink while ``emotion-live --speaker-turns`` records
    it, no forced turn: the JSONL's ``speaker`` goes S1, S2, S1, S2, the changes as far apart as the turns."""
    import soundfile as sf
    from support import live_from_pulse

    audio, starts = two_speaker_recording(ravdess_16k)
    wav = tmp_path / "two-speakers.wav"
    sf.write(wav, audio, 16_000)
    seconds = len(audio) / 16_000 + 1
    args = ("--model", str(tiny_model), "--speaker-turns", "--max-seconds", f"{seconds:.0f}")
    run = live_from_pulse(pulse_sink, wav, tmp_path / "turns.jsonl", *args)
    assert run.returncode == 0, run.stderr
    runs = speaker_runs(run.hops)
    assert [speaker for speaker, _ in runs] == ["S1", "S2", "S1", "S2"], runs
    # Stream time runs ahead of the recording by the start-up of paplay; the gaps between turns are the same.
    found_gaps = np.diff([end_s for _, end_s in runs[1:]])
    assert np.abs(found_gaps - np.diff(starts[1:])).max() < 1.5, (runs, starts)


@pytest.mark.audio
@pytest.mark.data
def test_forced_turns_through_pulseaudio_give_speaker_ids_at_the_turns(
    pulse_sink, tiny_model, ravdess_16k, tmp_path
):
    """Two speakers take turns while emotion-live records a PulseAudio device; SIGUSR1 (what Enter does) is sent
    at each turn: the JSONL's ``speaker`` changes there (S1, S2, S3: a forced turn is always a new speaker)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import soundfile as sf
    from support import REPO_ROOT

    from emotion_monitor.realtime.audio import load_audio

    turns = []
    for k, actor in enumerate(("Actor_01", "Actor_02", "Actor_01")):
        clips = sorted((ravdess_16k / actor).glob("*.flac"))[k * 7 : k * 7 + 2]
        audio = np.concatenate([load_audio(c) for c in clips] + [np.zeros(16_000, np.float32)])
        turns.append(tmp_path / f"turn{k}.wav")
        sf.write(turns[-1], audio, 16_000)
    env = dict(pulse_sink.env, PULSE_SOURCE=pulse_sink.monitor)
    out = tmp_path / "turns.jsonl"
    cmd = [
        sys.executable,
        "-m",
        "emotion_monitor.realtime.live",
        "--device",
        "pulse",
        "--model",
        str(tiny_model),
    ]
    cmd += ["--speaker-min-s", "2", "--max-seconds", "30", "--jsonl", str(out)]
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=REPO_ROOT
    )
    signalled_s = []
    try:
        assert "emotion-live:" in proc.stdout.readline()  # the header: recording has started
        started = time.monotonic()
        time.sleep(0.5)
        for k, wav in enumerate(turns):
            if k:
                os.kill(proc.pid, signal.SIGUSR1)
                signalled_s.append(time.monotonic() - started)
            subprocess.run(
                ["paplay", "-d", pulse_sink.sink, str(wav)], env=pulse_sink.env, timeout=30, check=True
            )
        proc.send_signal(signal.SIGINT)
        rest, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    hops = [json.loads(line) for line in out.read_text().splitlines()]
    runs = [hops[0]["speaker"]] + [
        b["speaker"] for a, b in zip(hops, hops[1:], strict=False) if b["speaker"] != a["speaker"]
    ]
    assert runs == ["S1", "S2", "S3"], runs
    # Stream time runs behind the wall clock by the device's start-up; the turns are as far apart in both.
    firsts = [next(h for h in hops if h["speaker"] == speaker)["end_s"] for speaker in ("S2", "S3")]
    assert abs((firsts[1] - firsts[0]) - (signalled_s[1] - signalled_s[0])) < 1.0, (firsts, signalled_s)
    for speaker in ("S1", "S2", "S3"):
        assert any(h["speech"] for h in hops if h["speaker"] == speaker), f"{speaker} spoke"
    assert "new speaker S2" in rest and "new speaker S3" in rest
