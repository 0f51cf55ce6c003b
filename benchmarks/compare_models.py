"""Two exported models on the same real clips: do they give the same probabilities, labels and pooled features?

For checking that a change to an export keeps its outputs: a truncated encoder against the full one (their
``pooled`` states in common must be identical), heads stored in float16 against float32, an int8 copy against
fp32. Each clip's ``emotion-score`` windows (trimmed, level-normalised) go through both models. Prints one JSON
document: the largest absolute differences of the clip probabilities and of the pooled states the two share
(the first min(L_a, L_b) + 1), and how many clips keep their top label.

    python benchmarks/compare_models.py model.onnx model-4layers.onnx --clips 48
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from emotion_monitor.core.paths import data_root
from emotion_monitor.realtime.analysis import score_clip
from emotion_monitor.realtime.audio import load_audio
from emotion_monitor.realtime.model import EmotionModel, ModelOptions


def clip_paths(data_dir: Path, count: int) -> list[Path]:
    """``count`` clips spread evenly over the sorted RAVDESS and CREMA-D files under ``data_dir``."""
    files = sorted((data_dir / "ravdess-16k").glob("Actor_*/*.flac"))
    files += sorted((data_dir / "crema-d-16k").glob("*.flac"))
    if not files:
        raise SystemExit(f"no RAVDESS/CREMA-D recordings under {data_dir}")
    step = max(1, len(files) // count)
    return files[::step][:count]


def speaker_heads(a: EmotionModel, b: EmotionModel, pooled: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Each speaker head both models carry, on each model's own pooled windows, centred on their mean (the
    clips as one speaker): ``{kind: {max_abs_diff_probs, same_top_label}}``."""
    out = {}
    for kind in ("running", "baseline"):
        if not (a.has_speaker_head(kind) and b.has_speaker_head(kind)):
            continue
        xa, xb = (np.concatenate([p[i] for p in pooled]) for i in (0, 1))
        pa = a.speaker_norm_head(kind).probs(xa, xa.mean(axis=0))
        pb = b.speaker_norm_head(kind).probs(xb, xb.mean(axis=0))
        out[kind] = {
            "windows": len(xa),
            "max_abs_diff_probs": float(np.abs(pa - pb).max()),
            "same_top_label": int((pa.argmax(1) == pb.argmax(1)).sum()),
        }
    return out


def compare(a: EmotionModel, b: EmotionModel, paths: list[Path]) -> dict:
    """Largest |Δprobs| per clip (window-weighted mean), largest |Δpooled| over the shared states, same labels;
    the same for the speaker heads when both models have them."""
    worst_probs = worst_pooled = 0.0
    same = 0
    states = None
    pooled = []
    for path in paths:
        audio = load_audio(path, a.sample_rate)
        ca = score_clip(a, audio, a.sample_rate, str(path), pooled=True)
        cb = score_clip(b, audio, b.sample_rate, str(path), pooled=True)
        pooled.append((ca.pooled, cb.pooled))
        pa = np.average(ca.probs, axis=0, weights=ca.window_seconds)
        pb = np.average(cb.probs, axis=0, weights=cb.window_seconds)
        worst_probs = max(worst_probs, float(np.abs(pa - pb).max()))
        same += int(pa.argmax() == pb.argmax())
        states = min(ca.pooled.shape[1], cb.pooled.shape[1])
        worst_pooled = max(worst_pooled, float(np.abs(ca.pooled[:, :states] - cb.pooled[:, :states]).max()))
    return {
        "clips": len(paths),
        "max_abs_diff_probs": worst_probs,
        "same_top_label": same,
        "shared_pooled_states": states,
        "max_abs_diff_pooled": worst_pooled,
        "speaker_heads": speaker_heads(a, b, pooled)
        if a.info.encoder_layers == b.info.encoder_layers
        else {},
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("model_a", type=Path)
    parser.add_argument("model_b", type=Path)
    parser.add_argument("--clips", type=int, default=48, help="clips, spread over both corpora (default 48)")
    parser.add_argument(
        "--data-dir", type=Path, default=data_root(), help="the corpora (default: core.paths.data_root())"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    a, b = (EmotionModel(p, ModelOptions("cpu", args.threads)) for p in (args.model_a, args.model_b))
    report = {
        "models": {
            str(p): {
                "backbone": m.info.backbone,
                "encoder_layers": m.info.encoder_layers,
                "variant": m.variant,
            }
            for p, m in ((args.model_a, a), (args.model_b, b))
        },
        **compare(a, b, clip_paths(args.data_dir, args.clips)),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
