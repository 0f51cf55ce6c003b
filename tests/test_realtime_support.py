"""Shared pieces of the realtime tests (a tiny exported model, CLI runner) and the model-wrapper unit tests.

The tiny model is a randomly initialised 2-layer wav2vec2 exported with ``export.onnx_export``: its estimates
mean nothing, but every tensor, metadata field and code path is the real one. Building it needs torch (tests
may); the runtime code under test never imports torch.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from realtime import model as rt_model
from realtime.audio import AudioError
from realtime.model import CPU, CUDA, ModelError, ModelOptions, check_active_providers, select_providers

REPO_ROOT = Path(__file__).resolve().parents[1]
LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
TINY_WINDOW_S = 2.0
TINY_HOP_S = 0.5
CLI_TIMEOUT_S = 60
ANGRY_CLIP = "Actor_01/03-01-05-02-01-01-01.flac"


def tiny_speaker_norm_head(seed: int = 1):
    """A random head-only classifier with the tiny model's sizes (3 hidden states of 32), in eval mode."""
    import torch

    from core.model import EmotionClassifier, ShapeOnlyBackbone

    torch.manual_seed(seed)
    head = EmotionClassifier(ShapeOnlyBackbone(32, 2), len(LABELS))
    with torch.no_grad():  # non-trivial BatchNorm statistics, so a wrong centring shows in the output
        for bn in (m for m in head.modules() if isinstance(m, torch.nn.BatchNorm1d)):
            bn.running_mean.normal_(0, 0.1)
            bn.running_var.uniform_(0.5, 1.5)
    return head.eval()


def build_tiny_model(path: Path, speaker_norm: bool = True) -> Path:
    """Export a random tiny wav2vec2 classifier with RAVDESS labels (about 15 s on 2 cores), with random
    speaker heads (running and baseline) in its metadata unless ``speaker_norm`` is False."""
    import torch

    from core.backbones import build_backbone
    from core.model import EmotionClassifier
    from export.onnx_export import export_onnx
    from realtime.metadata import ModelInfo

    torch.manual_seed(0)
    config = dict(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 4),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
    )
    model = EmotionClassifier(build_backbone("wav2vec2", None, config=config), len(LABELS)).eval()
    info = ModelInfo(labels=LABELS, window_s=TINY_WINDOW_S, hop_s=TINY_HOP_S, backbone="tiny-random-wav2vec2")
    heads = (
        {"running": tiny_speaker_norm_head(1), "baseline": tiny_speaker_norm_head(2)} if speaker_norm else {}
    )
    return export_onnx(model, info, path, speaker_heads=heads)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """Path of the tiny model, built once per session even when several test modules import this fixture."""
    path = tmp_path_factory.getbasetemp() / "tiny-emotion.onnx"
    if not path.is_file():
        build_tiny_model(path)
    return path


def run_cli(module: str, *args: str, env: dict | None = None, timeout: float = CLI_TIMEOUT_S, **kwargs):
    """Run ``python -m realtime.<module> ARGS`` like a user would; returns the CompletedProcess (text)."""
    return subprocess.run(
        [sys.executable, "-m", f"realtime.{module}", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO_ROOT,
        env=env or dict(os.environ),
        **kwargs,
    )


# -- provider selection --------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("requested", "available", "expected"),
    [
        ("auto", [CPU], [CPU]),
        ("auto", ["AzureExecutionProvider", CPU], [CPU]),
        ("auto", [CUDA, CPU], [CUDA, CPU]),
        ("cpu", [CUDA, CPU], [CPU]),
        ("cuda", [CUDA, CPU], [CUDA, CPU]),
    ],
)
def test_select_providers(requested, available, expected):
    assert select_providers(requested, available) == expected


def test_cuda_requested_but_unavailable_is_a_clear_error():
    with pytest.raises(ModelError, match="--provider cuda.*no CUDA.*onnxruntime-gpu"):
        select_providers("cuda", [CPU])


def test_cuda_that_fails_to_start_errors_when_explicit_and_falls_back_when_auto():
    with pytest.raises(ModelError, match="could not be initialised"):
        check_active_providers("cuda", [CUDA, CPU], [CPU])
    assert "running on CPU" in check_active_providers("auto", [CUDA, CPU], [CPU])
    assert check_active_providers("auto", [CUDA, CPU], [CUDA, CPU]) is None
    assert check_active_providers("cpu", [CPU], [CPU]) is None


def test_session_reports_the_provider_that_really_runs(tiny_model):
    model = rt_model.EmotionModel(tiny_model, ModelOptions(provider="cpu", intra_op_threads=1))
    assert model.providers == [CPU]
    assert model.device == "cpu"
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert model.session.get_session_options().inter_op_num_threads == 1


