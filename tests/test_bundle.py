"""The shipped heads: they load, fit the encoder, and the full model reproduces the bundle's own predictions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from emotion_monitor.core.emotions import EMOTIONS

BUNDLED = Path(__file__).resolve().parents[1] / "export" / "bundled"


@pytest.mark.slow
@pytest.mark.data
def test_default_model_on_raw_audio_reproduces_bundle_predictions(ravdess_16k):
    """Full model (installed encoder + shipped head) on raw audio through the shared preprocessing
    = the probabilities the head gave on cached features when the bundle was written."""
    from emotion_monitor.core.ct2 import MissingWeightsError
    from emotion_monitor.export.default_model import build_default_classifier
    from emotion_monitor.realtime.audio import PreprocessOptions, load_audio, prepare_clip, prepare_input

    if not (BUNDLED / "model.json").is_file():
        pytest.skip("no bundled model (emotion-train experiment=head task=bundle)")
    try:
        model, info = build_default_classifier()
    except MissingWeightsError as exc:
        pytest.skip(str(exc))
    assert info.labels == EMOTIONS and info.metrics
    options = PreprocessOptions.from_dict(info.preprocessing)
    refs = json.loads((BUNDLED / "model.json").read_text())["reference_predictions"]
    torch.set_num_threads(2)
    for ref in refs:
        audio = prepare_input(prepare_clip(load_audio(ravdess_16k / ref["file"]), options), options)
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(audio)[None]), -1)[0].numpy()
        np.testing.assert_allclose(probs, ref["probs"], atol=2e-3, err_msg=ref["file"])


def test_bundled_speaker_heads_load_and_model_json_reports_their_protocol():
    """The shipped speaker heads fit the model's sizes; model.json carries the protocol's figures for each corpus."""
    from emotion_monitor.export.default_model import build_speaker_heads

    heads = build_speaker_heads()
    assert set(heads) == {"running", "baseline"}
    for head in heads.values():
        probs = torch.softmax(head.classify_pooled(torch.randn(3, 7, 512)), -1)
        assert probs.shape == (3, len(EMOTIONS)) and not head.training
    info = json.loads((BUNDLED / "model.json").read_text())
    assert set(info["metrics"]) == {"ravdess", "crema-d", "ased", "nemo"}
    for corpus in info["metrics"].values():
        for level in ("clip", "clip_all"):  # the shipped recipe scores clips (the clip view: no live windows)
            mean, std = corpus[level]["accuracy"]
            assert 0.0 < mean <= 1.0 and std >= 0.0
    assert (
        set(info["speaker_norm"]["results"]) == set(info["speaker_norm"]["one_mood"]) == set(info["metrics"])
    )
    shipped = OmegaConf.load(BUNDLED.parents[1] / "configs" / "config.yaml").speaker_norm_centre
    assert info["speaker_norm"]["centre"] == shipped  # the recipe's speaker head, not another one
    assert info["speech_gate"]["min_speech_s"] > 0


def test_heads_are_stored_with_float16_matrices_and_run_in_float32(tmp_path):
    """Weight matrices go to disk as float16 (half the size), vectors stay float32; loading restores a float32
    head whose outputs are those of the original up to float16 rounding."""
    from safetensors.torch import load_file, save_file

    from emotion_monitor.core.bundle import head_state
    from emotion_monitor.core.model import EmotionClassifier, ShapeOnlyBackbone
    from emotion_monitor.export.default_model import _load_head

    torch.manual_seed(0)
    head = EmotionClassifier(ShapeOnlyBackbone(64, 2), len(EMOTIONS), layer_pooling="concat").eval()
    with torch.no_grad():
        head.input_norm.running_var.uniform_(0.5, 2.0)
    save_file(head_state(head), str(tmp_path / "h.safetensors"))
    stored = load_file(str(tmp_path / "h.safetensors"))
    assert stored["features.0.weight"].dtype == torch.float16 and stored["head.weight"].dtype == torch.float16
    assert (
        stored["input_norm.running_var"].dtype == torch.float32 and stored["head.bias"].dtype == torch.float32
    )
    loaded = _load_head(
        EmotionClassifier(ShapeOnlyBackbone(64, 2), len(EMOTIONS), layer_pooling="concat"),
        tmp_path / "h.safetensors",
    )
    assert all(p.dtype == torch.float32 for p in loaded.state_dict().values() if p.is_floating_point())
    x = torch.randn(16, 3, 64)
    with torch.no_grad():
        a, b = torch.softmax(head.classify_pooled(x), -1), torch.softmax(loaded.classify_pooled(x), -1)
    assert 0 < (a - b).abs().max() < 1e-3
    shipped = load_file(str(BUNDLED / "head.safetensors"))
    assert shipped["features.0.weight"].dtype == torch.float16


def test_another_installed_encoder_gives_a_features_only_model():
    """``emotion-export --encoder whisper-tiny.en``: all of that encoder's layers under an untrained head, named in
    the metadata (which keys the feature cache) and marked features-only."""
    from emotion_monitor.core.ct2 import MissingWeightsError
    from emotion_monitor.export.default_model import FEATURES_ONLY_PROTOCOL, build_default_classifier

    try:
        model, info = build_default_classifier(encoder="whisper-tiny.en")
    except MissingWeightsError as exc:
        pytest.skip(str(exc))
    assert info.backbone == "whisper-tiny.en:frozen+bundled-head"
    assert info.protocol == FEATURES_ONLY_PROTOCOL and info.metrics == {} and info.speaker_norm == {}
    assert info.encoder_layers == 4 and info.labels == EMOTIONS
    with torch.no_grad():
        pooled = model.pool(0.1 * torch.randn(2, 16_000))
    assert pooled.shape == (2, 5, 384)  # the embeddings and 4 layers, 384 wide


def test_speaker_head_graph_centres_in_the_speaker_subspace_as_training_did():
    """The exported speaker-normalised head (ONNX, run by the runtime with the speaker's running mean) subtracts
    exactly the centre training used: ``SpeakerSubspace.centre`` of that mean; the temperature divides its logits."""
    import onnxruntime as ort

    from emotion_monitor.core.bundle import with_temperature
    from emotion_monitor.core.feature_data import SpeakerSubspace
    from emotion_monitor.core.model import EmotionClassifier, ShapeOnlyBackbone
    from emotion_monitor.export.onnx_export import SubspaceCentre, speaker_norm_head_bytes

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    head = EmotionClassifier(ShapeOnlyBackbone(16, 2), len(EMOTIONS), layer_pooling="concat").eval()
    basis = np.linalg.qr(rng.standard_normal((3 * 16, 4)))[0].astype(np.float32)
    subspace = SpeakerSubspace(rng.standard_normal((3, 16)).astype(np.float32), basis)
    head.centre_map = SubspaceCentre(torch.from_numpy(subspace.mu), torch.from_numpy(subspace.basis))
    pooled = rng.standard_normal((5, 3, 16)).astype(np.float32)
    mean = rng.standard_normal((3, 16)).astype(np.float32)
    with torch.no_grad():
        expected = head.classify_pooled(torch.from_numpy(pooled - subspace.centre(mean[None])[0])).numpy()
    session = ort.InferenceSession(speaker_norm_head_bytes(head, 3, 16), providers=["CPUExecutionProvider"])
    logits = session.run(["logits"], {"pooled": pooled, "speaker_mean": mean})[0]
    np.testing.assert_allclose(logits, expected, atol=1e-4)
    with torch.no_grad():
        cooler = with_temperature(head, 2.0).classify_pooled(
            torch.from_numpy(pooled - subspace.centre(mean[None])[0])
        )
    np.testing.assert_allclose(cooler.numpy(), expected / 2.0, atol=1e-4)
