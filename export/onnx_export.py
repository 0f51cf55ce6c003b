"""PyTorch classifier → self-describing ONNX file (``logits``, ``probs``, ``pooled``; dynamic batch and length).

The graph takes raw 16 kHz audio ``input_values`` float32 ``[batch, samples]`` and returns
``logits`` and ``probs`` float32 ``[batch, classes]``, and ``pooled`` ``[batch, layers + 1, hidden]`` (what the
head reads; the runtime's per-speaker statistics are kept over it). A head trained on speaker-centred features
can travel in the same file as a second tiny graph in the metadata (``speaker_norm_head_bytes``). Everything the runtime needs to use it (labels,
sample rate, window, hop, preprocessing) is written into the ONNX ``metadata_props`` from ``ModelInfo``.

The TorchScript exporter (``dynamo=False``) is used: it handles the Hugging Face encoders used here, and a
traced graph that baked in a shape is caught by ``emotion_monitor.export.validate`` (several lengths and batch sizes).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path

import onnx
import torch
from torch import nn

from emotion_monitor.core.model import TIME_POOLING
from emotion_monitor.realtime.errors import one_line
from emotion_monitor.realtime.metadata import (
    INPUT_NAME,
    LOGITS_NAME,
    POOLED_NAME,
    PROBS_NAME,
    SPEAKER_HEAD_KEYS,
    SPEAKER_MEAN_NAME,
    ModelInfo,
)

DEFAULT_OPSET = 17
PACKAGE_NAME = "speech-emotion-monitor"
TRACE_SECONDS = 2.0
"""Length of the example input used for tracing, seconds; any length works at run time."""
TRACE_BATCH = 2
"""Batch of the example input: not 1, so the tracer cannot mistake the batch axis for a constant."""


class ExportError(RuntimeError):
    """An export that cannot be written or did not pass a check; ``str()`` is one line."""


class ProbsWrapper(nn.Module):
    """``[B, S]`` audio → ``(logits [B, C], probs [B, C], pooled [B, L+1, H])``: softmax inside the graph, so the
    runtime needs none. ``model`` is an ``EmotionClassifier`` (``pool`` + ``classify_pooled``)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, input_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        pooled = self.model.pool(input_values)
        logits = self.model.classify_pooled(pooled)
        return logits, torch.softmax(logits, dim=-1), pooled


class SubspaceCentre(nn.Module):
    """A speaker's mean voice → the centre to subtract: ``mu + P (mean - mu)``, with ``P`` the projection onto the
    speaker subspace (``basis [D, k]``, orthonormal columns; ``emotion_monitor.core.feature_data.SpeakerSubspace``)."""

    def __init__(self, mu: torch.Tensor, basis: torch.Tensor):
        super().__init__()
        self.register_buffer("mu", mu.float())
        self.register_buffer("basis", basis.float())

    def forward(self, speaker_mean: torch.Tensor) -> torch.Tensor:
        offset = (speaker_mean - self.mu).reshape(1, -1)
        return self.mu + ((offset @ self.basis) @ self.basis.T).reshape(self.mu.shape)


