"""The contract between an exported ONNX model and the runtime: tensor names and self-describing metadata.

``export/`` writes ``ModelInfo.to_metadata()`` into the ONNX ``metadata_props``; ``realtime/`` reads it back
with ``ModelInfo.from_metadata()``. Nothing about labels, rates or windows is hard-coded on the runtime side.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

INPUT_NAME = "input_values"
"""float32 ``[batch, samples]``: raw 16 kHz mono audio, both axes dynamic."""
LOGITS_NAME = "logits"
"""float32 ``[batch, classes]``."""
PROBS_NAME = "probs"
"""float32 ``[batch, classes]``, softmax of logits."""
POOLED_NAME = "pooled"
"""float32 ``[batch, layers + 1, hidden]``: every hidden state's time mean, what the head reads (``[batch, layers + 1,
2 x hidden]``, ``[mean | std]`` over time, for ``ModelInfo.time_pooling`` ``mean_std``). The runtime's per-speaker
running mean is taken over these (``emotion_monitor.realtime.speaker_norm``)."""
SPEAKER_MEAN_NAME = "speaker_mean"
"""float32 ``[layers + 1, hidden]``: input of the speaker-normalised head, subtracted from ``pooled``."""
SPEAKER_NORM_HEAD_KEY = "emotion.speaker_norm_head"
"""Metadata key holding a second, tiny ONNX graph (base64): ``(pooled, speaker_mean) → (logits, probs)``, a head
trained on features centred per speaker. Kept inside the one model file so the model stays self-describing."""
SPEAKER_BASELINE_HEAD_KEY = "emotion.speaker_baseline_head"
"""The same for a head trained on features centred on the speaker's calm baseline (neutral and calm speech)."""
SPEAKER_HEAD_KEYS = {"running": SPEAKER_NORM_HEAD_KEY, "baseline": SPEAKER_BASELINE_HEAD_KEY}
"""Speaker-head kind → metadata key: ``running`` for a running mean of all speech, ``baseline`` for a calm
recording of the speaker made once."""

DEFAULT_HOP_S = 0.5
"""Seconds between live estimates: ``emotion-live``'s ``--hop-s`` and the hop a model suggests unless its export
says otherwise (twice a second feels immediate)."""

VARIANT_KEY = "emotion.variant"
"""Metadata key of a smaller/faster copy of an export (``int8``, ``fp16``: ``emotion_monitor.export.quantize``); absent in the fp32
file. Not a ``ModelInfo`` field: a variant describes itself exactly like its fp32 original."""

METADATA_PREFIX = "emotion."
FORMAT_VERSION = 1


@dataclass(frozen=True)
class ModelInfo:
    """What a model says about itself.

    labels: class names in output order.
    sample_rate: Hz of ``input_values``.
    window_s: crop length used in training, seconds; the runtime's default analysis window.
    hop_s: suggested hop between live windows, seconds.
    backbone: encoder description, e.g. ``whisper-base:layers`` or ``facebook/wav2vec2-base``.
    preprocessing: ``emotion_monitor.realtime.audio.PreprocessOptions`` as a dict.
    metrics: training/evaluation figures (accuracy, macro_f1, ...) with their protocol.
    protocol: how the metrics were measured, in words.
    export_version: version of the exporter that wrote the file.
    speaker_norm: how the speaker-normalised head (if any) was trained and measured; empty when none.
    speech_gate: ``emotion_monitor.realtime.windowing.SpeechGate`` fields the model was trained with (which live windows get an
        emotion); empty = the runtime's defaults.
    encoder_layers: transformer layers the encoder runs (fewer than its weights have: a truncated encoder);
        ``pooled`` holds this many + 1 states. 0 = not stated (models exported before it was recorded).
    time_pooling: what ``pooled`` holds per layer: ``mean`` over time, or ``mean_std`` (mean and standard
        deviation side by side).
    calibration: how ``probs`` were calibrated (``{"method": "temperature", "temperature": T, …}``: the heads'
        logits are already divided by T, so every ``confidence`` is the calibrated one); empty = not calibrated.
    """

    labels: tuple[str, ...]
    sample_rate: int = 16_000
    window_s: float = 3.0
    hop_s: float = DEFAULT_HOP_S
    backbone: str = ""
    preprocessing: dict = field(default_factory=dict)
    metrics: dict = field(default_factory=dict)
    protocol: str = ""
    export_version: str = ""
    speaker_norm: dict = field(default_factory=dict)
    speech_gate: dict = field(default_factory=dict)
    encoder_layers: int = 0
    time_pooling: str = "mean"
    calibration: dict = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    def to_metadata(self) -> dict[str, str]:
        """Flat ``{key: json string}`` for ONNX ``metadata_props``."""
        data = asdict(self)
        data["labels"] = list(self.labels)
        return {METADATA_PREFIX + key: json.dumps(value) for key, value in data.items()}

    @classmethod
    def from_metadata(cls, props: dict[str, str]) -> ModelInfo:
        """Inverse of ``to_metadata``; unknown keys are ignored, a missing ``labels`` is an error."""
        data = {}
        for key, raw in props.items():
            if key.startswith(METADATA_PREFIX):
                name = key[len(METADATA_PREFIX) :]
                if name in cls.__dataclass_fields__:
                    data[name] = json.loads(raw)
        if "labels" not in data:
            raise ValueError("model metadata has no emotion.labels: not exported by emotion-export")
        data["labels"] = tuple(data["labels"])
        return cls(**data)
