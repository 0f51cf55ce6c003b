"""Checks run on every export: ONNX Runtime against PyTorch on real speech, and variants against fp32.

Validation audio is RAVDESS speech (``emotion_monitor.core.paths.ravdess_dir()``: ``$EMOTION_DATA_DIR`` or its default,
holding ``ravdess-16k/Actor_*/*.flac``), put through the same preprocessing as the runtime
(``emotion_monitor.realtime.audio``). Without the data, a synthetic voiced signal stands in and a notice says so.

Windows of 0.5 s to 10 s are built by concatenating trimmed clips, so that every tested length is speech
and the 10 s case exercises a much longer input than the traced example.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from emotion_monitor.core.paths import DATA_DIR_ENV, ravdess_dir
from emotion_monitor.realtime.audio import (
    AudioError,
    PreprocessOptions,
    load_audio,
    prepare_clip,
    prepare_input,
)
from emotion_monitor.realtime.metadata import (
    INPUT_NAME,
    POOLED_NAME,
    PROBS_NAME,
    SPEAKER_HEAD_KEYS,
    ModelInfo,
)
from emotion_monitor.realtime.speaker_norm import SpeakerNormHead

PARITY_TOLERANCE = 1e-4
"""Largest allowed |ONNX Runtime − PyTorch| on any probability."""
PARITY_LENGTHS_S = (0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
PARITY_BATCHES = (1, 3)
DEFAULT_CLIPS = 48


class ValidationError(RuntimeError):
    """A check that failed; ``str()`` is one line."""


@dataclass(frozen=True)
class ValidationAudio:
    """Preprocessed whole clips (``prepare_clip`` applied, not yet level-normalised) and their labels.

    clips: 1-D float32 arrays at the model's sample rate.
    labels: emotion per clip from the RAVDESS file name, None for synthetic audio.
    source: where the audio came from, for the printed report.
    """

    clips: list[np.ndarray]
    labels: list[str | None]
    source: str

    @property
    def is_real(self) -> bool:
        return any(label is not None for label in self.labels)


def ravdess_label(path: Path) -> str | None:
    """Emotion of a RAVDESS speech file (``emotion_monitor.core.data.parse_name``, the one parser); None when the name does not
    parse."""
    from emotion_monitor.core.data import parse_name

    try:
        return parse_name(path).emotion_name
    except ValueError:
        return None


def find_clips(root: Path, count: int, seed: int = 0) -> list[Path]:
    """``count`` labelled files drawn with a fixed seed (same files on every run), across actors and emotions."""
    files = sorted(p for p in root.glob("Actor_*/*") if ravdess_label(p))
    return sorted(random.Random(seed).sample(files, min(count, len(files))))


def synthetic_speechlike(seconds: float, sample_rate: int, seed: int = 0) -> np.ndarray:
    """Voiced-like stand-in (harmonics of a gliding 120–220 Hz pitch, 4 Hz syllable envelope), float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    f0 = 170 + 50 * np.sin(2 * np.pi * (0.5 + 0.1 * seed) * t)
    phase = 2 * np.pi * np.cumsum(f0) / sample_rate
    voiced = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = 0.5 * (1 + np.sin(2 * np.pi * 4 * t + seed)) ** 2
    signal = voiced * envelope + 0.01 * rng.standard_normal(t.size)
    return (0.5 * signal / np.max(np.abs(signal))).astype(np.float32)


def load_validation_audio(
    info: ModelInfo, count: int = DEFAULT_CLIPS, log: Callable[[str], None] = print
) -> ValidationAudio:
    """Real RAVDESS clips when present, else synthetic speech-like audio (with a printed notice)."""
    options = PreprocessOptions.from_dict(info.preprocessing)
    root = ravdess_dir()
    paths = find_clips(root, count) if root.is_dir() else []
    clips, labels = [], []
    for path in paths:
        try:
            clips.append(prepare_clip(load_audio(path, info.sample_rate), options, info.sample_rate))
        except AudioError as exc:
            log(f"skipping unreadable validation clip: {exc}")
            continue
        labels.append(ravdess_label(path))
    if clips:
        return ValidationAudio(clips, labels, f"{len(clips)} RAVDESS clips from {root}")
    log(f"notice: no RAVDESS clips at {root} (set {DATA_DIR_ENV}); validating on synthetic speech-like audio")
    synthetic = [synthetic_speechlike(3.0, info.sample_rate, seed) for seed in range(min(count, 8))]
    return ValidationAudio(synthetic, [None] * len(synthetic), "synthetic speech-like audio")