# -- default model resolution --------------------------------------------------------------------------------
def test_default_model_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv(rt_model.MODEL_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = rt_model.default_model_path()
    assert path.parent == tmp_path / "speech-emotion-monitor"
    assert path.name == f"default-{rt_model.package_version()}-{rt_model.bundle_fingerprint()}.onnx"
    assert len(rt_model.bundle_fingerprint()) == 12  # the head files are found without importing export
    monkeypatch.setenv(rt_model.MODEL_ENV, str(tmp_path / "mine.onnx"))
    assert rt_model.default_model_path() == tmp_path / "mine.onnx"
    with pytest.raises(ModelError, match="mine.onnx: model file not found"):
        rt_model.resolve_model_path()


def test_default_model_is_built_once_with_a_notice(monkeypatch, tmp_path, tiny_model, capsys):
    monkeypatch.delenv(rt_model.MODEL_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    calls = []

    def fake_export(cmd, **kwargs):
        calls.append(cmd)
        assert cmd[:4] == [sys.executable, "-m", "export", "-o"]
        Path(cmd[4]).write_bytes(tiny_model.read_bytes())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(rt_model.subprocess, "run", fake_export)
    first = rt_model.resolve_model_path()
    second = rt_model.resolve_model_path()
    assert first == second == rt_model.default_model_path() and first.is_file()
    assert len(calls) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err[0] == f"building the default model once into {first} ..."
    assert len(err) == 2 and err[1].startswith("built the default model in ")  # a start line and an end line
    assert f"delete {first.parent} to rebuild or free the space" in err[1]


def test_failed_default_build_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.delenv(rt_model.MODEL_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    failing = subprocess.CompletedProcess([], 1, "", "Traceback...\nexport: error: no weights found\n")
    monkeypatch.setattr(rt_model.subprocess, "run", lambda cmd, **kw: failing)
    with pytest.raises(ModelError) as info:
        rt_model.resolve_model_path()
    assert "\n" not in str(info.value)
    assert "no weights found" in str(info.value) and "--model" in str(info.value)
    assert not list(tmp_path.rglob("*.onnx")), "a failed build must not leave a model file behind"


# -- Python API ----------------------------------------------------------------------------------------------
def test_python_api_predicts_arrays_and_files(tiny_model, ravdess_48k):
    from realtime import load_model

    assert load_model is rt_model.load_model  # the package-level API
    model = load_model(tiny_model)
    assert model.labels == LABELS and model.window_s == TINY_WINDOW_S
    stereo_48k = next(p for p in sorted(ravdess_48k.glob("*.wav")) if _channels(p) == 2)
    result = model.predict_file(stereo_48k)
    assert result.label in LABELS
    assert abs(sum(result.probs.values()) - 1.0) < 1e-4
    assert result.confidence == max(result.probs.values())
    assert result.windows == 1  # trimmed, this clip fits in the 2 s window: scored as one input

    import soundfile as sf

    samples, rate = sf.read(stereo_48k, dtype="float32")
    from_array = model.predict_array(samples, rate)
    assert from_array.probs == pytest.approx(result.probs, abs=1e-6)
    # Longer than the window: the mean over full windows laid end to end (weighted by their seconds of audio).
    twice = model.predict_array(np.concatenate([samples, samples]), rate)
    assert twice.windows > 1 and abs(sum(twice.probs.values()) - 1.0) < 1e-4
    with pytest.raises(AudioError, match="silent"):
        model.predict_array(np.zeros(16_000, np.float32), 16_000)


def test_clip_scoring_windows_cover_the_clip(tiny_model):
    model = rt_model.load_model(tiny_model)
    window = int(TINY_WINDOW_S * 16_000)
    assert model.clip_bounds(window) == [(0, window)]  # fits: one input, the whole clip
    bounds = model.clip_bounds(window + 12_345)  # longer: as few full windows as cover it
    assert bounds == [(0, window), (12_345, window + 12_345)]


def _channels(path: Path) -> int:
    import soundfile as sf

    return sf.info(str(path)).channels


def test_windows_are_trimmed_of_edge_silence_before_inference(tiny_model, ravdess_16k, monkeypatch):
    from realtime.audio import load_audio, prepare_clip

    model = rt_model.load_model(tiny_model)
    speech = prepare_clip(load_audio(ravdess_16k / ANGRY_CLIP), model.preprocess)[: 2 * model.sample_rate]
    window = np.concatenate([np.zeros(model.sample_rate, np.float32), speech])  # 1 s pause, then speech
    seen = []
    run = model._run
    monkeypatch.setattr(model, "_run", lambda x, *rest: seen.append(x.shape) or run(x, *rest))
    probs = model.predict_windows([window, speech])
    # The pause is cut (up to the 0.1 s margin the trimmer keeps), so both inputs are nearly the same audio.
    assert len(speech) <= seen[0][1] <= len(speech) + 0.15 * model.sample_rate
    assert np.abs(probs[0] - probs[1]).max() < 0.05


def test_retrained_head_gets_a_new_default_model_name(monkeypatch, tmp_path):
    import importlib.util
    from types import SimpleNamespace

    bundled = tmp_path / "export" / "bundled"
    bundled.mkdir(parents=True)
    for name in rt_model.BUNDLE_FILES:
        (bundled / name).write_bytes(f"{name} v1".encode())
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path / "export")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake)
    seen = {rt_model.bundle_fingerprint()}
    for name in rt_model.BUNDLE_FILES:  # any shipped file retrained: a new name
        (bundled / name).write_bytes(f"{name} v2".encode())
        seen.add(rt_model.bundle_fingerprint())
    assert len(seen) == len(rt_model.BUNDLE_FILES) + 1 and "none" not in seen
    (bundled / "head.safetensors").unlink()
    assert rt_model.bundle_fingerprint() == "none"
