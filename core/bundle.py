"""Writing the bundled default model's heads (``export/bundled/``): a library, not a trainer.

The heads are trained and evaluated by ``emotion-train experiment=head task=bundle`` (``emotion_monitor.core.experiment.bundle``:
the one trainer and the one evaluation protocol). This module only turns the trained heads and the protocol's
report into files: ``head.safetensors`` (plain), ``head_speaker_norm.safetensors`` (features centred on the
speaker's mean), ``head_speaker_baseline.safetensors`` (centred on their calm baseline), ``model.json`` (what the
exporter and the runtime read: labels, window, speech gate, preprocessing, metrics, protocol, how to rebuild) and
``confusion-<corpus>.png`` (clip level, k-fold); then the model card (``emotion_monitor.core.model_card``:
``docs/model-card.md`` for the shipped bundle, ``model-card.md`` in any other bundle folder).
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.protocol import LEVELS
from emotion_monitor.core.window_features import CLIP
from emotion_monitor.export.default_model import SUBSPACE_FILE
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S

log = logging.getLogger(__name__)

WEIGHTS = "whisper-base"
REBUILD = "emotion-train experiment=head task=bundle   (features: python -m emotion_monitor.core.window_features, first run)"
REFERENCE_FILES = (
    "Actor_01/03-01-05-02-01-01-01.flac",
    "Actor_10/03-01-04-01-02-02-10.flac",
    "Actor_17/03-01-03-02-01-01-17.flac",
    "Actor_20/03-01-01-01-02-01-20.flac",
)
"""Clips whose bundled-model probabilities are stored in model.json, so a test can check the full model on raw
audio against the cached-feature path the head was trained with."""


def head_state(model) -> dict[str, torch.Tensor]:
    """The trained part only (layer logits, MLP, BatchNorm statistics): never encoder weights. Weight matrices
    are stored as float16 (``stored_dtype``): half the file, and loading copies them into the float32 model,
    which computes in float32."""
    return {
        k: v.detach().to(stored_dtype(v)).contiguous()
        for k, v in model.state_dict().items()
        if not k.startswith("backbone.")
    }


def stored_dtype(tensor: torch.Tensor) -> torch.dtype:
    """float16 for weight matrices (2-D and up), the tensor's own dtype otherwise: biases and BatchNorm
    statistics stay float32 (a variance of the raw layer outputs can exceed float16's range, and they are
    small)."""
    return torch.float16 if tensor.is_floating_point() and tensor.dim() >= 2 else tensor.dtype


@torch.no_grad()
def reference_predictions(model, fs, view: str = "clean") -> list[dict]:
    """Clip-level probabilities of ``REFERENCE_FILES`` (mean over their clip windows in ``view``, unweighted) from
    cached features."""
    from emotion_monitor.core.protocol import predict_rows

    refs = []
    by_path = {Path(u.path).as_posix(): i for i, u in enumerate(fs.utterances)}
    for rel in REFERENCE_FILES:
        utt = next((i for p, i in by_path.items() if p.endswith(rel)), None)
        if utt is None:
            continue
        rows = np.flatnonzero((fs.utt == utt) & (fs.kind == CLIP) & (fs.view == fs.views.index(view)))
        probs = predict_rows(model, fs, rows).mean(axis=0)
        refs.append({"file": rel, "probs": [round(float(p), 6) for p in probs]})
    return refs


@torch.no_grad()
def with_temperature(model, temperature: float):
    """``model`` with its output layer's weights and bias divided by ``temperature``: its logits become
    ``logits / T`` in every graph exported from it, so ``probs`` are the calibrated ones
    (``emotion_monitor.core.calibration``); labels do not change."""
    if temperature != 1.0:
        model.head.weight.div_(temperature)
        model.head.bias.div_(temperature)
    return model


def _metrics(summary: dict) -> dict:
    """``{corpus: {level: {metric: [mean, std]}}}`` of a protocol summary, without confusion matrices."""
    return {
        corpus: {level: entry[level] for level in LEVELS if level in entry} | {"coverage": entry["coverage"]}
        for corpus, entry in summary.items()
    }


def calibration_temperature(report: dict) -> float:
    """The temperature the protocol fitted (``report["calibration_loco"]``), which the shipped heads' logits are
    divided by (``with_temperature``); 1 when the report has none."""
    return float(report.get("calibration_loco", {}).get("temperature", 1.0))


def calibration_info(report: dict) -> dict:
    """What ``model.json`` and the ONNX metadata say of the calibration (``core.calibration``)."""
    calibration = report.get("calibration_loco")
    if not calibration:
        return {}
    return {
        "method": "temperature",
        "temperature": calibration_temperature(report),
        "fitted_on": "the clips of every held-out corpus under leave-one-corpus-out (argmax over all labels)",
        "corpora": {
            name: {
                k: r[k]
                for k in ("clips", "accuracy", "mean_confidence", "ece", "ece_calibrated", "ece_cross")
            }
            | {"label_shares": r["label_shares"]}
            for name, r in calibration["corpora"].items()
        },
    }


def _without_confusion(node):
    """``node`` with every ``confusion`` entry removed (the card shows the PNGs; model.json stays small)."""
    if isinstance(node, dict):
        return {k: _without_confusion(v) for k, v in node.items() if k != "confusion"}
    return node


def encoder_weights(encoder: str) -> str:
    """The installed encoder weights (``emotion_monitor.core.ct2.PACKAGED``) named by a features model's ``backbone``
    metadata (``whisper-tiny.en:frozen+bundled-head`` → ``whisper-tiny.en``); the default's when it names none."""
    return encoder.partition(":")[0] or WEIGHTS


