"""Inference side: exported models on ONNX Runtime, live monitor and batch scoring. Never imports torch.

``from emotion_monitor.realtime import load_model, EmotionStream`` is the Python API (see
``emotion_monitor.realtime.model`` and ``emotion_monitor.realtime.stream``). It is resolved lazily, so code
that only needs ``emotion_monitor.realtime.audio`` (training) does not load ONNX Runtime.
"""

import importlib

_API = {
    "load_model": "emotion_monitor.realtime.model",
    "EmotionModel": "emotion_monitor.realtime.model",
    "ModelOptions": "emotion_monitor.realtime.model",
    "WindowScores": "emotion_monitor.realtime.model",
    "Prediction": "emotion_monitor.realtime.analysis",
    "Segment": "emotion_monitor.realtime.analysis",
    "ModelError": "emotion_monitor.realtime.errors",
    "EmotionStream": "emotion_monitor.realtime.stream",
    "StreamOptions": "emotion_monitor.realtime.stream",
    "StreamResult": "emotion_monitor.realtime.stream",
}
"""Public name → the module that defines it."""

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
