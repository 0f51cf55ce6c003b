"""The one model wrapper: an exported emotion model on ONNX Runtime, plus its Python API.

    from realtime.model import load_model
    model = load_model()                       # the bundled default model (built once on first use)
    result = model.predict_file("clip.wav")    # Prediction(label='angry', confidence=0.83, probs={...}, ...)
    result = model.predict_array(samples, sample_rate=48_000)
    timeline = model.predict_segments(samples, sample_rate=16_000)   # [Segment(start_s, end_s, ...), ...]

Everything the runtime needs (labels, sample rate, window, preprocessing) comes from the model's metadata.
No torch here: the default model is built by the exporter in a separate process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata as importlib_metadata
from pathlib import Path

import numpy as np
import onnxruntime as ort

from realtime.audio import AudioError, PreprocessOptions, load_audio, prepare_clip, prepare_input, rms_dbfs
from realtime.audio import to_model_rate as _to_model_rate
from realtime.errors import one_line
from realtime.metadata import (
    INPUT_NAME,
    LOGITS_NAME,
    POOLED_NAME,
    PROBS_NAME,
    SPEAKER_HEAD_KEYS,
    ModelInfo,
)
from realtime.progress import progress_bar
from realtime.speaker_norm import SpeakerNormalizer, SpeakerNormHead, SpeakerNormOptions
from realtime.vad import FrameVAD, load_vad
from realtime.windowing import AudioWindow, SpeechGate, StreamWindower, WindowSpec, tile_bounds

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
PROVIDER_CHOICES = ("auto", "cpu", "cuda")
DIST_NAME = "speech-emotion-monitor"
MODEL_ENV = "EMOTION_MODEL"
"""Environment variable naming an explicit model file used when no ``--model`` is given."""
SILENT_DBFS = -70.0
"""A clip whose overall level is below this is reported as silent instead of being scored. Real quiet speech
goes lower than one might think: the quietest RAVDESS clips (soft "calm" takes) sit at -62 dBFS RMS after
trimming, so the bar is 8 dB under that; a muted input or digital silence is far below it."""
SILENCE_LABEL = "silence"
MIN_CLIP_S = 0.1
"""Shortest clip scored: below this the speech encoders' front ends have too few samples (and it says nothing)."""
BUILD_TIMEOUT_S = 3600.0
EXPORTER = ("-m", "export")
"""How the child process that builds the default model runs the exporter (``python -m export -o PATH``)."""
STEP_CHARS = 60
"""The start of the build step shown after its progress bar."""
EXPORT_MODULES = ("torch", "onnx", "transformers", "safetensors")
"""What building the default model imports (the ``[export]`` extra); the runtime itself needs none of them."""
MIN_BASELINE_S = 5.0
"""Shortest calm baseline recording accepted, seconds of sound after trimming (10 s or more is better)."""


class ModelError(RuntimeError):
    """The model cannot be found, built, loaded or run; ``str()`` is one line for the user."""


class ModelMismatchError(ModelError):
    """The model's inputs/outputs do not fit the runtime or its own labels: every input would fail the same
    way, so a batch stops at once (exit 2) instead of failing file after file."""


class NonFiniteOutputError(ModelError):
    """The model returned NaN or infinite probabilities for some windows: no estimate for them, never a row."""


# -- execution providers -------------------------------------------------------------------------------------
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


# -- default model -------------------------------------------------------------------------------------------
BUNDLE_FILES = (
    "model.json",
    "head.safetensors",
    "head_speaker_norm.safetensors",
    "head_speaker_baseline.safetensors",
)
"""The shipped trained part of the default model (``export/bundled/``)."""


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
    spec = importlib.util.find_spec("export")
    if spec is None or not spec.submodule_search_locations:
        return "none"
    bundled = Path(list(spec.submodule_search_locations)[0]) / "bundled"
    digest = hashlib.sha256()
    for name in BUNDLE_FILES:
        file = bundled / name
        if not file.is_file():
            return "none"
        digest.update(file.read_bytes())
    return digest.hexdigest()[:12]


def default_model_path() -> Path:
    """``$EMOTION_MODEL`` if set, else ``$XDG_CACHE_HOME/speech-emotion-monitor/default-<version>-<head>.onnx``."""
    explicit = os.environ.get(MODEL_ENV)
    if explicit:
        return Path(explicit).expanduser()
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return cache / DIST_NAME / f"default-{package_version()}-{bundle_fingerprint()}.onnx"


