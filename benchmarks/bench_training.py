"""The cached-feature training path: encoding corpora once, then head training from the cache.

Prints JSON with
- ``encode``: the window-feature cache's fill rate (``emotion_monitor.core.window_features.compute``, clean view: each file's
  emotion-score windows and live-timeline speech windows through the exported model), on ``--files`` files of
  each corpus;
- ``fit``: one head trained by the project's trainer (``emotion_monitor.core.train.fit``, experiment=head, fold 0) on the cached
  features of the corpora, seconds per epoch and windows per second.

Usage (after the cache is filled, e.g. by ``emotion-train experiment=head task=evaluate``):
    python benchmarks/bench_training.py --files 100
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time

from hydra import compose, initialize_config_module


def cpu_flags() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            flags = next(line for line in f if line.startswith("flags")).split()
    except (OSError, StopIteration):
        return platform.processor()
    return " ".join(f for f in flags if f.startswith(("avx", "fma", "amx")) or "vnni" in f)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=100, help="files per corpus to encode")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--corpora", default="both", help="corpora config (ravdess, crema_d, both)")
    args = parser.parse_args(argv)

    import torch

    from emotion_monitor.core.corpora import read_corpus
    from emotion_monitor.core.train import fit
    from emotion_monitor.core.window_features import VIEWS, compute
    from emotion_monitor.realtime.model import load_model

    torch.set_num_threads(args.threads)
    with initialize_config_module("emotion_monitor.configs", version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=head",
                f"corpora={args.corpora}",
                "dataset.fold=0",
                f"num_threads={args.threads}",
            ],
        )
    out_dir = tempfile.mkdtemp(prefix="bench-training-")
    cfg.output_dir = out_dir
    model = load_model(intra_op_threads=args.threads, batch_size=16)
    encode = {}
    for name, corpus_cfg in cfg.corpora.items():
        corpus = read_corpus(corpus_cfg.kind, corpus_cfg.root)
        corpus.utterances = corpus.utterances[: args.files]
        start = time.perf_counter()
        features = compute(model, corpus, VIEWS["clean"])
        seconds = time.perf_counter() - start
        encode[name] = {
            "files": len(corpus.utterances),
            "windows": int(len(features.utt)),
            "seconds": round(seconds, 2),
            "ms_per_file": round(1000 * seconds / len(corpus.utterances), 1),
        }
    start = time.perf_counter()
    trainer, _, data = fit(cfg, quiet=True)
    seconds = time.perf_counter() - start
    windows = len(data.datasets["train"])
    epochs = int(trainer.current_epoch)
    report = {
        "machine": {"cpu_flags": cpu_flags(), "threads": args.threads},
        "encode": encode,
        "fit": {
            "training_windows": windows,
            "epochs": epochs,
            "seconds_incl_loading": round(seconds, 1),
            "seconds_per_epoch": round(seconds / max(epochs, 1), 2),
            "windows_per_s": round(windows * epochs / seconds),
        },
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
