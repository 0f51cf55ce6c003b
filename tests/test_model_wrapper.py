"""The model wrapper's unit tests: providers, sessions, the default model's build, the Python API."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import ANGRY_CLIP, LABELS, TINY_WINDOW_S, data_dir

from emotion_monitor.realtime import model as rt_model
from emotion_monitor.realtime import model_store, providers
from emotion_monitor.realtime.analysis import clip_bounds
from emotion_monitor.realtime.audio import AudioError
from emotion_monitor.realtime.errors import ModelError
from emotion_monitor.realtime.model import ModelOptions
from emotion_monitor.realtime.providers import CPU, CUDA, select_providers


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
    with pytest.raises(ModelError, match="--provider cuda: .*without CUDA.*gpu_install"):
        select_providers("cuda", [CPU])


def test_cuda_that_does_not_start_errors_when_explicit_and_falls_back_when_auto(tiny_model, monkeypatch):
    """A real session asked for CUDA that does not come up (this CPU build lacks the CUDA provider library):
    ``cuda`` is one ModelError line naming why, ``auto`` runs on the CPU and says why."""
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CUDA, CPU])
    with pytest.raises(
        ModelError, match=r"^--provider cuda: libonnxruntime_providers_cuda.so is not installed"
    ):
        providers.start_session(tiny_model, "cuda", 1)
    started = providers.start_session(tiny_model, "auto", 1)
    assert started.session.get_providers() == [CPU]
    assert started.cuda_skipped == "libonnxruntime_providers_cuda.so is not installed"
    assert started.notice.startswith("notice: CUDA not used: libonnxruntime_providers_cuda.so")
    model = rt_model.EmotionModel(tiny_model, ModelOptions(provider="auto", intra_op_threads=1))
    assert (model.device, model.batch_size) == ("cpu", providers.CPU_BATCH_WINDOWS)


def test_a_bad_file_is_a_bad_file_not_a_cuda_problem(tmp_path, monkeypatch):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    monkeypatch.setattr(providers.ort, "get_available_providers", lambda: [CUDA, CPU])
    for requested in ("auto", "cuda"):
        with pytest.raises(ModelError, match=r"bad.onnx: cannot load model \("):
            providers.start_session(bad, requested, 1)


def test_auto_on_a_plain_cpu_install_has_nothing_to_explain(tiny_model):
    started = providers.start_session(tiny_model, "auto", 1)
    assert (started.session.get_providers(), started.cuda_skipped, started.notice) == ([CPU], None, None)


def test_two_onnxruntime_distributions_are_named(tiny_model, tmp_path, monkeypatch):
    """onnxruntime-gpu installed beside onnxruntime (the old ``[gpu]`` extra): the CPU build wrote the module
    last, and both ``cuda`` and ``auto`` say so instead of a bare 'no CUDA'."""
    info = tmp_path / "onnxruntime_gpu-1.31.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: onnxruntime-gpu\nVersion: 1.31.1\n")
    (info / "RECORD").write_text("onnxruntime/__init__.py,,\nonnxruntime_gpu-1.31.1.dist-info/RECORD,,\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    dists = providers.onnxruntime_distributions()
    assert "onnxruntime-gpu 1.31.1" in dists and any(d.startswith("onnxruntime ") for d in dists)
    with pytest.raises(ModelError, match="2 onnxruntime distributions share one module"):
        select_providers("cuda", [CPU])
    started = providers.start_session(tiny_model, "auto", 1)
    assert started.session.get_providers() == [CPU]
    assert "2 onnxruntime distributions share one module (onnxruntime " in started.notice


def test_batch_size_rule():
    assert (
        providers.default_batch_windows("cuda") == providers.CUDA_BATCH_WINDOWS > providers.CPU_BATCH_WINDOWS
    )
    assert providers.default_batch_windows("cpu") == providers.CPU_BATCH_WINDOWS


def test_session_reports_the_provider_that_really_runs(tiny_model):
    model = rt_model.EmotionModel(tiny_model, ModelOptions(provider="cpu", intra_op_threads=1))
    assert model.providers == [CPU]
    assert model.device == "cpu"
    assert model.session.get_session_options().intra_op_num_threads == 1
    assert model.session.get_session_options().inter_op_num_threads == 1


# -- default model resolution --------------------------------------------------------------------------------
def test_default_model_path_honours_env(monkeypatch, tmp_path):
    monkeypatch.delenv(model_store.MODEL_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = model_store.default_model_path()
    assert path.parent == tmp_path / "speech-emotion-monitor"
    assert path.name == f"default-{model_store.package_version()}-{model_store.bundle_fingerprint()}.onnx"
    assert len(model_store.bundle_fingerprint()) == 12  # the head files are found without importing export
    monkeypatch.setenv(model_store.MODEL_ENV, str(tmp_path / "mine.onnx"))
    assert model_store.default_model_path() == tmp_path / "mine.onnx"
    with pytest.raises(ModelError, match="mine.onnx: model file not found"):
        model_store.resolve_model_path()


class Terminal(io.StringIO):
    """A stderr that says it is a terminal, so progress bars draw into it."""

    def isatty(self) -> bool:
        return True


STAND_IN_EXPORTER = """
import shutil, sys, time
with open({calls!r}, "a") as calls:
    calls.write(" ".join(sys.argv[1:]) + "\\n")