def build_default_model(path: Path, log=None) -> Path:
    """Run the exporter (``python -m export -o PATH``) in a child process: torch never enters this one.

    Writes to a temporary name first and renames, so an interrupted build never leaves a broken model behind.
    A runtime-only install (no ``[export]`` extra) cannot build it: one line saying so, before anything runs.
    """
    missing = [name for name in EXPORT_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise ModelError(
            f"cannot build the default model here ({', '.join(missing)} not installed): install the export extra "
            f"(pip install '{DIST_NAME}[export]') or pass a model file with --model"
        )
    stream = log or sys.stderr
    print(f"building the default model once into {path} ...", file=stream, flush=True)
    started = time.perf_counter()
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.partial-{os.getpid()}{path.suffix}")
    returncode, lines = _run_showing_steps(
        [sys.executable, *EXPORTER, "-o", str(partial)], stream, "building the default model"
    )
    if returncode is None:
        partial.unlink(missing_ok=True)
        raise ModelError(f"building the default model timed out after {BUILD_TIMEOUT_S:.0f} s")
    if returncode != 0 or not partial.is_file():
        reason = lines[-1] if lines else f"exit status {returncode}"
        partial.unlink(missing_ok=True)
        raise ModelError(f"could not build the default model ({reason}); pass a model file with --model")
    os.replace(partial, path)
    print(
        f"built the default model in {time.perf_counter() - started:.0f} s ({path.stat().st_size / 1e6:.0f} MB; "
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


# -- options and results -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelOptions:
    """How the session runs.

    provider: ``auto`` | ``cpu`` | ``cuda`` (see ``select_providers``).
    intra_op_threads: threads inside one operator; None = ``default_intra_op_threads()``.
    batch_size: windows per ``session.run`` when scoring many windows (files, segments).
    """

    provider: str = "auto"
    intra_op_threads: int | None = None
    batch_size: int = 8


@dataclass(frozen=True)
class Prediction:
    """The estimate for one clip.

    label: most probable emotion; confidence: its probability; probs: every label's probability.
    duration_s: length of the audio scored (after trimming silence); windows: model inputs averaged.
    """

    label: str
    confidence: float
    probs: dict[str, float]
    duration_s: float
    windows: int


@dataclass(frozen=True)
class Segment:
    """One window of a timeline: ``[start_s, end_s)``, whether it holds speech, label (``silence`` when not).

    ``probs`` is None for a silence window: it is not judged (as in the live monitor), so it carries no emotion.
    """

    start_s: float
    end_s: float
    speech: bool
    label: str
    probs: dict[str, float] | None = None


@dataclass(frozen=True)
class ClipWindows:
    """A clip's model windows: probabilities ``[W, classes]``, pooled features ``[W, layers + 1, hidden]`` (None
    unless asked for), ``duration_s``, the seconds of sound after trimming, and ``window_seconds`` ``[W]``, the
    seconds of audio each window's model input holds (its weight in the clip's mean)."""

    probs: np.ndarray
    pooled: np.ndarray | None
    duration_s: float
    window_seconds: np.ndarray | None = None


# -- the wrapper ---------------------------------------------------------------------------------------------
class EmotionModel:
    """An exported model on ONNX Runtime. Input: raw mono audio at ``sample_rate``; output: class probabilities."""

    def __init__(self, path: str | Path, options: ModelOptions | None = None):
        self.path = Path(path)
        self.options = options or ModelOptions()
        chosen = select_providers(self.options.provider, ort.get_available_providers())
        self.session = self._create_session(chosen)
        self.providers: list[str] = self.session.get_providers()
        self.provider_notice = check_active_providers(self.options.provider, chosen, self.providers)
        self._metadata = self.session.get_modelmeta().custom_metadata_map
        try:
            self.info = ModelInfo.from_metadata(self._metadata)
        except ValueError as exc:
            raise ModelError(f"{self.path}: {exc}") from None
        inputs = [i.name for i in self.session.get_inputs()]
        if INPUT_NAME not in inputs:
            raise ModelError(f"{self.path}: no input named {INPUT_NAME!r} (has {inputs})")
        outputs = [o.name for o in self.session.get_outputs()]
        if PROBS_NAME not in outputs and LOGITS_NAME not in outputs:
            raise ModelError(
                f"{self.path}: neither {PROBS_NAME!r} nor {LOGITS_NAME!r} among outputs {outputs}"
            )
        self._output = PROBS_NAME if PROBS_NAME in outputs else LOGITS_NAME
        self.has_pooled = POOLED_NAME in outputs
        self._speaker_heads: dict[str, SpeakerNormHead] = {}
        self.labels: tuple[str, ...] = self.info.labels
        self._check_signature()
        self.sample_rate: int = int(self.info.sample_rate)
        self.window_s: float = float(self.info.window_s)
        self.hop_s: float = float(self.info.hop_s)
        self.preprocess = PreprocessOptions.from_dict(self.info.preprocessing)
        try:
            self.speech_gate = SpeechGate(**self.info.speech_gate)
        except TypeError as exc:
            raise ModelError(f"{self.path}: bad speech_gate metadata ({exc})") from None

    def _check_signature(self) -> None:
        """ModelMismatchError, at load, when the graph's declared input/output shapes cannot be what the runtime
        feeds (float ``[batch, samples]``) and reads (``[batch, len(labels)]``)."""
        node = next(i for i in self.session.get_inputs() if i.name == INPUT_NAME)
        if len(node.shape) != 2 or node.type != "tensor(float)":
            raise ModelMismatchError(
                f"{self.path}: input {INPUT_NAME!r} is {node.type} {_shape(node.shape)}; the runtime feeds "
                "float [batch, samples]"
            )
        out = next(o for o in self.session.get_outputs() if o.name == self._output)
        classes = out.shape[-1] if out.shape else None
        if len(out.shape) != 2 or (isinstance(classes, int) and classes != len(self.labels)):
            raise ModelMismatchError(
                f"{self.path}: output {self._output!r} is {_shape(out.shape)}, but the model's metadata names "
                f"{len(self.labels)} labels ([batch, {len(self.labels)}] expected)"
            )

    def _check_output(self, out: np.ndarray, batch: int) -> np.ndarray:
        """The model's probabilities ``[batch, classes]``: ModelMismatchError when the shape does not fit the
        labels (a dynamic shape only shows at run time), NonFiniteOutputError when any is NaN or infinite."""
        if out.ndim != 2 or out.shape != (batch, len(self.labels)):
            raise ModelMismatchError(
                f"{self.path}: output {self._output!r} has shape {list(out.shape)} for {batch} input(s), but the "
                f"model's metadata names {len(self.labels)} labels"
            )
        bad = ~np.isfinite(out).all(axis=1)
        if bad.any():
            raise NonFiniteOutputError(
                f"model {self.path.name} returned NaN or infinite probabilities for {int(bad.sum())} of "
                f"{batch} window(s); not scored"
            )
        return out

    def _create_session(self, providers: list[str]) -> ort.InferenceSession:
        so = ort.SessionOptions()
        so.intra_op_num_threads = self.options.intra_op_threads or default_intra_op_threads()
        # One graph, run sequentially: parallel branches do not exist, so inter-op threads would only idle.
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        so.log_severity_level = 4  # ORT logs nothing itself; its errors reach the user as one ModelError line
        # Idle worker threads would otherwise spin between windows, stealing the CPU the audio thread and
        # the VAD need (and that other programs need) on a small machine.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            return ort.InferenceSession(str(self.path), so, providers=providers)
        except Exception as exc:  # ORT raises its own exception types; all mean "cannot load"
            raise ModelError(f"{self.path}: cannot load model ({one_line(exc)})") from None

    @property
    def device(self) -> str:
        """``cuda`` or ``cpu``: what the session really runs on."""
        return "cuda" if self.providers and self.providers[0] == CUDA else "cpu"

    def window_spec(self, window_s: float | None = None, hop_s: float | None = None) -> WindowSpec:
        """Analysis windows: the model's trained ``window_s`` and hop unless overridden."""
        return WindowSpec(window_s or self.window_s, hop_s or self.hop_s, self.sample_rate)

    # -- core inference --------------------------------------------------------------------------------------
    def predict_windows(self, windows: Sequence[np.ndarray], return_pooled: bool = False):
        """Raw windows (each [samples] float32 at ``sample_rate``) → probabilities ``[len(windows), classes]``
        (and, with ``return_pooled``, the pooled features ``[len(windows), layers + 1, hidden]``); see
        ``_probs_and_pooled``."""
        probs, pooled = self._probs_and_pooled(windows, return_pooled)
        if not return_pooled:
            return probs
        return probs, pooled if pooled is not None else np.zeros((0, 0, 0), np.float32)

    def _probs_and_pooled(
        self, windows: Sequence[np.ndarray], with_pooled: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Windows → (probabilities ``[W, classes]``, pooled ``[W, L+1, H]`` or None unless ``with_pooled``).

        Each window is first trimmed of leading/trailing silence like a training clip (``prepare_clip``) and
        then level-normalised like a training crop (``prepare_input``). Training only ever saw trimmed speech;
        a live window that starts or ends in a pause otherwise carries up to a second of silence, which costs
        accuracy. Windows of equal length are batched (``options.batch_size``); different lengths run
        separately: the model takes no padding mask, and batching saves little on a CPU, so unequal windows
        are never padded or cut to fit a batch.
        """
        return self._run_inputs(self._model_inputs(windows), with_pooled)

    def _model_inputs(self, windows: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Windows → model inputs trimmed like a training clip (``prepare_clip``). Trimmed windows are views; each
        is level-normalised (``prepare_input``, a copy) only when its batch runs, so a long file's overlapping
        windows never exist as copies all at once (an hour: 7,200 windows, 1.4 GB at 3 s)."""
        return [prepare_clip(w, self.preprocess, self.sample_rate) for w in windows]

    def _run_inputs(
        self, inputs: list[np.ndarray], with_pooled: bool
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Trimmed model inputs → (probabilities, pooled or None), inputs of equal length batched together."""
        if with_pooled and not self.has_pooled:
            raise ModelError(f"{self.path.name}: the model has no {POOLED_NAME!r} output (re-export it)")
        probs = np.zeros((len(inputs), len(self.labels)), dtype=np.float32)
        pooled = None
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_length.setdefault(len(x), []).append(i)
        batch = max(1, self.options.batch_size)
        for indices in by_length.values():
            for k in range(0, len(indices), batch):
                chunk = indices[k : k + batch]
                x = np.stack([prepare_input(inputs[i], self.preprocess) for i in chunk])
                probs[chunk], chunk_pooled = self._run(x, with_pooled)
                if with_pooled:
                    if pooled is None:
                        pooled = np.zeros((len(inputs), *chunk_pooled.shape[1:]), dtype=np.float32)
                    pooled[chunk] = chunk_pooled
        return probs, pooled

    def _run(self, x: np.ndarray, return_pooled: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        """``[batch, samples]`` float32 → (probabilities ``[batch, classes]``, pooled or None)."""
        names = [self._output] + ([POOLED_NAME] if return_pooled else [])
        try:
            out, *rest = self.session.run(names, {INPUT_NAME: x.astype(np.float32, copy=False)})
        except Exception as exc:  # ORT's own exception types (Fail, InvalidArgument, ...)
            raise ModelError(
                f"{self.path.name}: inference failed on input {x.shape}: {one_line(exc)}"
            ) from None
        out = np.asarray(out)
        if self._output == LOGITS_NAME and out.ndim == 2:
            with np.errstate(invalid="ignore", over="ignore"):  # non-finite logits are caught just below
                e = np.exp(out - out.max(axis=1, keepdims=True))
                out = e / e.sum(axis=1, keepdims=True)
        pooled = rest[0] if rest else None
        if pooled is not None and not np.isfinite(pooled).all():  # would poison a speaker's running mean
            raise NonFiniteOutputError(f"model {self.path.name} returned NaN or infinite pooled features")
        return self._check_output(out, len(x)), pooled

    def speaker_baseline(
        self, path: str | Path, options: SpeakerNormOptions | None = None
    ) -> SpeakerNormalizer:
        """A normaliser fixed on ``path``, a recording of the speaker talking calmly (neutral voice, at rest).

        Raises AudioError (one line) when the file is unusable or shorter than ``MIN_BASELINE_S`` of sound, and
        ModelError when the model has no ``baseline`` head.
        """
        head = self.speaker_norm_head("baseline")
        clip = self.clip_windows(
            load_audio(path, self.sample_rate), self.sample_rate, str(path), return_pooled=True
        )
        if clip.duration_s < MIN_BASELINE_S:
            raise AudioError(
                path,
                f"too short for a speaker baseline ({clip.duration_s:.1f} s of sound; at least {MIN_BASELINE_S:g} s, "
                "better 10 s or more of calm speech)",
            )
        return SpeakerNormalizer.from_baseline(head, clip.pooled, clip.duration_s, options)

    def speaker_normalizer(
        self, options: SpeakerNormOptions, baseline: str | Path | None = None
    ) -> SpeakerNormalizer:
        """A running-mean normaliser, or one fixed on the calm ``baseline`` recording when given
        (``speaker_baseline``): what ``--speaker-norm`` / ``--speaker-baseline`` ask for in both commands."""
        if baseline is not None:
            return self.speaker_baseline(baseline, options)
        return SpeakerNormalizer(self.speaker_norm_head(), options)

    def has_speaker_head(self, kind: str = "running") -> bool:
        """Whether the model carries a speaker head of ``kind`` (``running`` or ``baseline``; the bundled default
        model has both)."""
        return self.has_pooled and SPEAKER_HEAD_KEYS.get(kind, "") in self._metadata

    def speaker_norm_head(self, kind: str = "running") -> SpeakerNormHead:
        """The model's speaker head of ``kind`` (loaded once); ModelError when the model has none."""
        if kind not in SPEAKER_HEAD_KEYS:
            raise ModelError(f"unknown speaker head {kind!r}; choose {' or '.join(SPEAKER_HEAD_KEYS)}")
        if not self.has_speaker_head(kind):
            raise ModelError(
                f"{self.path.name}: this model has no speaker-normalised head ({kind}); the bundled default model "
                "has one, a model exported from a checkpoint does not"
            )
        if kind not in self._speaker_heads:
            try:
                self._speaker_heads[kind] = SpeakerNormHead(self._metadata[SPEAKER_HEAD_KEYS[kind]])
            except Exception as exc:  # corrupt base64 or graph
                raise ModelError(
                    f"{self.path.name}: cannot load the speaker-normalised head ({one_line(exc)})"
                ) from None
        return self._speaker_heads[kind]

    def timed_predict(self, window: np.ndarray) -> tuple[np.ndarray, float]:
        """One window → (probabilities [classes], inference milliseconds)."""
        t0 = time.perf_counter()
        probs = self.predict_windows([window])[0]
        return probs, (time.perf_counter() - t0) * 1000.0

    def timed_analyse(self, window: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """One window → (probabilities [classes], pooled [layers + 1, hidden], inference milliseconds)."""
        t0 = time.perf_counter()
        probs, pooled = self.predict_windows([window], return_pooled=True)
        return probs[0], pooled[0], (time.perf_counter() - t0) * 1000.0

    def probs_dict(self, probs: np.ndarray) -> dict[str, float]:
        return {label: float(p) for label, p in zip(self.labels, probs, strict=True)}

    # -- whole clips -----------------------------------------------------------------------------------------
    def clip_bounds(self, n_samples: int) -> list[tuple[int, int]]:
        """Windows scoring a whole clip (``windowing.tile_bounds``): the clip itself when it fits in ``window_s``;
        otherwise as few full windows as cover it, end to end with the overlap spread evenly (each second is
        encoded about once)."""
        return tile_bounds(n_samples, self.window_spec().window)

    def clip_windows(
        self, samples: np.ndarray, sample_rate: int, source: str = "<array>", return_pooled: bool = False
    ) -> ClipWindows:
        """Any rate/channels (``[frames]`` or ``[frames, channels]``) → the clip's scored windows.

        The clip is trimmed like a training clip (``prepare_clip``); a clip up to ``window_s`` long is one model
        input, a longer one is cut into ``clip_bounds`` windows (training saw ``window_s`` crops, so a long clip
        is judged crop by crop, never squeezed into one input). Raises AudioError when silent or too short.
        """
        audio = self.ensure_audible(self.to_model_rate(samples, sample_rate, source), source)
        clip = prepare_clip(audio, self.preprocess, self.sample_rate)
        if len(clip) < MIN_CLIP_S * self.sample_rate:
            raise AudioError(
                source, f"too short ({len(clip) / self.sample_rate:.3f} s of sound, minimum {MIN_CLIP_S} s)"
            )
        inputs = self._model_inputs([clip[s:e] for s, e in self.clip_bounds(len(clip))])
        probs, pooled = self._run_inputs(inputs, return_pooled)
        seconds = np.array([len(x) / self.sample_rate for x in inputs])
        return ClipWindows(probs, pooled, len(clip) / self.sample_rate, seconds)

    def prediction(
        self, window_probs: np.ndarray, duration_s: float, window_seconds: np.ndarray | None = None
    ) -> Prediction:
        """One Prediction from a clip's window probabilities ``[W, classes]``: their mean, weighted by each
        window's seconds of audio when ``window_seconds`` ``[W]`` is given (``ClipWindows.window_seconds``)."""
        probs = np.average(np.asarray(window_probs), axis=0, weights=window_seconds)
        best = int(np.argmax(probs))
        return Prediction(
            label=self.labels[best],
            confidence=float(probs[best]),
            probs=self.probs_dict(probs),
            duration_s=duration_s,
            windows=len(window_probs),
        )

    def predict_array(self, samples: np.ndarray, sample_rate: int, source: str = "<array>") -> Prediction:
        """Any rate/channels → one Prediction for the whole clip: the mean of its windows (``clip_windows``)."""
        clip = self.clip_windows(samples, sample_rate, source)
        return self.prediction(clip.probs, clip.duration_s, clip.window_seconds)

    def predict_file(self, path: str | Path) -> Prediction:
        """Any soundfile-readable file → Prediction. Raises AudioError (one line) for unusable files."""
        return self.predict_array(load_audio(path, self.sample_rate), self.sample_rate, source=str(path))

    def segment_windows(
        self,
        samples: np.ndarray,
        sample_rate: int,
        window_s: float | None = None,
        hop_s: float | None = None,
        vad: FrameVAD | None = None,
        return_pooled: bool = False,
    ) -> tuple[list[AudioWindow], np.ndarray, np.ndarray | None]:
        """The live monitor's windows over a recording (same ``StreamWindower``, same VAD gate), every one
        scored (batched): ``(windows, probabilities [W, classes], pooled [W, L+1, H] or None)``."""
        audio = self.to_model_rate(samples, sample_rate)
        windower = StreamWindower(self.window_spec(window_s, hop_s), vad or load_vad()[0], self.speech_gate)
        windows = windower.feed(audio) + windower.flush()
        return windows, *self._probs_and_pooled([w.samples for w in windows], return_pooled)

    def segments(self, windows: Sequence[AudioWindow], probs: np.ndarray) -> list[Segment]:
        """Timeline rows: speech windows labelled by their top class with their probabilities; the others
        ``silence`` without probabilities (the speech gate says there is not enough speech to judge)."""
        return [
            Segment(
                start_s=w.start_s,
                end_s=w.end_s,
                speech=w.speech,
                label=self.labels[int(np.argmax(p))] if w.speech else SILENCE_LABEL,
                probs=self.probs_dict(p) if w.speech else None,
            )
            for w, p in zip(windows, probs, strict=True)
        ]

    def predict_segments(
        self,
        samples: np.ndarray,
        sample_rate: int,
        window_s: float | None = None,
        hop_s: float | None = None,
        vad: FrameVAD | None = None,
    ) -> list[Segment]:
        """A timeline with the live monitor's windows (same ``StreamWindower``, same VAD gate, no trimming).

        Silence windows (too little speech for the speech gate) are labelled ``silence`` with no probabilities,
        as the live monitor shows them.
        """
        windows, probs, _ = self.segment_windows(samples, sample_rate, window_s, hop_s, vad)
        return self.segments(windows, probs)

    @staticmethod
    def ensure_audible(audio: np.ndarray, source: str = "<array>") -> np.ndarray:
        """``audio`` unchanged, or AudioError when its overall level is below ``SILENT_DBFS`` (nothing to judge)."""
        level = rms_dbfs(audio)
        if level < SILENT_DBFS:
            raise AudioError(source, f"silent (level {max(level, -120.0):.0f} dBFS, below {SILENT_DBFS:.0f})")
        return audio

    def to_model_rate(self, samples: np.ndarray, sample_rate: int, source: str = "<array>") -> np.ndarray:
        """Any channels/rate → mono float32 at the model's rate; AudioError when empty or not finite."""
        samples = np.asarray(samples, dtype=np.float32)
        if samples.size == 0:
            raise AudioError(source, "no audio samples")
        if not np.all(np.isfinite(samples)):
            raise AudioError(source, "audio contains NaN or infinite samples")
        return _to_model_rate(samples, sample_rate, self.sample_rate)


def _shape(shape) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def load_model(path: str | Path | None = None, options: ModelOptions | None = None, **kwargs) -> EmotionModel:
    """Load ``path`` (default: the bundled model, built once into the cache). ``kwargs`` fill ModelOptions."""
    if options is None:
        options = ModelOptions(**kwargs)
    return EmotionModel(resolve_model_path(path), options)
