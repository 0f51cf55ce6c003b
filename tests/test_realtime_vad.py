"""The speech gate: silence and noise are not speech, RAVDESS speech is; Silero runs without torch."""

from __future__ import annotations

import numpy as np
import pytest

from emotion_monitor.realtime.audio import load_audio, trim_silence
from emotion_monitor.realtime.vad import (
    FRAME_SAMPLES,
    SPEECH_THRESHOLD,
    EnergyVAD,
    SileroVAD,
    load_vad,
    silero_model_path,
)
from emotion_monitor.realtime.windowing import StreamWindower, WindowSpec

RATE = 16_000
GUARD_S = 0.2
"""Distance kept from the trimmed speech region when taking the leading/trailing silence as non-speech truth."""


@pytest.fixture(scope="module")
def silero() -> SileroVAD:
    path = silero_model_path()
    if path is None:
        pytest.skip("silero-vad is not installed")
    return SileroVAD(path)


def _noise(dbfs: float, seconds: float = 3.0, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (10 ** (dbfs / 20) * rng.standard_normal(int(seconds * RATE))).astype(np.float32)


@pytest.mark.parametrize(
    "audio",
    [np.zeros(3 * RATE, np.float32), _noise(-60.0), _noise(-20.0)],
    ids=["digital-silence", "low-noise", "loud-white-noise"],
)
def test_silence_and_noise_are_not_speech(silero, audio):
    silero.reset()
    probs = silero.process(audio)
    assert probs.size == audio.size // FRAME_SAMPLES
    assert np.mean(probs >= SPEECH_THRESHOLD) < 0.02


def test_a_deferred_session_starts_on_the_first_frame_and_judges_the_same(silero):
    deferred = SileroVAD(silero.model_path, deferred=True)
    assert deferred._session is None  # emotion-score's whole files: no quiet stretch, no session
    audio = _noise(-20.0, 1.0)
    silero.reset()
    assert np.array_equal(deferred.process(audio), silero.process(audio))
    assert deferred._session is not None


def _speech_region(audio: np.ndarray) -> tuple[int, int]:
    """Sample range of the sentence: the trimmed clip (35 dB below peak, no padding) located in the original."""
    core = trim_silence(audio, RATE, threshold_db=35.0, pad_s=0.0)
    frame = RATE // 50
    for start in range(0, audio.size - core.size + 1, frame):  # trim_silence cuts on 20 ms frame borders
        if np.array_equal(audio[start : start + core.size], core):
            return start, start + core.size
    raise AssertionError("trimmed region not found")


def test_ravdess_speech_is_speech_and_its_silences_are_not(silero, ravdess_16k):
    files = sorted(ravdess_16k.glob("Actor_0[1-4]/*.flac"))[::12]  # 20 clips, 4 actors, every emotion
    speech_hit, silence_reject = [], []
    for path in files:
        audio = load_audio(path)
        start, end = _speech_region(audio)
        silero.reset()
        is_speech = silero.process(audio) >= SPEECH_THRESHOLD
        frame_start = np.arange(is_speech.size) * FRAME_SAMPLES
        frame_end = frame_start + FRAME_SAMPLES
        guard = int(GUARD_S * RATE)
        inside = (frame_start >= start) & (frame_end <= end)
        outside = (frame_end <= start - guard) | (frame_start >= end + guard)
        speech_hit.append(is_speech[inside].mean())
        if outside.any():
            silence_reject.append(1.0 - is_speech[outside].mean())
    # Measured: 0.82 of sentence frames are speech (the rest: pauses between words), 1.00 of silences rejected.
    assert np.mean(speech_hit) > 0.7
    assert min(speech_hit) > 0.4
    assert np.mean(silence_reject) > 0.97


def test_ravdess_windows_are_gated(silero, ravdess_16k):
    """Through the windower: windows in the leading silence are silence; windows holding 1.5 s or more of the
    sentence (the speech gate needs 1 s of VAD speech, and the VAD marks about 0.8 of a sentence's frames), up to
    half a second after it, are speech."""
    audio = load_audio(ravdess_16k / "Actor_01" / "03-01-05-02-01-01-01.flac")
    start, end = _speech_region(audio)
    windower = StreamWindower(WindowSpec(2.0, 0.5, RATE), silero)
    windows = windower.feed(audio) + windower.flush()
    before = [w for w in windows if w.end <= start]
    during = [w for w in windows if w.end - int(1.5 * RATE) >= start and w.end <= end + RATE // 2]
    assert before and during
    assert not any(w.speech for w in before)
    assert all(w.speech for w in during)


def test_energy_fallback_and_loader(monkeypatch):
    gate = EnergyVAD(threshold_dbfs=-40.0)
    assert gate.process(np.zeros(RATE, np.float32)).max() == 0.0
    assert gate.process(_noise(-20.0, 1.0)).min() == 1.0
    monkeypatch.setattr("emotion_monitor.realtime.vad.silero_model_path", lambda: None)
    vad, notice = load_vad("auto")
    assert vad.name == "energy" and "notice" in notice and "energy gate" in notice
    with pytest.raises(RuntimeError, match="silero-vad is not installed"):
        load_vad("silero")
