"""Accuracy of each inference variant under the published protocol, so a speed-up never hides a loss.

For every fold of the bundled model's 5-fold-by-actor protocol (actors 1–20), a head is trained on the other
16 actors (cached frozen Whisper-base features, the bundled setting), assembled with the encoder, exported to
ONNX fp32 and int8, and the 4 unseen actors' files are scored through the runtime (``EmotionModel.predict_file``,
what ``emotion-score`` does). PyTorch eager is the same head on the same whole-clip features.

Usage:
    python benchmarks/bench_variant_accuracy.py
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from core.feature_cache import FeatureCache, crops_for, packaged_backbone, ravdess_files

from core.bundle import CHOSEN, LABELS, actor_folds, load_dataset, predict_proba, train_head
from core.metrics import confusion_matrix, metrics_from_confusion
from core.model import EmotionClassifier
from export.default_model import bundle_info, model_info
from export.onnx_export import export_onnx
from export.quantize import quantize_int8
from export.validate import ravdess_dir
from realtime.audio import PreprocessOptions
from realtime.model import ModelOptions, load_model

RAVDESS_DIR = ravdess_dir()
"""RAVDESS 16 kHz clips: ``$EMOTION_DATA_DIR/ravdess-16k`` (default ../shared/data), as the export checks use."""


def clip_features(weights: str = "whisper-base"):
    """``(frozen encoder, core.bundle.Dataset)``: cached whole-clip pooled features of actors 1-20 (computed on
    first use), the data every k-fold benchmark starts from."""
    backbone, backbone_id = packaged_backbone(weights)
    cache = FeatureCache(backbone, backbone_id, PreprocessOptions())
    return backbone, load_dataset(cache, RAVDESS_DIR, [crops_for(None, 1)])


def full_model(head: EmotionClassifier, backbone) -> EmotionClassifier:
    """The fold's head on the real encoder (the head was trained on that encoder's pooled states)."""
    model = EmotionClassifier(backbone, len(LABELS), CHOSEN.hidden_dims, CHOSEN.dropout, "weighted")
    missing = model.load_state_dict(head.state_dict(), strict=False).missing_keys
    assert all(k.startswith("backbone.") for k in missing), missing
    return model.eval()


def scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict:
    m = metrics_from_confusion(confusion_matrix(y_true, y_pred, len(LABELS)))
    return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}


def mean_std(per_fold: dict[str, list[dict]]) -> dict[str, dict[str, str]]:
    """``{name: [scores per fold]}`` → ``{name: {metric: "mean ± std"}}`` over folds, for the printed report."""
    return {
        name: {
            metric: f"{np.mean([f[metric] for f in folds]):.3f} ± {np.std([f[metric] for f in folds]):.3f}"
            for metric in ("accuracy", "macro_f1")
        }
        for name, folds in per_fold.items()
    }


def main() -> int:
    torch.set_num_threads(2)
    backbone, data = clip_features()
    files = ravdess_files(RAVDESS_DIR)
    info = model_info(bundle_info())
    per_fold = {"torch_eager": [], "onnx_fp32": [], "onnx_int8": [], "onnx_int8_per_channel": []}
    agreement: dict[str, list[float]] = {"onnx_int8": [], "onnx_int8_per_channel": []}
    with tempfile.TemporaryDirectory() as tmp:
        for k, test_actors in enumerate(actor_folds()):
            train = ~np.isin(data.actors, test_actors)
            head = train_head(CHOSEN, data.feats["full"][train], data.labels[train])
            y = data.labels[~train]
            eager = predict_proba(head, data.feats["full"][~train]).argmax(1)
            fp32 = export_onnx(full_model(head, backbone), info, Path(tmp) / f"fold{k}.onnx")
            int8 = quantize_int8(fp32, Path(tmp) / f"fold{k}.int8.onnx")
            int8_pc = quantize_int8(fp32, Path(tmp) / f"fold{k}.int8pc.onnx", method="dynamic-per-channel")
            test_files = [f for f, keep in zip(files, ~train, strict=True) if keep]
            preds = {"torch_eager": eager}
            for name, path in (("onnx_fp32", fp32), ("onnx_int8", int8), ("onnx_int8_per_channel", int8_pc)):
                runtime = load_model(path, ModelOptions(provider="cpu", intra_op_threads=2))
                preds[name] = np.array([LABELS.index(runtime.predict_file(f).label) for f in test_files])
            for name, pred in preds.items():
                per_fold[name].append(scores(y, pred))
            for name, agreed in agreement.items():
                agreed.append(float(np.mean(preds[name] == preds["onnx_fp32"])))
            print(
                f"fold {k} actors {test_actors}: "
                + ", ".join(f"{n} acc {per_fold[n][-1]['accuracy']:.3f}" for n in per_fold),
                file=sys.stderr,
                flush=True,
            )
    report = {
        "benchmark": "variant_accuracy_kfold_by_actor",
        "date": time.strftime("%Y-%m-%d"),
        "protocol": "5-fold by actor over RAVDESS actors 1-20, whole-file scoring, bundled head setting",
        "variants": mean_std(per_fold),
        "same_label_as_fp32": {name: f"{np.mean(agreed):.3f}" for name, agreed in agreement.items()},
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
