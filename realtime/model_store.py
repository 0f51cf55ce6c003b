"""The bundled default model: where it is cached, how it is built on first use, and which file a command runs.

The model is built by the exporter (``python -m emotion_monitor.export``) in a child process, so torch never enters the runtime's
process; a runtime-only install (no ``[export]`` extra) says so in one line and takes a model file instead.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from importlib import metadata as importlib_metadata
from pathlib import Path

from emotion_monitor.realtime.errors import ModelError
from emotion_monitor.realtime.progress import progress_bar

DIST_NAME = "speech-emotion-monitor"
MODEL_ENV = "EMOTION_MODEL"
"""Environment variable naming an explicit model file used when no ``--model`` is given."""
BUILD_TIMEOUT_S = 3600.0
EXPORTER = ("-m", "emotion_monitor.export")
"""How the child process that builds the default model runs the exporter (``python -m emotion_monitor.export -o PATH``)."""
STEP_CHARS = 60
"""The start of the build step shown after its progress bar."""
EXPORT_MODULES = ("torch", "onnx", "transformers", "safetensors")
"""What building the default model imports (the ``[export]`` extra); the runtime itself needs none of them."""
DEFAULT_PREFIX = "default-"
"""Cached default models are ``default-<version>-<head fingerprint>.onnx``."""


BUNDLE_FILES = (
    "model.json",
    "head.safetensors",
    "head_speaker_norm.safetensors",
    "head_speaker_baseline.safetensors",
)
"""The shipped trained part of the default model (``export/bundled/``)."""
OPTIONAL_BUNDLE_FILES = ("speaker_subspace.safetensors",)
"""Shipped only by some recipes (the speaker head's subspace, ``speaker_norm_centre=subspace``)."""


def package_version() -> str:
    try:
        return importlib_metadata.version(DIST_NAME)
    except importlib_metadata.PackageNotFoundError:
        return "0+unknown"


def bundle_fingerprint() -> str:
    """12 hex digits of the shipped head files (``export/bundled/``), or ``none`` when they are not installed.

    Part of the cached default model's name, so retraining the head (same package version) builds anew
    instead of silently running a stale model. Found without importing ``export`` (that would load torch).
    """
    spec = importlib.util.find_spec("emotion_monitor.export")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    bundled = Path(list(spec.submodule_search_locations)[0]) / "bundled"
    digest = hashlib.sha256()
    for name in BUNDLE_FILES + OPTIONAL_BUNDLE_FILES:
        file = bundled / name
        if file.is_file():
            digest.update(name.encode() + file.read_bytes())
        elif name in BUNDLE_FILES:
            return "none"
    return digest.hexdigest()[:12]


def default_model_path() -> Path:
    """``$EMOTION_MODEL`` if set, else ``$XDG_CACHE_HOME/speech-emotion-monitor/default-<version>-<head>.onnx``."""
    explicit = os.environ.get(MODEL_ENV)
    if explicit:
        return Path(explicit).expanduser()
    return cache_dir() / f"{DEFAULT_PREFIX}{package_version()}-{bundle_fingerprint()}.onnx"


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/speech-emotion-monitor`` (``~/.cache`` without it): the models built on first use."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / DIST_NAME


def build_default_model(path: Path, log=None) -> Path:
    """Build the default emotion model into ``path`` (``build_model_file`` with the exporter)."""
    fallback = "pass a model file with --model"
    build_model_file(path, EXPORTER, "the default model", EXPORT_MODULES, "export", fallback, log)
    removed = remove_stale_defaults(path)
    if removed:
        print(f"removed {len(removed)} older default model(s)", file=log or sys.stderr, flush=True)
    return path


def build_model_file(
    path: Path,
    exporter: tuple[str, ...],
    what: str,
    modules: tuple[str, ...],
    extra: str,
    fallback: str,
    log=None,
) -> Path:
    """Run ``python <exporter> -o PATH`` in a child process (torch never enters this one) to build ``what``.

    Writes to a temporary name first and renames, so an interrupted build never leaves a broken model behind.
    Without the ``modules`` it needs (the package's ``extra``), one line saying so and the ``fallback``, before
    anything runs.
    """
    missing = [name for name in modules if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(
            f"cannot build {what} here ({', '.join(missing)} not installed): install the {extra} extra "
            f"(pip install '{DIST_NAME}[{extra}]') or {fallback}"
        )
    stream = log or sys.stderr
    print(f"building {what} once into {path} ...", file=stream, flush=True)
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")
    returncode, lines = _run_showing_steps(
        [sys.executable, *exporter, "-o", str(partial)], stream, f"building {what}"
    )
    if returncode is None:
        partial.unlink(missing_ok=True)
        raise ModelError(f"building {what} timed out after {BUILD_TIMEOUT_S:.0f} s")
    if returncode != 0 or not partial.is_file():
        reason = lines[-1] if lines else f"exit status {returncode}"
        partial.unlink(missing_ok=True)
        raise ModelError(f"could not build {what} ({reason}); {fallback}")
    os.replace(partial, path)
    print(
        f"built {what} in {time.perf_counter() - started:.0f} s ({path.stat().st_size / 1e6:.0f} MB; "
        f"delete {path.parent} to rebuild or free the space)",
        file=stream,
        flush=True,
    )
    return path


def _run_showing_steps(command: list[str], stream, desc: str) -> tuple[int | None, list[str]]:
    """Run ``command``; each line it prints (stdout and stderr) is a step shown on a progress bar on
    ``stream`` (a terminal only; the elapsed time is redrawn every second). Returns ``(exit status or None
    on timeout, the lines)``."""
    import queue
    import threading

    lines: list[str] = []
    received: queue.Queue[str | None] = queue.Queue()
    child = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        errors="replace",
        env={**os.environ, "PYTHONUNBUFFERED": "1"},  # each step as it happens
    )

    def read() -> None:
        for line in child.stdout:
            received.put(line.rstrip())
        received.put(None)

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    try:
        with progress_bar(None, desc, stream, unit="step") as bar:
            while True:
                try:
                    line = received.get(timeout=1.0)
                except queue.Empty:
                    if time.monotonic() > deadline:
                        return None, lines
                    bar.refresh()  # the elapsed time moves on while a step runs
                    continue
                if line is None:
                    break
                if line.strip():
                    lines.append(line)
                    bar.set_postfix_str(line.strip()[:STEP_CHARS], refresh=False)
                    bar.update(1)
        return child.wait(), lines
    finally:
        if child.poll() is None:  # timed out, or this process is being interrupted: no orphan exporter
            child.kill()
            child.wait()


def resolve_model_path(path: str | Path | None = None, build: bool = True, log=None) -> Path:
    """An explicit path must exist; otherwise the default model, built on first use when ``build``."""
    if path is not None:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ModelError(f"{path}: model file not found")
        return path
    default = default_model_path()
    if default.is_file():
        return default
    if os.environ.get(MODEL_ENV):
        raise ModelError(f"{default}: model file not found (set by ${MODEL_ENV})")
    if not build:
        raise ModelError(f"{default}: default model not built yet")
    return build_default_model(default, log)


def remove_stale_defaults(current: Path) -> list[Path]:
    """Delete the other cached ``default-*.onnx`` models beside ``current`` (built from an older package or older
    heads: nothing runs them again); returns what was removed. Models in progress (``.partial-``) are left."""
    if not current.name.startswith(DEFAULT_PREFIX):
        return []
    stale = [
        p
        for p in current.parent.glob(f"{DEFAULT_PREFIX}*.onnx")
        if p != current and ".partial-" not in p.name and p.name.count("-") == current.name.count("-")
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale
