"""Steady labels: an exponential moving average over window probabilities, with hysteresis on the label.

Raw per-window estimates flicker between neighbouring classes (calm/neutral, angry/disgust). The EMA steadies
the probabilities, each window counted by its evidence (its seconds of speech): the first window of an utterance
holds little speech, and a later window holding the whole utterance outweighs it instead of being held back by it;
the hysteresis keeps the shown label until another class beats it by ``margin`` for ``patience_hops`` consecutive
hops. After ``reset_after_silence_s`` of silence (``silence(seconds)``) the state is reset, so a new utterance
starts fresh instead of inheriting the previous one's mood.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_ALPHA = 0.5
"""EMA weight of the newest window: 0.5 at a 0.5 s hop ≈ a 1 s time constant."""
DEFAULT_MARGIN = 0.1
"""How far (in probability) a challenger must lead the shown label."""
DEFAULT_PATIENCE_HOPS = 2
"""For how many consecutive hops the challenger must lead before the label switches."""
DEFAULT_RESET_AFTER_SILENCE_S = 1.0
"""Seconds of silence after which the smoother forgets the last utterance (two hops at the default hop)."""


@dataclass(frozen=True)
class SmootherOptions:
    alpha: float = DEFAULT_ALPHA
    margin: float = DEFAULT_MARGIN
    patience_hops: int = DEFAULT_PATIENCE_HOPS
    reset_after_silence_s: float = DEFAULT_RESET_AFTER_SILENCE_S

    def __post_init__(self):
        if not 0.0 < self.alpha <= 1.0:
            raise ValueError(f"alpha must be in (0, 1], got {self.alpha}")
        if self.margin < 0 or self.patience_hops < 1:
            raise ValueError("margin must be >= 0 and patience_hops >= 1")
        if self.reset_after_silence_s < 0:
            raise ValueError(f"reset_after_silence_s must be >= 0, got {self.reset_after_silence_s}")


@dataclass(frozen=True)
class Smoothed:
    """Smoother output: ``probs`` [classes] (sums to 1) and the index of the shown label."""

    probs: np.ndarray
    index: int

    @property
    def confidence(self) -> float:
        return float(self.probs[self.index])


class Smoother:
    """``update(probs, speech_s)`` once per speech hop, ``silence(seconds)`` once per silent hop; ``reset()`` for a
    new speaker. ``state`` is None until the first update (and after a reset)."""

    def __init__(self, options: SmootherOptions | None = None):
        self.options = options or SmootherOptions()
        self.reset()

    def reset(self) -> None:
        self._probs: np.ndarray | None = None
        self._weight = 0.0
        self._index = -1
        self._challenger = -1
        self._streak = 0
        self._silent_s = 0.0

    def silence(self, seconds: float) -> None:
        """``seconds`` more of silence; after ``reset_after_silence_s`` in a row the state is reset."""
        self._silent_s += float(seconds)
        if self._silent_s >= self.options.reset_after_silence_s - 1e-9:  # 10 hops of 0.1 s make 1 s
            self.reset()

    @property
    def state(self) -> Smoothed | None:
        return None if self._probs is None else Smoothed(self._probs.copy(), self._index)

    def update(self, probs: np.ndarray, speech_s: float = 1.0) -> Smoothed:
        """``probs`` [classes] of the newest window, and its evidence, the ``speech_s`` seconds of speech it holds
        → smoothed probabilities and the (steady) label index.

        The newest window's share is ``alpha`` when its speech equals the state's (a plain EMA), more when it
        carries more evidence than the windows before it, less when it carries less.
        """
        self._silent_s = 0.0
        probs = np.asarray(probs, dtype=np.float64)
        weight = max(float(speech_s), 1e-6)
        if self._probs is None:
            self._probs = probs.copy()
            self._weight = weight
            self._index = int(np.argmax(probs))
            return self.state
        a = self.options.alpha
        share = a * weight / (a * weight + (1.0 - a) * self._weight)
        self._probs = share * probs + (1.0 - share) * self._probs
        self._weight = share * weight + (1.0 - share) * self._weight
        best = int(np.argmax(self._probs))
        if best != self._index and self._probs[best] - self._probs[self._index] >= self.options.margin:
            self._streak = self._streak + 1 if best == self._challenger else 1
            self._challenger = best
            if self._streak >= self.options.patience_hops:
                self._index, self._challenger, self._streak = best, -1, 0
        else:
            self._challenger, self._streak = -1, 0
        return self.state
