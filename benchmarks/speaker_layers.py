"""How much speaker identity each layer of the model's ``pooled`` output carries (one window per clip).

For RAVDESS actors 1-12 (8 clips each, every emotion), each clip's first 3 s are scored with ``pooled=True``;
per layer, the windows' time-mean vectors (centred on the set's mean) are compared by cosine similarity: the
equal error rate of "same speaker?" over all pairs (0.5 = no speaker information, 0 = perfect).

Usage:
    python benchmarks/speaker_layers.py [--model MODEL]
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from emotion_monitor.core.paths import data_root
from emotion_monitor.realtime.audio import load_audio
from emotion_monitor.realtime.model import load_model


def equal_error_rate(similarity: np.ndarray, same: np.ndarray) -> float:
    """The error rate where false rejections of same-speaker pairs equal false acceptances of others."""
    genuine, impostor = np.sort(similarity[same]), np.sort(similarity[~same])
    best = 1.0
    for threshold in np.quantile(similarity, np.linspace(0, 1, 2001)):
        rejected = np.searchsorted(genuine, threshold) / len(genuine)
        accepted = 1 - np.searchsorted(impostor, threshold) / len(impostor)
        best = min(best, max(rejected, accepted))
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="exported .onnx model (default: bundled)")
    args = p.parse_args(argv)
    model = load_model(args.model)
    root = data_root() / "ravdess-16k"
    pooled, speakers = [], []
    for actor in range(1, 13):
        files = sorted((root / f"Actor_{actor:02d}").glob("*.flac"))[::6][:8]
        windows = [load_audio(f)[: 3 * model.sample_rate] for f in files]
        pooled.append(model.score_windows(windows, pooled=True).pooled)
        speakers += [actor] * len(files)
    features, speakers = np.concatenate(pooled).astype(np.float64), np.array(speakers)
    pairs = np.triu_indices(len(speakers), 1)
    same = (speakers[:, None] == speakers[None])[pairs]
    print(f"# {model.path.name}: {len(speakers)} windows of {len(set(speakers))} RAVDESS actors")
    print("layer  speaker EER (cosine, centred)")
    for layer in range(features.shape[1]):
        z = features[:, layer] - features[:, layer].mean(axis=0)
        z /= np.linalg.norm(z, axis=1, keepdims=True)
        print(f"{layer:>5}  {equal_error_rate((z @ z.T)[pairs], same):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
