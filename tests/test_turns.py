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
    detector = TurnDetector(TurnOptions(confirm_windows=3, min_windows=4))
    odd = windows(a, 8, rng) + windows(b, 2, rng) + windows(a, 8, rng)
    assert set(follow(detector, odd)) == {"S1"}, "two odd windows are not a turn"
    detector.reset()
    early = windows(a, 2, rng) + windows(b, 2, rng)
    assert set(follow(detector, early)) == {"S1"}, "no decision before min_windows"


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
