"""Whisper backbone with random tiny weights: log-mel vs a numpy reference, stock-encoder equivalence, ONNX."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from support import synthetic_speechlike
from transformers import WhisperConfig, WhisperFeatureExtractor
from transformers.models.whisper.modeling_whisper import WhisperEncoder

from emotion_monitor.core.backbones import build_backbone
from emotion_monitor.core.model import EmotionClassifier, build_classifier
from emotion_monitor.core.whisper import LogMel, encoder_frames

TINY = dict(
    vocab_size=60,
    num_mel_bins=80,
    d_model=16,
    encoder_layers=2,
    decoder_layers=1,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_source_positions=1500,
    max_target_positions=8,
    pad_token_id=1,
    bos_token_id=2,
    eos_token_id=2,
    decoder_start_token_id=3,
)


def reference_log_mel(audio: np.ndarray, filters: np.ndarray) -> np.ndarray:
    """Whisper's log-mel in float64 numpy: centred (reflect) STFT, periodic Hann 400, hop 160, power,
    last frame dropped, mel filters ``[201, 80]``, log10 clamped at 1e-10 and at max - 8, then (x + 4) / 4."""
    n_fft, hop = 400, 160
    padded = np.pad(audio.astype(np.float64), n_fft // 2, mode="reflect")
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n_fft) / n_fft)
    count = 1 + (len(padded) - n_fft) // hop
    frames = np.stack([padded[i * hop : i * hop + n_fft] * window for i in range(count)])
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    mel = filters.T @ power[:-1].T
    log_spec = np.log10(np.maximum(mel, 1e-10))
    log_spec = np.maximum(log_spec, log_spec.max() - 8.0)
    return (log_spec + 4.0) / 4.0


@pytest.mark.parametrize("seconds", [0.5, 2.37, 3.0])
def test_log_mel_matches_numpy_reference_and_feature_extractor(seconds):
    audio = synthetic_speechlike(seconds, seed=1)
    extractor = WhisperFeatureExtractor()  # mel filters are computed locally, nothing is downloaded
    reference = reference_log_mel(audio, extractor.mel_filters)
    ours = LogMel()(torch.from_numpy(audio)[None])[0].double().numpy()
    assert ours.shape == reference.shape == (80, len(audio) // 160)
    np.testing.assert_allclose(ours, reference, atol=2e-4)
    stock = extractor(audio, sampling_rate=16_000, padding=False, return_tensors="np").input_features[0]
    np.testing.assert_allclose(ours, stock, atol=2e-4)


def tiny_backbone(seed: int = 0):
    torch.manual_seed(seed)
    return build_backbone(kind="whisper", config=TINY).eval()


def test_hidden_states_shapes_and_frame_mask():
    backbone = tiny_backbone()
    audio = torch.from_numpy(synthetic_speechlike(1.0))[None].repeat(2, 1)
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[1, 8000:] = 0
    states, frame_mask = backbone(audio, mask)
    assert len(states) == TINY["encoder_layers"] + 1
    assert all(s.shape == (2, 50, 16) for s in states)
    assert frame_mask.sum(-1).tolist() == [50, 25]
    assert encoder_frames(torch.tensor([16000, 8000, 400, 16159])).tolist() == [50, 25, 1, 50]


def test_padding_is_masked_out_of_attention():
    """Frames well inside the valid part do not change when the padding content changes."""
    backbone = tiny_backbone()
    audio = torch.from_numpy(synthetic_speechlike(1.0))[None]
    mask = torch.ones_like(audio, dtype=torch.long)
    mask[:, 8000:] = 0
    quiet, noisy = audio.clone(), audio.clone()
    quiet[:, 8000:] = 0
    noisy[:, 8000:] = 0.01 * torch.randn(8000)
    with torch.no_grad():
        a, _ = backbone(quiet, mask)
        b, _ = backbone(noisy, mask)
    # The last few valid frames see the padding through the STFT and conv receptive fields.
    torch.testing.assert_close(a[-1][:, :20], b[-1][:, :20], atol=1e-4, rtol=1e-4)


def test_matches_stock_encoder_on_30_seconds():
    """On a full 30 s input the position-table slice is the whole table: identical to transformers."""
    backbone = tiny_backbone()
    audio = torch.zeros(1, 480_000)
    audio[0, :32_000] = torch.from_numpy(synthetic_speechlike(2.0))
    stock = WhisperEncoder(backbone.encoder.config).eval()
    stock.load_state_dict(backbone.encoder.state_dict())
    with torch.no_grad():
        ours, _ = backbone(audio)
        ref = stock(backbone.log_mel(audio), output_hidden_states=True).hidden_states
    assert len(ours) == len(ref)
    for a, b in zip(ours, ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_spec_round_trip_through_build_classifier():
    model = EmotionClassifier(tiny_backbone(), num_classes=8)
    rebuilt = build_classifier(model.spec())
    rebuilt.load_state_dict(model.state_dict())
    model.eval(), rebuilt.eval()
    audio = torch.from_numpy(synthetic_speechlike(1.5))[None]
    with torch.no_grad():
        torch.testing.assert_close(model(audio), rebuilt(audio))


class _Pooled(torch.nn.Module):
    """Export wrapper: raw audio → per-layer pooled states (what the classifier consumes)."""

    def __init__(self, backbone):
        super().__init__()
        self.model = EmotionClassifier(backbone, num_classes=8).eval()

    def forward(self, audio):
        return self.model.pool(audio)


def test_onnx_export_with_dynamic_length(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    wrapper = _Pooled(tiny_backbone()).eval()
    path = tmp_path / "whisper_tiny.onnx"
    example = torch.from_numpy(synthetic_speechlike(2.0))[None]
    torch.onnx.export(
        wrapper,
        (example,),
        str(path),
        input_names=["input_values"],
        output_names=["pooled"],
        dynamic_axes={"input_values": {0: "batch", 1: "samples"}},
        opset_version=17,
        dynamo=False,
    )
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for seconds in (1.3, 3.0):
        audio = synthetic_speechlike(seconds, seed=2)[None]
        got = session.run(None, {"input_values": audio})[0]
        with torch.no_grad():
            want = wrapper(torch.from_numpy(audio)).numpy()
        np.testing.assert_allclose(got, want, atol=1e-4, rtol=1e-3)


def test_config_gives_random_weights_without_loading(monkeypatch):
    from emotion_monitor.core import ct2

    def forbidden(*_, **__):
        raise AssertionError("must not load packaged weights when a config is given")

    monkeypatch.setattr(ct2, "load_whisper_encoder", forbidden)
    backbone = build_backbone(kind="whisper", config=TINY)
    assert backbone.hidden_size == 16 and backbone.num_layers == 2
    assert len(backbone.transformer_layers()) == 2
    assert (
        WhisperConfig(**{k: v for k, v in backbone.spec()["config"].items() if k != "model_type"}).d_model
        == 16
    )


def test_truncated_encoder_returns_the_full_encoders_first_states():
    """A head trained on ``pooled[:, :k+1]`` of the full encoder's cached features runs on the cut encoder: its
    states are the full encoder's raw layer outputs (no final LayerNorm), while the full encoder's last state
    is normalised and differs from that layer's raw output."""
    full = tiny_backbone()
    cut = build_backbone(kind="whisper", config=TINY, num_layers=1).eval()
    cut.load_state_dict(full.state_dict(), strict=False)
    assert cut.num_layers == 1 and len(cut.transformer_layers()) == 1
    audio = torch.from_numpy(synthetic_speechlike(1.5, seed=4))[None]
    with torch.no_grad():
        full_states, _ = full(audio)
        cut_states, _ = cut(audio)
        raw_last = full.encoder.layers[1](full_states[1], None)
    assert len(cut_states) == 2
    for a, b in zip(cut_states, full_states[:2], strict=False):
        torch.testing.assert_close(a, b)
    raw_last = raw_last[0] if isinstance(raw_last, tuple) else raw_last
    assert not torch.allclose(
        raw_last, full_states[2], atol=1e-3
    )  # the full stack's last state is normalised
    rebuilt = build_classifier(EmotionClassifier(cut, num_classes=8).spec())
    assert rebuilt.backbone.num_layers == 1 and not rebuilt.backbone.full_depth
    with pytest.raises(ValueError, match="num_layers must be in 1..2"):
        build_backbone(kind="whisper", config=TINY, num_layers=3)
