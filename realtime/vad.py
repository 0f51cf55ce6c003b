"""Speech gating: which 32 ms frames contain speech, so silence is shown as silence, not as an emotion.

Silero VAD's ONNX model (MIT) ships with this package in ``realtime/assets/silero_vad.onnx`` and runs on
ONNX Runtime directly. Failing that, it is read from an installed ``silero_vad`` package's data folder; that
package is never imported (its ``__init__`` imports torch, which must stay off the inference path). When no
model file is found, a plain energy gate stands in and the caller prints a notice.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.audio import SAMPLE_RATE, rms_dbfs

FRAME_SAMPLES = 512
"""Silero VAD frame at 16 kHz (32 ms); the only frame size its 16 kHz model accepts."""
CONTEXT_SAMPLES = 64
"""Samples of the previous frame Silero v5 expects in front of each frame (as its own OnnxWrapper does)."""
SPEECH_THRESHOLD = 0.5
"""Frame speech probability at or above which a frame counts as speech (Silero's default)."""
ENERGY_GATE_DBFS = -45.0
"""Fallback gate: frames louder than this RMS level count as speech. Depends on input gain, hence only a fallback."""


SHIPPED_MODEL = Path(__file__).resolve().parent / "assets" / "silero_vad.onnx"
"""Silero VAD v5's 16 kHz ONNX model, shipped as package data (from silero-vad 6.2.3, MIT; licence in silero_vad.LICENSE)."""


def silero_model_path() -> Path | None:
    """``silero_vad.onnx``: the shipped copy, else the installed silero-vad package's (found without importing
    it), else None."""
    if SHIPPED_MODEL.is_file():
        return SHIPPED_MODEL
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "data" / "silero_vad.onnx"
    return path if path.is_file() else None


class FrameVAD:
    """Streaming interface shared by both gates: feed audio of any length, get one probability per full frame.

    State (the model's recurrent state, leftover samples) lives in the object; ``reset()`` starts a new stream.
    """

    name = "base"

    def __init__(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def reset(self) -> None:
        self._pending = np.zeros(0, dtype=np.float32)

    def process(self, samples: np.ndarray) -> np.ndarray:
        """16 kHz mono float32 ``[n]`` → speech probabilities ``[frames]`` for every frame completed by it."""
        audio = np.concatenate([self._pending, np.asarray(samples, dtype=np.float32)])
        n_frames = len(audio) // FRAME_SAMPLES
        self._pending = audio[n_frames * FRAME_SAMPLES :]
        frames = audio[: n_frames * FRAME_SAMPLES].reshape(n_frames, FRAME_SAMPLES)
        return np.array([self.frame_probability(f) for f in frames], dtype=np.float32)

    def frame_probability(self, frame: np.ndarray) -> float:
        raise NotImplementedError


class SileroVAD(FrameVAD):
    """Silero VAD v5 (16 kHz) on ONNX Runtime: input ``[1, 64 + 512]``, state ``[2, 1, 128]``, sr scalar.

    ``deferred``: the session starts on the first frame (``emotion-score`` asks the VAD only about quiet stretches:
    a recording without one never pays for it)."""

    name = "silero"

    def __init__(self, model_path: str | Path, deferred: bool = False):
        super().__init__()
        self.model_path = Path(model_path)
        self._session = None if deferred else self._start()
        self._sr = np.array(SAMPLE_RATE, dtype=np.int64)
        self.reset()

    def _start(self):
        import onnxruntime as ort

        options = ort.SessionOptions()
        # A 32 ms frame is far too small to gain from threads; keep the cores for the emotion model.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        return ort.InferenceSession(str(self.model_path), options, providers=["CPUExecutionProvider"])

    def reset(self) -> None:
        super().reset()
        self._state = np.zeros((2, 1, 128), dtype=np.float32)
        self._context = np.zeros(CONTEXT_SAMPLES, dtype=np.float32)

    def frame_probability(self, frame: np.ndarray) -> float:
        if self._session is None:
            self._session = self._start()
        x = np.concatenate([self._context, frame])[None, :]
        prob, self._state = self._session.run(None, {"input": x, "state": self._state, "sr": self._sr})
        self._context = frame[-CONTEXT_SAMPLES:]
        return float(prob[0, 0])


class EnergyVAD(FrameVAD):
    """Fallback: probability 1.0 for frames louder than ``threshold_dbfs``, else 0.0."""

    name = "energy"

    def __init__(self, threshold_dbfs: float = ENERGY_GATE_DBFS):
        super().__init__()
        self.threshold_dbfs = threshold_dbfs

    def frame_probability(self, frame: np.ndarray) -> float:
        return 1.0 if rms_dbfs(frame) > self.threshold_dbfs else 0.0


def load_vad(kind: str = "auto", deferred: bool = False) -> tuple[FrameVAD, str | None]:
    """``kind``: ``auto`` (Silero if installed, else energy), ``silero`` or ``energy``; ``deferred``: Silero's
    session starts on its first frame (``SileroVAD``).

    Returns the gate and a one-line notice for the user when it had to fall back (else None).
    """
    if kind == "energy":
        return EnergyVAD(), None
    path = silero_model_path()
    if path is None:
        if kind == "silero":
            raise RuntimeError("silero-vad is not installed (pip install silero-vad); use --vad energy")
        return EnergyVAD(), (
            f"notice: silero-vad not installed; using an energy gate (speech above {ENERGY_GATE_DBFS:.0f} dBFS)"
        )
    return SileroVAD(path, deferred), None
