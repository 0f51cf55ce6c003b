"""Who is speaking: a speaker embedding (GE2E voice encoder) on ONNX Runtime, its mel frontend in numpy.

The encoder is Resemblyzer's pretrained GE2E model (Apache-2.0; the weights ship inside the ``resemblyzer``
wheel): a 3-layer LSTM over 40-band mel power frames (16 kHz, 25 ms Hann window, 10 ms hop), whose last
hidden state goes through a linear layer and a ReLU and is L2-normalised: a 256-dimensional unit vector, close
for the same voice. ``emotion_monitor.export.speaker_model`` turns the weights into a small ONNX file, once, in
a child process (torch never enters this one), into the user cache beside the default emotion model.

The frontend reproduces Resemblyzer's preprocessing (``normalize_volume`` to -30 dBFS, increase only, then
``librosa.feature.melspectrogram`` with its defaults: centred frames, zero padding, Slaney mel filters); the
export checks it against librosa (tests/test_speaker_embedding.py too). numpy and onnxruntime only.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.errors import ModelError

SAMPLE_RATE = 16_000
N_FFT = 400
"""25 ms."""
HOP = 160
"""10 ms."""
N_MELS = 40
TARGET_DBFS = -30.0
"""Quieter audio is raised to this RMS level first (Resemblyzer's ``audio_norm_target_dBFS``)."""
EMBEDDING_SIZE = 256
MELS_NAME = "mels"
EMBEDDING_NAME = "embedding"
MODEL_NAME = "speaker-ge2e-1.onnx"
"""The cached file's name (the number changes with the export's format)."""
BUILD_MODULES = ("torch", "onnx", "resemblyzer")
"""What building the speaker model needs (the ``speakers`` and ``export`` extras)."""


def _hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, ``htk=False``): linear below 1 kHz, logarithmic above."""
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / (200.0 / 3)
    log_part = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (np.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log_part, mel)


def _mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = mel * (200.0 / 3)
    log_part = 1000.0 * np.exp((np.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log_part, hz)


@cache
def mel_filterbank() -> np.ndarray:
    """``[N_MELS, N_FFT // 2 + 1]`` triangular filters, Slaney-normalised (area 1), 0 Hz to Nyquist."""
    fft_hz = np.linspace(0.0, SAMPLE_RATE / 2, N_FFT // 2 + 1)
    edges_hz = _mel_to_hz(np.linspace(_hz_to_mel(0.0), _hz_to_mel(SAMPLE_RATE / 2), N_MELS + 2))
    widths = np.diff(edges_hz)
    ramps = edges_hz[:, None] - fft_hz[None, :]
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(lower, upper))
    weights *= (2.0 / (edges_hz[2:] - edges_hz[:-2]))[:, None]
    weights.flags.writeable = False
    return weights


@cache
def _window() -> np.ndarray:
    """Periodic Hann window (``scipy.signal.get_window("hann", N_FFT)``, what librosa uses)."""
    window = 0.5 - 0.5 * np.cos(2.0 * np.pi * np.arange(N_FFT) / N_FFT)
    window.flags.writeable = False
    return window


def normalise_volume(samples: np.ndarray) -> np.ndarray:
    """Raise quiet audio to TARGET_DBFS RMS (never lowers it; silence stays silence)."""
    rms = float(np.sqrt(np.mean(np.square(samples, dtype=np.float64)))) if len(samples) else 0.0
    if rms <= 0.0:
        return samples
    gain_db = TARGET_DBFS - 20.0 * np.log10(rms)
    return samples if gain_db <= 0 else samples * np.float32(10.0 ** (gain_db / 20.0))


def mel_frames(samples: np.ndarray) -> np.ndarray:
    """Mono 16 kHz float audio → ``[frames, N_MELS]`` float32 mel power frames (one per 10 ms, centred)."""
    x = normalise_volume(np.asarray(samples, dtype=np.float32)).astype(np.float64)
    x = np.pad(x, N_FFT // 2)  # librosa's centre=True with its default zero padding
    count = 1 + (len(x) - N_FFT) // HOP
    frames = np.lib.stride_tricks.sliding_window_view(x, N_FFT)[::HOP][:count]
    power = np.abs(np.fft.rfft(frames * _window(), axis=1)) ** 2
    return (power @ mel_filterbank().T).astype(np.float32)


def speaker_model_path() -> Path:
    """Where the speaker model is cached: ``$XDG_CACHE_HOME/speech-emotion-monitor/speaker-ge2e-1.onnx``."""
    from emotion_monitor.realtime.model_store import cache_dir

    return cache_dir() / MODEL_NAME


def speaker_model_available() -> bool:
    """Whether ``SpeakerEncoder.load()`` can work: the model is cached, or can be built here."""
    if speaker_model_path().is_file():
        return True
    return all(importlib.util.find_spec(name) is not None for name in BUILD_MODULES)


class SpeakerEncoder:
    """The GE2E voice encoder on ONNX Runtime: ``embed(samples)`` → a unit vector ``[EMBEDDING_SIZE]``."""

    def __init__(self, path: str | Path, threads: int = 1):
        import onnxruntime as ort

        self.path = Path(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types
            raise ModelError(f"{self.path}: not a usable speaker model ({exc})") from exc

    @classmethod
    def load(cls, path: str | Path | None = None, build: bool = True, log=None) -> SpeakerEncoder:
        """``path``, or the cached model (built on first use when ``build``: it needs the ``speakers`` extra)."""
        if path is not None:
            if not Path(path).is_file():
                raise ModelError(f"{path}: speaker model not found")
            return cls(path)
        from emotion_monitor.realtime.model_store import build_model_file

        target = speaker_model_path()
        if not target.is_file():
            if not build:
                raise ModelError(f"{target}: speaker model not built yet")
            build_model_file(
                target,
                ("-m", "emotion_monitor.export.speaker_model"),
                "the speaker model",
                BUILD_MODULES,
                "speakers",
                "run without speaker turns",
                log,
            )
        return cls(target)

    def embed(self, samples: np.ndarray) -> np.ndarray:
        """Mono 16 kHz audio (at least a few frames) → its speaker embedding, float64, unit length."""
        mels = mel_frames(samples)[None]
        (embedding,) = self.session.run([EMBEDDING_NAME], {MELS_NAME: mels})
        return embedding[0].astype(np.float64)
