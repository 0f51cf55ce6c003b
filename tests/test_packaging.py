"""The install's shape: a runtime without torch, a shipped VAD model, a clear line when the default model
cannot be built in a runtime-only environment."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import emotion_monitor.realtime.model_store as rt_model_store
from emotion_monitor.realtime.errors import ModelError
from emotion_monitor.realtime.vad import SHIPPED_MODEL, SileroVAD, load_vad, silero_model_path

REPO = Path(__file__).resolve().parents[1]
TRAINING_OR_EXPORT_ONLY = (
    "torch",
    "transformers",
    "pytorch-lightning",
    "hydra-core",
    "onnx",
    "silero-vad",
    "matplotlib",
)


def _requirement_names(requirements: list[str]) -> set[str]:
    return {re.split(r"[<>=!~\[; ]", req, maxsplit=1)[0].lower() for req in requirements}


def test_base_dependencies_are_the_runtime_only():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    base = _requirement_names(project["dependencies"])
    assert base.isdisjoint(TRAINING_OR_EXPORT_ONLY), base & set(TRAINING_OR_EXPORT_ONLY)
    assert {"onnxruntime", "numpy", "soundfile", "sounddevice", "soxr", "tqdm"} <= base
    extras = project["optional-dependencies"]
    assert {"torch", "transformers", "pytorch-lightning", "hydra-core"} <= _requirement_names(extras["train"])
    assert {"torch", "onnx"} <= _requirement_names(extras["export"])
    # The speaker model (speaker turns) is built from Resemblyzer's weights: torch and onnx again, never at run time.
    assert {"resemblyzer", "torch", "onnx"} <= _requirement_names(extras["speakers"])
    assert any(req.endswith("[train,export,speakers]") for req in extras["dev"])


def test_shipped_silero_model_comes_first():
    assert SHIPPED_MODEL.is_file()
    assert silero_model_path() == SHIPPED_MODEL
    assert (SHIPPED_MODEL.parent / "silero_vad.LICENSE").read_text().startswith("MIT License")
    vad, notice = load_vad("auto")
    assert isinstance(vad, SileroVAD) and notice is None


def test_default_model_build_without_export_extra_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(rt_model_store, "EXPORT_MODULES", ("torch", "no_such_module_for_this_test"))
    monkeypatch.setattr(
        rt_model_store.subprocess, "Popen", lambda *a, **k: pytest.fail("the exporter was started")
    )
    with pytest.raises(ModelError) as err:
        rt_model_store.build_default_model(tmp_path / "default.onnx")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "no_such_module_for_this_test" in message and "[export]" in message and "--model" in message
    assert not (tmp_path / "default.onnx").exists()
