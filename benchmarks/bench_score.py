"""Batch scoring throughput: ``emotion-score`` (ONNX Runtime) vs a plain PyTorch loop over the same files.

Throughput is seconds of audio per second of wall time (× real time). ``emotion-score`` is timed as a user
runs it (a subprocess, start-up included); the PyTorch loop is what one writes without export: load each file,
cut the same windows, run the same classifier in eager mode, average the window probabilities. Both use the
same model (the bundled one, or ``--checkpoint``) and the same files; their top labels are compared too.

Usage:
    python benchmarks/bench_score.py --actors 1 2 --threads 2
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from export.validate import ravdess_dir
from realtime.audio import SAMPLE_RATE, PreprocessOptions, load_audio, prepare_clip, prepare_input
from realtime.model import load_model

RAVDESS_DIR = ravdess_dir()
"""RAVDESS 16 kHz clips: ``$EMOTION_DATA_DIR/ravdess-16k`` (default ../shared/data), as the export checks use."""


def files_for(actors: list[int]) -> list[Path]:
    files = [f for a in actors for f in sorted((RAVDESS_DIR / f"Actor_{a:02d}").glob("*.flac"))]
    if not files:
        raise SystemExit(f"no RAVDESS clips under {RAVDESS_DIR} (set EMOTION_DATA_DIR)")
    return files


def run_emotion_score(folder: Path, model: Path, threads: int, out: Path) -> tuple[float, dict[str, str]]:
    cmd = [sys.executable, "-m", "realtime.score", str(folder), "--model", str(model), "--out", str(out)]
    cmd += ["--threads", str(threads)]
    start = time.perf_counter()
    result = subprocess.run(cmd, capture_output=True, text=True)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"emotion-score failed: {result.stderr.strip()[-500:]}")
    with out.open() as f:
        labels = {Path(row["path"]).name: row["label"] for row in csv.DictReader(f)}
    return wall_s, labels


def run_torch_loop(files: list[Path], model, info, clip_bounds) -> tuple[float, dict[str, str]]:
    """Eager PyTorch, one window batch per file, the same windows and preprocessing as emotion-score."""
    options = PreprocessOptions.from_dict(info.preprocessing)
    labels = {}
    start = time.perf_counter()
    with torch.inference_mode():
        for path in files:
            audio = prepare_clip(load_audio(path), options)
            x = np.stack([prepare_input(audio[a:b], options) for a, b in clip_bounds(len(audio))])
            probs = torch.softmax(model(torch.from_numpy(x)), dim=-1).mean(0)
            labels[path.name] = info.labels[int(probs.argmax())]
    return time.perf_counter() - start, labels


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--actors", type=int, nargs="+", default=[1, 2], help="RAVDESS actors whose files to score"
    )
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    from export.default_model import build_default_classifier
    from export.onnx_export import export_onnx

    model, info = build_default_classifier()
    model.eval()
    files = files_for(args.actors)
    audio_s = sum(len(load_audio(f)) for f in files) / SAMPLE_RATE
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for f in files:
            (folder / f.name).symlink_to(f)
        onnx_path = export_onnx(model, info, Path(tmp) / "model.onnx")
        ort_s, ort_labels = run_emotion_score(folder, onnx_path, args.threads, Path(tmp) / "out.csv")
        torch_s, torch_labels = run_torch_loop(files, model, info, load_model(onnx_path).clip_bounds)
    same = sum(ort_labels.get(name) == label for name, label in torch_labels.items())
    report = {
        "benchmark": "batch_scoring_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {args.threads} threads",
        "files": len(files),
        "audio_s": round(audio_s, 1),
        "emotion_score": {"wall_s": round(ort_s, 1), "x_real_time": round(audio_s / ort_s, 1)},
        "torch_eager_loop": {"wall_s": round(torch_s, 1), "x_real_time": round(audio_s / torch_s, 1)},
        "speedup": round(torch_s / ort_s, 2),
        "same_top_label": f"{same}/{len(files)}",
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
