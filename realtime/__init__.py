"""Inference side: exported models on ONNX Runtime, live monitor and batch scoring. Never imports torch.

``from realtime import load_model`` is the Python API (see ``realtime.model``). It is resolved lazily, so code
that only needs ``realtime.audio`` (training) does not load ONNX Runtime.
"""

import importlib

_API = {
    "load_model": "realtime.model",
    "EmotionModel": "realtime.model",
    "ModelOptions": "realtime.model",
    "WindowScores": "realtime.model",
    "Prediction": "realtime.analysis",
    "Segment": "realtime.analysis",
    "ModelError": "realtime.errors",
}
"""Public name → the module that defines it."""

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
