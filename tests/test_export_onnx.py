"""``emotion_monitor.export.onnx_export``: a tiny random wav2vec2 classifier exported and run in ONNX Runtime."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch
from support import LABELS, tiny_classifier, tiny_info

from emotion_monitor.export.onnx_export import ExportError, export_onnx
from emotion_monitor.realtime.metadata import (
    INPUT_NAME,
    LOGITS_NAME,
    POOLED_NAME,
    PROBS_NAME,
    SPEAKER_NORM_HEAD_KEY,
    ModelInfo,
)


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = tiny_classifier(perturb=True)
    path = export_onnx(
        model, tiny_info(metrics={"accuracy": 0.5}), tmp_path_factory.mktemp("onnx") / "m.onnx"
    )
    return model, path


def _torch_probs(model, audio: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(audio)), dim=-1).numpy()


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("seconds", [0.5, 1.3, 3.0, 10.0])
def test_dynamic_length_and_batch_match_pytorch(exported, batch, seconds):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(int(seconds * 10) + batch)
    audio = (0.1 * rng.standard_normal((batch, int(seconds * 16_000)))).astype(np.float32)
    logits, probs = session.run([LOGITS_NAME, PROBS_NAME], {INPUT_NAME: audio})
    assert logits.shape == probs.shape == (batch, len(LABELS))
    assert np.abs(probs - _torch_probs(model, audio)).max() <= 1e-4
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_metadata_round_trip(exported):
    _, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    info = ModelInfo.from_metadata(session.get_modelmeta().custom_metadata_map)
    assert info.labels == LABELS
    assert info.sample_rate == 16_000 and info.window_s == 3.0 and info.hop_s == 0.5
    assert info.metrics == {"accuracy": 0.5} and info.protocol == "test"
    assert info.export_version  # filled from the installed package version
    assert [i.name for i in session.get_inputs()] == [INPUT_NAME]
    assert [o.name for o in session.get_outputs()] == [LOGITS_NAME, PROBS_NAME, POOLED_NAME]
    assert SPEAKER_NORM_HEAD_KEY not in session.get_modelmeta().custom_metadata_map  # none was given


def test_export_leaves_model_in_eval_mode(exported):
    model, _ = exported
    assert not any(m.training for m in model.modules())


def test_label_count_mismatch_is_refused(tmp_path):
    path = tmp_path / "bad.onnx"
    with pytest.raises(ExportError, match="labels"):
        export_onnx(tiny_classifier(perturb=True), tiny_info(labels=("a", "b")), path)
    assert not path.exists()


def test_pooled_output_matches_pytorch(exported):
    model, path = exported
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    audio = (0.1 * np.random.default_rng(1).standard_normal((2, 24_000))).astype(np.float32)
    (pooled,) = session.run([POOLED_NAME], {INPUT_NAME: audio})
    with torch.no_grad():
        want = model.pool(torch.from_numpy(audio)).numpy()
    assert pooled.shape == (2, model.backbone.num_layers + 1, model.backbone.hidden_size)
    np.testing.assert_allclose(pooled, want, atol=1e-4)


def test_speaker_norm_head_travels_in_the_metadata_and_matches_pytorch(tmp_path):
    """The head graph in the metadata = PyTorch on the runtime's path; a different head is caught."""
    from emotion_monitor.export import validate

    model = tiny_classifier(perturb=True)
    head = tiny_classifier(perturb=True, seed=3)  # only its head part (classify_pooled) is used
    info = tiny_info()
    path = export_onnx(model, info, tmp_path / "norm.onnx", speaker_heads={"running": head})
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert SPEAKER_NORM_HEAD_KEY in session.get_modelmeta().custom_metadata_map
    audio = validate.load_validation_audio(info, 6, log=lambda _: None)
    assert validate.check_speaker_norm_parity(model, head, path, info, audio) < 1e-4
    with pytest.raises(validate.ValidationError, match="running speaker head: ONNX Runtime disagrees"):
        validate.check_speaker_norm_parity(model, tiny_classifier(perturb=True, seed=4), path, info, audio)
    with pytest.raises(validate.ValidationError, match="no baseline speaker head"):
        validate.check_speaker_norm_parity(model, head, path, info, audio, "baseline")
