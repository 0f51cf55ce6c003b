"""Export of a tiny random Whisper-encoder classifier (log-mel front end inside the graph)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from support import LABELS, tiny_info

from realtime.metadata import INPUT_NAME, LOGITS_NAME, PROBS_NAME, ModelInfo

TINY_WHISPER = dict(
    d_model=32,
    encoder_layers=2,
    encoder_attention_heads=2,
    encoder_ffn_dim=64,
    decoder_layers=1,
    decoder_attention_heads=2,
    decoder_ffn_dim=64,
    num_mel_bins=80,
    max_source_positions=1500,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from core.backbones import build_backbone
    from core.model import EmotionClassifier
    from export.onnx_export import export_onnx

    torch.manual_seed(0)
    backbone = build_backbone("whisper", None, config=TINY_WHISPER)
    model = EmotionClassifier(backbone, len(LABELS), (16, 8)).eval()
    torch.nn.init.normal_(model.head.weight, std=2.0)
    info = tiny_info(backbone="whisper:tiny-random")
    return model, export_onnx(model, info, tmp_path_factory.mktemp("whisper") / "w.onnx")


@pytest.mark.parametrize(("batch", "seconds"), [(1, 0.5), (3, 1.7), (1, 3.0), (3, 10.0)])
def test_whisper_matches_pytorch_at_any_length(exported, batch, seconds, ravdess_or_synthetic):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    audio = ravdess_or_synthetic(batch, seconds)
    logits, probs = session.run([LOGITS_NAME, PROBS_NAME], {INPUT_NAME: audio})
    with torch.no_grad():
        ref = torch.softmax(model(torch.from_numpy(audio)), dim=-1).numpy()
    assert probs.shape == (batch, len(LABELS))
    assert np.abs(probs - ref).max() <= 1e-4
    assert (
        ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map).backbone == "whisper:tiny-random"
    )


@pytest.fixture
def ravdess_or_synthetic():
    """``(batch, seconds)`` → level-normalised speech windows built the way ``export.validate`` builds them."""
    from export import validate

    info = ModelInfo(labels=LABELS)
    audio = validate.load_validation_audio(info, 6, log=lambda _: None)
    return lambda batch, seconds: validate.make_batch(audio, info, seconds, batch)
