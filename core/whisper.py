"""Whisper encoder as a ``SpeechBackbone``: raw 16 kHz audio → log-mel (torch, ONNX-exportable) → encoder.

Two departures from ``transformers.WhisperEncoder.forward``, both for streaming windows of a few seconds:

* The stock encoder insists on 30 s of mel input (3000 frames) and adds the whole 1500-row position
  table. Here a window of T encoder frames gets only the first T rows, so a 3 s window costs a small
  fraction of a 30 s pass. On 30 s input the two
  are identical; on a short window the stock pass also attends to ~27 s of padding frames, so frame
  values drift with depth while the time-pooled states the classifier uses stay close (cosine ≥ 0.97 per
  layer on a RAVDESS clip; tests/test_whisper_real.py).
* The log-mel front end is torch code (STFT as a strided conv1d with a fixed Hann-windowed DFT basis)
  so the exported ONNX model takes raw audio; it reproduces ``WhisperFeatureExtractor`` (Hann 400,
  hop 160, slaney mel filters, log10, clamp to max - 8, (x + 4) / 4).

Hidden states follow transformers: embeddings (conv stem + positions) first, then each layer's output,
with the encoder's final LayerNorm applied to the last one.

A *truncated* encoder (``num_layers`` below the weights' depth) runs only its first layers and returns their raw
outputs, without the final LayerNorm (which belongs after the last layer of the full stack): its hidden states
are exactly the first ``num_layers + 1`` of the full encoder's, so a head trained on those slices of the full
encoder's cached features runs unchanged on it.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from emotion_monitor.core.backbones import SpeechBackbone

SAMPLE_RATE = 16_000
N_FFT = 400
HOP = 160
"""Samples per mel frame (10 ms); two mel frames make one encoder frame (20 ms)."""
MIN_SAMPLES = N_FFT
"""Shortest input that yields at least two mel frames, i.e. one encoder frame (25 ms)."""


def mel_filters(num_mel_bins: int = 80) -> np.ndarray:
    """Slaney-style mel filter bank ``[N_FFT // 2 + 1, num_mel_bins]``, exactly Whisper's (computed offline)."""
    from transformers.audio_utils import mel_filter_bank

    return mel_filter_bank(
        num_frequency_bins=N_FFT // 2 + 1,
        num_mel_filters=num_mel_bins,
        min_frequency=0.0,
        max_frequency=SAMPLE_RATE / 2,
        sampling_rate=SAMPLE_RATE,
        norm="slaney",
        mel_scale="slaney",
    ).astype(np.float32)


class LogMel(nn.Module):
    """Raw audio ``[B, S]`` → Whisper log-mel ``[B, num_mel_bins, S // 160]``.

    The STFT is a conv1d whose kernels are the Hann-windowed cosine and sine of each of the 201 DFT
    bins: it exports to any ONNX opset and runs as one GEMM. ``center=True`` reflection padding and
    dropping the last frame match ``WhisperFeatureExtractor``. The ``max - 8`` clamp is taken per
    example over its valid frames (for batches padded with zeros, padding only lowers values anyway).
    """

    def __init__(self, num_mel_bins: int = 80):
        super().__init__()
        n = torch.arange(N_FFT, dtype=torch.float64)
        k = torch.arange(N_FFT // 2 + 1, dtype=torch.float64)
        # Periodic Hann window, as torch.stft / numpy reference use.
        window = 0.5 - 0.5 * torch.cos(2 * math.pi * n / N_FFT)
        angle = 2 * math.pi * k[:, None] * n[None, :] / N_FFT
        basis = torch.cat([torch.cos(angle), -torch.sin(angle)], dim=0) * window
        self.register_buffer("dft", basis.unsqueeze(1).float(), persistent=False)
        self.register_buffer("filters", torch.from_numpy(mel_filters(num_mel_bins)), persistent=False)

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = F.pad(audio.unsqueeze(1), (N_FFT // 2, N_FFT // 2), mode="reflect")
        spec = F.conv1d(x, self.dft, stride=HOP)  # [B, 2 * 201, frames + 1]
        bins = N_FFT // 2 + 1
        power = spec[:, :bins, :-1] ** 2 + spec[:, bins:, :-1] ** 2
        mel = torch.einsum("bft,fm->bmt", power, self.filters)
        log_spec = torch.log10(torch.clamp(mel, min=1e-10))
        peak = log_spec.amax(dim=(1, 2), keepdim=True)
        log_spec = torch.maximum(log_spec, peak - 8.0)
        return (log_spec + 4.0) / 4.0


def encoder_frames(num_samples: torch.Tensor) -> torch.Tensor:
    """Encoder frames for ``num_samples`` of audio: S // 160 mel frames, then the stride-2 conv (ceil)."""
    mel_frames = torch.div(num_samples, HOP, rounding_mode="floor")
    return torch.div(mel_frames + 1, 2, rounding_mode="floor")


class WhisperBackbone(SpeechBackbone):
    """``SpeechBackbone`` over a transformers ``WhisperEncoder`` (from ``WhisperModel.encoder``).

    name_or_path: None or a key of ``emotion_monitor.core.ct2.PACKAGED`` (installed pip weights), kept for ``spec()``.
    num_layers: run only the first this many transformer layers (None = all; see the module doc); the others
    are dropped from ``encoder.layers``.
    """

    def __init__(
        self,
        encoder: nn.Module,
        name_or_path: str | None = None,
        gradient_checkpointing: bool = False,
        num_layers: int | None = None,
    ):
        super().__init__()
        config = encoder.config
        depth = int(config.encoder_layers)
        self.num_layers = depth if num_layers is None else int(num_layers)
        if not 0 < self.num_layers <= depth:
            raise ValueError(f"num_layers must be in 1..{depth} for this encoder, got {num_layers}")
        self.full_depth = self.num_layers == depth
        encoder.layers = encoder.layers[: self.num_layers]
        self.encoder = encoder
        self.name_or_path = name_or_path
        self.gradient_checkpointing = gradient_checkpointing
        self.hidden_size = int(config.d_model)
        self.log_mel = LogMel(int(config.num_mel_bins))
        # The conv stem stays frozen (as wav2vec2's feature encoder is): ~1k clips cannot improve it.
        for module in (encoder.conv1, encoder.conv2):
            module.requires_grad_(False)

    def transformer_layers(self) -> list[nn.Module]:
        return list(self.encoder.layers)

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "whisper",
            "name_or_path": self.name_or_path,
            "config": self.encoder.config.to_dict(),
            "num_layers": self.num_layers,
        }

    def embed(self, mel: torch.Tensor) -> torch.Tensor:
        """log-mel ``[B, M, F]`` → conv stem + the first T position rows ``[B, T, H]``."""
        enc = self.encoder
        h = F.gelu(enc.conv2(F.gelu(enc.conv1(mel)))).transpose(1, 2)
        if h.shape[1] > enc.embed_positions.weight.shape[0]:
            raise ValueError(f"input longer than Whisper's 30 s limit ({h.shape[1]} encoder frames)")
        return h + enc.embed_positions.weight[: h.shape[1]]

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        """``[B, S]`` float audio (16 kHz) → (``num_layers + 1`` × ``[B, T, H]``, ``[B, T]`` bool or None)."""
        hidden = self.embed(self.log_mel(input_values))
        hidden = F.dropout(hidden, p=self.encoder.config.dropout, training=self.training)
        frame_mask, attn_bias = None, None
        if attention_mask is not None:
            lengths = encoder_frames(attention_mask.sum(-1))
            frame_mask = torch.arange(hidden.shape[1], device=hidden.device)[None, :] < lengths[:, None]
            # Additive key mask [B, 1, 1, T] so padded frames of shorter batch items are never attended to.
            attn_bias = torch.zeros(frame_mask.shape, dtype=hidden.dtype, device=hidden.device)
            attn_bias = attn_bias.masked_fill(~frame_mask, torch.finfo(hidden.dtype).min)[:, None, None, :]
        states = [hidden]
        for layer in self.encoder.layers:
            if self.gradient_checkpointing and self.training:
                hidden = torch.utils.checkpoint.checkpoint(layer, hidden, attn_bias, use_reentrant=False)
            else:
                hidden = layer(hidden, attn_bias)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            states.append(hidden)
        if self.full_depth:
            states[-1] = self.encoder.layer_norm(states[-1])
        return tuple(states), frame_mask


def build_whisper_backbone(
    name_or_path: str | None = None,
    config: dict | None = None,
    gradient_checkpointing: bool = False,
    num_layers: int | None = None,
    **_: Any,
) -> WhisperBackbone:
    """Whisper encoder backbone; ``num_layers``: only the first this many transformer layers (None = all).

    config: a ``WhisperConfig`` dict → random weights (tests, or rebuilding before loading a checkpoint).
    name_or_path: None / ``whisper-base`` / ``whisper-tiny.en`` → the weights installed as pip packages
        (``emotion_monitor.core.ct2``); any other value → ``transformers.WhisperModel.from_pretrained`` (local directory).
    Extra keyword arguments (e.g. ``normalise_waveform`` meant for wav2vec2) do not apply and are ignored.
    """
    from transformers import WhisperConfig, WhisperModel
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    from emotion_monitor.core import ct2

    if config is not None:
        hf_config = WhisperConfig(**{k: v for k, v in config.items() if k != "model_type"})
        hf_config._attn_implementation = "sdpa"
        encoder = WhisperEncoder(hf_config)
    else:
        if name_or_path is None or name_or_path in ct2.PACKAGED:
            encoder = ct2.load_whisper_encoder(name_or_path or ct2.DEFAULT_WEIGHTS)
        else:
            encoder = WhisperModel.from_pretrained(name_or_path).encoder  # the decoder is dropped
    # sdpa exports to ONNX and honours the additive mask; a config default could pick other kernels.
    encoder.config._attn_implementation = "sdpa"
    return WhisperBackbone(encoder.eval(), name_or_path, gradient_checkpointing, num_layers)