print("loading the bundled default model ...", flush=True)
time.sleep(1.5)
print("onnx.checker: ok", flush=True)
shutil.copy({model!r}, sys.argv[sys.argv.index("-o") + 1])
print("wrote it", flush=True)
"""
"""Run as ``python -c`` in place of ``python -m export``: prints steps, writes the tiny model to ``-o``."""


def _stand_in_exporter(monkeypatch, tmp_path, tiny_model) -> Path:
    """Build the default model with ``STAND_IN_EXPORTER`` (a real child process); returns its log of calls."""
    calls = tmp_path / "calls.txt"
    code = STAND_IN_EXPORTER.format(calls=str(calls), model=str(tiny_model))
    monkeypatch.setattr(model_store, "EXPORTER", ("-c", code))
    monkeypatch.delenv(model_store.MODEL_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return calls


def test_default_model_is_built_once_with_a_notice(monkeypatch, tmp_path, tiny_model, capsys):
    calls = _stand_in_exporter(monkeypatch, tmp_path, tiny_model)
    first = model_store.resolve_model_path()
    second = model_store.resolve_model_path()
    assert (
        first == second == model_store.default_model_path() and first.read_bytes() == tiny_model.read_bytes()
    )
    assert calls.read_text().splitlines() == [f"-o {first.with_name(first.stem)}.partial-{os.getpid()}.onnx"]
    assert not list(first.parent.glob("*.partial-*"))
    err = capsys.readouterr().err  # not a terminal: no bar, no steps
    lines = err.strip().splitlines()
    assert lines[0] == f"building the default model once into {first} ..."
    assert len(lines) == 2 and lines[1].startswith("built the default model in ")  # a start and an end line
    assert f"delete {first.parent} to rebuild or free the space" in lines[1]
    assert "\r" not in err and "onnx.checker" not in err


def test_default_model_build_shows_its_steps_on_a_terminal(monkeypatch, tmp_path, tiny_model):
    _stand_in_exporter(monkeypatch, tmp_path, tiny_model)
    terminal = Terminal()
    built = model_store.build_default_model(model_store.default_model_path(), log=terminal)
    assert built.is_file()
    text = terminal.getvalue()
    lines = [line for line in re.split(r"[\r\n]", text) if line.strip()]
    assert lines[0].startswith("building the default model once") and lines[-1].startswith(
        "built the default"
    )
    assert "building the default model: " in text and "onnx.checker: ok" in text  # the bar names each step
    assert "00:01" in text  # and its elapsed time moves on during the silent 1.5 s step


def test_failed_default_build_is_one_clear_line(monkeypatch, tmp_path):
    monkeypatch.delenv(model_store.MODEL_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    failing = "print('Traceback...', flush=True); import sys; sys.exit('export: error: no weights found')"
    monkeypatch.setattr(model_store, "EXPORTER", ("-c", failing))
    with pytest.raises(ModelError) as info:
        model_store.resolve_model_path()
    assert "\n" not in str(info.value)
    assert "(export: error: no weights found)" in str(info.value) and "--model" in str(info.value)
    assert not list(tmp_path.rglob("*.onnx")), "a failed build must not leave a model file behind"


# -- Python API ----------------------------------------------------------------------------------------------
def test_python_api_predicts_arrays_and_files(tiny_model, ravdess_48k):
    from emotion_monitor.realtime import load_model

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
    assert clip_bounds(model, window) == [(0, window)]  # fits: one input, the whole clip
    bounds = clip_bounds(model, window + 12_345)  # longer: as few full windows as cover it
    assert bounds == [(0, window), (12_345, window + 12_345)]


def _channels(path: Path) -> int:
    import soundfile as sf

    return sf.info(str(path)).channels


def test_windows_are_trimmed_of_edge_silence_before_inference(tiny_model, ravdess_16k, monkeypatch):
    from emotion_monitor.realtime.audio import load_audio, prepare_clip

    model = rt_model.load_model(tiny_model)
    speech = prepare_clip(load_audio(ravdess_16k / ANGRY_CLIP), model.preprocess)[: 2 * model.sample_rate]
    window = np.concatenate([np.zeros(model.sample_rate, np.float32), speech])  # 1 s pause, then speech
    seen = []
    run = model._run
    monkeypatch.setattr(model, "_run", lambda x, *rest: seen.append(x.shape) or run(x, *rest))
    probs = model.score_windows([window, speech]).probs
    # The pause is cut (up to the 0.1 s margin the trimmer keeps), so both inputs are nearly the same audio.
    assert len(speech) <= seen[0][1] <= len(speech) + 0.15 * model.sample_rate
    assert np.abs(probs[0] - probs[1]).max() < 0.05


def test_retrained_head_gets_a_new_default_model_name(monkeypatch, tmp_path):
    import importlib.util
    from types import SimpleNamespace

    bundled = tmp_path / "export" / "bundled"
    bundled.mkdir(parents=True)
    files = model_store.BUNDLE_FILES + model_store.OPTIONAL_BUNDLE_FILES
    for name in files:
        (bundled / name).write_bytes(f"{name} v1".encode())
    fake = SimpleNamespace(submodule_search_locations=[str(tmp_path / "export")])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: fake)
    seen = {model_store.bundle_fingerprint()}
    for name in files:  # any shipped file retrained: a new name
        (bundled / name).write_bytes(f"{name} v2".encode())
        seen.add(model_store.bundle_fingerprint())
    assert len(seen) == len(files) + 1 and "none" not in seen
    (bundled / model_store.OPTIONAL_BUNDLE_FILES[0]).unlink()  # a recipe without it: a name of its own
    assert model_store.bundle_fingerprint() not in seen | {"none"}
    (bundled / "head.safetensors").unlink()
    assert model_store.bundle_fingerprint() == "none"


def test_a_new_default_model_removes_the_stale_ones_beside_it(tmp_path):
    """A rebuilt default model (new package version or new heads) deletes the older default models it replaces,
    and nothing else: not a build in progress, not a model of the user's."""
    names = ["default-0.1.0-aaaaaaaaaaaa.onnx", "default-0.1.0-bbbbbbbbbbbb.onnx", "mine.onnx"]
    names += ["default-0.1.0-cccccccccccc.partial-123.onnx"]
    for name in names:
        (tmp_path / name).write_bytes(b"x")
    current = tmp_path / "default-0.1.0-bbbbbbbbbbbb.onnx"
    removed = model_store.remove_stale_defaults(current)
    assert [p.name for p in removed] == ["default-0.1.0-aaaaaaaaaaaa.onnx"]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(names[1:])


def test_installed_command_builds_the_default_model_from_any_directory(tmp_path):
    """The first run as a new user meets it: the installed ``emotion-score`` in an empty directory with an empty
    cache builds the default model (the real exporter in a child process) and scores the clip."""
    clip = data_dir() / "ravdess-16k" / ANGRY_CLIP
    if not clip.is_file():
        pytest.skip(f"{clip} not found (set EMOTION_DATA_DIR to the corpora folder)")
    workdir, home = tmp_path / "anywhere", tmp_path / "home"
    workdir.mkdir()
    home.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in (model_store.MODEL_ENV, "PYTHONPATH")}
    env.update(HOME=str(home), XDG_CACHE_HOME=str(home / ".cache"))
    command = Path(sys.executable).with_name("emotion-score")
    done = subprocess.run(
        [str(command), str(clip)], cwd=workdir, env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    built = list((home / ".cache" / model_store.DIST_NAME).glob(f"{model_store.DEFAULT_PREFIX}*.onnx"))
    assert len(built) == 1, done.stderr
    row = done.stdout.splitlines()[1].split()
    assert row[0] == str(clip) and row[1] == "angry", done.stdout
