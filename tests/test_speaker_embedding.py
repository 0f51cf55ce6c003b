"""The speaker model: its numpy mel frontend against librosa (what Resemblyzer computes), the built ONNX model on
real voices, and the one-line error when it cannot be built."""

from __future__ import annotations

import numpy as np
import pytest
from support import synthetic_speechlike

from emotion_monitor.realtime import model_store
from emotion_monitor.realtime import speaker_embedding as se
from emotion_monitor.realtime.errors import ModelError


@pytest.mark.parametrize("level", [0.5, 0.002])  # loud (left as is) and quiet (raised to -30 dBFS)
def test_mel_frontend_matches_resemblyzers_librosa_preprocessing(level):
    librosa = pytest.importorskip("librosa", reason="librosa comes with the speakers extra (resemblyzer)")
    audio = (level * synthetic_speechlike(2.37, seed=3) / 0.5).astype(np.float32)
    # resemblyzer.audio: normalize_volume(wav, -30, increase_only=True), then wav_to_mel_spectrogram.
    rms_dbfs = 20 * np.log10(np.sqrt(np.mean(audio.astype(np.float64) ** 2)))
    gain = 10 ** ((-30 - rms_dbfs) / 20) if rms_dbfs < -30 else 1.0
    want = librosa.feature.melspectrogram(
        y=(audio * gain).astype(np.float32), sr=16_000, n_fft=400, hop_length=160, n_mels=40
    ).T
    got = se.mel_frames(audio)
    assert got.shape == want.shape == (1 + len(audio) // 160, 40) and got.dtype == np.float32
    assert np.abs(got - want).max() <= 1e-5 * want.max()
    assert (gain > 1) == (level < 0.01), "only the quiet clip is raised"


def test_speaker_model_tells_two_actors_apart(speaker_model, ravdess_16k):
    """Embeddings of 1.5 s of different clips: one actor's are closer to each other than to another actor's."""
    from emotion_monitor.realtime.audio import load_audio

    encoder = se.SpeakerEncoder(speaker_model)
    embeddings = {}
    for actor in ("Actor_01", "Actor_02"):
        clips = sorted((ravdess_16k / actor).glob("*.flac"))[::12][:5]
        embeddings[actor] = np.array([encoder.embed(load_audio(c)[8000:32000]) for c in clips])
    a, b = embeddings["Actor_01"], embeddings["Actor_02"]
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    same = np.mean(
        [a[i] @ a[j] for i in range(5) for j in range(i)] + [b[i] @ b[j] for i in range(5) for j in range(i)]
    )
    across = float(np.mean(a @ b.T))
    assert same > across + 0.1, (same, across)


def test_speaker_model_build_without_the_extra_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(se, "BUILD_MODULES", ("no_such_module_for_this_test",))
    monkeypatch.setattr(
        model_store.subprocess, "Popen", lambda *a, **k: pytest.fail("the exporter was started")
    )
    assert not se.speaker_model_available()
    with pytest.raises(ModelError) as err:
        se.SpeakerEncoder.load()
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "no_such_module_for_this_test" in message and "[speakers]" in message
    assert not se.speaker_model_path().exists()
    with pytest.raises(ModelError, match="nothing.onnx: speaker model not found"):
        se.SpeakerEncoder.load(tmp_path / "nothing.onnx")
