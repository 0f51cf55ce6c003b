"""The real audio path: a RAVDESS clip played into a PulseAudio null sink arrives through sounddevice."""

from __future__ import annotations

import os
import subprocess
import threading

import numpy as np
import pytest
import soundfile as sf

from emotion_monitor.realtime.audio import SAMPLE_RATE, load_audio, rms_dbfs

pytestmark = pytest.mark.audio


def record_while_playing(pulse_sink, wav_path, seconds: float) -> np.ndarray:
    """Record ``seconds`` from the sink's monitor (ALSA ``pulse`` device) while paplay plays ``wav_path``."""
    os.environ["PULSE_SOURCE"] = pulse_sink.monitor
    import sounddevice as sd

    sd._terminate()
    sd._initialize()  # re-scan devices now that PULSE_SERVER points at the test daemon
    player = threading.Timer(
        0.3,
        lambda: subprocess.run(
            ["paplay", "-d", pulse_sink.sink, str(wav_path)], env=pulse_sink.env, timeout=30
        ),
    )
    player.start()
    try:
        audio = sd.rec(
            int(seconds * SAMPLE_RATE), samplerate=SAMPLE_RATE, channels=1, device="pulse", dtype="float32"
        )
        sd.wait()
    finally:
        player.join()
    return audio[:, 0]


def test_null_sink_records_played_clip(pulse_sink, ravdess_16k, tmp_path):
    clip = load_audio(ravdess_16k / "Actor_01" / "03-01-05-02-01-01-01.flac")  # angry, strong
    wav = tmp_path / "clip.wav"
    sf.write(wav, clip, SAMPLE_RATE)
    clip_s = len(clip) / SAMPLE_RATE

    recorded = record_while_playing(pulse_sink, wav, clip_s + 1.5)

    # Frames louder than the digital silence of an idle null sink mark where the clip arrived.
    frame = SAMPLE_RATE // 50
    frames = recorded[: len(recorded) // frame * frame].reshape(-1, frame)
    loud = np.flatnonzero(np.sqrt(np.mean(frames**2, axis=1)) > 1e-3)
    assert loud.size > 0, "nothing arrived from the null sink monitor"
    arrived_s = (loud[-1] - loud[0] + 1) * frame / SAMPLE_RATE
    speech_s = len(clip) / SAMPLE_RATE
    assert 0.5 * speech_s < arrived_s <= speech_s + 0.1
    # Level: what arrives matches what was played within a few dB (the sink is lossless at unity volume).
    played_db = rms_dbfs(clip[np.abs(clip) > 0])
    got = recorded[loud[0] * frame : (loud[-1] + 1) * frame]
    assert abs(rms_dbfs(got) - played_db) < 6.0
