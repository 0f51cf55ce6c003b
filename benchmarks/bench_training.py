"""Training with a frozen backbone: one epoch with cached pooled hidden states vs recomputing them.

Both paths train the same head (``EmotionClassifier.classify_pooled``: layer weights + MLP) on the same clips
with the same loss, batch size and optimiser; they differ only in where the pooled per-layer hidden states
come from:

- ``recompute``: decode + preprocess each clip and run the frozen encoder every epoch (what a frozen-backbone
  ``emotion-train`` run does);
- ``cached``: read them from ``core.feature_cache`` (filled once; the fill is timed separately).

Usage:
    python benchmarks/bench_training.py --actors 1 2 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time

import numpy as np
import torch

from core.bundle import LABELS, HeadConfig, new_head, parse_name
from core.feature_cache import FeatureCache, crops_for, packaged_backbone, pooled_states, ravdess_files
from core.losses import FocalLoss
from export.validate import ravdess_dir
from realtime.audio import PreprocessOptions, load_audio, prepare_clip, prepare_input

RAVDESS_DIR = ravdess_dir()
"""RAVDESS 16 kHz clips: ``$EMOTION_DATA_DIR/ravdess-16k`` (default ../shared/data), as the export checks use."""
BATCH = 16


def train_epoch(model, loss_fn, opt, batches) -> None:
    """One pass over ``batches`` of ``(x [B, L+1, H], y [B])``."""
    model.train()
    for x, y in batches:
        loss = loss_fn(model.classify_pooled(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def epoch(files, labels, features_of, model, loss_fn, opt) -> float:
    """Seconds for one epoch where ``features_of(path)`` supplies ``[L+1, H]`` per clip."""
    start = time.perf_counter()
    for i in range(0, len(files), BATCH):
        x = torch.from_numpy(np.stack([features_of(f) for f in files[i : i + BATCH]])).float()
        y = torch.tensor(labels[i : i + BATCH])
        if len(y) > 1:  # BatchNorm needs two examples
            train_epoch(model, loss_fn, opt, [(x, y)])
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=3, help="cached epochs to time (they are short)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    files = ravdess_files(RAVDESS_DIR, args.actors)
    labels = [parse_name(f)[0] for f in files]
    options = PreprocessOptions()
    backbone, backbone_id = packaged_backbone("whisper-base")
    backbone.eval()
    whole = crops_for(None, 1)

    def recompute(path):
        return pooled_states(backbone, prepare_input(prepare_clip(load_audio(path), options), options))

    with tempfile.TemporaryDirectory() as tmp:
        cache = FeatureCache(backbone, backbone_id, options, root=tmp)
        fill_start = time.perf_counter()
        for f in files:
            cache.get(f, whole)
        fill_s = time.perf_counter() - fill_start

        cfg = HeadConfig()
        model = new_head(cfg, backbone.hidden_size, backbone.num_layers)
        loss_fn = FocalLoss(cfg.focal_gamma, None, cfg.label_smoothing)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=cfg.lr)
        recompute_s = epoch(files, labels, recompute, model, loss_fn, opt)
        cached_s = float(
            np.median(
                [
                    epoch(files, labels, lambda f: cache.get(f, whole)[0], model, loss_fn, opt)
                    for _ in range(args.epochs)
                ]
            )
        )

    report = {
        "benchmark": "frozen_backbone_epoch_time",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {args.threads} threads, torch {torch.__version__}",
        "backbone": backbone_id,
        "clips": len(files),
        "labels": len(LABELS),
        "epoch_s_recompute": round(recompute_s, 2),
        "epoch_s_cached": round(cached_s, 3),
        "speedup": round(recompute_s / cached_s, 1),
        "cache_fill_s_once": round(fill_s, 2),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
