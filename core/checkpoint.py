"""Reading and writing emotion-train checkpoints.

A checkpoint is a Lightning ``.ckpt`` holding ``state_dict`` (classifier weights under ``model.``) and
``hyper_parameters`` made of plain Python containers: ``model_spec``, ``labels``, ``sample_rate``,
``window_s``, ``preprocessing``, ``metrics`` (+ ``train``, ``split``). Everything loads with
``torch.load(..., weights_only=True)`` and rebuilds without a download.

``python -m emotion_monitor.core.checkpoint check CKPT`` prints a checkpoint's labels, window and metrics.
"""

from __future__ import annotations

import argparse
import pickle
from pathlib import Path
from typing import Any

import torch

from emotion_monitor.core.model import EmotionClassifier, build_classifier
from emotion_monitor.realtime.errors import one_line

REQUIRED_HPARAMS = ("model_spec", "labels", "sample_rate", "window_s", "preprocessing")
STATE_PREFIX = "model."


class CheckpointError(RuntimeError):
    """A checkpoint that is missing, corrupt or does not match this code; ``str()`` is one line."""

    def __init__(self, path: str | Path, reason: str):
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` with every failure turned into a one-line ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(path, "no such checkpoint file")
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        # torch's own message advises weights_only=False, i.e. running arbitrary code from the file: not quoted.
        raise CheckpointError(
            path, "not a safe checkpoint: it is not a PyTorch file, or it holds objects other than plain data"
        ) from None
    except (
        Exception
    ) as exc:  # torch raises many types for garbage input (IndexError, RuntimeError, EOFError...)
        raise CheckpointError(path, f"corrupt or not a PyTorch checkpoint ({one_line(exc)})") from None
    if not isinstance(data, dict) or "state_dict" not in data:
        raise CheckpointError(path, "not a Lightning checkpoint (no state_dict)")
    hparams = data.get("hyper_parameters")
    missing = [key for key in REQUIRED_HPARAMS if not isinstance(hparams, dict) or key not in hparams]
    if missing:
        raise CheckpointError(
            path, f"not an emotion-train checkpoint: hyper_parameters lack {', '.join(missing)}"
        )
    return data


def load_classifier(path: str | Path) -> tuple[EmotionClassifier, dict[str, Any]]:
    """Rebuild the classifier of an emotion-train checkpoint (no download), in eval mode, with its hparams."""
    data = read_checkpoint(path)
    hparams = dict(data["hyper_parameters"])
    try:
        model = build_classifier(hparams["model_spec"], pretrained=False)
    except Exception as exc:  # any failure here means the stored spec does not fit this code version
        raise CheckpointError(path, f"model_spec cannot be rebuilt ({type(exc).__name__}: {exc})") from None
    state = {k[len(STATE_PREFIX) :]: v for k, v in data["state_dict"].items() if k.startswith(STATE_PREFIX)}
    if not state:
        raise CheckpointError(path, f"state_dict has no '{STATE_PREFIX}' weights")
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # strict=False still raises on shape mismatches, in many lines
        first = str(exc).strip().splitlines()[-1].strip()
        raise CheckpointError(path, f"weights do not match model_spec ({first[:200]})") from None
    if result.missing_keys or result.unexpected_keys:
        example = (result.missing_keys or result.unexpected_keys)[0]
        raise CheckpointError(
            path,
            f"weights do not match model_spec: {len(result.missing_keys)} missing, "
            f"{len(result.unexpected_keys)} unexpected (e.g. {example})",
        )
    if len(hparams["labels"]) != model.num_classes:
        raise CheckpointError(
            path, f"{len(hparams['labels'])} labels but the model has {model.num_classes} outputs"
        )
    return model.eval(), hparams


def write_checkpoint(
    path: str | Path,
    model: EmotionClassifier,
    labels: list[str],
    window_s: float,
    preprocessing: dict,
    sample_rate: int = 16_000,
    metrics: dict | None = None,
    **extra: Any,
) -> Path:
    """Save ``model`` in the emotion-train checkpoint format without a Trainer (tests, smoke runs)."""
    import pytorch_lightning as pl

    hparams = {
        "model_spec": model.spec(),
        "labels": list(labels),
        "sample_rate": int(sample_rate),
        "window_s": float(window_s),
        "preprocessing": dict(preprocessing),
        "metrics": dict(metrics or {}),
        **extra,
    }
    data = {
        "state_dict": {STATE_PREFIX + k: v for k, v in model.state_dict().items()},
        "hyper_parameters": hparams,
        "pytorch-lightning_version": pl.__version__,
        "epoch": 0,
        "global_step": 0,
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(data, path)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m emotion_monitor.core.checkpoint", description="Checkpoint utilities."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="load a checkpoint and print its labels, window and metrics")
    check.add_argument("checkpoint", type=Path)
    args = parser.parse_args(argv)
    try:
        model, hparams = load_classifier(args.checkpoint)
        n_params = sum(p.numel() for p in model.parameters())
        print(f"labels={hparams['labels']} window_s={hparams['window_s']} params={n_params}")
        print(f"metrics={hparams.get('metrics')}")
    except CheckpointError as exc:
        parser.exit(2, f"error: {exc}\n")


if __name__ == "__main__":
    main()
