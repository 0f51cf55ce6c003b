"""Where live audio comes from: a microphone, a recording replayed in real time, or raw PCM on stdin.

Every source only PRODUCES: it writes mono float32 blocks into a ``RingBuffer`` (the microphone from its
PortAudio callback, the others from a thread that behaves like one), and the main thread consumes. A file
replay therefore goes through exactly the ring buffer and windowing the microphone does.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.audio import AudioError, AudioStream, report_notices
from emotion_monitor.realtime.errors import one_line
from emotion_monitor.realtime.ringbuffer import RingBuffer

BLOCK_S = 0.032
"""Audio per callback/replay block: 32 ms, one VAD frame at 16 kHz; short enough for prompt display."""
RING_CAPACITY_S = 10.0
"""Ring buffer size. Inference falling more than this behind real time drops the oldest audio (counted)."""
STALL_TIMEOUT_S = 3.0
"""A running microphone that delivers nothing for this long is treated as gone (unplugged, server died)."""
BACKPRESSURE_WAIT_S = 10.0
"""Replay sources wait this long for room in the ring before overwriting (and counting) unread audio."""
REPLAY_HEAD_S = 30.0
"""A replayed recording's first seconds are decoded before the replay starts: a file that cannot be decoded, or
a short one with a caveat (a truncated file), is reported before anything is shown; the rest is decoded as it is
replayed (``audio.AudioStream``), so a recording of any length is replayed in constant memory."""
PCM_SCALE = 32768.0


class SourceError(RuntimeError):
    """The audio input failed; ``str()`` is one line for the user."""


class AudioSource:
    """Base: owns the ring buffer; ``start()``, ``check()`` (raise SourceError if it died), ``stop()``."""

    description = "audio"
    live = True
    """Audio arrives at its own pace and will not wait for the reader (a microphone, a real-time replay): a
    reader that falls behind should skip stale windows rather than lag further. False for sources that wait."""

    def __init__(self, sample_rate: int):
        self.sample_rate = int(sample_rate)
        self.ring = RingBuffer(round(RING_CAPACITY_S * self.sample_rate))

    def start(self) -> None:
        raise NotImplementedError

    def check(self) -> None:
        """Raise SourceError when the source can no longer deliver audio (called whenever a read times out)."""

    def stop(self) -> None:
        self.ring.close()


class ThreadSource(AudioSource):
    """A producer thread standing in for an audio callback; errors in it reach the reader via ``ring.fail``."""

    def __init__(self, sample_rate: int):
        super().__init__(sample_rate)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run_guarded, name=type(self).__name__, daemon=True)
        self._thread.start()

    def _run_guarded(self) -> None:
        try:
            self.produce()
        except SourceError as exc:  # already one line naming the source
            self.ring.fail(exc)
        except Exception as exc:  # any failure must reach the main thread, not die silently here
            self.ring.fail(SourceError(f"{self.description}: {exc}"))
        else:
            self.ring.close()

    def produce(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        self._stop.set()
        super().stop()
        if self._thread is not None:
            self._thread.join(timeout=2.0)


class FileReplaySource(ThreadSource):
    """Replays a recording block by block, at real-time pace (like a microphone) or as fast as inference allows,
    decoding it as it goes (``audio.AudioStream``; its first ``REPLAY_HEAD_S`` before the replay starts).

    ``realtime=True``: never waits for the reader, exactly like a microphone; a slow reader loses (counted) audio.
    ``realtime=False`` (``--fast``): waits for room in the ring, so every sample is analysed.
    AudioError (one line) when the file cannot be used; notices (a truncated file) go to ``on_notice``.
    """

    def __init__(self, path: str | Path, sample_rate: int, realtime: bool = True, on_notice=None):
        super().__init__(sample_rate)
        self.path = Path(path)
        self.realtime = realtime
        self.description = str(self.path)
        self.on_notice = on_notice
        self._notified = False
        self._stream = AudioStream(self.path, self.sample_rate)
        self._blocks = self._stream.blocks()
        self._head: list[np.ndarray] = []
        try:
            head = 0
            for block in self._blocks:
                self._head.append(block)
                head += len(block)
                if head >= REPLAY_HEAD_S * self.sample_rate:
                    break
            else:  # all of it: its notices now, before anything is shown
                self._notify()
        except BaseException:
            self._stream.close()
            raise

    @property
    def live(self) -> bool:
        """A real-time replay behaves like a microphone; ``--fast`` waits for the reader."""
        return self.realtime

    def produce(self) -> None:
        try:
            self._replay(round(BLOCK_S * self.sample_rate))
        except AudioError as exc:  # decoding failed part-way: one line naming the file
            raise SourceError(str(exc)) from None
        finally:
            self._stream.close()

    def _replay(self, block: int) -> None:
        """The decoded audio in ``block``-sample pieces (the last one shorter), each at its time."""
        t0 = time.monotonic()
        pos = 0
        carry = np.zeros(0, np.float32)
        for decoded in self._decoded():
            audio = np.concatenate([carry, decoded]) if len(carry) else decoded
            whole = len(audio) - len(audio) % block
            for start in range(0, whole, block):
                if not self._send(audio[start : start + block], pos + start, t0):
                    return
            pos += whole
            carry = audio[whole:]
        if len(carry):
            self._send(carry, pos, t0)

    def _decoded(self) -> Iterator[np.ndarray]:
        """The head's blocks (each released once handed on), then the rest as it is decoded; then the notices."""
        self._head.reverse()
        while self._head:
            yield self._head.pop()
        yield from self._blocks
        self._notify()

    def _notify(self) -> None:
        if self._notified:
            return
        self._notified = True
        report_notices(self._stream.notices, self.on_notice)

    def _send(self, samples: np.ndarray, pos: int, t0: float) -> bool:
        """Write one block once it has been "recorded" (real time) or once there is room (``--fast``); False
        when the replay is stopped."""
        if self._stop.is_set():
            return False
        if self.realtime:
            delay = t0 + (pos + len(samples)) / self.sample_rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)  # a block "arrives" once it has been "recorded"
        self.ring.write(samples, wait_s=None if self.realtime else BACKPRESSURE_WAIT_S)
        return True

    def stop(self) -> None:
        super().stop()
        if self._thread is None:  # never started: nothing else closes the file
            self._stream.close()


