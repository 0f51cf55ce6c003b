"""Inference side: exported models on ONNX Runtime, live monitor and batch scoring. Never imports torch.

``from realtime import load_model`` is the Python API (see ``realtime.model``). It is resolved lazily, so code
that only needs ``realtime.audio`` (training) does not load ONNX Runtime.
"""

_API = ("load_model", "EmotionModel", "ModelOptions", "Prediction", "Segment", "ModelError")

__all__ = list(_API)


def __getattr__(name: str):
    if name in _API:
        from realtime import model

        return getattr(model, name)
    raise AttributeError(f"module 'realtime' has no attribute {name!r}")
