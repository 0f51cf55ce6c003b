"""The speakers of one stream: a session-stable id each (``S1``, ``S2``, ...) and, when speaker adaptation is on,
one ``SpeakerNormaliser`` each, so a speaker who comes back is judged against their own baseline again.

The normalisers are composed, never changed: each speaker's is built by the factory given (a running mean per
speaker), or all speakers share one fixed calm baseline (``SpeakerNormaliser.from_baseline``).
"""

from __future__ import annotations

from collections.abc import Callable

from emotion_monitor.realtime.speaker_norm import SpeakerNormaliser


class SpeakerRegistry:
    """Speaker ids in order of first appearance and their normalisers (None when adaptation is off)."""

    def __init__(
        self,
        make_normaliser: Callable[[], SpeakerNormaliser] | None = None,
        fixed: SpeakerNormaliser | None = None,
    ):
        """``make_normaliser``: a fresh running-mean normaliser for a new speaker; ``fixed``: one calm baseline for
        every speaker. Neither: ids only."""
        if make_normaliser is not None and fixed is not None:
            raise ValueError(
                "a speaker registry takes a running normaliser factory or a fixed baseline, not both"
            )
        self._make = make_normaliser
        self._fixed = fixed
        self.reset()

    def reset(self) -> None:
        """Forget every speaker: the next one is ``S1`` again (a fixed baseline is kept)."""
        self._normalisers: dict[str, SpeakerNormaliser | None] = {}
        self.current = self.new()

    @property
    def ids(self) -> list[str]:
        """Every speaker id so far, in order of first appearance."""
        return list(self._normalisers)

    def new(self) -> str:
        """Add a new speaker, make it the current one, and return its id."""
        speaker = f"S{len(self._normalisers) + 1}"
        if self._fixed is not None:
            self._normalisers[speaker] = self._fixed
        else:
            self._normalisers[speaker] = None if self._make is None else self._make()
        self.current = speaker
        return speaker

    def switch(self, speaker: str) -> None:
        """Make a known speaker the current one again (their baseline comes back with them)."""
        if speaker not in self._normalisers:
            raise KeyError(f"unknown speaker {speaker!r} (known: {', '.join(self._normalisers)})")
        self.current = speaker

    @property
    def normaliser(self) -> SpeakerNormaliser | None:
        """The current speaker's normaliser (None when adaptation is off)."""
        return self._normalisers[self.current]
