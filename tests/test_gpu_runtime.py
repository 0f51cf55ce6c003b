"""The GPU runtime as docs/gpu.md installs it (``pip install .`` then ``python -m
emotion_monitor.realtime.gpu_install``), and what it does on a machine without a GPU: ``--provider cuda`` ends in
one line (exit 2), ``--provider auto`` runs on the CPU and says why.

The slow tests build one real venv from PyPI (about 2 minutes on 2 busy cores, 260 MB of onnxruntime-gpu from
pip's cache after the first run); the fast ones check the install command itself in this venv.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import soundfile as sf
from support import REPO_ROOT, run_cli, synthetic_speechlike

from emotion_monitor.realtime import gpu_install

PIP_TIMEOUT_S = 900
CHECK_RUNTIME = """
import importlib.metadata as md, json, onnxruntime as ort
dists = [f"{d.metadata['Name']} {d.version}" for d in md.distributions()
         if any(str(f) == "onnxruntime/__init__.py" for f in d.files or ())]
print(json.dumps({"providers": ort.get_available_providers(), "dists": sorted(dists), "file": ort.__file__}))
"""


# -- the install command, fast ---------------------------------------------------------------------------------
def test_install_removes_both_runtimes_before_installing_the_gpu_one():
    commands = gpu_install.pip_commands(gpu_install.GpuInstallOptions(cuda_libs=True))
    assert [c[3:] for c in commands] == [
        ["uninstall", "-y", "onnxruntime", "onnxruntime-gpu"],
        ["install", "onnxruntime-gpu[cuda,cudnn]>=1.21"],
    ]
    assert all(c[:3] == [sys.executable, "-m", "pip"] for c in commands)  # the venv it runs from
    plain = gpu_install.GpuInstallOptions(spec="onnxruntime-gpu==1.31.1")
    assert gpu_install.requirement(plain) == "onnxruntime-gpu==1.31.1"


def test_check_on_a_cpu_runtime_is_one_line_and_exit_2():
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("this venv holds the GPU runtime")
    result = run_cli("gpu_install", "--check")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("gpu_install: error: this onnxruntime (onnxruntime ")
    assert "without CUDA" in result.stderr


# -- the documented install in a real venv, slow ---------------------------------------------------------------
@pytest.fixture(scope="module")
def gpu_venv(tmp_path_factory) -> Path:
    """A fresh venv holding this project and the GPU runtime, installed the way docs/gpu.md says."""
    venv = tmp_path_factory.mktemp("gpu-venv") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=PIP_TIMEOUT_S)
    py = str(venv / "bin" / "python")
    for command in ([py, "-m", "pip", "install", "-q", str(REPO_ROOT)], [py, "-m", gpu_install.__name__]):
        done = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT_S, cwd=venv.parent)
        assert done.returncode == 0, f"{' '.join(command)}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return venv


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("gpu-clip") / "speechlike.wav"
    sf.write(path, synthetic_speechlike(4.0).astype(np.float32), 16_000)
    return path


def run_in(venv: Path, program: str, *args: str) -> subprocess.CompletedProcess:
    """Run an installed program of ``venv`` from an empty folder (so the checkout cannot stand in for it)."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EMOTION_MODEL")}
    return subprocess.run(
        [str(venv / "bin" / program), *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=venv.parent,
        env=env,
    )


@pytest.mark.slow
def test_documented_install_gives_one_runtime_with_cuda(gpu_venv):
    result = run_in(gpu_venv, "python", "-c", CHECK_RUNTIME)
    assert result.returncode == 0, result.stderr
    found = json.loads(result.stdout)
    assert "CUDAExecutionProvider" in found["providers"]
    assert len(found["dists"]) == 1 and found["dists"][0].startswith("onnxruntime-gpu "), found["dists"]
    assert found["file"].startswith(str(gpu_venv))
    check = run_in(gpu_venv, "python", "-m", gpu_install.__name__, "--check")
    assert check.returncode == 0 and check.stdout.startswith("gpu_install: onnxruntime-gpu "), check.stderr


@pytest.mark.slow
def test_provider_cuda_without_a_gpu_is_one_line_and_exit_2(gpu_venv, tiny_model, clip):
    result = run_in(gpu_venv, "emotion-score", "--provider", "cuda", "--model", str(tiny_model), str(clip))
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr  # no ONNX Runtime log lines around it
    assert result.stderr.startswith("emotion-score: error: --provider cuda: lib")
    assert "not found" in result.stderr and "--provider cpu" in result.stderr
    assert result.stdout == ""


@pytest.mark.slow
def test_provider_auto_without_a_gpu_runs_on_cpu_and_says_why(gpu_venv, tiny_model, clip):
    live = run_in(
        gpu_venv,
        "emotion-live",
        "--provider",
        "auto",
        "--model",
        str(tiny_model),
        "--input",
        str(clip),
        "--fast",
    )
    assert live.returncode == 0, live.stderr
    header = live.stdout.splitlines()[0]
    assert " on cpu (CPUExecutionProvider; CUDA not used: lib" in header, header
    assert "not found" in header
    assert "onnxruntime" not in live.stderr.lower()  # ORT's own log stays quiet
    score = run_in(gpu_venv, "emotion-score", "--provider", "auto", "--model", str(tiny_model), str(clip))
    assert score.returncode == 0, score.stderr
    notices = [line for line in score.stderr.splitlines() if "CUDA" in line]
    assert len(notices) == 1 and notices[0].startswith("notice: CUDA not used: lib"), score.stderr
    assert len(score.stdout.splitlines()) >= 2  # the header row and the clip's row
