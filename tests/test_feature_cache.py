"""Pooled-feature cache: crop geometry, cache keys, and equality with the classifier's own pooling."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

from core.backbones import build_backbone
from core.feature_cache import Crop, FeatureCache, crops_for
from core.model import EmotionClassifier
from realtime.audio import PreprocessOptions, load_audio, prepare_clip, prepare_input
from tests.conftest import synthetic_speechlike
from tests.test_whisper import TINY


def test_crops_are_evenly_spaced_and_cover_the_clip():
    n = 16_000 * 5
    bounds = [c.bounds(n) for c in crops_for(3.0, 3)]
    assert bounds == [(0, 48_000), (16_000, 64_000), (32_000, 80_000)]
    assert Crop(3.0, 1, 3).bounds(30_000) == (0, 30_000), "a clip shorter than the window is used whole"
    assert Crop().bounds(n) == (0, n)
    assert [c.name for c in crops_for(2.0, 2)] == ["w2.00_0of2", "w2.00_1of2"]


class _Counting(torch.nn.Module):
    """Wraps a backbone and counts forward calls (to see cache hits)."""

    def __init__(self, backbone):
        super().__init__()
        self.backbone, self.calls = backbone, 0

    def forward(self, *args):
        self.calls += 1
        return self.backbone(*args)


@pytest.fixture()
def wav_file(tmp_path):
    path = tmp_path / "clip.wav"
    audio = np.concatenate([np.zeros(8000), synthetic_speechlike(3.5, seed=3), np.zeros(8000)])
    sf.write(path, audio.astype(np.float32), 16_000)
    return path


def test_cache_matches_classifier_pooling_and_hits_on_second_call(tmp_path, wav_file):
    torch.manual_seed(0)
    backbone = build_backbone(kind="whisper", config=TINY).eval()
    counting = _Counting(backbone)
    options = PreprocessOptions()
    cache = FeatureCache(counting, "tiny", options, root=tmp_path / "cache")
    crops = [Crop(), *crops_for(2.0, 3)]
    first = cache.get(wav_file, crops)
    assert first.shape == (4, TINY["encoder_layers"] + 1, TINY["d_model"])
    assert counting.calls == 4
    np.testing.assert_array_equal(cache.get(wav_file, crops), first)
    assert counting.calls == 4, "second call must come from disk"

    model = EmotionClassifier(backbone, num_classes=8).eval()
    clip = prepare_clip(load_audio(wav_file), options)
    for crop, cached in zip(crops, first, strict=True):
        audio = torch.from_numpy(prepare_input(crop.apply(clip), options))[None]
        with torch.no_grad():
            np.testing.assert_allclose(model.pool(audio)[0].numpy(), cached, atol=1e-5)


def test_key_depends_on_content_and_preprocessing(tmp_path, wav_file):
    cache_a = FeatureCache(None, "tiny", PreprocessOptions(), root=tmp_path)
    cache_b = FeatureCache(None, "tiny", PreprocessOptions(target_dbfs=-30.0), root=tmp_path)
    assert cache_a.root != cache_b.root
    with pytest.raises(KeyError, match="not cached"):
        cache_a.get(wav_file, [Crop()])
