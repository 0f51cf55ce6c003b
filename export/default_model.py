"""The bundled default model: pretrained Whisper-base encoder (pip packages) + the head shipped in ``bundled/``.

``emotion-export`` calls ``build_default_classifier()`` when no checkpoint is given, so a fresh install can
export and run a real model without training anything or downloading weights. The heads were trained by
``emotion-train experiment=head task=bundle``; ``bundled/model.json`` records how, and its cross-validated metrics.
"""

from __future__ import annotations

import json
from pathlib import Path

BUNDLE_DIR = Path(__file__).resolve().parent / "bundled"
HEAD_FILE = "head.safetensors"
SPEAKER_HEAD_FILES = {
    "running": "head_speaker_norm.safetensors",
    "baseline": "head_speaker_baseline.safetensors",
}
"""Heads trained on features centred per speaker (``emotion_monitor.realtime.speaker_norm``), by kind: ``running`` (the speaker's
mean over all their speech) and ``baseline`` (the mean of their calm speech)."""
SUBSPACE_FILE = "speaker_subspace.safetensors"
"""``mu`` and ``basis`` of the speaker subspace the ``running`` head centres in (absent: it centres on the mean)."""
INFO_FILE = "model.json"


def bundle_info(bundle_dir: Path = BUNDLE_DIR) -> dict:
    """The bundle's ``model.json`` (labels, window, preprocessing, metrics, protocol, rebuild command)."""
    path = Path(bundle_dir) / INFO_FILE
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no bundled model (rebuild with: emotion-train experiment=head task=bundle)"
        )
    return json.loads(path.read_text())


def backbone_name(weights: str, encoder_layers: int, depth: int) -> str:
    """The metadata's ``backbone``: ``whisper-base:frozen+bundled-head``, naming the layers kept when the encoder
    is cut (``..., first 4 of 6 layers``). It keys the window-feature cache, so a cut encoder gets its own."""
    cut = "" if encoder_layers == depth else f", first {encoder_layers} of {depth} layers"
    return f"{weights}:frozen+bundled-head{cut}"


def time_pooling_of(info: dict) -> str:
    """The statistics over time the bundle's heads read (``emotion_monitor.core.model.TIME_POOLING``); older bundles: ``mean``."""
    return info.get("time_pooling", "mean")


def model_info(info: dict, encoder_layers: int, depth: int):
    """``emotion_monitor.realtime.metadata.ModelInfo`` for the bundled model (what the ONNX metadata will carry); the encoder runs
    ``encoder_layers`` of the weights' ``depth`` transformer layers."""
    from emotion_monitor.realtime.metadata import ModelInfo

    metrics = dict(info["metrics"])
    return ModelInfo(
        labels=tuple(info["labels"]),
        sample_rate=int(info["sample_rate"]),
        window_s=float(info["window_s"]),
        hop_s=float(info["hop_s"]),
        backbone=backbone_name(info["weights"], encoder_layers, depth),
        encoder_layers=encoder_layers,
        preprocessing=dict(info["preprocessing"]),
        metrics=metrics,
        protocol=info["protocol"],
        speaker_norm=dict(info.get("speaker_norm") or {}),
        speech_gate=dict(info.get("speech_gate") or {}),
        time_pooling=time_pooling_of(info),
        calibration=dict(info.get("calibration") or {}),
    )


FEATURES_ONLY_PROTOCOL = (
    "features only: the head is untrained (its labels mean nothing); this file encodes windows into pooled "
    "features for core.window_features --model"
)


def features_only_info(info: dict, time_pooling: str, weights: str, encoder_layers: int, depth: int):
    """ModelInfo of an encoder (``weights``, ``encoder_layers`` of ``depth`` layers) whose ``pooled`` carries
    ``time_pooling`` statistics under an untrained head. Window features depend on the encoder and the statistics
    only, and the ``backbone`` text (which keys the feature cache) names both."""
    import dataclasses

    return dataclasses.replace(
        model_info(info, encoder_layers, depth),
        backbone=backbone_name(weights, encoder_layers, depth),
        metrics={},
        protocol=FEATURES_ONLY_PROTOCOL,
        speaker_norm={},
        time_pooling=time_pooling,
    )


