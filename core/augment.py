"""Waveform augmentation for training crops (numpy, per sample, driven by the caller's RNG).

Order in ``emotion_monitor.core.data.ClipDataset``: crop → ``before_normalisation`` (time shift, additive noise) →
``prepare_input`` (level normalisation, as the runtime does) → ``after_normalisation`` (gain).
Gain is applied after the normaliser on purpose: before it, any gain would simply be undone. Live windows of
quiet speech hit ``max_gain_db`` and reach the model below the target level; the gain jitter teaches that.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from emotion_monitor.realtime.audio import SAMPLE_RATE


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


# ---- channel simulation: what a user's microphone and room do to a clip (cached-feature training views) ----
@dataclass(frozen=True)
class ChannelOptions:
    """A clip as a live input might deliver it: placed in background sound, through a room, a microphone's band
    and a 44.1/48 kHz device resampled to 16 kHz. Each effect is applied with its probability; ranges are
    ``[low, high]`` drawn uniformly.

    pad_s: silence (or background noise) added before and after the clip, seconds, so windows see onsets and
    endings. noise_snr_db: background noise level relative to the speech RMS (dB). reverb_rt60_s: decay time of
    a synthetic room impulse response. lowpass_hz / highpass_hz: a microphone's band edges. gain_db: input level.
    device_rates: the device rate the clip is resampled through (up, then down with the runtime's resampler).
    """

    pad_s: tuple[float, float] = (0.5, 1.5)
    noise_prob: float = 0.7
    noise_snr_db: tuple[float, float] = (5.0, 30.0)
    reverb_prob: float = 0.5
    reverb_rt60_s: tuple[float, float] = (0.15, 0.8)
    band_prob: float = 0.5
    lowpass_hz: tuple[float, float] = (3400.0, 7500.0)
    highpass_hz: tuple[float, float] = (50.0, 300.0)
    gain_db: tuple[float, float] = (-20.0, 0.0)
    resample_prob: float = 0.5
    device_rates: tuple[int, ...] = (44_100, 48_000)

    @classmethod
    def from_dict(cls, data: dict | None) -> ChannelOptions:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown channel options {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})

    def to_dict(self) -> dict:
        return asdict(self)


def room_impulse(rt60_s: float, rng: np.random.Generator, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A synthetic room impulse response: a direct path, then exponentially decaying noise (-60 dB at rt60_s)."""
    n = max(2, int(rt60_s * sample_rate))
    t = np.arange(n) / sample_rate
    tail = rng.standard_normal(n) * np.exp(-6.9 * t / rt60_s)
    tail[: int(0.003 * sample_rate)] = 0.0  # early gap before the first reflections
    ir = 0.3 * tail / (np.sqrt(np.sum(tail**2)) + 1e-12)
    ir[0] = 1.0
    return ir


def reverberate(x: np.ndarray, ir: np.ndarray) -> np.ndarray:
    """``x`` convolved with ``ir`` (FFT), cut to ``len(x)``, RMS kept."""
    n = len(x) + len(ir) - 1
    y = np.fft.irfft(np.fft.rfft(x, n) * np.fft.rfft(ir, n), n)[: len(x)]
    scale = np.sqrt(np.mean(x**2) / (np.mean(y**2) + 1e-20))
    return (y * scale).astype(np.float32)


def band_limit(x: np.ndarray, low_hz: float, high_hz: float, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """A microphone's pass band: smooth (raised-cosine, one octave) roll-offs below ``low_hz`` and above ``high_hz``."""
    spectrum = np.fft.rfft(x)
    f = np.fft.rfftfreq(len(x), 1.0 / sample_rate)
    with np.errstate(divide="ignore"):
        lo = np.clip(np.log2(np.maximum(f, 1e-3) / (low_hz / 2)), 0.0, 1.0)
        hi = np.clip(np.log2(2 * high_hz / np.maximum(f, 1e-3)), 0.0, 1.0)
    gain = 0.5 - 0.5 * np.cos(np.pi * lo) * 1.0
    gain = gain * (0.5 - 0.5 * np.cos(np.pi * hi))
    return np.fft.irfft(spectrum * gain, len(x)).astype(np.float32)


def through_channel(
    clip: np.ndarray, options: ChannelOptions, rng: np.random.Generator
) -> tuple[np.ndarray, int]:
    """One random channel for ``clip`` (16 kHz mono): ``(samples, sample_rate)`` as a device would deliver them
    (the caller resamples to the model rate with the runtime's own ``to_model_rate``)."""
    import soxr

    o = options
    x = np.asarray(clip, dtype=np.float32)
    if rng.random() < o.reverb_prob:
        x = reverberate(x, room_impulse(float(rng.uniform(*o.reverb_rt60_s)), rng))
    pad = [int(rng.uniform(*o.pad_s) * SAMPLE_RATE) for _ in range(2)]
    x = np.concatenate([np.zeros(pad[0], np.float32), x, np.zeros(pad[1], np.float32)])
    if rng.random() < o.noise_prob:
        speech_rms = float(np.sqrt(np.mean(np.square(clip, dtype=np.float64))))
        noise = pink_noise(len(x), rng) if rng.random() < 0.5 else rng.standard_normal(len(x))
        x = x + (speech_rms / 10.0 ** (rng.uniform(*o.noise_snr_db) / 20.0) * noise).astype(np.float32)
    if rng.random() < o.band_prob:
        x = band_limit(x, float(rng.uniform(*o.highpass_hz)), float(rng.uniform(*o.lowpass_hz)))
    peak = float(np.max(np.abs(x))) + 1e-9
    x = x / peak * 10.0 ** (rng.uniform(*o.gain_db) / 20.0) * 0.9
    rate = SAMPLE_RATE
    if rng.random() < o.resample_prob:
        rate = int(rng.choice(o.device_rates))
        x = soxr.resample(x, SAMPLE_RATE, rate)
    return np.clip(x, -1.0, 1.0).astype(np.float32), rate
