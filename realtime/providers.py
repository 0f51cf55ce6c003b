"""ONNX Runtime execution providers and sessions: which provider runs a model (CUDA when present, else the CPU),
and the session settings every part of the runtime uses."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import onnxruntime as ort

from emotion_monitor.realtime.errors import ModelError, one_line

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda")


def select_providers(requested: str, available: Sequence[str]) -> list[str]:
    """Providers to ask ONNX Runtime for, in priority order.

    auto: CUDA (then CPU) when this onnxruntime build offers CUDA, else CPU.
    cpu: CPU only.
    cuda: CUDA then CPU; an error when the build has no CUDA (an explicit request is never silently ignored).
    """
    if requested not in PROVIDER_CHOICES:
        raise ModelError(f"unknown provider {requested!r}; choose one of {', '.join(PROVIDER_CHOICES)}")
    if requested == "cpu":
        return [CPU]
    if CUDA in available:
        return [CUDA, CPU]
    if requested == "cuda":
        raise ModelError(
            f"--provider cuda: this onnxruntime offers no CUDA (available: {', '.join(available)}); "
            "install onnxruntime-gpu or use --provider cpu"
        )
    return [CPU]


def check_active_providers(requested: str, chosen: Sequence[str], active: Sequence[str]) -> str | None:
    """Compare what was asked for with what the session really runs on.

    ONNX Runtime silently drops CUDA when its libraries fail to load. An explicit ``cuda`` request then fails;
    ``auto`` continues on CPU and returns a notice line for the user.
    """
    if CUDA in chosen and CUDA not in active:
        if requested == "cuda":
            raise ModelError("--provider cuda: CUDA could not be initialised (CUDA/cuDNN libraries missing?)")
        return "notice: CUDA is offered but could not be initialised; running on CPU"
    return None


def default_intra_op_threads() -> int:
    """All cores up to 4: a window's matrix products parallelise well to 4 threads and barely beyond."""
    return max(1, min(4, os.cpu_count() or 1))


def session_options(intra_op_threads: int | None = None) -> ort.SessionOptions:
    """The runtime's session settings. ``intra_op_threads``: None = ``default_intra_op_threads()``."""
    so = ort.SessionOptions()
    so.intra_op_num_threads = intra_op_threads or default_intra_op_threads()
    # One graph, run sequentially: parallel branches do not exist, so inter-op threads would only idle.
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 4  # ORT logs nothing itself; its errors reach the user as one ModelError line
    # Idle worker threads would otherwise spin between windows, stealing the CPU the audio thread and
    # the VAD need (and that other programs need) on a small machine.
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return so


def create_session(
    path: Path, providers: list[str], intra_op_threads: int | None = None
) -> ort.InferenceSession:
    """An ONNX Runtime session on ``providers`` with the runtime's settings (``session_options``); ModelError (one
    line) when the file cannot be loaded."""
    so = session_options(intra_op_threads)
    try:
        return ort.InferenceSession(str(path), so, providers=providers)
    except Exception as exc:  # ORT raises its own exception types; all mean "cannot load"
        raise ModelError(f"{path}: cannot load model ({one_line(exc)})") from None