def _new_classifier(backbone, info: dict, time_pooling: str | None = None):
    from emotion_monitor.core.model import EmotionClassifier

    return EmotionClassifier(
        backbone,
        num_classes=int(info["num_classes"]),
        hidden_dims=tuple(info["hidden_dims"]),
        dropout=float(info["dropout"]),
        layer_pooling=info["layer_pooling"],
        time_pooling=time_pooling or time_pooling_of(info),
    )


def _load_head(model, path: Path):
    """Load a head-only state dict (no ``backbone.*`` keys) into ``model``; RuntimeError when it does not fit."""
    from safetensors.torch import load_file

    missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    not_encoder = [k for k in missing if not k.startswith("backbone.")]
    if unexpected or not_encoder:
        raise RuntimeError(
            f"{path.name} does not fit the model: missing={not_encoder} unexpected={unexpected}"
        )
    return model.eval()


def build_default_classifier(
    bundle_dir: Path = BUNDLE_DIR, time_pooling: str | None = None, encoder: str | None = None
):
    """``(EmotionClassifier in eval mode, ModelInfo)``: installed encoder weights + the shipped head, the encoder
    cut to the head's ``encoder_layers`` (``model.json``; absent = all layers).

    time_pooling: the statistics over time ``pooled`` carries (None: the heads'). encoder: other installed Whisper
    weights (``emotion_monitor.core.ct2.PACKAGED``; None: the heads'), all their layers. Another encoder or other
    statistics than the heads' give an untrained head (seeded) and ``features_only_info``: a model for encoding
    features to compare variants, not for use. Raises ``emotion_monitor.core.ct2.MissingWeightsError`` (one line
    naming the pip packages) when the encoder weights are not installed.
    """
    import torch

    from emotion_monitor.core.whisper import build_whisper_backbone

    info = bundle_info(bundle_dir)
    weights = encoder or info["weights"]
    own = weights == info["weights"]
    backbone = build_whisper_backbone(
        name_or_path=weights, num_layers=info.get("encoder_layers") if own else None
    )
    depth = int(backbone.encoder.config.encoder_layers)
    if own and time_pooling in (None, time_pooling_of(info)):
        model = _load_head(_new_classifier(backbone, info), Path(bundle_dir) / HEAD_FILE)
        return model, model_info(info, backbone.num_layers, depth)
    torch.manual_seed(0)
    stats = time_pooling or time_pooling_of(info)
    model = _new_classifier(backbone, info, stats)
    return model.eval(), features_only_info(info, stats, weights, backbone.num_layers, depth)


def build_speaker_heads(bundle_dir: Path = BUNDLE_DIR, hidden_size: int = 512, num_layers: int = 6) -> dict:
    """The bundled speaker heads by kind (head only, eval mode); kinds whose file is not shipped are left out."""
    from emotion_monitor.core.model import ShapeOnlyBackbone

    info = bundle_info(bundle_dir)
    heads = {}
    for kind, file_name in SPEAKER_HEAD_FILES.items():
        path = Path(bundle_dir) / file_name
        if path.is_file():
            heads[kind] = _load_head(_new_classifier(ShapeOnlyBackbone(hidden_size, num_layers), info), path)
    subspace = Path(bundle_dir) / SUBSPACE_FILE
    if "running" in heads and subspace.is_file():
        from safetensors.torch import load_file

        from emotion_monitor.export.onnx_export import SubspaceCentre

        tensors = load_file(str(subspace))
        heads["running"].centre_map = SubspaceCentre(tensors["mu"], tensors["basis"])
    return heads