class StdinPCMSource(ThreadSource):
    """Raw signed 16-bit little-endian mono PCM at ``sample_rate`` from a pipe (``arecord ... | emotion-live``)."""

    description = "stdin"
    live = False  # a pipe waits for the reader (back-pressure), so every window can be analysed

    def __init__(self, sample_rate: int, stream=None):
        super().__init__(sample_rate)
        self._fd = (stream or sys.stdin.buffer).fileno()

    def produce(self) -> None:
        block_bytes = 2 * round(BLOCK_S * self.sample_rate)
        leftover = b""
        while not self._stop.is_set():
            data = os.read(self._fd, block_bytes)
            if not data:
                return
            data = leftover + data
            usable = len(data) - len(data) % 2  # a sample may be split across reads
            leftover = data[usable:]
            samples = np.frombuffer(data[:usable], dtype="<i2").astype(np.float32) / PCM_SCALE
            # A pipe has its own back-pressure: waiting here slows the writer instead of losing audio.
            self.ring.write(samples, wait_s=BACKPRESSURE_WAIT_S)


class MicrophoneSource(AudioSource):
    """A sounddevice ``InputStream`` whose callback only copies into the ring buffer."""

    def __init__(self, sample_rate: int, device: str | int | None = None):
        super().__init__(sample_rate)
        self.device = device
        self.description = f"input device {device!r}" if device is not None else "default input device"
        self._stream = None
        self._last_written = 0
        self._last_progress = time.monotonic()

    def _callback(self, indata, frames, time_info, status) -> None:
        # Runs on PortAudio's thread: copy and count, nothing else (no allocation-heavy work, no printing).
        if status.input_overflow:
            self.ring.note_device_overflow()
        self.ring.write(indata[:, 0])

    def start(self) -> None:
        sd = import_sounddevice()
        device = self.device
        try:
            if device is None:
                try:
                    sd.query_devices(kind="input")
                except (sd.PortAudioError, ValueError):
                    raise SourceError(
                        "no default audio input device (see --list-devices, or use --input FILE / --stdin-pcm)"
                    ) from None
            sd.check_input_settings(device=device, channels=1, samplerate=self.sample_rate, dtype="float32")
            self._stream = sd.InputStream(
                device=device,
                channels=1,
                samplerate=self.sample_rate,
                dtype="float32",
                blocksize=round(BLOCK_S * self.sample_rate),
                callback=self._callback,
            )
            self._stream.start()
        except SourceError:
            raise
        except (sd.PortAudioError, ValueError) as exc:
            reason = f"{self.description}: {one_line(exc)} (at {self.sample_rate} Hz, mono)"
            raise SourceError(reason + self._rate_hint(sd, exc)) from None
        self._last_progress = time.monotonic()

    def _rate_hint(self, sd, exc: BaseException) -> str:
        """For a rejected rate: the device's own default rate, to pass with --rate (resampled to the model's)."""
        if "sample rate" not in str(exc).lower():
            return ""
        try:
            default_rate = sd.query_devices(self.device, kind="input")["default_samplerate"]
        except (sd.PortAudioError, ValueError):
            return ""
        return f"; try --rate {default_rate:.0f}"

    def check(self) -> None:
        written = self.ring.stats().written
        now = time.monotonic()
        if written != self._last_written:
            self._last_written, self._last_progress = written, now
            return
        if self._stream is not None and not self._stream.active:
            raise SourceError(f"{self.description} stopped delivering audio (disconnected?)")
        if now - self._last_progress > STALL_TIMEOUT_S:
            raise SourceError(f"{self.description}: no audio for {STALL_TIMEOUT_S:.0f} s (disconnected?)")

    def stop(self) -> None:
        super().stop()
        stream, self._stream = self._stream, None
        if stream is None:
            return
        # abort() on a vanished device can block inside PortAudio; never let that hang the exit.
        closer = threading.Thread(target=lambda: _close_quietly(stream), daemon=True)
        closer.start()
        closer.join(timeout=2.0)


