"""The one audio preprocessing path, shared by training, batch scoring and the live monitor.

Everything here is numpy + soundfile + soxr so that the inference side never needs torch.
A model's input is always a 1-D float32 waveform at ``SAMPLE_RATE`` (16 kHz mono), level-normalised
per model input (one training crop, one scored window, one live window) so that the three uses see
identically scaled audio.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

SAMPLE_RATE = 16_000
"""Sample rate (Hz) of every model input."""

_EPS = 1e-10
_BLOCK = 1 << 20
"""Samples per block where whole-file statistics would otherwise need float64 copies of the whole file."""

# -- limits of the one decoding path (``load_audio``) ----------------------------------------------------------
MAX_AUDIO_S = 24 * 3600.0
"""Longest file decoded, in seconds (a day: no real recording is refused). A header promising more is refused
before anything is read (a header bomb), and so is a file whose decoded audio runs past it (a header that lies).
``emotion-score`` reads files as a stream (``AudioStream``) in constant memory whatever their length; whole-file
decoding (``load_audio``) holds 16 kHz mono float32 in memory, 230 MB per hour."""
PREALLOCATE_S = 600.0
"""Whole-file decoding reserves memory for what the header promises, up to this many seconds (then grows)."""
MIN_SAMPLE_RATE = 100
"""Lowest file rate accepted (Hz): 16 kHz / 100 Hz is already a 160x upsampling; a "1 Hz" file would need
16,000x (gigabytes of output from a few kB of samples)."""
MAX_SAMPLE_RATE = 768_000
"""Highest file rate accepted (Hz): twice the highest real audio rate (384 kHz)."""
MAX_CHANNELS = 256
MAX_SAMPLE_VALUE = 1e6
"""Largest sample magnitude accepted (full scale is 1.0; 32768 is integer PCM stored as float). Beyond it a
file holds garbage, not audio, and sums of such values overflow float32."""
READ_BLOCK_FRAMES = 1 << 16
READ_BLOCK_BYTES = 8 << 20
"""Audio is read in blocks of ``READ_BLOCK_FRAMES`` frames, fewer when that exceeds this many bytes (all
channels, float32), and downmixed block by block; a decoder failing part-way keeps the blocks before it."""
DECODER_LOG_ENV = "EMOTION_DECODER_LOG"
"""Set to 1 to let decoder libraries (libsndfile, libmpg123, ...) print their own messages on stderr."""
AUDIO_SUFFIXES = frozenset("." + fmt.lower() for fmt in sf.available_formats()) | {".oga", ".opus", ".aif"}
"""File endings of what this decoder (libsndfile) can read: ``emotion-score`` picks these up inside folders
(files named explicitly are always tried)."""


class AudioError(ValueError):
    """A file or buffer that cannot be used as audio; ``str()`` is one line naming the file and the problem."""

    def __init__(self, source: str | Path, reason: str):
        self.source = str(source)
        self.reason = reason
        super().__init__(f"{self.source}: {reason}")


@dataclass(frozen=True)
class PreprocessOptions:
    """How a waveform becomes model input. Travels in the ONNX metadata so the runtime repeats training exactly.

    target_dbfs: RMS level (dB re full scale) each model input is scaled to; None disables.
    max_gain_db: ceiling on the gain so near-silence is not blown up into loud noise.
    trim_db: trim leading/trailing audio quieter than this (dB below the clip's peak); None disables.
        Used on whole files (training clips, scored files); never on live windows.
    trim_pad_s: audio kept around the trimmed region, in seconds.
    """

    target_dbfs: float | None = -23.0
    max_gain_db: float = 30.0
    trim_db: float | None = 35.0
    trim_pad_s: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict | None) -> PreprocessOptions:
        known = {k: v for k, v in (data or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)


def to_mono(samples: np.ndarray) -> np.ndarray:
    """``[frames]`` or ``[frames, channels]`` → ``[frames]`` float32 by averaging channels."""
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        if samples.shape[1] == 1:
            return samples[:, 0]
        # Summed in float64: channels near float32's limit (3e38) would overflow to inf in a float32 sum.
        return samples.mean(axis=1, dtype=np.float64).astype(np.float32)
    if samples.ndim != 1:
        raise ValueError(f"expected [frames] or [frames, channels] audio, got shape {samples.shape}")
    return samples


def resample(samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling (soxr 'HQ'); a no-op when the rates already match."""
    if sample_rate == target_rate:
        return np.asarray(samples, dtype=np.float32)
    if sample_rate <= 0:
        raise ValueError(f"invalid sample rate {sample_rate}")
    return soxr.resample(samples, sample_rate, target_rate, quality="HQ").astype(np.float32, copy=False)


def to_model_rate(samples: np.ndarray, sample_rate: int, target_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Any channel count and rate → mono float32 at ``target_rate``."""
    return resample(to_mono(samples), sample_rate, target_rate)


class AudioWarning(UserWarning):
    """Audio that was used with a caveat (e.g. a truncated file scored on the part present); one line."""


@dataclass(frozen=True)
class DecodedAudio:
    """``load_audio``'s result with its caveats: mono float32 ``samples`` at ``sample_rate``, and ``notices``
    (one line each, naming the file) about what was used with a caveat, e.g. a truncated file."""

    samples: np.ndarray
    sample_rate: int
    notices: tuple[str, ...] = ()


def load_audio(
    path: str | Path, target_rate: int = SAMPLE_RATE, on_notice: Callable[[str], None] | None = None
) -> np.ndarray:
    """Decode a file soundfile can read into mono float32 at ``target_rate`` (``decode_audio``).

    Raises AudioError (one line: file and reason) for unreadable, corrupt, empty or out-of-limits files.
    Notices (a truncated file is used as far as it goes) go to ``on_notice``, else to ``warnings.warn``
    as AudioWarning: never silently.
    """
    decoded = decode_audio(path, target_rate)
    report_notices(decoded.notices, on_notice)
    return decoded.samples


def report_notices(lines: tuple[str, ...], on_notice: Callable[[str], None] | None = None) -> None:
    """Each notice line to ``on_notice``, or without one as an AudioWarning (``warnings.warn``): never silently."""
    for line in lines:
        if on_notice is not None:
            on_notice(line)
        else:
            warnings.warn(line, AudioWarning, stacklevel=3)


def check_audio_path(path: str | Path) -> Path:
    """``path`` when it is a regular file (links followed) that can be opened for reading, else AudioError
    naming what it is instead: missing, a broken or looping link, a folder, a FIFO, a device, unreadable.
    Never opens a FIFO (that would block until a writer comes)."""
    path = Path(path)
    try:
        info = os.stat(path)
    except OSError as exc:
        raise AudioError(path, _missing_reason(path, exc)) from None
    if not stat.S_ISREG(info.st_mode):
        raise AudioError(path, f"{_file_kind(info.st_mode)}, not a regular file")
    if not os.access(path, os.R_OK):
        raise AudioError(path, "permission denied")
    return path


def _missing_reason(path: Path, exc: OSError) -> str:
    if path.is_symlink():
        if getattr(exc, "errno", None) == 40:  # ELOOP
            return "symbolic link loop"
        return f"broken symbolic link (to {os.readlink(path)}, which does not exist)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return f"cannot access ({exc.strerror or exc})"


def _file_kind(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO (named pipe)"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return name
    return "a special file"


@contextlib.contextmanager
def quiet_native_stderr() -> Iterator[None]:
    """Route file descriptor 2 to /dev/null while decoder libraries run, so their own chatter (libmpg123's
    "Note: Illegal Audio-MPEG-Header ...", libsndfile's warnings) never reaches the user's terminal; our own
    one-line reasons are printed afterwards. ``$EMOTION_DECODER_LOG=1`` lets the chatter through."""
    if os.environ.get(DECODER_LOG_ENV, "") not in ("", "0"):
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (embedded interpreter): nothing to hide
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


_DECODER_REASONS = {
    1: "not a recognised audio format",
    3: "malformed audio file",
    4: "unsupported audio encoding",
    7: "not a recognised audio format",  # libsndfile's "possibly a pipe?" for a regular file it cannot parse
    8: "no audio data could be read",
    18: "audio data in an unimplemented format",
}


def _decoder_reason(exc: BaseException) -> str:
    """One line from a decoder error, without libsndfile's misleading hints."""
    code = getattr(exc, "code", None)
    if code in _DECODER_REASONS:
        return _DECODER_REASONS[code]
    text = (getattr(exc, "error_string", None) or str(exc) or type(exc).__name__).strip()
    text = text.splitlines()[0] if text else type(exc).__name__
    return re.sub(r"^Error\s*:\s*", "", text).rstrip(".")


def _truncation(extra_info: str) -> tuple[int, int] | None:
    """(bytes the header promises, bytes present) of the audio data chunk when libsndfile's header log says
    the file ends early (``data : 64000 (should be 31978)``), else None."""
    for name, claimed, present in re.findall(
        r"^\s*(data|SSND)\s*:\s*(\d+)\s*\(should be (\d+)\)", extra_info, re.M
    ):
        del name
        if int(present) < int(claimed):
            return int(claimed), int(present)
    return None


def decode_audio(path: str | Path, target_rate: int = SAMPLE_RATE) -> DecodedAudio:
    """The whole file in memory through the one guarded decoding path (``AudioStream``): header checked against
    the limits above before anything is read, audio read in blocks and downmixed/resampled block by block
    (memory stays near the 16 kHz mono result), every decoder failure turned into AudioError with a one-line
    reason. A file that ends before its header says (a truncated WAV) or whose decoding fails part-way is used as
    far as it decodes, with a notice saying so. Long recordings are better read with ``AudioStream`` itself."""
    with AudioStream(path, target_rate) as stream:
        # Sized from the header, but only up to PREALLOCATE_S: a header may lie (grown as needed).
        out = np.empty(min(stream.expected_samples(), int(PREALLOCATE_S * target_rate)) + 1024, np.float32)
        n_out = 0
        for block in stream.blocks():
            if n_out + len(block) > len(out):
                out = np.concatenate([out[:n_out], np.empty(max(len(block), len(out) // 2), np.float32)])
            out[n_out : n_out + len(block)] = block
            n_out += len(block)
    samples = out[:n_out].copy() if n_out < len(out) // 2 else out[:n_out]
    return DecodedAudio(samples, target_rate, stream.notices)


class AudioStream:
    """A file decoded block by block (``blocks()``: mono float32 at ``target_rate``), so a recording of any
    length is read in constant memory. Opening checks the header against the limits above (AudioError, one
    line); decoding errors are AudioError too, and a file that ends early or stops decoding part-way yields what
    it holds, with a line in ``notices`` (set when ``blocks()`` is exhausted). Use as a context manager.
    """

    def __init__(self, path: str | Path, target_rate: int = SAMPLE_RATE):
        self.path = check_audio_path(path)
        self.target_rate = target_rate
        self.notices: tuple[str, ...] = ()
        self.samples_out = 0
        """Samples at ``target_rate`` yielded so far."""
        if self.path.stat().st_size == 0:  # libsndfile would call it an unrecognised format
            raise AudioError(self.path, "empty file (0 bytes)")
        with quiet_native_stderr():
            try:
                self._file = sf.SoundFile(str(self.path))
            except (
                Exception
            ) as exc:  # LibsndfileError, RuntimeError, TypeError, ...: all mean "cannot decode"
                raise AudioError(self.path, f"cannot decode audio ({_decoder_reason(exc)})") from None
            try:
                self.rate, self.channels = int(self._file.samplerate), int(self._file.channels)
                self.frames = int(self._file.frames)
                _check_header(self.path, self.rate, self.channels, self.frames)
                self._truncated = _truncation(_extra_info(self._file))
            except BaseException:
                self._file.close()
                raise

    @property
    def header_s(self) -> float:
        """The duration the header claims, in seconds (0 when it says nothing)."""
        return max(self.frames, 0) / self.rate

    def expected_samples(self) -> int:
        """Samples at ``target_rate`` the header promises (at most ``MAX_AUDIO_S`` worth)."""
        return int(min(self.header_s, MAX_AUDIO_S) * self.target_rate)

    def blocks(self) -> Iterator[np.ndarray]:
        """Mono float32 blocks at ``target_rate`` (about ``READ_BLOCK_FRAMES`` input frames each), in order."""
        path, rate, channels, target_rate = self.path, self.rate, self.channels, self.target_rate
        max_in = int(MAX_AUDIO_S * rate)
        block = max(1024, min(READ_BLOCK_FRAMES, READ_BLOCK_BYTES // (4 * channels)))
        resampler = None
        if rate != target_rate:
            resampler = soxr.ResampleStream(rate, target_rate, 1, dtype="float32", quality="HQ")
        n_in = 0
        stopped = None
        while True:
            try:
                with quiet_native_stderr():
                    data = self._file.read(block, dtype="float32", always_2d=True)
            except Exception as exc:
                if n_in == 0:
                    raise AudioError(path, f"cannot decode audio ({_decoder_reason(exc)})") from None
                stopped = _decoder_reason(exc)
                data = np.zeros((0, channels), np.float32)
            last = len(data) == 0
            if not last:
                n_in += len(data)
                if n_in > max_in:
                    raise AudioError(
                        path, f"longer than {MAX_AUDIO_S / 3600:g} h of audio (split longer recordings)"
                    )
                mono = _checked_mono(path, data, n_in - len(data), rate)
            else:
                mono = np.zeros(0, np.float32)
            if resampler is not None:
                mono = resampler.resample_chunk(mono, last=last)
            if len(mono):
                self.samples_out += len(mono)
                yield mono
            if last:
                break
        self._finish(stopped)

    def _finish(self, stopped: str | None) -> None:
        """AudioError when nothing was decoded; else the notices about what was used with a caveat."""
        if self.samples_out == 0:
            raise AudioError(self.path, "empty file (no audio samples)")
        got_s = self.samples_out / self.target_rate
        if stopped is not None:
            self.notices = (
                f"{self.path}: notice: decoding stopped after {got_s:.2f} s ({stopped}); scored on the audio "
                "before it",
            )
        elif self._truncated is not None:
            claimed, present = self._truncated
            self.notices = (
                f"{self.path}: notice: truncated file ({present} of the {claimed} audio bytes its header "
                f"promises); scored on the {got_s:.2f} s present",
            )

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> AudioStream:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _extra_info(f: sf.SoundFile) -> str:
    try:
        return f.extra_info
    except Exception:  # only a diagnostic log: never a reason to fail
        return ""


def _check_header(path: Path, rate: int, channels: int, frames: int) -> None:
    if channels < 1 or channels > MAX_CHANNELS:
        raise AudioError(path, f"{channels} channels in the header (1 to {MAX_CHANNELS} accepted)")
    if rate < MIN_SAMPLE_RATE:
        raise AudioError(
            path,
            f"sample rate {rate} Hz is below {MIN_SAMPLE_RATE} Hz (would need a {SAMPLE_RATE}/{max(rate, 0)} "
            "resample ratio); not usable audio",
        )
    if rate > MAX_SAMPLE_RATE:
        raise AudioError(path, f"sample rate {rate} Hz is above {MAX_SAMPLE_RATE} Hz; not usable audio")
    if frames > MAX_AUDIO_S * rate:
        raise AudioError(
            path,
            f"header claims {frames / rate / 3600:.3g} h of audio ({frames} frames at {rate} Hz); "
            f"files up to {MAX_AUDIO_S / 3600:g} h are accepted (split longer recordings)",
        )


def _checked_mono(path: Path, data: np.ndarray, offset: int, rate: int) -> np.ndarray:
    """One block ``[frames, channels]`` → mono float32, after checking the sample values are audio."""
    finite = np.isfinite(data)
    if not finite.all():
        first = offset + int(np.flatnonzero(~finite.all(axis=1))[0])
        raise AudioError(path, f"NaN or infinite sample values (first at {first / rate:.3f} s)")
    peak = float(np.max(np.abs(data))) if data.size else 0.0
    if peak > MAX_SAMPLE_VALUE:
        raise AudioError(path, f"sample values up to {peak:.3g}, far beyond full scale (1.0): not audio")
    return to_mono(data)


def rms_dbfs(samples: np.ndarray) -> float:
    """RMS level in dB re full scale (-inf-safe: silence gives about -200 dB)."""
    if samples.size == 0:
        return -200.0
    if len(samples) <= _BLOCK:
        mean = float(np.mean(np.square(samples, dtype=np.float64)))
    else:  # in blocks: a float64 square of an hour of audio would be a 460 MB temporary
        blocks = (samples[i : i + _BLOCK] for i in range(0, len(samples), _BLOCK))
        mean = sum(float(np.sum(np.square(b, dtype=np.float64))) for b in blocks) / len(samples)
    return float(10.0 * np.log10(mean + _EPS * _EPS))


def normalise_level(samples: np.ndarray, target_dbfs: float = -23.0, max_gain_db: float = 30.0) -> np.ndarray:
    """Scale to ``target_dbfs`` RMS, never by more than ``max_gain_db``; peaks are kept below full scale."""
    gain_db = min(target_dbfs - rms_dbfs(samples), max_gain_db)
    out = samples * np.float32(10.0 ** (gain_db / 20.0))
    peak = float(np.max(np.abs(out))) if out.size else 0.0
    if peak > 1.0:
        out = out / np.float32(peak)
    return out.astype(np.float32, copy=False)


def trim_silence(
    samples: np.ndarray, sample_rate: int = SAMPLE_RATE, threshold_db: float = 35.0, pad_s: float = 0.1
) -> np.ndarray:
    """Cut leading/trailing audio whose 20 ms frame RMS is ``threshold_db`` below the loudest frame.

    RAVDESS clips carry about a second of room noise around each sentence; trimming it keeps random
    crops on speech. Returns the input unchanged when it has no frame above the threshold.
    """
    frame = max(1, int(0.02 * sample_rate))
    n_frames = len(samples) // frame
    if n_frames < 2:
        return samples
    frames = samples[: n_frames * frame].reshape(n_frames, frame)
    rows = max(1, _BLOCK // frame)  # frame levels in blocks: bounded float64 temporaries on long files
    power = np.concatenate(
        [np.mean(np.square(frames[i : i + rows], dtype=np.float64), axis=1) for i in range(0, n_frames, rows)]
    )
    frame_db = 10.0 * np.log10(power + _EPS)
    loud = np.flatnonzero(frame_db >= frame_db.max() - threshold_db)
    pad = int(pad_s * sample_rate)
    start = max(0, loud[0] * frame - pad)
    end = min(len(samples), (loud[-1] + 1) * frame + pad)
    return samples[start:end]


def prepare_clip(
    samples: np.ndarray, options: PreprocessOptions, sample_rate: int = SAMPLE_RATE
) -> np.ndarray:
    """Whole-recording step (training clip or scored file): trim silence if configured. Shape ``[samples]``."""
    if options.trim_db is None:
        return samples
    return trim_silence(samples, sample_rate, options.trim_db, options.trim_pad_s)


def prepare_input(window: np.ndarray, options: PreprocessOptions) -> np.ndarray:
    """Per-model-input step (a training crop, a scored window, a live window): level normalisation."""
    window = np.asarray(window, dtype=np.float32)
    if options.target_dbfs is None:
        return window
    return normalise_level(window, options.target_dbfs, options.max_gain_db)
