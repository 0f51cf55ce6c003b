"""Online speaker turns from what the emotion model already computes: who is speaking, window by window.

The model's ``pooled`` output holds every encoder layer's time mean; the lower layers carry some of the
speaker's voice (measured in docs/streaming.md: not enough for reliable turns, so emotion-live leaves this off
by default). Each speech window's embedding is the chosen layers' means; its distance to a speaker is the
root-mean-square difference from that speaker's centroid in units of the session's spread per dimension,
divided by the typical distance of a speaker's own windows from their centroid (so 1 is "as usual for one
speaker", whatever the model and the room):

- a window within ``change_ratio`` of the current speaker joins them;
- ``confirm_windows`` windows in a row beyond it are a turn change: to the known speaker closest to their mean
  when within ``change_ratio`` (a speaker who returns), else to a new speaker seeded with them.

No decision is taken before ``min_windows`` speech windows of the session (the statistics need them). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_LAYERS = (1, 2)
"""Encoder layers whose means form the embedding (0 = the input embeddings); see docs/streaming.md."""


@dataclass(frozen=True)
class TurnOptions:
    """layers: ``pooled`` rows forming the embedding. change_ratio: distance to a speaker's centroid, relative to
    the typical within-speaker distance, beyond which a window is not theirs. confirm_windows: such windows in a
    row for a change. min_windows: speech windows of the session before any decision. max_speakers: beyond it,
    a change goes to the closest known speaker. Defaults: docs/streaming.md (tuned on the protocol's seed 0)."""

    layers: tuple[int, ...] = DEFAULT_LAYERS
    change_ratio: float = 1.0
    confirm_windows: int = 3
    min_windows: int = 4
    max_speakers: int = 8

    def __post_init__(self):
        if not self.layers or self.confirm_windows < 1 or self.min_windows < 1 or self.max_speakers < 1:
            raise ValueError(
                "turn options: layers must not be empty; confirm_windows, min_windows, max_speakers >= 1"
            )
        if self.change_ratio <= 0:
            raise ValueError(f"change_ratio {self.change_ratio}: must be > 0")


@dataclass(frozen=True)
class TurnChange:
    """A detected change of speaker: to the known speaker ``to``, or (``to`` None) to a new one."""

    to: str | None


class _RunningStats:
    """Per-dimension running mean and variance (Welford), float64."""

    def __init__(self, size: int):
        self.n = 0
        self.mean = np.zeros(size)
        self._m2 = np.zeros(size)

    def add(self, x: np.ndarray) -> None:
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self._m2 += delta * (x - self.mean)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self._m2 / max(1, self.n - 1)) + 1e-6


class _Centroid:
    """Sum and count of a speaker's raw embeddings."""

    def __init__(self):
        self.sum: np.ndarray | None = None
        self.n = 0

    def add(self, xs: list[np.ndarray]) -> None:
        for x in xs:
            self.sum = x.copy() if self.sum is None else self.sum + x
            self.n += 1

    @property
    def mean(self) -> np.ndarray:
        return self.sum / self.n


class TurnDetector:
    """``observe(pooled)`` once per speech window → a ``TurnChange`` or None. The caller names speakers:
    ``begin(id)`` when a speaker starts without detection (the session's first, a forced new speaker, or after
    a ``TurnChange(None)``)."""

    def __init__(self, options: TurnOptions | None = None):
        self.options = options or TurnOptions()
        self.reset()

    def reset(self) -> None:
        """Forget every speaker and the session statistics."""
        self._stats: _RunningStats | None = None
        self._speakers: dict[str, _Centroid] = {}
        self._current: str | None = None
        self._suspects: list[np.ndarray] = []
        self._pending: list[np.ndarray] = []  # the windows that made a change to a new speaker
        self._within = (
            0.0  # mean distance of a window from its own speaker's centroid (the unit of distances)
        )
        self._within_n = 0

    def begin(self, speaker: str) -> None:
        """``speaker`` talks from now on (a new id starts empty, seeded by the windows of a detected change)."""
        centroid = self._speakers.setdefault(speaker, _Centroid())
        for x in self._pending:
            self._accept(x, centroid)
        self._pending, self._suspects = [], []
        self._current = speaker

    def observe(self, pooled: np.ndarray) -> TurnChange | None:
        """One speech window's ``pooled`` ``[layers + 1, hidden]`` → a change of speaker, or None."""
        x = np.asarray(pooled, dtype=np.float64)[list(self.options.layers)].reshape(-1)
        if self._current is None:
            raise RuntimeError("TurnDetector.observe before begin(speaker)")
        if self._stats is None:
            self._stats = _RunningStats(x.size)
        self._stats.add(x)
        own = self._speakers[self._current]
        if self._stats.n < self.options.min_windows or own.n < self.options.confirm_windows:
            self._accept(x, own)
            return None
        if self._distance(x, own) <= self.options.change_ratio:
            for suspect in self._suspects:  # a blip: the suspects were the current speaker after all
                self._accept(suspect, own)
            self._accept(x, own)
            self._suspects = []
            return None
        self._suspects.append(x)
        if len(self._suspects) < self.options.confirm_windows:
            return None
        return self._decide()

    def _decide(self) -> TurnChange:
        suspects, self._suspects = self._suspects, []
        mean = np.mean(suspects, axis=0)
        others = {s: self._distance(mean, c) for s, c in self._speakers.items() if s != self._current and c.n}
        best = min(others, key=others.get) if others else None
        if best is not None and (
            others[best] <= self.options.change_ratio or len(self._speakers) >= self.options.max_speakers
        ):
            for suspect in suspects:
                self._accept(suspect, self._speakers[best])
            self._current = best
            return TurnChange(best)
        self._pending = suspects
        return TurnChange(None)

    def _distance(self, x: np.ndarray, speaker: _Centroid) -> float:
        """How far ``x`` is from a speaker's centroid, relative to how far a speaker's own windows usually are
        from their centroid (1 = typical of the same speaker). Distances are root-mean-square differences in
        units of the session's spread per dimension (no centring: the session's mean is the first speaker's
        own while they are alone)."""
        raw = float(np.sqrt(np.mean(((x - speaker.mean) / self._stats.std) ** 2)))
        return raw / max(self._within, 1e-9)

    def _accept(self, x: np.ndarray, speaker: _Centroid) -> None:
        """``x`` is ``speaker``'s: update the typical within-speaker distance, then the centroid."""
        if speaker.n == 0:
            speaker.add([x])
            return
        raw = float(np.sqrt(np.mean(((x - speaker.mean) / self._stats.std) ** 2)))
        self._within_n += 1
        self._within += (raw - self._within) / self._within_n
        speaker.add([x])