def _close_quietly(stream) -> None:
    try:
        stream.abort(ignore_errors=True)
        stream.close(ignore_errors=True)
    except Exception:  # the device may already be gone; there is nothing left to clean up
        pass


def import_sounddevice():
    """sounddevice, or SourceError when the PortAudio library is missing."""
    try:
        import sounddevice as sd
    except OSError as exc:  # raised when libportaudio2 is not installed
        raise SourceError(
            f"cannot use audio devices: {one_line(exc)} (apt-get install libportaudio2)"
        ) from None
    return sd


def list_input_devices() -> str:
    """A table of input-capable devices for ``--list-devices``."""
    sd = import_sounddevice()
    try:
        devices = sd.query_devices()
        default_in = sd.default.device[0]
    except sd.PortAudioError as exc:
        raise SourceError(f"cannot list audio devices: {one_line(exc)}") from None
    lines = []
    for index, dev in enumerate(devices):
        if dev["max_input_channels"] > 0:
            mark = "*" if index == default_in else " "
            lines.append(
                f"{mark} {index:3d}  {dev['name']}  ({dev['max_input_channels']} ch, "
                f"default {dev['default_samplerate']:.0f} Hz)"
            )
    if not lines:
        return "no audio input devices found"
    return "\n".join(["  idx  name  (* = default input)", *lines])
