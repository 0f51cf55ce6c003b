"""Batch scoring throughput: ``emotion-score`` (ONNX Runtime) vs a plain PyTorch loop over the same files.

Throughput is seconds of audio per second of wall time (× real time). ``emotion-score`` is timed as a user
runs it (a subprocess, start-up included); the PyTorch loop is what one writes without export: load each file,
cut the same windows, run the same classifier in eager mode, average the window probabilities. Both use the
same model (the bundled one, or ``--checkpoint``) and the same files; their top labels are compared too.

``--continuous``: continuous speech instead of short clips. Each actor's clips are trimmed (as scoring trims
them), shuffled with a fixed seed and joined into files of at least ``--file-s`` seconds, written to a temporary
folder. ``emotion-score`` (whole files) and ``emotion-score --segments`` at each ``--hops`` are timed in
interleaved rounds (``--repeats``, median reported), optionally against another source tree's ``emotion-score``
(``--compare-src DIR``, e.g. ``git archive <commit> | tar -x -C DIR``). Each timeline's speech windows are also
checked against the clip under them (the clip holding most of the window): the accuracy a timeline gives.

Usage:
    python benchmarks/bench_score.py --actors 1 2 --threads 2
    python benchmarks/bench_score.py --continuous --actors 1 2 3 4 --hops 0.5 1.0 1.5 --compare-src /tmp/base
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.paths import ravdess_dir
from emotion_monitor.export.quantize import cpu_flags
from emotion_monitor.realtime.analysis import clip_bounds
from emotion_monitor.realtime.audio import (
    SAMPLE_RATE,
    PreprocessOptions,
    load_audio,
    prepare_clip,
    prepare_input,
)
from emotion_monitor.realtime.model import load_model
from emotion_monitor.realtime.model_store import resolve_model_path

RAVDESS_DIR = ravdess_dir()
"""RAVDESS 16 kHz clips: ``$EMOTION_DATA_DIR/ravdess-16k`` (core.paths.data_root), as the export checks use."""


def files_for(actors: list[int]) -> list[Path]:
    files = [f for a in actors for f in sorted((RAVDESS_DIR / f"Actor_{a:02d}").glob("*.flac"))]
    if not files:
        raise SystemExit(f"no RAVDESS clips under {RAVDESS_DIR} (set EMOTION_DATA_DIR)")
    return files


def run_emotion_score(
    folder: Path, model: Path, threads: int, out: Path, extra: tuple[str, ...] = (), src: Path | None = None
) -> tuple[float, dict[str, str]]:
    """Time one ``emotion-score`` run as a user starts it; ``src``: run that source tree's copy instead."""
    cmd = [
        sys.executable,
        "-m",
        "emotion_monitor.realtime.score",
        str(folder),
        "--model",
        str(model),
        "--out",
        str(out),
    ]
    cmd += ["--threads", str(threads), *extra]
    env = dict(os.environ, PYTHONPATH=str(src)) if src else None
    start = time.perf_counter()
    # ``python -m`` puts the working folder first on sys.path: run the other tree from its own folder.
    result = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=src)
    wall_s = time.perf_counter() - start
    if result.returncode != 0:
        raise SystemExit(f"emotion-score failed: {result.stderr.strip()[-500:]}")
    with out.open() as f:
        labels = {Path(row["path"]).name: row["label"] for row in csv.DictReader(f)}
    return wall_s, labels


def write_continuous(files: list[Path], folder: Path, file_s: float, seed: int = 0) -> dict[str, list]:
    """Each actor's clips, trimmed, shuffled and joined into files of at least ``file_s`` seconds (a shorter
    remainder joins the last file). Returns ``{file name: [(start_s, end_s, label), ...]}``, the clips in it."""
    options = PreprocessOptions()
    rng = np.random.default_rng(seed)
    by_actor: dict[str, list[Path]] = {}
    for f in files:
        by_actor.setdefault(f.parent.name, []).append(f)
    truth = {}
    for actor, clips in by_actor.items():
        parts: list[list] = [[]]
        for i in rng.permutation(len(clips)):
            if sum(len(a) for a, _ in parts[-1]) >= file_s * SAMPLE_RATE:
                parts.append([])
            label = EMOTIONS[int(clips[i].name.split("-")[2]) - 1]
            parts[-1].append((prepare_clip(load_audio(clips[i]), options), label))
        if len(parts) > 1 and sum(len(a) for a, _ in parts[-1]) < file_s * SAMPLE_RATE:
            tail = parts.pop()
            parts[-1] += tail
        for k, part in enumerate(parts):
            name = f"{actor}-{k}.flac"
            sf.write(folder / name, np.concatenate([a for a, _ in part]), SAMPLE_RATE)
            edges = np.cumsum([0] + [len(a) for a, _ in part]) / SAMPLE_RATE
            truth[name] = [(edges[j], edges[j + 1], label) for j, (_, label) in enumerate(part)]
    return truth


