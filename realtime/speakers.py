"""The speakers of one stream: a session-stable id each (``S1``, ``S2``, ...) and, when speaker adaptation is on,
one ``SpeakerNormalizer`` each, so a speaker who comes back is judged against their own baseline again.

The normalisers are composed, never changed: each speaker's is built by the factory given (a running mean per
speaker), or all speakers share one fixed calm baseline (``SpeakerNormalizer.from_baseline``).
"""

from __future__ import annotations

from collections.abc import Callable

from emotion_monitor.realtime.speaker_norm import SpeakerNormalizer


class SpeakerRegistry:
    """Speaker ids in order of first appearance and their normalisers (None when adaptation is off)."""

    def __init__(
        self,
        make_normalizer: Callable[[], SpeakerNormalizer] | None = None,
        fixed: SpeakerNormalizer | None = None,
    ):
        """``make_normalizer``: a fresh running-mean normaliser for a new speaker; ``fixed``: one calm baseline for
        every speaker. Neither: ids only."""
        if make_normalizer is not None and fixed is not None:
            raise ValueError(
                "a speaker registry takes a running normaliser factory or a fixed baseline, not both"
            )
        self._make = make_normalizer
        self._fixed = fixed
        self.reset()

    def reset(self) -> None:
        """Forget every speaker: the next one is ``S1`` again (a fixed baseline is kept)."""
        self._normalizers: dict[str, SpeakerNormalizer | None] = {}
        self.current = self.new()

    @property
    def ids(self) -> list[str]:
        """Every speaker id so far, in order of first appearance."""
        return list(self._normalizers)

    def new(self) -> str:
        """Add a new speaker, make it the current one, and return its id."""
        speaker = f"S{len(self._normalizers) + 1}"
        if self._fixed is not None:
            self._normalizers[speaker] = self._fixed
        else:
            self._normalizers[speaker] = None if self._make is None else self._make()
        self.current = speaker
        return speaker

    def switch(self, speaker: str) -> None:
        """Make a known speaker the current one again (their baseline comes back with them)."""
        if speaker not in self._normalizers:
            raise KeyError(f"unknown speaker {speaker!r} (known: {', '.join(self._normalizers)})")
        self.current = speaker

    @property
    def normalizer(self) -> SpeakerNormalizer | None:
        """The current speaker's normaliser (None when adaptation is off)."""
        return self._normalizers[self.current]
