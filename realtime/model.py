"""An exported emotion model on ONNX Runtime: loading, checking and running it (``EmotionModel``), plus the
Python API's entry points.

    from emotion_monitor.realtime.model import load_model
    model = load_model()                       # the bundled default model (built once on first use)
    result = model.predict_file("clip.wav")    # Prediction(label='angry', confidence=0.83, probs={...}, ...)
    result = model.predict_array(samples, sample_rate=48_000)
    timeline = model.predict_segments(samples, sample_rate=16_000)   # [Segment(start_s, end_s, ...), ...]
    scores = model.score_windows(windows, pooled=True)                # WindowScores(probs, seconds, pooled)

Everything the runtime needs (labels, sample rate, window, preprocessing) comes from the model's metadata.
Providers and sessions are in ``emotion_monitor.realtime.providers``, the default model's cache and build in
``emotion_monitor.realtime.model_store``, clips and timelines in ``emotion_monitor.realtime.analysis``. No torch here.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.analysis import (
    Prediction,
    Segment,
    clip_prediction,
    score_clip,
    score_timeline,
    timeline_segments,
)
from emotion_monitor.realtime.audio import (
    AudioError,
    PreprocessOptions,
    load_audio,
    prepare_clip,
    prepare_input,
)
from emotion_monitor.realtime.errors import ModelError, ModelMismatchError, NonFiniteOutputError, one_line
from emotion_monitor.realtime.file_scoring import score_file
from emotion_monitor.realtime.metadata import (
    INPUT_NAME,
    LOGITS_NAME,
    POOLED_NAME,
    PROBS_NAME,
    SPEAKER_HEAD_KEYS,
    VARIANT_KEY,
    ModelInfo,
)
from emotion_monitor.realtime.model_store import resolve_model_path
from emotion_monitor.realtime.providers import CUDA, default_batch_windows, start_session
from emotion_monitor.realtime.speaker_norm import SpeakerNormaliser, SpeakerNormHead, SpeakerNormOptions
from emotion_monitor.realtime.vad import FrameVAD, load_vad
from emotion_monitor.realtime.windowing import SpeechGate, WindowSpec

MIN_BASELINE_S = 5.0
"""Shortest calm baseline recording accepted, seconds of sound after trimming (10 s or more is better)."""


@dataclass(frozen=True)
class ModelOptions:
    """How the session runs.

    provider: ``auto`` | ``cpu`` | ``cuda`` (see ``providers.start_session``).
    intra_op_threads: threads inside one operator; None = ``default_intra_op_threads()``.
    batch_size: windows per ``session.run`` when scoring many windows (files, segments); None = the device's
    rule (``providers.default_batch_windows``: more on CUDA than on the CPU).
    """

    provider: str = "auto"
    intra_op_threads: int | None = None
    batch_size: int | None = None


@dataclass(frozen=True)
class WindowScores:
    """The model's outputs for W windows: ``probs`` ``[W, classes]``; ``seconds`` ``[W]``, the audio each window's
    model input held after trimming; ``pooled`` ``[W, layers + 1, hidden]``, or None unless asked for."""

    probs: np.ndarray
    seconds: np.ndarray
    pooled: np.ndarray | None = None


class EmotionModel:
    """An exported model on ONNX Runtime. Input: raw mono audio at ``sample_rate``; output: class probabilities."""

    def __init__(self, path: str | Path, options: ModelOptions | None = None):
        self.path = Path(path)
        self.options = options or ModelOptions()
        started = start_session(self.path, self.options.provider, self.options.intra_op_threads)
        self.session = started.session
        self.providers: list[str] = self.session.get_providers()
        self.cuda_skipped: str | None = started.cuda_skipped
        """Why the session runs on the CPU although CUDA was asked for or installed (``auto``), else None."""
        self.provider_notice: str | None = started.notice
        self.batch_size: int = self.options.batch_size or default_batch_windows(self.device)
        self._metadata = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info = ModelInfo.from_metadata(self._metadata)
        except ValueError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        if INPUT_NAME not in inputs:
            raise ModelError(f"{self.path}: no input named {INPUT_NAME!r} (has {inputs})")
        outputs = [o.name for o in self.session.get_outputs()]
        if PROBS_NAME not in outputs and LOGITS_NAME not in outputs:
            raise ModelError(
                f"{self.path}: neither {PROBS_NAME!r} nor {LOGITS_NAME!r} among outputs {outputs}"
            )
        # int8, fp16...: a copy of an fp32 export (export.quantize); empty for the fp32 file itself.
        self.variant: str = json.loads(self._metadata.get(VARIANT_KEY, '""'))
        self._output = PROBS_NAME if PROBS_NAME in outputs else LOGITS_NAME
        self.has_pooled = POOLED_NAME in outputs
        self._speaker_heads: dict[str, SpeakerNormHead] = {}
        # predict_file's VAD, for the pauses of long files (started when used)
        self._file_vad: FrameVAD | None = None
        self.labels: tuple[str, ...] = self.info.labels
        self._check_signature()
        self.sample_rate: int = int(self.info.sample_rate)
        self.window_s: float = float(self.info.window_s)
        self.hop_s: float = float(self.info.hop_s)
        self.preprocess = PreprocessOptions.from_dict(self.info.preprocessing)
        try:
            self.speech_gate = SpeechGate(**self.info.speech_gate)
        except TypeError as exc:
            raise ModelError(f"{self.path}: bad speech_gate metadata ({exc})") from None

    def _check_signature(self) -> None:
        """ModelMismatchError, at load, when the graph's declared input/output shapes cannot be what the runtime
        feeds (float ``[batch, samples]``) and reads (``[batch, len(labels)]``)."""
        node = next(i for i in self.session.get_inputs() if i.name == INPUT_NAME)
        if len(node.shape) != 2 or node.type != "tensor(float)":
            raise ModelMismatchError(
                f"{self.path}: input {INPUT_NAME!r} is {node.type} {_shape(node.shape)}; the runtime feeds "
                "float [batch, samples]"
            )
        out = next(o for o in self.session.get_outputs() if o.name == self._output)
        classes = out.shape[-1] if out.shape else None
        if len(out.shape) != 2 or (isinstance(classes, int) and classes != len(self.labels)):
            raise ModelMismatchError(
                f"{self.path}: output {self._output!r} is {_shape(out.shape)}, but the model's metadata names "
                f"{len(self.labels)} labels ([batch, {len(self.labels)}] expected)"
            )

    def _check_output(self, out: np.ndarray, batch: int) -> np.ndarray:
        """The model's probabilities ``[batch, classes]``: ModelMismatchError when the shape does not fit the
        labels (a dynamic shape only shows at run time), NonFiniteOutputError when any is NaN or infinite."""
        if out.ndim != 2 or out.shape != (batch, len(self.labels)):
            raise ModelMismatchError(
                f"{self.path}: output {self._output!r} has shape {list(out.shape)} for {batch} input(s), but the "
                f"model's metadata names {len(self.labels)} labels"
            )
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise NonFiniteOutputError(
                f"model {self.path.name} returned NaN or infinite probabilities for {int(bad.sum())} of "
                f"{batch} window(s); not scored"
            )
        return out

    @property
    def device(self) -> str:
        """``cuda`` or ``cpu``: what the session really runs on."""
        return "cuda" if self.providers and self.providers[0] == CUDA else "cpu"

    def window_spec(self, window_s: float | None = None, hop_s: float | None = None) -> WindowSpec:
        """Analysis windows: the model's trained ``window_s`` and hop unless overridden."""
        return WindowSpec(window_s or self.window_s, hop_s or self.hop_s, self.sample_rate)

    def score_windows(self, windows: Sequence[np.ndarray], pooled: bool = False) -> WindowScores:
        """Windows (each ``[samples]`` float32 at ``sample_rate``) → their ``WindowScores`` (pooled features only
        when ``pooled``; ModelError when the model has no such output).

        Each window is first trimmed of leading/trailing silence like a training clip (``prepare_clip``; a view)
        and then level-normalised like a training crop (``prepare_input``, a copy made only when its batch runs,
        so a long file's overlapping windows never exist as copies all at once). Training only ever saw trimmed
        speech; a window that starts or ends in a pause otherwise carries up to a second of silence (see the
        design measurements in docs/benchmarks.md). Windows of equal length are batched (``options.batch_size``); different
        lengths run separately: the model takes no padding mask, so unequal windows are never padded or cut.
        """
        if pooled and not self.has_pooled:
            raise ModelError(f"{self.path.name}: the model has no {POOLED_NAME!r} output (re-export it)")
        inputs = [prepare_clip(w, self.preprocess, self.sample_rate) for w in windows]
        probs = np.zeros((len(inputs), len(self.labels)), dtype=np.float32)
        features = None
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_length.setdefault(len(x), []).append(i)
        batch = max(1, self.batch_size)
        for indices in by_length.values():
            for k in range(0, len(indices), batch):
                chunk = indices[k : k + batch]
                x = np.stack([prepare_input(inputs[i], self.preprocess) for i in chunk])
                probs[chunk], chunk_pooled = self._run(x, pooled)
                if pooled:
                    if features is None:
                        features = np.zeros((len(inputs), *chunk_pooled.shape[1:]), dtype=np.float32)
                    features[chunk] = chunk_pooled
        seconds = np.array([len(x) / self.sample_rate for x in inputs], dtype=np.float64)
        return WindowScores(probs, seconds, features)

    def _run(self, x: np.ndarray, pooled: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``[batch, samples]`` float32 → (probabilities ``[batch, classes]``, pooled or None)."""
        names = [self._output] + ([POOLED_NAME] if pooled else [])
        try:
            out, *rest = self.session.run(names, {INPUT_NAME: x.astype(np.float32, copy=False)})
        except Exception as exc:  # ORT's own exception types (Fail, InvalidArgument, ...)
            raise ModelError(
                f"{self.path.name}: inference failed on input {x.shape}: {one_line(exc)}"
            ) from None
        out = np.asarray(out)
        if self._output == LOGITS_NAME and out.ndim == 2:
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits are caught just below
                e = np.exp(out - out.max(axis=1, keepdims=True))
                out = e / e.sum(axis=1, keepdims=True)
        features = rest[0] if rest else None
        if features is not None and not np.isfinite(features).all():  # would poison a speaker's running mean
            raise NonFiniteOutputError(f"model {self.path.name} returned NaN or infinite pooled features")
        return self._check_output(out, len(x)), features

    def speaker_baseline(
        self, path: str | Path, options: SpeakerNormOptions | None = None
    ) -> SpeakerNormaliser:
        """A normaliser fixed on ``path``, a recording of the speaker talking calmly (neutral voice, at rest).

        Raises AudioError (one line) when the file is unusable or shorter than ``MIN_BASELINE_S`` of sound, and
        ModelError when the model has no ``baseline`` head.
        """
        head = self.speaker_norm_head("baseline")
        clip = score_clip(self, load_audio(path, self.sample_rate), self.sample_rate, str(path), pooled=True)
        if clip.duration_s < MIN_BASELINE_S:
            raise AudioError(
                path,
                f"too short for a speaker baseline ({clip.duration_s:.1f} s of sound; at least {MIN_BASELINE_S:g} s, "
                "better 10 s or more of calm speech)",
            )
        return SpeakerNormaliser.from_baseline(head, clip.pooled, clip.duration_s, options)

    def speaker_normaliser(
        self, options: SpeakerNormOptions, baseline: str | Path | None = None
    ) -> SpeakerNormaliser:
        """A running-mean normaliser, or one fixed on the calm ``baseline`` recording when given
        (``speaker_baseline``): what ``--speaker-norm`` / ``--speaker-baseline`` ask for in both commands."""
        if baseline is not None:
            return self.speaker_baseline(baseline, options)
        return SpeakerNormaliser(self.speaker_norm_head(), options)

    def has_speaker_head(self, kind: str = "running") -> bool:
        """Whether the model carries a speaker head of ``kind`` (``running`` or ``baseline``; the bundled default
        model has both)."""
        return self.has_pooled and SPEAKER_HEAD_KEYS.get(kind, "") in self._metadata

    def speaker_norm_head(self, kind: str = "running") -> SpeakerNormHead:
        """The model's speaker head of ``kind`` (loaded once); ModelError when the model has none."""
        if kind not in SPEAKER_HEAD_KEYS:
            raise ModelError(f"unknown speaker head {kind!r}; choose {' or '.join(SPEAKER_HEAD_KEYS)}")
        if not self.has_speaker_head(kind):
            raise ModelError(
                f"{self.path.name}: this model has no speaker-normalised head ({kind}); the bundled default model "
                "has one, a model exported from a checkpoint does not"
            )
        if kind not in self._speaker_heads:
            try:
                self._speaker_heads[kind] = SpeakerNormHead(self._metadata[SPEAKER_HEAD_KEYS[kind]])
            except Exception as exc:  # corrupt base64 or graph
                raise ModelError(
                    f"{self.path.name}: cannot load the speaker-normalised head ({one_line(exc)})"
                ) from None
        return self._speaker_heads[kind]

    # -- the Python API: whole clips and timelines (realtime.analysis) ----------------------------------------
    def predict_array(self, samples: np.ndarray, sample_rate: int, source: str = "<array>") -> Prediction:
        """Any rate/channels → one Prediction for the whole clip: the mean of its windows (``score_clip``)."""
        clip = score_clip(self, samples, sample_rate, source)
        return clip_prediction(self.labels, clip.probs, clip.duration_s, clip.window_seconds)

    def predict_file(self, path: str | Path) -> Prediction:
        """Any soundfile-readable file → Prediction, scored as ``emotion-score`` scores it and read as a stream
        whatever its length (``file_scoring.score_file``: up to 30 s exactly as ``predict_array``; longer, with
        the pauses left out). Raises AudioError (one line) for unusable files; notices (a truncated file) are
        AudioWarnings."""
        if self._file_vad is None:
            self._file_vad = load_vad(deferred=True)[0]
        clip = score_file(self, path, self._file_vad)
        return clip_prediction(self.labels, clip.probs, clip.duration_s, clip.window_seconds)

    def predict_segments(
        self,
        samples: np.ndarray,
        sample_rate: int,
        window_s: float | None = None,
        hop_s: float | None = None,
        vad: FrameVAD | None = None,
    ) -> list[Segment]:
        """A timeline with the live monitor's windows (``score_timeline``): silence windows (too little speech
        for the speech gate) are labelled ``silence`` with no probabilities, as the live monitor shows them."""
        timeline = score_timeline(self, samples, sample_rate, window_s, hop_s, vad)
        return timeline_segments(self.labels, timeline.windows, timeline.probs)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def load_model(path: str | Path | None = None, options: ModelOptions | None = None, **kwargs) -> EmotionModel:
    """Load ``path`` (default: the bundled model, built once into the cache). ``kwargs`` fill ModelOptions."""
    if options is None:
        options = ModelOptions(**kwargs)
    return EmotionModel(resolve_model_path(path), options)