class CentredHead(nn.Module):
    """``(pooled [B, L+1, H], speaker_mean [L+1, H])`` → ``(logits, probs)`` of a head trained on centred features;
    a head with a ``centre_map`` (``SubspaceCentre``) subtracts what that makes of the mean, else the mean itself."""

    def __init__(self, head: nn.Module):
        super().__init__()
        self.head = head

    def forward(self, pooled: torch.Tensor, speaker_mean: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        centre_map = getattr(self.head, "centre_map", None)
        centre = centre_map(speaker_mean) if centre_map is not None else speaker_mean
        logits = self.head.classify_pooled(pooled - centre)
        return logits, torch.softmax(logits, dim=-1)


def speaker_norm_head_bytes(
    head: nn.Module, num_states: int, hidden_size: int, opset: int = DEFAULT_OPSET
) -> bytes:
    """The speaker-normalised head (an ``EmotionClassifier`` whose ``classify_pooled`` was trained on features
    centred per speaker) as a serialised ONNX graph with a dynamic batch axis."""
    head.eval()
    example = (torch.randn(TRACE_BATCH, num_states, hidden_size), torch.randn(num_states, hidden_size))
    buffer = io.BytesIO()
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            CentredHead(head).eval(),
            example,
            buffer,
            input_names=[POOLED_NAME, SPEAKER_MEAN_NAME],
            output_names=[LOGITS_NAME, PROBS_NAME],
            dynamic_axes={POOLED_NAME: {0: "batch"}, LOGITS_NAME: {0: "batch"}, PROBS_NAME: {0: "batch"}},
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    return buffer.getvalue()


def exporter_version() -> str:
    """Installed package version (``importlib.metadata``); ``0+unknown`` when running from an uninstalled tree."""
    try:
        return importlib_metadata.version(PACKAGE_NAME)
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def with_export_version(info: ModelInfo) -> ModelInfo:
    """``info`` with ``export_version`` filled in (kept when the caller already set one)."""
    if info.export_version:
        return info
    return dataclasses.replace(info, export_version=exporter_version())


def write_metadata(
    model_proto: onnx.ModelProto, info: ModelInfo, speaker_heads: dict[str, bytes] | None = None
) -> None:
    """Replace ``metadata_props`` with ``info.to_metadata()`` (one ``emotion.*`` key per ModelInfo field), plus
    each speaker head graph (base64) under its kind's key (``SPEAKER_HEAD_KEYS``)."""
    del model_proto.metadata_props[:]
    props = info.to_metadata()
    for kind, graph in (speaker_heads or {}).items():
        props[SPEAKER_HEAD_KEYS[kind]] = base64.b64encode(graph).decode("ascii")
    for key, value in props.items():
        entry = model_proto.metadata_props.add()
        entry.key, entry.value = key, value
    model_proto.producer_name = "emotion-export"
    model_proto.producer_version = info.export_version
    model_proto.doc_string = f"Speech emotion classifier ({info.backbone}); labels: {', '.join(info.labels)}"


def _trace_to_onnx(model: nn.Module, path: Path, sample_rate: int, opset: int) -> None:
    """TorchScript export of ``ProbsWrapper(model)`` with dynamic batch/samples axes."""
    example = torch.randn(TRACE_BATCH, int(TRACE_SECONDS * sample_rate)) * 0.1
    with warnings.catch_warnings(), torch.no_grad():
        # Tracer warnings about Python-side shape arithmetic are expected for HF encoders; whether a shape
        # was really baked in is decided by the multi-length, multi-batch check in export.validate.
        warnings.simplefilter("ignore")
        torch.onnx.export(
            # eval() on the wrapper too: the exporter restores the wrapper's own mode afterwards, and a
            # fresh module is in training mode, which would silently switch the classifier back to training.
            ProbsWrapper(model).eval(),
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[LOGITS_NAME, PROBS_NAME, POOLED_NAME],
            dynamic_axes={
                INPUT_NAME: {0: "batch", 1: "samples"},
                LOGITS_NAME: {0: "batch"},
                PROBS_NAME: {0: "batch"},
                POOLED_NAME: {0: "batch"},
            },
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )


def export_onnx(
    model: nn.Module,
    info: ModelInfo,
    path: str | Path,
    opset: int = DEFAULT_OPSET,
    speaker_heads: dict[str, nn.Module] | None = None,
) -> Path:
    """Export ``model`` (``[B, S]`` raw audio → logits ``[B, C]``) to ``path`` with ``info`` as metadata.

    ``speaker_heads``: optional heads trained on speaker-centred pooled features (same sizes as ``model``'s),
    by kind (``running``, ``baseline``: see ``SPEAKER_HEAD_KEYS``); they are stored in the metadata for
    ``emotion_monitor.realtime.speaker_norm``. The model is put in eval mode (dropout off, BatchNorm running statistics). ``info.labels`` must match
    the number of classes. Runs ``onnx.checker``; raises ExportError (one line) on failure and removes the
    partial file. Returns the path written.
    """
    if opset < DEFAULT_OPSET:
        raise ExportError(f"opset {opset} is too old: use {DEFAULT_OPSET} or newer")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = with_export_version(info)
    model.eval()
    try:
        _trace_to_onnx(model, path, info.sample_rate, opset)
        proto = onnx.load(str(path))
        _check_labels(proto, info)
        # What `pooled` carries: per hidden state, its time mean (and standard deviation, for mean_std).
        sizes = (model.backbone.num_layers + 1, model.backbone.hidden_size * TIME_POOLING[model.time_pooling])
        head_bytes = {
            kind: speaker_norm_head_bytes(head, *sizes, opset) for kind, head in (speaker_heads or {}).items()
        }
        write_metadata(proto, info, head_bytes)
        onnx.save(proto, str(path))
        # Check the file as saved (what the runtime will load), not the in-memory copy.
        onnx.checker.check_model(str(path), full_check=True)
    except ExportError:
        path.unlink(missing_ok=True)
        raise
    except Exception as exc:  # the exporter and checker raise many types; report one line
        path.unlink(missing_ok=True)
        raise ExportError(f"ONNX export failed: {one_line(exc, with_type=True)}") from exc
    return path


def _check_labels(proto: onnx.ModelProto, info: ModelInfo) -> None:
    """The static class dimension of ``logits`` must equal ``len(info.labels)``."""
    out = next(o for o in proto.graph.output if o.name == LOGITS_NAME)
    dims = out.type.tensor_type.shape.dim
    if len(dims) == 2 and dims[1].HasField("dim_value") and dims[1].dim_value != len(info.labels):
        raise ExportError(
            f"model has {dims[1].dim_value} classes but metadata lists {len(info.labels)} labels"
        )
