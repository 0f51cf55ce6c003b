"""The emotion classifier: a plain ``nn.Module`` (no Lightning), so export needs nothing else.

backbone → per-layer masked statistics over time (mean, or mean and standard deviation) → (softmax-weighted sum
over layers | last layer | all layers side by side) → feature extractor ``Linear(H→512)→BN→ReLU→Dropout→Linear(512→256)→BN→ReLU→Dropout`` → ``Linear(256→C)``.

A frozen backbone's per-layer pooled states are all the head reads, which is what lets them be cached per window
and the head trained on them alone (``classify_pooled``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from emotion_monitor.core.backbones import SpeechBackbone, build_backbone

LAYER_POOLING = ("weighted", "last", "concat")
"""How the per-layer pooled states become one vector: a learnt softmax-weighted sum, the last layer, or all layers
side by side, standardised (``concat``: the head sees every layer's own dimensions, at L+1 times the width)."""
TIME_POOLING = {"mean": 1, "mean_std": 2}
"""Statistics of each layer's frames over time → how many ``hidden``-wide vectors they make per layer: the mean, or
the mean and the standard deviation side by side (``[mean | std]``, 2 x hidden)."""


def feature_extractor(
    in_dim: int, hidden_dims: tuple[int, ...] = (512, 256), dropout: float = 0.3
) -> nn.Sequential:
    """``Linear→BatchNorm→ReLU→Dropout`` per entry of ``hidden_dims``."""
    layers: list[nn.Module] = []
    for dim in hidden_dims:
        layers += [nn.Linear(in_dim, dim), nn.BatchNorm1d(dim), nn.ReLU(), nn.Dropout(dropout)]
        in_dim = dim
    return nn.Sequential(*layers)


def masked_mean(hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T, H]`` → ``[B, H]`` mean over valid frames."""
    if frame_mask is None:
        return hidden.mean(dim=1)
    m = frame_mask.to(hidden.dtype).unsqueeze(-1)
    return (hidden * m).sum(dim=1) / m.sum(dim=1).clamp(min=1.0)


def masked_mean_std(hidden: torch.Tensor, frame_mask: torch.Tensor | None) -> torch.Tensor:
    """``[B, T, H]`` → ``[B, 2H]``: mean and (population) standard deviation over valid frames, side by side."""
    mean = masked_mean(hidden, frame_mask)
    var = masked_mean((hidden - mean.unsqueeze(1)) ** 2, frame_mask)
    return torch.cat([mean, torch.sqrt(var.clamp(min=0.0))], dim=-1)


TIME_STATISTICS = {"mean": masked_mean, "mean_std": masked_mean_std}


class EmotionClassifier(nn.Module):
    """Raw audio ``[B, S]`` (16 kHz) → logits ``[B, num_classes]``."""

    def __init__(
        self,
        backbone: SpeechBackbone,
        num_classes: int,
        hidden_dims: tuple[int, ...] = (512, 256),
        dropout: float = 0.3,
        layer_pooling: str = "weighted",
        time_pooling: str = "mean",
    ):
        super().__init__()
        if layer_pooling not in LAYER_POOLING:
            raise ValueError(f"layer_pooling must be one of {LAYER_POOLING}, got {layer_pooling!r}")
        if time_pooling not in TIME_POOLING:
            raise ValueError(f"time_pooling must be one of {tuple(TIME_POOLING)}, got {time_pooling!r}")
        self.backbone = backbone
        self.layer_pooling = layer_pooling
        self.time_pooling = time_pooling
        self.num_classes = num_classes
        self.hidden_dims = tuple(hidden_dims)
        self.dropout = dropout
        # One logit per hidden state (embeddings + each layer); zeros = a plain average at the start.
        self.layer_logits = nn.Parameter(torch.zeros(backbone.num_layers + 1))
        width = backbone.hidden_size * TIME_POOLING[time_pooling]
        if layer_pooling == "concat":
            width *= backbone.num_layers + 1
            # Layers differ in scale by orders of magnitude: standardise each dimension (running statistics).
            self.input_norm = nn.BatchNorm1d(width, affine=False)
            self.layer_logits.requires_grad_(False)
        self.features = feature_extractor(width, self.hidden_dims, dropout)
        self.head = nn.Linear(self.hidden_dims[-1], num_classes)

    def pool(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Per-layer time-pooled hidden states ``[B, num_layers + 1, H]`` (``mean_std``: ``[B, num_layers + 1, 2H]``)."""
        hidden_states, frame_mask = self.backbone(input_values, attention_mask)
        statistics = TIME_STATISTICS[self.time_pooling]
        return torch.stack([statistics(h, frame_mask) for h in hidden_states], dim=1)

    def layer_weights(self) -> torch.Tensor:
        """``[num_layers + 1]`` weights that sum to 1."""
        return torch.softmax(self.layer_logits, dim=0)

    def classify_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        """``[B, L+1, H]`` pooled hidden states (``[B, L+1, 2H]`` for ``mean_std``) → logits ``[B, C]``."""
        if self.layer_pooling == "last":
            summary = pooled[:, -1]
        elif self.layer_pooling == "concat":
            summary = self.input_norm(pooled.flatten(1))
        else:
            summary = torch.einsum("blh,l->bh", pooled, self.layer_weights())
        return self.head(self.features(summary))

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.classify_pooled(self.pool(input_values, attention_mask))

    def spec(self) -> dict[str, Any]:
        """Plain-data description for checkpoints: rebuild with ``build_classifier(spec)`` offline."""
        return {
            "backbone": self.backbone.spec(),
            "num_classes": self.num_classes,
            "hidden_dims": list(self.hidden_dims),
            "dropout": self.dropout,
            "layer_pooling": self.layer_pooling,
            "time_pooling": self.time_pooling,
        }


class ShapeOnlyBackbone(SpeechBackbone):
    """A backbone with an encoder's sizes and no weights: ``EmotionClassifier(ShapeOnlyBackbone(...))`` is just
    the head, for training or loading it on cached pooled features (``classify_pooled``)."""

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers

    def transformer_layers(self) -> list[nn.Module]:
        return []

    def spec(self) -> dict[str, Any]:
        return {"kind": "shape-only", "hidden_size": self.hidden_size, "num_layers": self.num_layers}

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        raise RuntimeError("a shape-only backbone has no encoder: feed pooled features to classify_pooled")


def build_classifier(spec: dict[str, Any], pretrained: bool = False) -> EmotionClassifier:
    """Rebuild from ``EmotionClassifier.spec()``.

    pretrained=False builds the backbone from its stored config with random weights (no download); the
    caller then loads a state dict. pretrained=True loads the backbone's weights from ``name_or_path``.
    """
    bb = dict(spec["backbone"])
    config = None if pretrained else bb.get("config")
    kind = bb.pop("kind")
    bb.pop("config", None)
    if kind == "shape-only":  # a head trained on cached features: no encoder to build
        backbone = ShapeOnlyBackbone(bb["hidden_size"], bb["num_layers"])
    else:
        backbone = build_backbone(kind=kind, config=config, **bb)
    return EmotionClassifier(
        backbone,
        num_classes=spec["num_classes"],
        hidden_dims=tuple(spec.get("hidden_dims", (512, 256))),
        dropout=spec.get("dropout", 0.3),
        layer_pooling=spec.get("layer_pooling", "weighted"),
        time_pooling=spec.get("time_pooling", "mean"),
    )
