"""Speech encoders behind one interface: raw 16 kHz audio in, every layer's hidden states out.

Each backbone owns its own front end (waveform normalisation for the wav2vec2 family, log-mel for
Whisper), so an exported model always takes raw audio and the runtime has nothing to keep in step.
"""

from __future__ import annotations

import importlib
from typing import Any

import torch
from torch import nn

WAV2VEC2_FAMILY = ("wav2vec2", "hubert", "wavlm", "data2vec-audio")


class SpeechBackbone(nn.Module):
    """Interface every encoder implements.

    ``forward(input_values [B, S], attention_mask [B, S] or None)`` returns
    ``(hidden_states, frame_mask)``: a tuple of ``num_layers + 1`` tensors ``[B, T, hidden_size]``
    (embeddings first, last transformer layer last) and a ``[B, T]`` bool mask of valid frames
    (None when every frame is valid).
    """

    hidden_size: int
    num_layers: int

    def transformer_layers(self) -> list[nn.Module]:
        """Transformer blocks, lowest first: the unit of ``freeze_layers`` and of learning-rate tiers."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """Everything needed to rebuild this backbone without a download (stored in checkpoints)."""
        raise NotImplementedError


class Wav2Vec2FamilyBackbone(SpeechBackbone):
    """wav2vec2 / HuBERT / WavLM / data2vec-audio through ``transformers.AutoModel``."""

    def __init__(
        self,
        model: nn.Module,
        name_or_path: str | None = None,
        normalise_waveform: bool = True,
        gradient_checkpointing: bool = False,
    ):
        super().__init__()
        self.model = model
        self.name_or_path = name_or_path
        self.normalise_waveform = normalise_waveform
        self.hidden_size = int(model.config.hidden_size)
        self.num_layers = int(model.config.num_hidden_layers)
        # The convolutional feature encoder is always frozen: fine-tuning it on ~1k clips only overfits.
        # HubertModel has no freeze_feature_encoder(); its conv stack has the same _freeze_parameters().
        (getattr(model, "freeze_feature_encoder", None) or model.feature_extractor._freeze_parameters)()
        if gradient_checkpointing:
            # transformers >= 5 renamed the switch; keep both so the supported range works.
            enable = (
                getattr(model, "activation_checkpointing_enable", None) or model.gradient_checkpointing_enable
            )
            enable()

    def transformer_layers(self) -> list[nn.Module]:
        return list(self.model.encoder.layers)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": self.model.config.model_type,
            "name_or_path": self.name_or_path,
            "config": self.model.config.to_dict(),
            "normalise_waveform": self.normalise_waveform,
        }

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        if self.normalise_waveform:
            input_values = _normalise_waveform(input_values, attention_mask)
        # wav2vec2-base (group norm) must not see an attention mask: padded zeros are handled by pooling.
        use_mask = attention_mask if self.model.config.feat_extract_norm == "layer" else None
        out = self.model(input_values, attention_mask=use_mask, output_hidden_states=True)
        frame_mask = None
        if attention_mask is not None:
            lengths = self.model._get_feat_extract_output_lengths(attention_mask.sum(-1))
            frames = out.hidden_states[0].shape[1]
            frame_mask = torch.arange(frames, device=input_values.device)[None, :] < lengths[:, None]
        return tuple(out.hidden_states), frame_mask


def _normalise_waveform(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Zero mean, unit variance per utterance (what Wav2Vec2FeatureExtractor does), over valid samples."""
    if mask is None:
        mean = x.mean(dim=-1, keepdim=True)
        var = x.var(dim=-1, keepdim=True, unbiased=False)
        return (x - mean) / torch.sqrt(var + 1e-7)
    m = mask.to(x.dtype)
    count = m.sum(-1, keepdim=True).clamp(min=1.0)
    mean = (x * m).sum(-1, keepdim=True) / count
    var = (((x - mean) * m) ** 2).sum(-1, keepdim=True) / count
    return (x - mean) / torch.sqrt(var + 1e-7) * m


BUILDERS: dict[str, str] = {
    kind: "emotion_monitor.core.backbones.build_wav2vec2_family" for kind in WAV2VEC2_FAMILY
} | {"whisper": "emotion_monitor.core.whisper.build_whisper_backbone"}
"""Backbone kind → builder, by import path: a family's module is imported only when that family is built, and
this module imports none of them (``emotion_monitor.core.whisper`` subclasses ``SpeechBackbone`` from here, never the reverse)."""


def build_backbone(
    kind: str = "wav2vec2",
    name_or_path: str | None = "facebook/wav2vec2-base",
    config: dict | None = None,
    gradient_checkpointing: bool = False,
    **kwargs: Any,
) -> SpeechBackbone:
    """Build an encoder through ``BUILDERS``.

    kind: ``wav2vec2``, ``hubert``, ``wavlm``, ``data2vec-audio`` or ``whisper``.
    name_or_path: hub id or local directory for pretrained weights (``from_pretrained``).
    config: a transformers config dict; when given, the model is built from it with random weights
        (tests, and rebuilding an architecture whose weights come from a checkpoint) and nothing is loaded.
    Other keyword arguments go to the family's builder (e.g. ``normalise_waveform`` for wav2vec2).
    """
    if kind not in BUILDERS:
        raise ValueError(f"unknown backbone kind {kind!r}; expected one of {tuple(BUILDERS)}")
    module, _, name = BUILDERS[kind].rpartition(".")
    builder = getattr(importlib.import_module(module), name)
    return builder(
        kind=kind,
        name_or_path=name_or_path,
        config=config,
        gradient_checkpointing=gradient_checkpointing,
        **kwargs,
    )


def build_wav2vec2_family(
    kind: str,
    name_or_path: str | None,
    config: dict | None = None,
    gradient_checkpointing: bool = False,
    normalise_waveform: bool = True,
    **_: Any,
) -> SpeechBackbone:
    """A wav2vec2-family encoder (``WAV2VEC2_FAMILY``) through transformers' Auto classes. Keyword arguments
    meant for other families are ignored (a spec may carry them)."""
    from transformers import AutoConfig, AutoModel

    if config is not None:
        hf_config = AutoConfig.for_model(kind, **{k: v for k, v in config.items() if k != "model_type"})
        model = AutoModel.from_config(hf_config)
    else:
        if not name_or_path:
            raise ValueError(
                "a pretrained backbone needs model.backbone.name_or_path (hub id or local directory)"
            )
        model = AutoModel.from_pretrained(name_or_path)
    return Wav2Vec2FamilyBackbone(model, name_or_path, normalise_waveform, gradient_checkpointing)
