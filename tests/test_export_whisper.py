"""Export of a tiny random Whisper-encoder classifier (log-mel front end inside the graph)."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from support import LABELS, tiny_info

from emotion_monitor.realtime.metadata import INPUT_NAME, LOGITS_NAME, PROBS_NAME, ModelInfo

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
    from emotion_monitor.core.backbones import build_backbone
    from emotion_monitor.core.model import EmotionClassifier
    from emotion_monitor.export.onnx_export import export_onnx

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
    """``(batch, seconds)`` → level-normalised speech windows built the way ``emotion_monitor.export.validate`` builds them."""
    from emotion_monitor.export import validate

    info = ModelInfo(labels=LABELS)
    audio = validate.load_validation_audio(info, 6, log=lambda _: None)
    return lambda batch, seconds: validate.make_batch(audio, info, seconds, batch)


def test_truncated_encoder_export_gives_the_full_exports_first_pooled_states(
    exported, ravdess_or_synthetic, tmp_path
):
    """A head trained on the full encoder's ``pooled[:, :k+1]`` runs on an export whose encoder stops after
    layer k: the cut ONNX model's ``pooled`` equals the full ONNX model's first k+1 states, and its metadata
    says how many layers it runs."""
    from emotion_monitor.core.backbones import build_backbone
    from emotion_monitor.core.model import EmotionClassifier
    from emotion_monitor.export.onnx_export import export_onnx
    from emotion_monitor.realtime.metadata import POOLED_NAME

    full_model, full_path = exported
    cut_backbone = build_backbone("whisper", None, config=TINY_WHISPER, num_layers=1)
    cut_backbone.load_state_dict(full_model.backbone.state_dict(), strict=False)
    cut = EmotionClassifier(cut_backbone, len(LABELS), (16, 8)).eval()
    path = export_onnx(
        cut, tiny_info(backbone="whisper:tiny-random", encoder_layers=1), tmp_path / "cut.onnx"
    )
    sessions = [ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]) for p in (full_path, path)]
    audio = ravdess_or_synthetic(3, 3.0)
    full, short = (s.run([POOLED_NAME], {INPUT_NAME: audio})[0] for s in sessions)
    assert full.shape[1] == 3 and short.shape[1] == 2
    assert np.abs(short - full[:, :2]).max() <= 1e-5
    assert (
        np.abs(full[:, 2] - short[:, 1]).max() > 1e-2
    )  # the full stack's last state differs: it is normalised
    info = ModelInfo.from_metadata(sessions[1].get_modelmeta().custom_metadata_map)
    assert info.encoder_layers == 1
