"""Online speaker turns from a speaker embedding: who is speaking, window by window.

Each speech window gives one speaker embedding (``speaker_embedding.SpeakerEncoder``, a unit vector) of its
newest speech. A speaker is the sum of the embeddings taken as theirs (their centroid's direction); the distance
of an embedding to a speaker is the cosine distance ``1 - cos`` to that direction. A window is *odd* when it is
beyond ``change_distance`` from the current speaker, or closer by ``margin`` to another known speaker:

- a window that is not odd joins the current speaker (odd windows before it were a blip);
- ``confirm_windows`` odd windows in a row are a turn change: to the known speaker closest to their mean when
  within ``change_distance`` of it or closer by ``margin`` than the current one (a speaker who returns), else to
  a new speaker, seeded with the last of them (the earlier ones often still hold the previous voice);
- the ``hold_windows`` windows after a change join the new current speaker without a decision (a centroid of
  one window is too rough to judge the next ones by).

The first ``hold_windows`` windows of the session join the first speaker the same way. The settings were tuned
on the protocol's conversations (docs/streaming.md). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TurnOptions:
    """embedding_s: seconds of a window's newest speech embedded (the rest of the window is older speech).
    change_distance: cosine distance to a speaker's centroid beyond which a window is not theirs. margin: a window
    this much closer to another known speaker is not the current one's either. confirm_windows: such windows in a
    row for a change. hold_windows: windows after a change (and at the start) taken without a decision.
    max_speakers: beyond it, a change goes to the closest known speaker. Defaults: docs/streaming.md (tuned on the
    protocol's seed 0, reported on seed 1)."""

    embedding_s: float = 2.0
    change_distance: float = 0.3
    margin: float = 0.06
    confirm_windows: int = 2
    hold_windows: int = 4
    max_speakers: int = 8

    def __post_init__(self):
        if self.confirm_windows < 1 or self.hold_windows < 1 or self.max_speakers < 1:
            raise ValueError("turn options: confirm_windows, hold_windows and max_speakers must be >= 1")
        if self.margin < 0:
            raise ValueError(f"margin {self.margin}: must be >= 0")
        if not 0 < self.change_distance < 2:
            raise ValueError(f"change_distance {self.change_distance}: must be in (0, 2)")
        if self.embedding_s <= 0:
            raise ValueError(f"embedding_s {self.embedding_s}: must be > 0")


@dataclass(frozen=True)
class TurnChange:
    """A detected change of speaker: to the known speaker ``to``, or (``to`` None) to a new one."""

    to: str | None


class _Centroid:
    """Sum and count of a speaker's embeddings."""

    def __init__(self):
        self.sum: np.ndarray | None = None
        self.n = 0

    def add(self, x: np.ndarray) -> None:
        self.sum = x.copy() if self.sum is None else self.sum + x
        self.n += 1

    def distance(self, x: np.ndarray) -> float:
        """Cosine distance of ``x`` to the centroid's direction (0 = same direction, 2 = opposite)."""
        norm = float(np.linalg.norm(self.sum)) * float(np.linalg.norm(x))
        return 1.0 - float(x @ self.sum) / max(norm, 1e-12)


class TurnDetector:
    """``observe(embedding)`` once per speech window → a ``TurnChange`` or None. The caller names speakers:
    ``begin(id)`` when a speaker starts without detection (the session's first, a forced new speaker, or after
    a ``TurnChange(None)``)."""

    def __init__(self, options: TurnOptions | None = None):
        self.options = options or TurnOptions()
        self.reset()

    def reset(self) -> None:
        """Forget every speaker."""
        self._speakers: dict[str, _Centroid] = {}
        self._current: str | None = None
        self._suspects: list[np.ndarray] = []
        self._pending: np.ndarray | None = None  # the window that seeds a new speaker after a detected change
        self._hold = 0

    def begin(self, speaker: str) -> None:
        """``speaker`` talks from now on (a new id starts empty, seeded by the last window of a detected change);
        the next ``hold_windows`` windows are theirs."""
        centroid = self._speakers.setdefault(speaker, _Centroid())
        if self._pending is not None:
            centroid.add(self._pending)
        self._pending, self._suspects = None, []
        self._current = speaker
        self._hold = self.options.hold_windows

    def observe(self, embedding: np.ndarray) -> TurnChange | None:
        """One speech window's speaker embedding ``[dims]`` → a change of speaker, or None."""
        if self._current is None:
            raise RuntimeError("TurnDetector.observe before begin(speaker)")
        x = np.asarray(embedding, dtype=np.float64).reshape(-1)
        own = self._speakers[self._current]
        if self._hold > 0 or not own.n:
            self._hold -= 1
            own.add(x)
            return None
        if not self._odd(x, own):
            own.add(x)
            self._suspects = []  # a blip: they stay out of every centroid
            return None
        self._suspects.append(x)
        if len(self._suspects) < self.options.confirm_windows:
            return None
        return self._decide(own)

    def _odd(self, x: np.ndarray, own: _Centroid) -> bool:
        """Beyond ``change_distance`` from the current speaker, or ``margin`` closer to another known one."""
        distance = own.distance(x)
        if distance > self.options.change_distance:
            return True
        others = [c.distance(x) for s, c in self._speakers.items() if s != self._current and c.n]
        return bool(others) and min(others) + self.options.margin < distance

    def _decide(self, own: _Centroid) -> TurnChange:
        suspects, self._suspects = self._suspects, []
        mean = np.mean(suspects, axis=0)
        others = {s: c.distance(mean) for s, c in self._speakers.items() if s != self._current and c.n}
        best = min(others, key=others.get) if others else None
        if best is not None and (
            others[best] <= self.options.change_distance
            or others[best] + self.options.margin < own.distance(mean)
            or len(self._speakers) >= self.options.max_speakers
        ):
            self._speakers[best].add(suspects[-1])
            self._current = best
            self._hold = self.options.hold_windows
            return TurnChange(best)
        self._pending = suspects[-1]
        return TurnChange(None)
