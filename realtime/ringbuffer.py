"""A fixed-capacity, thread-safe float32 ring buffer between an audio producer and the inference loop.

The producer is a PortAudio callback (or a file/stdin replay thread standing in for one); the consumer is the
main thread. The callback must never block or allocate much, so ``write`` copies into preallocated memory
under a short lock. When the consumer falls behind, the OLDEST unread audio is overwritten (the display stays
current rather than drifting behind real time) and every lost sample is counted — never dropped silently.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

ARRIVAL_HISTORY = 4096
"""Writes remembered for latency measurement (about 40 s of 10 ms callbacks)."""


@dataclass(frozen=True)
class RingStats:
    """Counters since creation.

    written: samples offered by the producer.
    dropped: unread samples overwritten because the buffer was full (audio the model never saw).
    overruns: write calls that had to overwrite unread audio.
    device_overflows: blocks the audio driver itself reported as overflowed (PortAudio ``input_overflow``).
    """

    written: int
    dropped: int
    overruns: int
    device_overflows: int


class RingBuffer:
    """Single-producer / single-consumer ring of mono float32 samples.

    ``capacity`` is in samples. ``write`` never blocks unless ``wait_s`` is given (replay sources use that for
    back-pressure; the live callback never does). ``read`` waits at most ``timeout_s`` for data.
    ``close()`` marks the end of input; ``fail(exc)`` hands a producer-side error to the consumer.
    """

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError(f"capacity must be positive, got {capacity}")
        self.capacity = int(capacity)
        self._data = np.zeros(self.capacity, dtype=np.float32)
        self._read_pos = 0  # absolute sample index of the oldest unread sample
        self._write_pos = 0  # absolute sample index one past the newest sample
        self._dropped = 0
        self._discarded = 0  # part of ``_dropped``: oversized writes that never entered the ring
        self._overruns = 0
        self._device_overflows = 0
        self._closed = False
        self._error: BaseException | None = None
        # (absolute end index of a write, monotonic time of that write): lets the consumer tell how long ago
        # a window's last sample arrived, i.e. the monitor's real latency. Bounded, newest last.
        self._arrivals: deque[tuple[int, float]] = deque(maxlen=ARRIVAL_HISTORY)
        self._cond = threading.Condition(threading.Lock())

    # -- producer side ---------------------------------------------------------------------------------------
    def write(self, samples: np.ndarray, wait_s: float | None = None) -> None:
        """Append ``samples`` ([n] float32). Full buffer: overwrite the oldest unread audio and count it.

        wait_s: if given, first wait up to this long for room (back-pressure for replay sources).
        """
        samples = np.asarray(samples, dtype=np.float32).reshape(-1)
        n = samples.size
        if n == 0:
            return
        with self._cond:
            lost = 0
            if n > self.capacity:  # only the newest ``capacity`` samples can survive anyway
                lost = n - self.capacity
                self._discarded += lost
                samples, n = samples[-self.capacity :], self.capacity
            if wait_s is not None:
                self._cond.wait_for(lambda: self._free() >= n or self._closed, timeout=wait_s)
            overflow = n - self._free()
            if overflow > 0:
                self._read_pos += overflow
                lost += overflow
            if lost:
                self._dropped += lost
                self._overruns += 1
            start = self._write_pos % self.capacity
            first = min(n, self.capacity - start)
            self._data[start : start + first] = samples[:first]
            self._data[: n - first] = samples[first:]
            self._write_pos += n
            self._arrivals.append((self._write_pos, time.monotonic()))
            self._cond.notify_all()

    def note_device_overflow(self) -> None:
        """Record that the driver reported lost input (callback status ``input_overflow``)."""
        with self._cond:
            self._device_overflows += 1

    def close(self) -> None:
        """No more input will come; readers drain what is left and then get an empty array."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def fail(self, error: BaseException) -> None:
        """Hand a producer-side error to the consumer; the next ``read`` raises it."""
        with self._cond:
            self._error = error
            self._closed = True
            self._cond.notify_all()

    # -- consumer side ---------------------------------------------------------------------------------------
    def read(self, max_samples: int | None = None, timeout_s: float = 0.5) -> np.ndarray:
        """Return up to ``max_samples`` unread samples (all when None), waiting at most ``timeout_s``.

        An empty result means: nothing arrived in time (check ``closed`` to tell it from the end of input).
        """
        with self._cond:
            self._cond.wait_for(lambda: self._available() > 0 or self._closed, timeout=timeout_s)
            if self._error is not None:
                raise self._error
            n = self._available() if max_samples is None else min(self._available(), int(max_samples))
            start = self._read_pos % self.capacity
            first = min(n, self.capacity - start)
            out = np.concatenate([self._data[start : start + first], self._data[: n - first]])
            self._read_pos += n
            self._cond.notify_all()
            return out

    def arrival_time(self, sample_index: int) -> float | None:
        """``time.monotonic()`` at which absolute sample ``sample_index - 1`` was written (None if too old)."""
        with self._cond:
            found = None
            for end, t in reversed(self._arrivals):  # windows are recent: a few steps back at most
                if end < sample_index:
                    break
                found = t
            return found

    @property
    def closed(self) -> bool:
        """True once the producer closed or failed AND every sample was read."""
        with self._cond:
            return self._closed and self._available() == 0

    def available(self) -> int:
        with self._cond:
            return self._available()

    def stats(self) -> RingStats:
        with self._cond:
            return RingStats(
                self._write_pos + self._discarded, self._dropped, self._overruns, self._device_overflows
            )

    # -- internals -------------------------------------------------------------------------------------------
    def _available(self) -> int:
        return self._write_pos - self._read_pos

    def _free(self) -> int:
        return self.capacity - self._available()