def make_window(clips: Sequence[np.ndarray], start: int, samples: int) -> np.ndarray:
    """``samples`` long window: clips from index ``start`` on, concatenated (cycling) until long enough."""
    parts, total, i = [], 0, start
    while total < samples:
        clip = clips[i % len(clips)]
        parts.append(clip)
        total += len(clip)
        i += 1
    return np.concatenate(parts)[:samples]


def make_batch(
    audio: ValidationAudio, info: ModelInfo, seconds: float, batch: int, offset: int = 0
) -> np.ndarray:
    """``[batch, seconds * rate]`` float32 of distinct speech windows, each level-normalised like the runtime."""
    options = PreprocessOptions.from_dict(info.preprocessing)
    samples = int(round(seconds * info.sample_rate))
    rows = [prepare_input(make_window(audio.clips, offset + 2 * b, samples), options) for b in range(batch)]
    return np.stack(rows).astype(np.float32)


def cpu_session(path: str | Path) -> ort.InferenceSession:
    """ONNX Runtime session on the CPU provider (what the live monitor uses)."""
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def onnx_probs(session: ort.InferenceSession, batch: np.ndarray) -> np.ndarray:
    """``[B, S]`` float32 → probabilities ``[B, C]``."""
    return session.run([PROBS_NAME], {INPUT_NAME: batch})[0]


def torch_probs(model, batch: np.ndarray) -> np.ndarray:
    """PyTorch reference probabilities ``[B, C]`` (model in eval mode, no gradients)."""
    import torch

    model.eval()
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(batch)), dim=-1).numpy()


def parity(
    model,
    onnx_path: str | Path,
    info: ModelInfo,
    audio: ValidationAudio,
    lengths_s: Sequence[float] = PARITY_LENGTHS_S,
    batches: Sequence[int] = PARITY_BATCHES,
) -> float:
    """Largest |Δprobs| between ONNX Runtime and PyTorch over every (length, batch) case."""
    session = cpu_session(onnx_path)
    worst = 0.0
    for i, seconds in enumerate(lengths_s):
        for batch in batches:
            x = make_batch(audio, info, seconds, batch, offset=i)
            ort_p = onnx_probs(session, x)
            if ort_p.shape != (batch, len(info.labels)):
                raise ValidationError(f"ONNX output shape {ort_p.shape} for input {x.shape}")
            worst = max(worst, float(np.abs(ort_p - torch_probs(model, x)).max()))
    return worst


def check_parity(
    model, onnx_path: str | Path, info: ModelInfo, audio: ValidationAudio, tolerance: float = PARITY_TOLERANCE
) -> float:
    """``parity`` that raises ValidationError (one line) when the difference exceeds ``tolerance``."""
    worst = parity(model, onnx_path, info, audio)
    if not np.isfinite(worst) or worst > tolerance:
        raise ValidationError(
            f"ONNX Runtime disagrees with PyTorch: max |Δprobs| = {worst:.3g} > {tolerance:g} "
            f"({audio.source}, lengths {PARITY_LENGTHS_S[0]}–{PARITY_LENGTHS_S[-1]} s, batches {PARITY_BATCHES})"
        )
    return worst


SPEAKER_NORM_WINDOWS = 6
"""Windows of validation speech standing in for one speaker's history in the speaker-norm head check."""


