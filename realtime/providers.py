"""ONNX Runtime execution providers and sessions: which provider runs a model (CUDA when present, else the CPU),
the session settings every part of the runtime uses, and why CUDA was not used when it was not."""

from __future__ import annotations

import contextlib
import ctypes
import importlib.metadata
import io
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from emotion_monitor.realtime.errors import ModelError, one_line

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda")
GPU_INSTALL = "python -m emotion_monitor.realtime.gpu_install"
"""The command that installs the CUDA build of ONNX Runtime in place of the CPU one (docs/gpu.md)."""
CPU_BATCH_WINDOWS = 8
"""Windows per ``session.run`` on the CPU: larger batches gain nothing there and only hold more memory."""
CUDA_BATCH_WINDOWS = 64
"""Windows per ``session.run`` on CUDA: a GPU needs many windows per call to be kept busy (64 windows of 3 s are
12 MB of input); benchmarks/check_cuda.py measures the throughput of several batch sizes."""


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
            f"--provider cuda: {no_cuda_build_reason()}; install the GPU runtime with: {GPU_INSTALL} "
            "(or use --provider cpu)"
        )
    return [CPU]


def onnxruntime_distributions() -> list[str]:
    """``name version`` of every installed distribution that writes the ``onnxruntime`` module (onnxruntime,
    onnxruntime-gpu, ...). More than one means the one pip wrote last owns the shared files."""
    found = set()
    # Only onnxruntime*.dist-info folders are read: a large venv holds hundreds of others (a second to read all).
    for folder in sys.path:
        for info in sorted(Path(folder or ".").glob("onnxruntime*.dist-info")):
            dist = importlib.metadata.PathDistribution(info)
            if any(str(f).replace("\\", "/") == "onnxruntime/__init__.py" for f in dist.files or ()):
                found.add(f"{dist.metadata['Name']} {dist.version}")
    return sorted(found)


def no_cuda_build_reason() -> str:
    """Why this onnxruntime offers no CUDA: a CPU build, or two distributions sharing the module."""
    dists = onnxruntime_distributions()
    if len(dists) > 1:
        return f"{len(dists)} onnxruntime distributions share one module ({', '.join(dists)})"
    return f"this onnxruntime ({dists[0] if dists else ort.__version__}) is a build without CUDA"


def cuda_library_problem() -> str:
    """Why ONNX Runtime's CUDA provider did not start, for a session that fell back to the CPU: the library that
    does not load (``cuda_library_error``), else that the GPU itself did not start."""
    return cuda_library_error() or "CUDA did not start (no usable NVIDIA GPU?)"


def cuda_library_error() -> str | None:
    """None when ONNX Runtime's CUDA provider library loads, else why not, found by loading it ourselves (ONNX
    Runtime only logs it): the first missing library (CUDA, cuDNN, the NVIDIA driver)."""
    lib = Path(ort.__file__).parent / "capi" / "libonnxruntime_providers_cuda.so"
    if not lib.is_file():
        return f"{lib.name} is not installed"
    try:
        ctypes.CDLL(str(lib))
    except OSError as exc:
        text = one_line(exc)
        missing = text.split(":")[0].strip() if "cannot open shared object" in text else text
        if missing.startswith("libcuda.so"):
            return f"no NVIDIA driver ({missing} not found)"
        return f"{missing} not found (install CUDA and cuDNN, or: {GPU_INSTALL} --cuda-libs)"
    return None


def prepare_cuda_libraries() -> None:
    """Make CUDA/cuDNN libraries installed by pip (``onnxruntime-gpu[cuda,cudnn]``) loadable: ONNX Runtime's
    ``preload_dlls`` (1.21+) loads them from the nvidia packages; a no-op for system-wide CUDA. Its messages about
    libraries it cannot find are dropped: ``cuda_library_problem`` names the one that matters."""
    preload = getattr(ort, "preload_dlls", None)
    if preload is None:
        return
    quiet = (contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()))
    with quiet[0], quiet[1], contextlib.suppress(Exception):
        preload(cuda=True, cudnn=True, msvc=False)


def default_batch_windows(device: str) -> int:
    """The batch-size rule for many windows (files, segments): ``CUDA_BATCH_WINDOWS`` on ``cuda``, else
    ``CPU_BATCH_WINDOWS``."""
    return CUDA_BATCH_WINDOWS if device == "cuda" else CPU_BATCH_WINDOWS


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
    try:
        return _new_session(path, providers, intra_op_threads)
    except Exception as exc:  # ORT raises its own exception types; all mean "cannot load"
        raise ModelError(f"{path}: cannot load model ({one_line(exc)})") from None


def _new_session(path: Path, providers: list[str], intra_op_threads: int | None) -> ort.InferenceSession:
    # Provider failures (a CUDA library missing) go to ORT's process-wide logger, not the session's.
    ort.set_default_logger_severity(4)
    return ort.InferenceSession(str(path), session_options(intra_op_threads), providers=providers)


@dataclass(frozen=True)
class StartedSession:
    """A session and, when it runs on the CPU although CUDA was asked for or installed, why (``cuda_skipped``)."""

    session: ort.InferenceSession
    cuda_skipped: str | None = None

    @property
    def notice(self) -> str | None:
        """The one line for the user when ``auto`` runs on the CPU for a reason worth knowing."""
        return f"notice: CUDA not used: {self.cuda_skipped}; running on CPU" if self.cuda_skipped else None


def start_session(path: Path, requested: str, intra_op_threads: int | None = None) -> StartedSession:
    """A session for ``path`` on the ``requested`` provider (``auto`` | ``cpu`` | ``cuda``).

    ``cuda`` that cannot run (a CPU build, a missing library or driver, no GPU) is a ModelError naming the reason;
    ``auto`` then runs on the CPU and says why. A file that cannot be loaded at all is a ModelError either way.
    """
    chosen = select_providers(requested, ort.get_available_providers())
    if CUDA not in chosen:
        reason = gpu_runtime_shadowed() if requested == "auto" else None
        return StartedSession(create_session(path, chosen, intra_op_threads), reason)
    prepare_cuda_libraries()
    try:
        session = _new_session(path, chosen, intra_op_threads)
        reason = None if CUDA in session.get_providers() else cuda_library_problem()
    # CUDA itself may raise (a driver without a device): the CPU then tells a bad file from a CUDA failure.
    except Exception as exc:
        session = create_session(path, [CPU], intra_op_threads)
        reason = f"CUDA failed to start: {one_line(exc)}"
    if reason and requested == "cuda":
        raise ModelError(f"--provider cuda: {reason}; or use --provider cpu")
    return StartedSession(session, reason)


def gpu_runtime_shadowed() -> str | None:
    """Why CUDA is missing although onnxruntime-gpu is installed (another distribution wrote the shared module
    last), else None: an ordinary CPU install needs no explanation."""
    try:
        importlib.metadata.version("onnxruntime-gpu")
    except importlib.metadata.PackageNotFoundError:
        return None
    return no_cuda_build_reason()
