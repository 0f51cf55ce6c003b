"""The one audio preprocessing path, shared by training, batch scoring and the live monitor.

Everything here is numpy + soundfile + soxr so that the inference side never needs torch.
A model's input is always a 1-D float32 waveform at ``SAMPLE_RATE`` (16 kHz mono), level-normalised
per model input (one training crop, one scored window, one live window) so that the three uses see
identically scaled audio.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
"""Sample rate (Hz) of every model input."""

_EPS = 1e-10


class AudioError(ValueError):
    """A file or buffer that cannot be used as audio; ``str()`` is one line naming the file and the problem."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class PreprocessOptions:
    """How a waveform becomes model input. Travels in the ONNX metadata so the runtime repeats training exactly.

    target_dbfs: RMS level (dB re full scale) each model input is scaled to; None disables.
    max_gain_db: ceiling on the gain so near-silence is not blown up into loud noise.
    trim_db: trim leading/trailing audio quieter than this (dB below the clip's peak); None disables.
        Used on whole files (training clips, scored files); never on live windows.
    trim_pad_s: audio kept around the trimmed region, in seconds.
    """

    target_dbfs: float | None = -23.0
    max_gain_db: float = 30.0
    trim_db: float | None = 35.0
    trim_pad_s: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> PreprocessOptions:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """``[frames]`` or ``[frames, channels]`` → ``[frames]`` float32 by averaging channels."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        return samples.mean(axis=1, dtype=np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected [frames] or [frames, channels] audio, got shape {samples.shape}")
    return samples


def resample(samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr 'HQ'); a no-op when the rates already match."""
    if sample_rate == target_rate:
        return np.asarray(samples, dtype=np.float32)
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    return soxr.resample(samples, sample_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def to_model_rate(samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any channel count and rate → mono float32 at ``target_rate``."""
    return resample(to_mono(samples), sample_rate, target_rate)


def load_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Decode a file soundfile can read into mono float32 at ``target_rate``.

    Raises AudioError (one line: file and reason) for unreadable, corrupt or empty files.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(path, "no such file")
    try:
        samples, sample_rate = sf.read(str(path), dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise AudioError(path, f"cannot decode audio ({reason})") from None
    if samples.shape[0] == 0:
        raise AudioError(path, "file holds no audio samples")
    if not np.all(np.isfinite(samples)):
        raise AudioError(path, "audio contains NaN or infinite samples")
    return to_model_rate(samples, sample_rate, target_rate)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB re full scale (-inf-safe: silence gives about -200 dB)."""
    if samples.size == 0:
        return -200.0
    return float(10.0 * np.log10(np.mean(np.square(samples, dtype=np.float64)) + _EPS * _EPS))


def normalize_level(samples: np.ndarray, target_dbfs: float = -23.0, max_gain_db: float = 30.0) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS, never by more than ``max_gain_db``; peaks are kept below full scale."""
    gain_db = min(target_dbfs - rms_dbfs(samples), max_gain_db)
    out = samples * np.float32(10.0 ** (gain_db / 20.0))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 1.0:
        out = out / np.float32(peak)
    return out.astype(np.float32, copy=False)


def trim_silence(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = 35.0, pad_s: float = 0.1
) -> np.ndarray:
    """Cut leading/trailing audio whose 20 ms frame RMS is ``threshold_db`` below the loudest frame.

    RAVDESS clips carry about a second of room noise around each sentence; trimming it keeps random
    crops on speech. Returns the input unchanged when it has no frame above the threshold.
    """
    frame = max(1, int(0.02 * sample_rate))
    n_frames = len(samples) // frame
    if n_frames < 2:
        return samples
    frames = samples[: n_frames * frame].reshape(n_frames, frame)
    frame_db = 10.0 * np.log10(np.mean(np.square(frames, dtype=np.float64), axis=1) + _EPS)
    loud = np.flatnonzero(frame_db >= frame_db.max() - threshold_db)
    pad = int(pad_s * sample_rate)
    start = max(0, loud[0] * frame - pad)
    end = min(len(samples), (loud[-1] + 1) * frame + pad)
    return samples[start:end]


def prepare_clip(
    samples: np.ndarray, options: PreprocessOptions, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Whole-recording step (training clip or scored file): trim silence if configured. Shape ``[samples]``."""
    if options.trim_db is None:
        return samples
    return trim_silence(samples, sample_rate, options.trim_db, options.trim_pad_s)


def prepare_input(window: np.ndarray, options: PreprocessOptions) -> np.ndarray:
    """Per-model-input step (a training crop, a scored window, a live window): level normalisation."""
    window = np.asarray(window, dtype=np.float32)
    if options.target_dbfs is None:
        return window
    return normalize_level(window, options.target_dbfs, options.max_gain_db)
