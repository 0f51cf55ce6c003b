"""``emotion-eval``: score checkpoints on speaker-independent held-out actors.

One checkpoint → its own test actors (stored in the checkpoint), or ``--split val``, or explicit
``--actors``. Several checkpoints (one per k-fold) → each on its own test fold, plus the pooled confusion
matrix and the mean/std of every metric over folds. Each clip is scored as ``emotion-score`` scores a file (its
windows, length-weighted mean), the evaluation protocol's clip level.

Writes ``metrics.json`` and ``confusion.png`` (per fold too: ``fold<K>_metrics.json`` / ``_confusion.png``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from emotion_monitor.core.checkpoint import CheckpointError, load_classifier, read_checkpoint
from emotion_monitor.core.data import ClipDataset, DataError, decode_clips, index_ravdess, report_problems
from emotion_monitor.core.metrics import METRIC_NAMES, plot_confusion, report_from_confusion, save_json
from emotion_monitor.core.metrics import confusion_matrix as make_confusion
from emotion_monitor.core.paths import DATA_DIR_ENV, ravdess_dir
from emotion_monitor.realtime.audio import PreprocessOptions, prepare_clip, prepare_input
from emotion_monitor.realtime.errors import print_error
from emotion_monitor.realtime.windowing import tile_bounds


@torch.no_grad()
def predict(
    model: torch.nn.Module, dataset: ClipDataset, batch_size: int = 16
) -> tuple[np.ndarray, np.ndarray]:
    """(true labels ``[N]``, predicted labels ``[N]``), each clip scored exactly as ``emotion-score`` scores a file:
    its windows (``tile_bounds``: the clip itself up to the window length, else full windows end to end), each
    trimmed and level-normalised like a runtime window, and the mean of their probabilities weighted by their
    seconds (the evaluation protocol's clip level, ``emotion_monitor.core.protocol``). ``batch_size`` batches equal-length windows.
    """
    model.eval()
    y_pred = []
    for clip in dataset.clips:
        windows = [clip[s:e] for s, e in tile_bounds(len(clip), dataset.length)]
        inputs = [prepare_clip(w, dataset.options) for w in windows]
        probs = np.zeros((len(inputs), model.num_classes))
        by_length: dict[int, list[int]] = {}
        for i, x in enumerate(inputs):
            by_length.setdefault(len(x), []).append(i)
        for indices in by_length.values():
            for k in range(0, len(indices), batch_size):
                chunk = indices[k : k + batch_size]
                x = torch.from_numpy(np.stack([prepare_input(inputs[i], dataset.options) for i in chunk]))
                probs[chunk] = torch.softmax(model(x), dim=-1).numpy()
        weights = np.array([len(x) for x in inputs], dtype=np.float64)
        y_pred.append(int(np.argmax(np.average(probs, axis=0, weights=weights))))
    return np.asarray(dataset.labels, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)


def eval_dataset(root: Path, actors: Sequence[int], hparams: dict) -> ClipDataset:
    """Evaluation dataset (trimmed clips) of the given actors with the checkpoint's window and preprocessing."""
    files, problems = index_ravdess(root)
    files = [f for f in files if f.actor in set(actors)]
    options = PreprocessOptions.from_dict(hparams["preprocessing"])
    files, clips, bad = decode_clips(files, options)
    report_problems(problems + bad)
    if not files:
        raise DataError(f"{root}: no usable files for actors {sorted(actors)}")
    return ClipDataset(clips, [f.label for f in files], float(hparams["window_s"]), options, train=False)


def split_actors_of(hparams: dict, split: str, path: Path) -> list[int]:
    actors = ((hparams.get("split") or {}).get("actors") or {}).get(split)
    if not actors:
        raise CheckpointError(path, f"holds no '{split}' actor list; pass --actors")
    return list(actors)


def evaluate_checkpoint(
    checkpoint: str | Path,
    datamodule=None,
    split: str = "test",
    out_dir: str | Path | None = None,
    name: str = "",
    data_dir: str | Path | None = None,
    actors: Sequence[int] | None = None,
    batch_size: int = 16,
) -> dict[str, Any]:
    """Score one checkpoint; writes ``[name_]metrics.json`` and ``[name_]confusion.png`` into ``out_dir``.

    The clips come from ``datamodule.datasets[split]`` when given (already decoded), else from ``data_dir``
    for ``actors`` (default: the checkpoint's own ``split`` actors).
    """
    checkpoint = Path(checkpoint)
    model, hparams = load_classifier(checkpoint)
    if datamodule is not None and actors is None:
        dataset = datamodule.datasets[split]
        used_actors = datamodule.split[split]
    else:
        used_actors = list(actors) if actors is not None else split_actors_of(hparams, split, checkpoint)
        dataset = eval_dataset(Path(data_dir or ravdess_dir()), used_actors, hparams)
    y_true, y_pred = predict(model, dataset, batch_size)
    report = report_from_confusion(make_confusion(y_true, y_pred, len(hparams["labels"])), hparams["labels"])
    fold = (hparams.get("split") or {}).get("fold")
    report.update(
        checkpoint=str(checkpoint), split=split if actors is None else "actors", actors=sorted(used_actors)
    )
    report.update(fold=fold, protocol=protocol_text(hparams, sorted(used_actors)))
    if out_dir is not None:
        prefix = f"{name}_" if name else ""
        save_json(report, Path(out_dir) / f"{prefix}metrics.json")
        title = f"{checkpoint.name} · actors {sorted(used_actors)} · macro-F1 {report['macro_f1']:.3f}"
        plot_confusion(
            np.array(report["confusion_matrix"]),
            hparams["labels"],
            Path(out_dir) / f"{prefix}confusion.png",
            title,
        )
    return report


def protocol_text(hparams: dict, actors: list[int]) -> str:
    window = float(hparams["window_s"])
    return (
        f"speaker-independent: RAVDESS speech of actors {actors} never seen in training; each clip scored as "
        f"emotion-score scores a file ({window:g} s windows end to end, length-weighted mean); metrics over "
        f"{len(hparams['labels'])} classes"
    )


def record_test_metrics(checkpoint: str | Path, report: dict[str, Any]) -> None:
    """Add ``test/<metric>`` figures and the protocol to a checkpoint's ``hyper_parameters.metrics``."""
    data = read_checkpoint(checkpoint)
    metrics = dict(data["hyper_parameters"].get("metrics") or {})
    metrics.update({f"test/{k}": report[k] for k in METRIC_NAMES})
    metrics["test/num_samples"] = report["num_samples"]
    metrics["test/actors"] = report["actors"]
    metrics["protocol"] = report["protocol"]
    data["hyper_parameters"]["metrics"] = metrics
    torch.save(data, checkpoint)


def aggregate(reports: list[dict[str, Any]], labels: list[str]) -> dict[str, Any]:
    """k-fold summary: pooled confusion matrix metrics, and mean/std of each metric over folds."""
    pooled = sum(np.array(r["confusion_matrix"]) for r in reports)
    summary = report_from_confusion(pooled, labels)
    for key in METRIC_NAMES:
        values = np.array([r[key] for r in reports])
        summary[f"{key}_mean"] = float(values.mean())
        summary[f"{key}_std"] = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    summary["folds"] = [
        {k: r[k] for k in ("checkpoint", "fold", "actors", *METRIC_NAMES, "num_samples")} for r in reports
    ]
    return summary


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="emotion-eval",
        description=(
            "Evaluate emotion-train checkpoints on held-out RAVDESS actors. With one checkpoint: its own test "
            "actors (stored in it). With several (one per k-fold, dataset.fold=0..K-1): each on its own test "
            "fold, plus pooled and mean/std metrics. Writes metrics.json and confusion.png."
        ),
        epilog="example: emotion-eval runs/2026-01-01/12-00-00/checkpoints/best.ckpt --out eval/",
    )
    parser.add_argument("checkpoints", nargs="+", type=Path, help="checkpoint(s) written by emotion-train")
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help=f"RAVDESS folder with Actor_XX (default: ${DATA_DIR_ENV}/ravdess-16k, see core/paths.py)",
    )
    parser.add_argument(
        "--split", choices=("test", "val", "train"), default="test", help="which stored split (default test)"
    )
    parser.add_argument(
        "--actors", type=int, nargs="+", default=None, help="evaluate on these actor numbers instead"
    )
    parser.add_argument(
        "--out", type=Path, default=None, help="output folder (default: <first checkpoint dir>/eval)"
    )
    parser.add_argument("--batch-size", type=int, default=16, help="clips per forward pass (default 16)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    out_dir = args.out or args.checkpoints[0].parent / "eval"
    try:
        reports = []
        for index, ckpt in enumerate(args.checkpoints):
            name = "" if len(args.checkpoints) == 1 else f"fold{_fold_of(ckpt, index)}"
            report = evaluate_checkpoint(
                ckpt,
                split=args.split,
                out_dir=out_dir,
                name=name,
                data_dir=args.data_dir,
                actors=args.actors,
                batch_size=args.batch_size,
            )
            reports.append(report)
            print(
                f"{ckpt}: "
                + " ".join(f"{k}={report[k]:.4f}" for k in METRIC_NAMES)
                + f" (n={report['num_samples']})"
            )
        if len(reports) > 1:
            labels = reports[0]["labels"]
            summary = aggregate(reports, labels)
            save_json(summary, out_dir / "metrics.json")
            plot_confusion(
                np.array(summary["confusion_matrix"]), labels, out_dir / "confusion.png", "pooled over folds"
            )
            print("pooled: " + " ".join(f"{k}={summary[k]:.4f}" for k in METRIC_NAMES))
            print(
                "mean±std: "
                + " ".join(f"{k}={summary[k + '_mean']:.4f}±{summary[k + '_std']:.4f}" for k in METRIC_NAMES)
            )
    except (CheckpointError, DataError) as exc:
        return print_error("emotion-eval", exc)
    print(f"wrote {out_dir / 'metrics.json'} and {out_dir / 'confusion.png'}")
    return 0


def _fold_of(path: Path, index: int) -> int:
    fold = (read_checkpoint(path)["hyper_parameters"].get("split") or {}).get("fold")
    return index if fold is None else int(fold)


if __name__ == "__main__":
    sys.exit(main())
