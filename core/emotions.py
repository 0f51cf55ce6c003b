"""The product's label set: the eight emotions a model estimates, in output order.

Every corpus reader maps its own codes onto these (``emotion_monitor.core.corpora``); a corpus that lacks some
keeps the order and marks the classes it holds. The runtime never imports this: a model carries its labels in its
metadata (``emotion_monitor.realtime.metadata.ModelInfo.labels``).
"""

from __future__ import annotations

EMOTIONS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")
"""Class names in output order (RAVDESS's emotion codes 01–08 in the same order)."""
