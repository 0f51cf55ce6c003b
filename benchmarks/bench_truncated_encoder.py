"""Would a shorter encoder do? Heads on the hidden states of an encoder cut after layer k, 5-fold by actor.

Whisper-base has 6 layers; the bundled head weighs hidden states 0..6 almost evenly. Cutting the encoder after
layer k saves (6 - k) / 6 of the transformer's compute at inference. Each ``k`` is scored with the bundled
protocol (5-fold by actor over RAVDESS actors 1-20, whole trimmed clips, single clip, bundled head setting) on
the cached per-layer features, so nothing is re-encoded.

Caveat for building it: Whisper applies its final layer norm only after the last layer, so hidden state k of the
cut encoder is the cached state k only if the cut keeps that convention (states 1..5 here are raw layer outputs).

Usage:
    python benchmarks/bench_truncated_encoder.py
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from bench_variant_accuracy import clip_features, mean_std, scores  # same folder (run as a script)

from core.bundle import CHOSEN, actor_folds, predict_proba, train_head


def main() -> int:
    torch.set_num_threads(2)
    backbone, data = clip_features()
    x, y, actors = data.feats["full"], data.labels, data.actors
    per_fold: dict[str, list[dict]] = {}
    for last in range(backbone.num_layers, 2, -1):
        states = x[:, : last + 1]  # hidden states 0..last: the encoder cut after layer `last`
        for fold in actor_folds():
            train = ~np.isin(actors, fold)
            head = train_head(CHOSEN, states[train], y[train])
            pred = predict_proba(head, states[~train]).argmax(1)
            per_fold.setdefault(f"layers 1-{last} (states 0-{last})", []).append(scores(y[~train], pred))
    report = {
        "benchmark": "truncated_encoder_accuracy_kfold_by_actor",
        "date": time.strftime("%Y-%m-%d"),
        "protocol": "5-fold by actor over RAVDESS actors 1-20, whole trimmed clips, single clip, bundled head setting",
        "encoders": mean_std(per_fold),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
