"""Issue 12 pilot: fine-tuning the top Whisper layer vs the frozen head, paired on the protocol's folds.

Every variant is trained by the one trainer (``core.train.fit`` via ``core.experiment._fold_scores``) and scored
by the protocol (``core.protocol.score_speakers``, clip level = emotion-score's windows), fold by fold:

- ``frozen``: ``experiment=head`` on the exported model's clip-view features (``dataset.eval_view=clip
  dataset.train_views=[clip]``), the shipped head recipe;
- ``frozen-torch``: the same head on the frame cache's frozen time-means (torch encoder, same windows), with the
  fine-tuned variant's schedule (a control: same epochs and batch size, no encoder training);
- ``finetune``: ``experiment=head_finetune``: layer 6 + final LayerNorm trained (``core.top_layers``).

    python benchmarks/finetune_top_layer.py --variants frozen finetune --folds 0 -- train.max_epochs=5

Arguments after ``--`` are Hydra overrides for the ``frozen-torch`` and ``finetune`` variants (their schedule);
``--common`` overrides go to every variant (``--common corpora=ravdess``: RAVDESS alone; its speakers are dealt
into the same folds as in the two-corpus protocol, since ``speaker_folds`` deals each corpus on its own).
Prints one line per (variant, fold or LOCO corpus, corpus) and appends JSON lines to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

VARIANTS = {
    "frozen": ["experiment=head", "dataset.eval_view=clip", "dataset.train_views=[clip]"],
    "frozen-torch": ["experiment=head_finetune", "model=head", "dataset.frames=false"],
    "finetune": ["experiment=head_finetune"],
}


def compose(overrides: list[str], output_dir: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module

    import emotion_monitor.core.train  # noqa: F401  (registers the config resolvers)

    with initialize_config_module(config_module="emotion_monitor.configs", version_base="1.3"):
        return hydra_compose(config_name="config", overrides=[*overrides, f"output_dir={output_dir}"])


def _report_epochs() -> None:
    """Print the seconds of every training epoch (the folds train quietly, without loggers or callbacks)."""
    from emotion_monitor.core.lightning_module import EmotionModule

    original = EmotionModule.on_train_epoch_end
    clock = {}

    def timed(self) -> None:
        original(self)
        now = time.time()
        start = clock.get(id(self), now)
        print(f"  epoch {self.current_epoch}: {now - start:.0f} s", flush=True)
        clock[id(self)] = now

    def started(self) -> None:
        clock[id(self)] = time.time()

    EmotionModule.on_train_epoch_end = timed
    EmotionModule.on_train_start = started


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--variants", nargs="+", default=["frozen", "finetune"], choices=sorted(VARIANTS))
    parser.add_argument("--folds", nargs="*", type=int, default=[0])
    parser.add_argument("--loco", nargs="*", default=[], help="corpora to leave out (e.g. ravdess crema-d)")
    parser.add_argument(
        "--common", nargs="*", default=[], help="Hydra overrides for every variant (e.g. corpora=ravdess)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default="runs/finetune_top_layer.jsonl")
    args = parser.parse_args(argv)

    import torch

    from emotion_monitor.core.experiment import _fold_scores
    from emotion_monitor.core.metrics import metrics_from_confusion

    torch.set_num_threads(args.threads)
    _report_epochs()
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    jobs = [(f"fold {f}", {"dataset__fold": f, "dataset__test_corpus": None}) for f in args.folds]
    jobs += [(f"loco {c}", {"dataset__fold": None, "dataset__test_corpus": c}) for c in args.loco]
    for variant in args.variants:
        overrides = VARIANTS[variant] + args.common + (extra if variant != "frozen" else [])
        overrides.append(f"num_threads={args.threads}")
        cfg = compose(overrides, str(out.parent / "finetune_top_layer_run"))
        for name, job in jobs:
            start = time.time()
            scores, _, data = _fold_scores(cfg, **job)
            seconds = time.time() - start
            for corpus, levels in scores.confusion.items():
                m = metrics_from_confusion(levels["clip"])
                row = {
                    "variant": variant,
                    "job": name,
                    "corpus": corpus,
                    "clips": int(levels["clip"].sum()),
                    "accuracy": round(float(m["accuracy"]), 4),
                    "macro_f1": round(float(m["macro_f1"]), 4),
                    "seconds": round(seconds, 1),
                    "epochs": int(cfg.train.max_epochs),
                    "train_windows": len(data.datasets["train"]),
                    "overrides": overrides,
                }
                print(
                    f"{variant:13s} {name:14s} {corpus:8s} n={row['clips']:5d} acc={row['accuracy']:.4f} "
                    f"macro-F1={row['macro_f1']:.4f} ({seconds:.0f} s, {row['epochs']} epochs)",
                    flush=True,
                )
                with out.open("a") as f:
                    f.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
