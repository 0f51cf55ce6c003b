"""Fine-tuning the top Whisper layer(s) on cached frames (issue 12 pilot): the model and its data.

``WhisperTopLayers`` holds only the encoder's last ``trainable_layers`` transformer layers and its final
LayerNorm, initialised from the pretrained weights. ``TopLayersClassifier`` is the ``model=head`` classifier
(``EmotionClassifier``, concat of every state's time-mean, same head) whose top states come from those layers
run on cached frames (``core.frame_features``), the lower states' means read frozen from the cache.
``FrameDataModule`` is ``FeatureDataModule`` on that cache: batches carry ``frames`` ``[B, T, H]`` and
``frame_mask`` ``[B, T]`` besides the frozen ``pooled`` ``[B, L+1, H]``; ``EmotionModule`` turns them into pooled
features with grad (``pool_frames``) before its usual loss and mixup. After training, ``scoring_feature_set``
gives the protocol the windows' pooled features through the trained layers.

    emotion-train experiment=head_finetune task=evaluate     # configs/experiment/head_finetune.yaml
"""

from __future__ import annotations

import logging
from dataclasses import replace
from functools import lru_cache
from typing import Any

import numpy as np
import torch
from torch import nn

from emotion_monitor.core.backbones import SpeechBackbone
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.feature_data import FeatureDataModule, FeatureSet, PooledDataset
from emotion_monitor.core.model import EmotionClassifier, masked_mean

log = logging.getLogger(__name__)

WHISPER_BASE_LAYERS = 6
"""Depth of the encoder whose frames are cached when ``encoder_layers`` does not say (Whisper-base)."""


