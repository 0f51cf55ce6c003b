"""Would an ensemble lift single-clip accuracy? Heads of several seeds, and Whisper-base with Whisper-tiny.en.

5-fold by actor over RAVDESS actors 1-20 (the bundled protocol), whole trimmed clips, cached frozen features of
each encoder (computed on the first run, about 3 minutes for Whisper-tiny.en), the bundled head setting. Late
fusion: class probabilities are averaged.

Usage:
    python benchmarks/bench_ensemble_accuracy.py [--seeds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

import numpy as np
import torch
from bench_variant_accuracy import clip_features, mean_std, scores  # same folder (run as a script)

from core.bundle import CHOSEN, actor_folds, predict_proba, train_head

ENCODERS = ("whisper-base", "whisper-tiny.en")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=3, help="heads per encoder in the seed ensembles")
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    data = {}
    for name in ENCODERS:
        data[name] = clip_features(name)[1]
    y, actors = data[ENCODERS[0]].labels, data[ENCODERS[0]].actors
    per_fold: dict[str, list[dict]] = {}
    for fold in actor_folds():
        train = ~np.isin(actors, fold)
        probs = {}
        for name, d in data.items():
            x = d.feats["full"]
            runs = [
                predict_proba(train_head(dataclasses.replace(CHOSEN, seed=s), x[train], y[train]), x[~train])
                for s in range(args.seeds)
            ]
            probs[f"{name}, 1 head"] = runs[0]
            probs[f"{name}, {args.seeds} seeds"] = np.mean(runs, axis=0)
        probs["base + tiny.en, 1 head each"] = (
            probs["whisper-base, 1 head"] + probs["whisper-tiny.en, 1 head"]
        )
        probs[f"base + tiny.en, {args.seeds} seeds each"] = (
            probs[f"whisper-base, {args.seeds} seeds"] + probs[f"whisper-tiny.en, {args.seeds} seeds"]
        )
        for name, p in probs.items():
            per_fold.setdefault(name, []).append(scores(y[~train], p.argmax(1)))
    report = {
        "benchmark": "ensemble_accuracy_kfold_by_actor",
        "date": time.strftime("%Y-%m-%d"),
        "protocol": "5-fold by actor over RAVDESS actors 1-20, whole trimmed clips, single clip, bundled head setting",
        "ensembles": mean_std(per_fold),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