def check_speaker_norm_parity(
    model,
    head,
    onnx_path: str | Path,
    info: ModelInfo,
    audio: ValidationAudio,
    kind: str = "running",
    tolerance: float = PARITY_TOLERANCE,
) -> float:
    """The speaker head of ``kind`` stored in the file against PyTorch, on the whole path the runtime takes:
    ``pooled`` from the main graph for a batch of windows, their mean as the speaker's mean, the head graph
    from the metadata. Raises ValidationError (one line) beyond ``tolerance``; returns the largest |Δprobs|."""
    import torch

    from emotion_monitor.export.onnx_export import CentredHead

    session = cpu_session(onnx_path)
    x = make_batch(audio, info, info.window_s, SPEAKER_NORM_WINDOWS)
    pooled = session.run([POOLED_NAME], {INPUT_NAME: x})[0]
    encoded = session.get_modelmeta().custom_metadata_map.get(SPEAKER_HEAD_KEYS[kind])
    if encoded is None:
        raise ValidationError(f"{onnx_path}: no {kind} speaker head in the metadata")
    ort_p = SpeakerNormHead(encoded).probs(pooled, pooled.mean(axis=0))
    with torch.no_grad():
        ref = model.eval().pool(torch.from_numpy(x))
        ref_p = CentredHead(head.eval())(ref, ref.mean(dim=0))[
            1
        ].numpy()  # with the head's centre_map, if any
    worst = float(np.abs(ort_p - ref_p).max())
    if not np.isfinite(worst) or worst > tolerance:
        raise ValidationError(
            f"{kind} speaker head: ONNX Runtime disagrees with PyTorch: max |Δprobs| = {worst:.3g} > {tolerance:g}"
        )
    return worst


@dataclass(frozen=True)
class Agreement:
    """A variant (int8, fp16) against the fp32 export on whole validation clips, one clip per run.

    top1: share of clips whose top label is the same. max_delta: largest |Δprobs|.
    accuracy_ref / accuracy_variant: accuracy on clips whose label is one of the model's labels (None without).
    window_top1: share of model-window-long windows of joined clips (continuous speech, what ``--segments`` and
    long files feed the model) whose top label is the same; None when not measured.
    """

    clips: int
    top1: float
    max_delta: float
    accuracy_ref: float | None
    accuracy_variant: float | None
    window_top1: float | None = None

    @property
    def worst_top1(self) -> float:
        return min(self.top1, self.top1 if self.window_top1 is None else self.window_top1)

    def describe(self, name: str) -> str:
        text = f"{name}: top label agrees with fp32 on {self.top1:.1%} of {self.clips} clips, max |Δprobs| {self.max_delta:.3g}"
        if self.accuracy_ref is not None and self.accuracy_variant is not None:
            change = 100 * (self.accuracy_variant - self.accuracy_ref)
            text += f"; accuracy {self.accuracy_ref:.1%} → {self.accuracy_variant:.1%} ({change:+.1f} points)"
        if self.window_top1 is not None:
            text += f"; on {self.clips} windows of continuous speech: {self.window_top1:.1%}"
        return text


def agreement(
    reference: ort.InferenceSession, variant: ort.InferenceSession, info: ModelInfo, audio: ValidationAudio
) -> Agreement:
    """Compare ``variant`` with ``reference`` on every whole clip (level-normalised, cut to 10 s at most)."""
    options = PreprocessOptions.from_dict(info.preprocessing)
    ref_top, var_top, worst = [], [], 0.0
    for clip in audio.clips:
        x = prepare_input(clip[: 10 * info.sample_rate], options)[None, :]
        p_ref, p_var = onnx_probs(reference, x)[0], onnx_probs(variant, x)[0]
        worst = max(worst, float(np.abs(p_ref - p_var).max()))
        ref_top.append(int(p_ref.argmax()))
        var_top.append(int(p_var.argmax()))
    ref_top, var_top = np.array(ref_top), np.array(var_top)
    acc_ref, acc_var = _accuracies(ref_top, var_top, audio.labels, info.labels)
    # Continuous speech: one window of the model's length over joined clips per clip (as make_batch builds them).
    windows = [make_batch(audio, info, info.window_s, 1, offset=k) for k in range(len(audio.clips))]
    same = [int(onnx_probs(reference, x).argmax()) == int(onnx_probs(variant, x).argmax()) for x in windows]
    top1 = float(np.mean(ref_top == var_top))
    return Agreement(len(audio.clips), top1, worst, acc_ref, acc_var, float(np.mean(same)))


def _accuracies(
    ref_top: np.ndarray, var_top: np.ndarray, truth: Sequence[str | None], labels: Sequence[str]
) -> tuple[float | None, float | None]:
    """Accuracy of both predictions on clips whose true label the model knows; (None, None) when there are none."""
    index = {label: i for i, label in enumerate(labels)}
    keep = [i for i, t in enumerate(truth) if t in index]
    if not keep:
        return None, None
    target = np.array([index[truth[i]] for i in keep])
    return float(np.mean(ref_top[keep] == target)), float(np.mean(var_top[keep] == target))
