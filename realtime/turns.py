"""Online speaker turns from a speaker embedding: who is speaking, window by window.

Each speech window gives one speaker embedding (``speaker_embedding.SpeakerEncoder``, a unit vector) of its
newest speech. A speaker is the sum of the embeddings taken as theirs (their centroid's direction); the distance
of an embedding to a speaker is the cosine distance ``1 - cos`` to that direction:

- a window within ``change_distance`` of the current speaker joins them (with any odd windows before it: a blip);
- ``confirm_windows`` windows in a row beyond it are a turn change: to the known speaker closest to their mean
  when within ``change_distance`` (a speaker who returns), else to a new speaker seeded with them.

No decision is taken before the current speaker has ``min_windows`` windows (a centroid needs them). The
thresholds were tuned on the protocol's conversations (docs/streaming.md). numpy only.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TurnOptions:
    """embedding_s: seconds of a window's newest speech embedded (the rest of the window is older speech).
    change_distance: cosine distance to a speaker's centroid beyond which a window is not theirs.
    confirm_windows: such windows in a row for a change. min_windows: windows of the current speaker before any
    decision. max_speakers: beyond it, a change goes to the closest known speaker. Defaults: docs/streaming.md
    (tuned on the protocol's seed 0, reported on seed 1)."""

    embedding_s: float = 1.5
    change_distance: float = 0.3
    confirm_windows: int = 3
    min_windows: int = 3
    max_speakers: int = 8

    def __post_init__(self):
        if self.confirm_windows < 1 or self.min_windows < 1 or self.max_speakers < 1:
            raise ValueError("turn options: confirm_windows, min_windows and max_speakers must be >= 1")
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
        self._pending: list[np.ndarray] = []  # the windows that made a change to a new speaker

    def begin(self, speaker: str) -> None:
        """``speaker`` talks from now on (a new id starts empty, seeded by the windows of a detected change)."""
        centroid = self._speakers.setdefault(speaker, _Centroid())
        for x in self._pending:
            centroid.add(x)
        self._pending, self._suspects = [], []
        self._current = speaker

    def observe(self, embedding: np.ndarray) -> TurnChange | None:
        """One speech window's speaker embedding ``[dims]`` → a change of speaker, or None."""
        if self._current is None:
            raise RuntimeError("TurnDetector.observe before begin(speaker)")
        x = np.asarray(embedding, dtype=np.float64).reshape(-1)
        own = self._speakers[self._current]
        if own.n < self.options.min_windows:
            own.add(x)
            return None
        if own.distance(x) <= self.options.change_distance:
            for suspect in self._suspects:  # a blip: the suspects were the current speaker after all
                own.add(suspect)
            own.add(x)
            self._suspects = []
            return None
        self._suspects.append(x)
        if len(self._suspects) < self.options.confirm_windows:
            return None
        return self._decide()

    def _decide(self) -> TurnChange:
        suspects, self._suspects = self._suspects, []
        mean = np.mean(suspects, axis=0)
        others = {s: c.distance(mean) for s, c in self._speakers.items() if s != self._current and c.n}
        best = min(others, key=others.get) if others else None
        if best is not None and (
            others[best] <= self.options.change_distance or len(self._speakers) >= self.options.max_speakers
        ):
            for suspect in suspects:
                self._speakers[best].add(suspect)
            self._current = best
            return TurnChange(best)
        self._pending = suspects
        return TurnChange(None)
