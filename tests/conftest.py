"""Shared fixtures: where the real recordings are, synthetic audio, and a real PulseAudio null sink."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
from support import build_tiny_model, data_dir

from benchmarks.fuzz_inputs import write_constant_model
from emotion_monitor.core.paths import DATA_DIR_ENV


@pytest.fixture(scope="session")
def ravdess_16k() -> Path:
    """``ravdess-16k`` (actors 1–20, 16 kHz FLAC); skips when the copy is absent."""
    path = data_dir() / "ravdess-16k"
    if not (path / "Actor_01").is_dir():
        pytest.skip(f"RAVDESS 16 kHz copy not found at {path} (set {DATA_DIR_ENV})")
    return path


@pytest.fixture(scope="session")
def ravdess_48k() -> Path:
    """``ravdess-48k-sample/Actor_01`` (original 48 kHz WAVs, two stereo); skips when absent."""
    path = data_dir() / "ravdess-48k-sample" / "Actor_01"
    if not path.is_dir():
        pytest.skip(f"RAVDESS 48 kHz sample not found at {path} (set {DATA_DIR_ENV})")
    return path


@dataclass(frozen=True)
class PulseSink:
    """A running PulseAudio null sink: play into ``sink``, record from ``monitor``."""

    sink: str
    monitor: str
    env: dict


def _pulse_env(runtime_dir: Path) -> dict:
    env = dict(os.environ)
    env["XDG_RUNTIME_DIR"] = str(runtime_dir)
    env["PULSE_RUNTIME_PATH"] = str(runtime_dir / "pulse")
    env.pop("PULSE_SERVER", None)
    return env


@pytest.fixture(scope="session")
def pulse_sink(tmp_path_factory) -> PulseSink:
    """Start a private PulseAudio daemon with one null sink; stop it afterwards.

    The ALSA ``pulse`` device (what sounddevice sees) reaches this daemon through ``PULSE_SERVER``, which the
    fixture exports for the test session and restores afterwards.
    """
    if shutil.which("pulseaudio") is None or shutil.which("pactl") is None:
        pytest.skip("PulseAudio is not installed (apt-get install pulseaudio pulseaudio-utils libportaudio2)")
    runtime_dir = tmp_path_factory.mktemp("pulse")
    env = _pulse_env(runtime_dir)
    sink = f"emotion_test_{uuid.uuid4().hex[:8]}"
    socket = runtime_dir / "pulse" / "native"
    cmd = [
        "pulseaudio",
        "--daemonize=yes",
        "--exit-idle-time=-1",
        "--system=false",
        "-n",
        f"--load=module-null-sink sink_name={sink} rate=48000 channels=2",
        f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}",
        "--disallow-exit",
        "--log-target=stderr",
    ]
    if os.geteuid() == 0:
        # PulseAudio refuses to run as root in user mode unless told that it is deliberate.
        env["PULSE_ALLOW_ROOT"] = "1"
    result = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"pulseaudio failed to start: {result.stderr.strip()[-500:]}")
    env["PULSE_SERVER"] = f"unix:{socket}"
    for _ in range(50):
        if subprocess.run(["pactl", "info"], env=env, capture_output=True).returncode == 0:
            break
        time.sleep(0.1)
    else:
        pytest.fail("pulseaudio started but pactl cannot reach it")
    saved = {k: os.environ.get(k) for k in ("PULSE_SERVER", "XDG_RUNTIME_DIR", "PULSE_RUNTIME_PATH")}
    os.environ.update({k: env[k] for k in saved})
    try:
        yield PulseSink(sink=sink, monitor=f"{sink}.monitor", env=env)
    finally:
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random exported model (``support.build_tiny_model``, with speaker heads), built once per session."""
    return build_tiny_model(tmp_path_factory.getbasetemp() / "tiny-emotion.onnx")


@pytest.fixture(scope="session")
def constant_model(tmp_path_factory) -> Path:
    """A healthy stand-in model giving the same probabilities for every window (built in milliseconds, no
    torch): fast end-to-end runs of the CLIs where the estimates do not matter."""
    return write_constant_model(tmp_path_factory.mktemp("models") / "constant.onnx")


@pytest.fixture
def offline_hub_env(tmp_path, monkeypatch) -> dict:
    """Environment of a machine where the Hugging Face hub cannot be reached and nobody said so.

    ``HF_ENDPOINT`` is a localhost port just freed (connections are refused at once), ``HF_HUB_OFFLINE`` and
    proxies are unset, and the hub cache is empty. Applied to this process too; returned for subprocesses.
    """
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    for name in (
        "HF_HUB_OFFLINE",
        "TRANSFORMERS_OFFLINE",
        "HTTPS_PROXY",
        "https_proxy",
        "ALL_PROXY",
        "all_proxy",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    return dict(os.environ)


@pytest.fixture(scope="session")
def ray_local():
    """A local Ray instance on 2 CPUs for the session (what ``emotion-score --engine ray`` joins); skips when the
    optional ``ray`` extra is not installed."""
    ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install -e '.[ray]'")
    pytest.importorskip("ray.data", reason="Ray Data is missing: pip install 'ray[data]'")
    started = not ray.is_initialized()
    if started:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    if started:
        ray.shutdown()


@pytest.fixture(scope="session")
def default_model():
    """The bundled default model, built once into the cache (about a minute the first time on a machine)."""
    from emotion_monitor.realtime.model_store import resolve_model_path

    return resolve_model_path(None)


@pytest.fixture(scope="session")
def speaker_model() -> Path:
    """The speaker model (GE2E voice encoder on ONNX), built once into the cache from the ``speakers`` extra
    (about a minute the first time on a machine); skips when it is neither cached nor buildable here."""
    from emotion_monitor.realtime.speaker_embedding import SpeakerEncoder, speaker_model_available

    if not speaker_model_available():
        pytest.skip("no speaker model: install the speakers extra (pip install -e '.[speakers]') to build it")
    return SpeakerEncoder.load().path
