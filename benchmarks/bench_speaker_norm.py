"""Speaker normalisation through the shipped runtime (``emotion-score --speaker-norm``), k-fold by actor.

For every fold of the bundled protocol (5 folds over RAVDESS actors 1-20), a plain head and a speaker-centred
head are trained on the other 16 actors (cached frozen Whisper-base features, the bundled setting), exported
into one ONNX file exactly as the bundled model is, and the 4 unseen actors' files are scored by
``emotion-score`` (in-process ``realtime.score.main``) in five ways:

- plain: no speaker normalisation (single file, the default);
- per speaker, blend / centred: ``--speaker-norm folder`` over each actor's folder of 60 files (a varied history);
- per speaker and emotion, blend / centred: each actor's files split into one folder per emotion, so every
  file is judged against a history of its own mood only (the worst case for centring);
- calm baseline, blend / centred: ``--speaker-baseline`` with 5 of the actor's neutral/calm files joined into one
  recording, scoring the actor's other 55 files (plain on the same 55 files for comparison).

Usage:
    python benchmarks/bench_speaker_norm.py [--folds 0 1 2 3 4]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from bench_variant_accuracy import (  # same folder (run as a script)
    clip_features,
    full_model,
    mean_std,
    scores,
)

from core.bundle import (
    BASELINE_CLIPS,
    BASELINE_EMOTIONS,
    CHOSEN,
    LABELS,
    actor_folds,
    parse_name,
    train_baseline_head,
    train_head,
    train_speaker_norm_head,
)
from export.default_model import bundle_info, model_info
from export.onnx_export import export_onnx
from export.validate import ravdess_dir
from realtime import score
from realtime.audio import load_audio

RAVDESS_DIR = ravdess_dir()
"""RAVDESS 16 kHz clips: ``$EMOTION_DATA_DIR/ravdess-16k`` (default ../shared/data), as the export checks use."""
SCENARIOS = {
    "plain": ("actor", []),
    "per speaker / blend": ("actor", ["--speaker-norm", "folder"]),
    "per speaker / centred": ("actor", ["--speaker-norm", "folder", "--speaker-norm-mode", "centred"]),
    "per speaker+emotion / blend": ("emotion", ["--speaker-norm", "folder"]),
    "per speaker+emotion / centred": (
        "emotion",
        ["--speaker-norm", "folder", "--speaker-norm-mode", "centred"],
    ),
}


def layout(test_actors: list[int], root: Path) -> dict[str, Path]:
    """Symlinked folders: ``actor/Actor_NN/`` (all of a speaker's files) and ``emotion/Actor_NN-E/``."""
    for actor in test_actors:
        for clip in sorted((RAVDESS_DIR / f"Actor_{actor:02d}").glob("*.flac")):
            label, _ = parse_name(clip)
            for folder in (
                root / "actor" / f"Actor_{actor:02d}",
                root / "emotion" / f"Actor_{actor:02d}-{label}",
            ):
                folder.mkdir(parents=True, exist_ok=True)
                (folder / clip.name).symlink_to(clip)
    return {"actor": root / "actor", "emotion": root / "emotion"}


def run_score(model: Path, folder: Path, extra: list[str], out: Path) -> tuple[np.ndarray, np.ndarray]:
    """(true labels, predicted labels) of every file under ``folder`` scored by emotion-score."""
    status = score.main(
        [str(folder), "-r", "--model", str(model), "--out", str(out), "--threads", "2", *extra]
    )
    assert status == 0, f"emotion-score exit {status}"
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    true = np.array([parse_name(Path(r["path"]))[0] for r in rows])
    return true, np.array([LABELS.index(r["label"]) for r in rows])


def baseline_runs(
    model: Path, test_actors: list[int], root: Path, rng: np.random.Generator
) -> dict[str, tuple]:
    """Per actor: a calm recording from ``BASELINE_CLIPS`` neutral/calm files; the other files scored against it
    (blend, centred) and plain. Returns scenario → (true, predicted) over the fold's actors."""
    out: dict[str, list] = {}
    for actor in test_actors:
        clips = sorted((RAVDESS_DIR / f"Actor_{actor:02d}").glob("*.flac"))
        calm = [c for c in clips if parse_name(c)[0] in BASELINE_EMOTIONS]
        enrol = [calm[i] for i in rng.choice(len(calm), BASELINE_CLIPS, replace=False)]
        folder = root / "baseline" / f"Actor_{actor:02d}"
        folder.mkdir(parents=True)
        for clip in clips:
            if clip not in enrol:
                (folder / clip.name).symlink_to(clip)
        recording = root / "baseline" / f"calm-{actor:02d}.wav"
        sf.write(recording, np.concatenate([load_audio(c) for c in enrol]), 16_000)
        for name, extra in (
            ("calm baseline: plain, same files", []),
            ("calm baseline / blend", ["--speaker-baseline", str(recording)]),
            (
                "calm baseline / centred",
                ["--speaker-baseline", str(recording), "--speaker-norm-mode", "centred"],
            ),
        ):
            true, pred = run_score(model, folder, extra, root / f"{actor}-{len(extra)}-baseline.jsonl")
            out.setdefault(name, []).append((true, pred))
    return {
        name: tuple(np.concatenate(parts) for parts in zip(*runs, strict=True)) for name, runs in out.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folds", type=int, nargs="*", default=list(range(5)))
    args = parser.parse_args(argv)
    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    backbone, data = clip_features()
    info = model_info(bundle_info())
    per_fold: dict[str, list[dict]] = {}
    x, y, actors = data.feats["full"], data.labels, data.actors
    with tempfile.TemporaryDirectory() as tmp:
        for k in args.folds:
            test_actors = actor_folds()[k]
            train = ~np.isin(actors, test_actors)
            head = train_head(CHOSEN, x[train], y[train])
            heads = {
                "running": train_speaker_norm_head(CHOSEN, x[train], y[train], actors[train]),
                "baseline": train_baseline_head(CHOSEN, x[train], y[train], actors[train]),
            }
            path = export_onnx(
                full_model(head, backbone), info, Path(tmp) / f"fold{k}.onnx", speaker_heads=heads
            )
            folders = layout(test_actors, Path(tmp) / f"fold{k}")
            results = {}
            for name, (grouping, extra) in SCENARIOS.items():
                out = Path(tmp) / f"fold{k}-{len(extra)}-{grouping}.jsonl"
                results[name] = run_score(path, folders[grouping], extra, out)
            results |= baseline_runs(path, test_actors, Path(tmp) / f"fold{k}", rng)
            for name, (true, pred) in results.items():
                per_fold.setdefault(name, []).append(scores(true, pred))
            line = ", ".join(f"{n} {per_fold[n][-1]['accuracy']:.3f}" for n in per_fold)
            print(f"fold {k} actors {test_actors}: {line}", file=sys.stderr, flush=True)
    report = {
        "benchmark": "speaker_norm_runtime_kfold_by_actor",
        "date": time.strftime("%Y-%m-%d"),
        "protocol": f"folds {args.folds} of 5-fold by actor over RAVDESS actors 1-20, emotion-score whole files",
        "scenarios": mean_std(per_fold),
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