def timeline_accuracy(out: Path, truth: dict[str, list]) -> dict:
    """Speech windows of a ``--segments`` CSV whose label is the emotion of the clip covering most of them."""
    right = total = 0
    with out.open() as f:
        for row in csv.DictReader(f):
            if row["speech"] != "True":
                continue
            start, end = float(row["start_s"]), float(row["end_s"])
            clips = truth[Path(row["path"]).name]
            overlap = [max(0.0, min(end, b) - max(start, a)) for a, b, _ in clips]
            right += row["label"] == clips[int(np.argmax(overlap))][2]
            total += 1
    return {"speech_windows": total, "accuracy": round(right / max(1, total), 3)}


def bench_continuous(args) -> dict:
    """``emotion-score`` on continuous speech: whole files and ``--segments`` timelines (see the module doc)."""
    models = [Path(m) for m in args.model] if args.model else [resolve_model_path()]
    runs = {"whole_file": ()} | {f"segments_hop_{h:g}s": ("--segments", "--hop-s", str(h)) for h in args.hops}
    if len(models) > 1:  # e.g. fp32 and int8: every case once per model, keyed "<model file name>:<case>"
        runs = {f"{m.name}:{name}": (m, extra) for m in models for name, extra in runs.items()}
    else:
        runs = {name: (models[0], extra) for name, extra in runs.items()}
    srcs = {"": None} | ({"before:": Path(args.compare_src)} if args.compare_src else {})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "continuous"
        folder.mkdir()
        truth = write_continuous(files_for(args.actors), folder, args.file_s)
        audio_s = sum(sf.info(str(f)).duration for f in folder.iterdir())
        times: dict[str, list[float]] = {}
        labels, accuracy = {}, {}
        for _ in range(
            args.repeats
        ):  # interleaved: a burst of load on a shared machine hits every case alike
            for prefix, src in srcs.items():
                for name, (model, extra) in runs.items():
                    if src and (extra or model != models[0]):  # the other tree: whole files, first model only
                        continue
                    out = Path(tmp) / f"{prefix.strip(':')}{name}.csv"
                    wall_s, labels[prefix + name] = run_emotion_score(
                        folder, model, args.threads, out, extra, src
                    )
                    times.setdefault(prefix + name, []).append(wall_s)
                    if extra:
                        accuracy[prefix + name] = timeline_accuracy(out, truth)
    report = {
        "files": len(truth),
        "audio_s": round(audio_s, 1),
        "file_s": [round(c[-1][1], 1) for c in truth.values()],
        "repeats": args.repeats,
    }
    for key, wall in times.items():
        report[key] = {
            "wall_s": round(statistics.median(wall), 2),
            "x_real_time": round(audio_s / statistics.median(wall), 1),
        }
        report[key] |= accuracy.get(key, {})
    if args.compare_src:
        first = next(iter(runs))
        same = sum(labels[f"before:{first}"][k] == v for k, v in labels[first].items())
        report["whole_file_same_label_as_before"] = f"{same}/{len(labels[first])}"
    return report


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


def machine(threads: int) -> str:
    """Architecture, threads, core count and the CPU's SIMD flags (what decides int8/fp32 speed)."""
    return f"{platform.machine()}, {threads} threads of {os.cpu_count()} cores, CPU flags: {cpu_flags()}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--actors", type=int, nargs="+", default=[1, 2], help="RAVDESS actors whose files to score"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--continuous", action="store_true", help="continuous speech (see above)")
    parser.add_argument("--file-s", type=float, default=60.0, help="--continuous: shortest file, seconds")
    parser.add_argument(
        "--hops", type=float, nargs="*", default=[0.5, 1.5], help="--continuous: --segments hops to time"
    )
    parser.add_argument("--repeats", type=int, default=3, help="--continuous: interleaved rounds")
    parser.add_argument("--compare-src", metavar="DIR", help="--continuous: also time this source tree")
    parser.add_argument(
        "--model",
        nargs="+",
        help="--continuous: ONNX model(s), e.g. fp32 and int8 (default: the bundled model)",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.continuous:
        report = {
            "benchmark": "batch_scoring_throughput_continuous_speech",
            "date": time.strftime("%Y-%m-%d"),
            "machine": machine(args.threads),
            **bench_continuous(args),
        }
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0

    from emotion_monitor.export.default_model import build_default_classifier
    from emotion_monitor.export.onnx_export import export_onnx

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
        torch_s, torch_labels = run_torch_loop(
            files, model, info, partial(clip_bounds, load_model(onnx_path))
        )
    same = sum(ort_labels.get(name) == label for name, label in torch_labels.items())
    report = {
        "benchmark": "batch_scoring_throughput",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(args.threads),
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