class WhisperTopLayers(SpeechBackbone):
    """The last ``trainable_layers`` layers (+ final LayerNorm) of a Whisper encoder; input: the frames after
    layer ``cut = num_layers - trainable_layers``. ``encoder``: a transformers ``WhisperEncoder``."""

    def __init__(self, encoder: nn.Module, trainable_layers: int = 1, name_or_path: str | None = None):
        super().__init__()
        depth = len(encoder.layers)
        if not 0 < trainable_layers <= depth:
            raise ValueError(f"trainable_layers must be in 1..{depth}, got {trainable_layers}")
        self.layers = nn.ModuleList(list(encoder.layers)[depth - trainable_layers :])
        self.layer_norm = encoder.layer_norm
        self.hidden_size = int(encoder.config.d_model)
        self.num_layers = depth
        self.cut = depth - trainable_layers
        self.name_or_path = name_or_path
        self.config = encoder.config

    def transformer_layers(self) -> list[nn.Module]:
        # The final LayerNorm belongs to the last layer's output: same learning-rate tier as the layers.
        return [*self.layers, self.layer_norm]

    def spec(self) -> dict[str, Any]:
        return {
            "kind": "whisper-top",
            "name_or_path": self.name_or_path,
            "trainable_layers": len(self.layers),
            "hidden_size": self.hidden_size,
            "num_layers": self.num_layers,
        }

    def run_frames(self, frames: torch.Tensor, frame_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """Frames ``[B, T, H]`` after layer ``cut`` → the outputs of each top layer (the last normalised)."""
        bias = None
        if frame_mask is not None:
            bias = torch.zeros(frame_mask.shape, dtype=frames.dtype, device=frames.device)
            bias = bias.masked_fill(~frame_mask, torch.finfo(frames.dtype).min)[:, None, None, :]
        states, hidden = [], frames
        for layer in self.layers:
            hidden = layer(hidden, bias)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            states.append(hidden)
        states[-1] = self.layer_norm(states[-1])
        return states

    def forward(self, input_values: torch.Tensor, attention_mask: torch.Tensor | None = None):
        raise RuntimeError("WhisperTopLayers runs cached frames: use run_frames")


def build_top_layers(
    name_or_path: str | None = None, trainable_layers: int = 1, config: dict | None = None, **_
):
    """The pretrained (packaged) weights' top layers; ``config``: a ``WhisperConfig`` dict → random weights."""
    from emotion_monitor.core.whisper import build_whisper_backbone

    encoder = build_whisper_backbone(name_or_path, config).encoder
    return WhisperTopLayers(encoder, trainable_layers, name_or_path)


class TopLayersClassifier(EmotionClassifier):
    """``EmotionClassifier`` whose top states come from trainable layers run on cached frames (module doc)."""

    def pool_frames(
        self, frames: torch.Tensor, frame_mask: torch.Tensor, pooled: torch.Tensor
    ) -> torch.Tensor:
        """Frames ``[B, T, H]`` + mask + frozen pooled ``[B, L+1, H]`` → pooled ``[B, L+1, H]`` whose states above
        ``cut`` are the time-means of the trainable layers' outputs."""
        if self.time_pooling != "mean":
            raise ValueError("fine-tuning the top layers supports time_pooling=mean only")
        cut = self.backbone.cut
        top = [masked_mean(h, frame_mask) for h in self.backbone.run_frames(frames, frame_mask)]
        return torch.cat([pooled[:, : cut + 1], torch.stack(top, dim=1)], dim=1)


class FrameDataset(PooledDataset):
    """``PooledDataset`` rows plus their frames, zero-padded to the batch's longest (``frame_mask``)."""

    def __init__(self, frames: np.ndarray, offset: np.ndarray, length: np.ndarray, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.frames, self.offset, self.length = frames, offset, length

    def __getitems__(self, indices: list[int]):
        batch = super().__getitems__(indices)[0]
        batch.update(frame_batch(self.frames, self.offset, self.length, self.rows[np.asarray(indices)]))
        return [batch]


def frame_batch(frames: np.ndarray, offset: np.ndarray, length: np.ndarray, rows: np.ndarray) -> dict:
    """``{"frames": [B, T, H] float32, "frame_mask": [B, T] bool}`` of window ``rows``."""
    t = int(length[rows].max())
    out = np.zeros((len(rows), t, frames.shape[1]), np.float32)
    mask = np.zeros((len(rows), t), bool)
    for i, r in enumerate(rows):
        n = int(length[r])
        out[i, :n] = frames[offset[r] : offset[r] + n]
        mask[i, :n] = True
    return {"frames": torch.from_numpy(out), "frame_mask": torch.from_numpy(mask)}


@lru_cache(maxsize=2)
def _load_frames(
    corpora_key: tuple[tuple[str, str, str], ...],
    cut: int,
    weights: str | None,
    subsets: tuple[tuple[str, str], ...] = (),
):
    from emotion_monitor.core import frame_features
    from emotion_monitor.core.corpora import read_corpus
    from emotion_monitor.realtime.model import load_model

    model = load_model(None, batch_size=16)
    corpora, utterances, parts, offset_utt, offset_rows = [], [], [], 0, 0
    for name, kind, root in corpora_key:
        corpus = read_corpus(kind, root)
        corpus.name = name
        corpus.utterances = [replace(u, corpus=name) for u in corpus.utterances]
        corpora.append(corpus)
        f = frame_features.load_or_compute(model, corpus, cut, weights, subset=dict(subsets).get(name, ""))
        parts.append((f, offset_utt, offset_rows))
        utterances += corpus.utterances
        offset_utt += len(corpus.utterances)
        offset_rows += len(f.frames)
    allowed = np.zeros((len(corpora), len(EMOTIONS)), dtype=bool)
    for i, corpus in enumerate(corpora):
        allowed[i, list(corpus.classes)] = True
    cat = np.concatenate
    fs = FeatureSet(
        corpora=corpora,
        views=["clip"],
        utterances=utterances,
        pooled=cat([f.pooled for f, _, _ in parts]),
        utt=cat([f.utt.astype(np.int64) + off for f, off, _ in parts]),
        view=np.zeros(sum(len(f.utt) for f, _, _ in parts), np.int64),
        kind=cat([f.kind for f, _, _ in parts]),
        speech_s=cat([f.speech_s for f, _, _ in parts]),
        trailing_s=cat([f.trailing_s for f, _, _ in parts]),
        allowed=allowed,
    )
    frames = cat([f.frames for f, _, _ in parts])
    offsets = cat([f.offset + rows for f, _, rows in parts])
    lengths = cat([f.length for f, _, _ in parts])
    return fs, frames, offsets, lengths


class FrameDataModule(FeatureDataModule):
    """``FeatureDataModule`` on the frame cache (clip view only): the frames entering the last
    ``trainable_layers`` layers (after layer ``cut = encoder_layers - trainable_layers``); ``frames``: False trains on the frozen pooled features of the same
    cache (the frozen control on identical windows and schedule); ``subsets``: ``{corpus: subset name}`` of a
    cache made for one fold (``frame_features.fold_subset``), e.g. ``{crema-d: f0of5s42x4}``."""

    def __init__(
        self,
        *args,
        trainable_layers: int = 1,
        weights: str | None = None,
        frames: bool = True,
        subsets: dict | None = None,
        **kwargs,
    ):
        kwargs.update(train_views=["clip"], eval_view="clip")
        super().__init__(*args, **kwargs)
        if self.speaker_centre is not None or self.test_model is not None:
            raise ValueError("the frame pilot supports neither speaker_centre nor test_model")
        depth = self.encoder_layers or WHISPER_BASE_LAYERS
        self.cut, self.weights, self.use_frames = depth - trainable_layers, weights, frames
        self.subsets = tuple(sorted((subsets or {}).items()))

    def _frames(self):
        key = tuple((name, c["kind"], str(c["root"])) for name, c in self.corpora_cfg.items())
        return _load_frames(key, self.cut, self.weights, self.subsets)

    def feature_set(self) -> FeatureSet:
        if self.fs is None:
            self.fs = self._frames()[0]
        return self.fs

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        super().setup(stage)
        if self.use_frames:
            plain = self.datasets["train"]
            _, frames, offset, length = self._frames()
            self.datasets["train"] = FrameDataset(
                frames, offset, length, plain.fs, plain.rows, plain.allowed, plain.weights, plain.centre
            )

    @torch.no_grad()
    def scoring_feature_set(self, model: nn.Module, batch: int = 64) -> FeatureSet:
        """The feature set with the test speakers' pooled features through ``model``'s trained top layers (the
        frozen cache itself when training did not use frames)."""
        fs = self.feature_set()
        if not self.use_frames or not hasattr(model, "pool_frames"):
            return fs
        _, frames, offset, length = self._frames()
        rows = fs.rows(self.split["test"], ["clip"])
        pooled = fs.pooled.copy()
        model.eval()
        for i in range(0, len(rows), batch):
            chunk = rows[i : i + batch]
            fb = frame_batch(frames, offset, length, chunk)
            frozen = torch.from_numpy(fs.pooled[chunk].astype(np.float32))
            out = model.pool_frames(fb["frames"], fb["frame_mask"], frozen)
            pooled[chunk] = out.numpy().astype(pooled.dtype)
        return replace(fs, pooled=pooled)