def write_bundle(
    out: Path,
    heads: dict,
    report: dict,
    cfg,
    data,
    references: list[dict],
    subspace=None,
) -> Path:
    """Heads by file name + the protocol's ``report`` (``emotion_monitor.core.experiment.evaluate``) → ``out``;
    ``subspace``: the speaker subspace the speaker-normalised head centres in (``SUBSPACE_FILE``), or None. The
    heads come already divided by ``calibration_temperature(report)``."""
    from omegaconf import OmegaConf
    from safetensors.torch import save_file

    from emotion_monitor.core.metrics import plot_confusion
    from emotion_monitor.core.model_card import write_card

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    for file_name, model in heads.items():
        save_file(head_state(model), str(out / file_name))
    (out / SUBSPACE_FILE).unlink(missing_ok=True)
    if subspace is not None:
        tensors = {"mu": subspace.mu, "basis": subspace.basis}
        save_file(
            {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in tensors.items()},
            str(out / SUBSPACE_FILE),
        )
    plain = heads["head.safetensors"]
    model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
    corpora = data.feature_set().corpora
    info = {
        "labels": list(EMOTIONS),
        "sample_rate": 16_000,
        "window_s": float(cfg.dataset.window_s),
        "hop_s": DEFAULT_HOP_S,
        "speech_gate": asdict(data.gate),
        "weights": encoder_weights(data.feature_set().encoder),
        "num_classes": len(EMOTIONS),
        "hidden_dims": list(model_cfg["hidden_dims"]),
        "dropout": float(model_cfg["dropout"]),
        "layer_pooling": model_cfg["layer_pooling"],
        "encoder_layers": int(plain.backbone.num_layers),
        "time_pooling": model_cfg["time_pooling"],
        "layer_weights": [round(float(w), 4) for w in plain.layer_weights().detach()],
        "preprocessing": data.preprocessing.to_dict(),
        "metrics": _metrics(report["kfold"]),
        "leave_one_corpus_out": _metrics(report["leave_one_corpus_out"]),
        "leave_one_corpus_out_mean": report.get("leave_one_corpus_out_mean", {}),
        "calibration": calibration_info(report),
        "protocol": report["protocol"],
        "speaker_norm": {
            "default_mode": "blend",
            "centre": str(cfg.speaker_norm_centre),
            "protocol": "the live rule on the splits above: each session's utterances in a seeded random order, "
            "each judged against the centre of the utterances heard so far once 10 s were heard, plain and "
            "centred heads' probabilities blended, the centred head's weight rising from 0 to 0.5 with the spread "
            "of the plain head's estimates of what was heard (realtime.speaker_norm.blend_weight); mixed sessions "
            "hold all of a speaker's clips, one-mood sessions only their clips of one emotion",
            "results": _metrics(report.get("speaker_norm", {})),
            "one_mood": _metrics(report.get("speaker_norm_one_mood", {})),
            "leave_one_corpus_out": _metrics(report.get("speaker_norm_loco", {})),
            "one_mood_leave_one_corpus_out": _metrics(report.get("speaker_norm_one_mood_loco", {})),
        },
        "trained_on": ", ".join(
            f"{c.name} ({len(c.speakers)} speakers, {len(c.utterances)} clips)" for c in corpora
        ),
        "train_config": report["config"],
        # The whole report (every section, confusion matrices left out): what docs/model-card.md is made from.
        "evaluation": _without_confusion(
            {k: v for k, v in report.items() if k not in ("protocol", "config")}
        ),
        "rebuild": REBUILD,
        "reference_predictions": references,
    }
    (out / "model.json").write_text(json.dumps(info, indent=1) + "\n")
    for name, entry in report["kfold"].items():
        cm = np.array(entry["confusion"]["clip"])
        title = f"{name}: clips of unseen speakers, {entry['folds']}-fold"
        plot_confusion(cm, list(EMOTIONS), out / f"confusion-{name}.png", title=title)
    write_card(out)
    log.info("wrote %s", out)
    return out
