"""The install's shape: a runtime without torch, a shipped VAD model, a clear line when the default model
cannot be built in a runtime-only environment."""

from __future__ import annotations

import io
import re
from pathlib import Path

import pytest

import realtime.model as rt_model
from realtime.vad import SHIPPED_MODEL, SileroVAD, load_vad, silero_model_path

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
    assert any(req.endswith("[train,export]") for req in extras["dev"])


def test_shipped_silero_model_comes_first():
    assert SHIPPED_MODEL.is_file()
    assert silero_model_path() == SHIPPED_MODEL
    assert (SHIPPED_MODEL.parent / "silero_vad.LICENSE").read_text().startswith("MIT License")
    vad, notice = load_vad("auto")
    assert isinstance(vad, SileroVAD) and notice is None


def test_default_model_build_without_export_extra_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(rt_model, "EXPORT_MODULES", ("torch", "no_such_module_for_this_test"))
    monkeypatch.setattr(rt_model.subprocess, "run", lambda *a, **k: pytest.fail("the exporter was started"))
    with pytest.raises(rt_model.ModelError) as err:
        rt_model.build_default_model(tmp_path / "default.onnx")
    message = str(err.value)
    assert len(message.splitlines()) == 1
    assert "no_such_module_for_this_test" in message and "[export]" in message and "--model" in message
    assert not (tmp_path / "default.onnx").exists()


class _Terminal(io.StringIO):
    """A stderr that says it is a terminal, so progress bars draw into it."""

    def isatty(self) -> bool:
        return True


STAND_IN_EXPORTER = """
import shutil, sys, time
print("loading the bundled default model ...", flush=True)
time.sleep(1.5)
print("onnx.checker: ok", flush=True)
shutil.copy({model!r}, sys.argv[sys.argv.index("-o") + 1])
print("wrote it", flush=True)
"""


@pytest.mark.parametrize("terminal", [True, False], ids=["terminal", "pipe"])
def test_default_model_build_shows_its_steps_on_a_terminal_only(tiny_model, tmp_path, monkeypatch, terminal):
    """The exporter runs as a child; on a terminal its steps and the elapsed time are a progress bar, elsewhere
    only the start and end lines are printed."""
    monkeypatch.setattr(rt_model, "EXPORTER", ("-c", STAND_IN_EXPORTER.format(model=str(tiny_model))))
    log = _Terminal() if terminal else io.StringIO()
    built = rt_model.build_default_model(tmp_path / "cache" / "default.onnx", log=log)
    assert built.read_bytes() == tiny_model.read_bytes()
    assert not list(built.parent.glob("*.partial-*"))
    text = log.getvalue()
    first, *_, last = [line for line in re.split(r"[\r\n]", text) if line.strip()]
    assert first.startswith("building the default model once into") and last.startswith(
        "built the default model"
    )
    if terminal:
        assert "building the default model: " in text and "onnx.checker: ok" in text
        assert "00:01" in text  # the elapsed time moved on during the silent 1.5 s step
    else:
        assert text.count("\n") == 2 and "\r" not in text and "onnx.checker" not in text


def test_default_model_build_failure_names_the_exporters_last_line(tmp_path, monkeypatch):
    failing = "print('step one', flush=True); import sys; sys.exit('emotion-export: error: no weights')"
    monkeypatch.setattr(rt_model, "EXPORTER", ("-c", failing))
    with pytest.raises(
        rt_model.ModelError, match=r"\(emotion-export: error: no weights\); pass a model file"
    ):
        rt_model.build_default_model(tmp_path / "default.onnx", log=io.StringIO())
    assert not list(tmp_path.iterdir())
