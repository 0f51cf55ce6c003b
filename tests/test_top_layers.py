"""Fine-tuning the top Whisper layer(s) on cached frames (core.top_layers), on a tiny random Whisper encoder:
the top layers on the frames after layer ``cut`` reproduce the whole encoder's pooled states, padding is masked,
and the one trainer's training step trains the layers (``upper`` learning-rate tier)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import synthetic_speechlike
from test_whisper import TINY

from emotion_monitor.core.backbones import build_backbone
from emotion_monitor.core.lightning_module import EmotionModule, TrainSettings, parameter_tiers
from emotion_monitor.core.model import EmotionClassifier
from emotion_monitor.core.top_layers import TopLayersClassifier, WhisperTopLayers, frame_batch


def _models(trainable: int):
    torch.manual_seed(0)
    full = build_backbone(kind="whisper", config=TINY).eval()
    frozen = EmotionClassifier(full, num_classes=8, hidden_dims=(8,), layer_pooling="concat").eval()
    top = TopLayersClassifier(
        WhisperTopLayers(full.encoder, trainable), num_classes=8, hidden_dims=(8,), layer_pooling="concat"
    ).eval()
    top.load_state_dict(frozen.state_dict(), strict=False)  # the same head
    top.features.load_state_dict(frozen.features.state_dict())
    top.head.load_state_dict(frozen.head.state_dict())
    return full, frozen, top


@pytest.mark.parametrize("trainable", [1, 2])
def test_top_layers_on_cached_frames_reproduce_the_whole_encoder(trainable):
    full, frozen, top = _models(trainable)
    audio = torch.from_numpy(
        np.stack([synthetic_speechlike(0.6, seed=s) for s in range(2)]).astype(np.float32)
    )
    with torch.no_grad():
        states, _ = full(audio)
        cut = top.backbone.cut
        assert cut == 2 - trainable
        pooled = torch.stack([h.mean(dim=1) for h in states], dim=1)
        mask = torch.ones(states[cut].shape[:2], dtype=torch.bool)
        mine = top.pool_frames(states[cut], mask, pooled)
        torch.testing.assert_close(mine, frozen.pool(audio), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(top.classify_pooled(mine), frozen(audio), rtol=1e-4, atol=1e-4)
        # A shorter window padded with zeros to a longer one's length: masked frames change nothing.
        short = states[cut][:1, :20]
        padded = torch.cat([short, torch.zeros(1, 10, short.shape[-1])], dim=1)
        pad_mask = torch.arange(30)[None] < 20
        alone = top.pool_frames(short, torch.ones(1, 20, dtype=torch.bool), pooled[:1])
        torch.testing.assert_close(top.pool_frames(padded, pad_mask, pooled[:1]), alone, rtol=1e-5, atol=1e-5)


def test_training_step_trains_the_top_layer_in_the_upper_tier():
    _, _, top = _models(1)
    tiers = parameter_tiers(top, 0)
    layer_ids = {id(p) for p in top.backbone.parameters()}
    assert {id(p) for p in tiers["upper"]} == layer_ids and not tiers["lower"]
    module = EmotionModule(
        top.spec(), [str(i) for i in range(8)], train=TrainSettings(mixup_prob=0.0).to_dict(), model=top
    )
    module.train()
    frames = np.random.default_rng(0).normal(size=(50, 16)).astype(np.float16)
    offset, length = np.array([0, 20, 35]), np.array([20, 15, 15], np.int32)
    batch = frame_batch(frames, offset, length, np.array([0, 1, 2]))
    assert batch["frames"].shape == (3, 20, 16) and batch["frame_mask"].sum().item() == 50
    batch.update(pooled=torch.randn(3, 3, 16), label=torch.tensor([0, 1, 2]))
    loss = module.training_step(batch, 0)
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in top.backbone.layers.parameters())
