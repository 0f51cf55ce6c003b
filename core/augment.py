"""Waveform augmentation for training crops (numpy, per sample, driven by the caller's RNG).

Order in ``core.data.ClipDataset``: crop → ``before_normalisation`` (time shift, additive noise) →
``prepare_input`` (level normalisation, as the runtime does) → ``after_normalisation`` (gain).
Gain is applied after the normaliser on purpose: before it, any gain would simply be undone. Live windows of
quiet speech hit ``max_gain_db`` and reach the model below the target level; the gain jitter teaches that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from realtime.audio import SAMPLE_RATE


@dataclass(frozen=True)
class AugmentOptions:
    """Probabilities are per crop; ranges are ``[low, high]`` drawn uniformly.

    gain_db: level change after normalisation (dB). noise_snr_db: signal-to-noise ratio of added noise (dB,
    relative to the crop's RMS); noise is white or pink with equal chance. shift_s: largest time shift (s),
    either direction, the vacated part filled with zeros (speech starting/ending inside the window, as live).
    """

    enabled: bool = True
    gain_prob: float = 0.5
    gain_db: tuple[float, float] = (-12.0, 3.0)
    noise_prob: float = 0.5
    noise_snr_db: tuple[float, float] = (10.0, 35.0)
    shift_prob: float = 0.3
    shift_s: float = 0.5

    @classmethod
    def from_dict(cls, data: dict | None) -> AugmentOptions:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown augmentation options {sorted(unknown)}")
        for key in ("gain_db", "noise_snr_db"):
            if key in data:
                data[key] = tuple(float(v) for v in data[key])
        return cls(**data)

    def to_dict(self) -> dict:
        return asdict(self)


def time_shift(x: np.ndarray, shift: int) -> np.ndarray:
    """Shift ``[S]`` by ``shift`` samples (positive = later), zero-filling; length unchanged."""
    if shift == 0:
        return x
    out = np.zeros_like(x)
    if shift > 0:
        out[shift:] = x[: len(x) - shift]
    else:
        out[:shift] = x[-shift:]
    return out


def pink_noise(n: int, rng: np.random.Generator) -> np.ndarray:
    """Unit-RMS 1/f noise of ``n`` samples (white noise shaped in the frequency domain)."""
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.arange(len(spectrum), dtype=np.float64)
    freqs[0] = 1.0
    noise = np.fft.irfft(spectrum / np.sqrt(freqs), n)
    return noise / (np.sqrt(np.mean(noise**2)) + 1e-12)


def add_noise(x: np.ndarray, snr_db: float, rng: np.random.Generator, pink: bool = False) -> np.ndarray:
    """Add white or pink noise at ``snr_db`` relative to the RMS of ``x``; silent input is returned as is."""
    signal_rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    if signal_rms <= 1e-8:
        return x
    noise = pink_noise(len(x), rng) if pink else rng.standard_normal(len(x))
    noise_rms = signal_rms / (10.0 ** (snr_db / 20.0))
    return (x + noise_rms * noise).astype(np.float32)


class Augmenter:
    """Applies ``AugmentOptions`` to one crop at a time."""

    def __init__(self, options: AugmentOptions, sample_rate: int = SAMPLE_RATE):
        self.options = options
        self.sample_rate = sample_rate

    def before_normalisation(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        o = self.options
        if not o.enabled:
            return x
        if o.shift_s > 0 and rng.random() < o.shift_prob:
            limit = int(o.shift_s * self.sample_rate)
            x = time_shift(x, int(rng.integers(-limit, limit + 1)))
        if rng.random() < o.noise_prob:
            x = add_noise(x, float(rng.uniform(*o.noise_snr_db)), rng, pink=bool(rng.random() < 0.5))
        return x

    def after_normalisation(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        o = self.options
        if not o.enabled or rng.random() >= o.gain_prob:
            return x
        gain = np.float32(10.0 ** (rng.uniform(*o.gain_db) / 20.0))
        return np.clip(x * gain, -1.0, 1.0).astype(np.float32)
