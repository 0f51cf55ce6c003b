"""The CUDA session, checked on a GPU machine in one go (issue 25); prints one JSON document.

What it measures, for the fp32 model and (``--fp16``) its float16 copy:

- ``session``: creating an ``EmotionModel`` on the provider (seconds, the providers that really run, and why CUDA
  was not used if it was not).
- ``parity``: every clip scored as ``emotion-score`` scores a whole file (``analysis.score_clip``) on the CPU with
  the fp32 model (the reference) and on the provider: the largest |Δ probability| over all windows and the
  fraction of clips whose label is the same (the goal for fp16: ≥ 0.99).
- ``model_throughput``: ``session.run`` alone on prepared windows of the model's ``window_s``, per batch size:
  windows per second and × real time (each window encodes ``window_s`` of audio once, as whole-file tiling does).
  The ceiling that batching across files can reach (the goal: ≥ 2,000×).
- ``emotion_score``: the command itself (a subprocess, start-up and model load included) over the clips repeated
  ``score_repeats`` times (symbolic links): whole files, and ``--segments`` at each of ``segment_batches``
  (``default``: the device's batch rule, ``providers.default_batch_windows``): seconds and × real time.
- ``live``: ``EmotionModel.score_windows`` on one hop-sized step's window at a time (batch 1, what emotion-live
  does every hop): median, 95th percentile and maximum milliseconds.

``--dry-run`` runs the same code on the CPU provider with few clips and batch sizes, and installs nothing: CI runs
it (tests/test_check_cuda.py) so that the script cannot rot between GPU sessions.

Usage (benchmarks/run_cuda_check.sh runs it on the device machine; docs/gpu.md):
    python benchmarks/check_cuda.py --model M.onnx --fp16 M.fp16.onnx --clips DIR > cuda_check.json
    python benchmarks/check_cuda.py --dry-run --model M.onnx --clips DIR
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from emotion_monitor.realtime.analysis import clip_prediction, score_clip
from emotion_monitor.realtime.audio import load_audio, prepare_input
from emotion_monitor.realtime.errors import ModelError
from emotion_monitor.realtime.metadata import INPUT_NAME
from emotion_monitor.realtime.model import EmotionModel, ModelOptions
from emotion_monitor.realtime.providers import (
    CPU_BATCH_WINDOWS,
    cuda_library_error,
    onnxruntime_distributions,
)

AUDIO_SUFFIXES = (".flac", ".wav", ".ogg")
GOALS = {"model_x_realtime_min": 2000, "fp16_label_agreement_min": 0.99}
"""Issue 25's goals for one datacentre GPU, echoed into the document beside the figures."""


@dataclass(frozen=True)
class CheckOptions:
    """model/fp16: the fp32 export and its float16 copy (optional); clips: a folder of audio files; provider:
    ``cuda`` (``cpu`` for a dry run); max_clips: clips used at most; batch_sizes: the throughput sweep; timed_s:
    seconds each batch size is run for; live_steps: hop windows timed; score_repeats: how many times the clips
    are listed for the emotion-score runs; segment_batches: their ``--segments`` batch sizes (None: the rule); threads: CPU threads of every session (None: the runtime's rule)."""

    model: Path
    fp16: Path | None
    clips: Path
    provider: str = "cuda"
    max_clips: int = 50
    batch_sizes: tuple[int, ...] = (1, 8, 32, 64, 128)
    timed_s: float = 2.0
    live_steps: int = 200
    score_repeats: int = 8
    segment_batches: tuple[int | None, ...] = (CPU_BATCH_WINDOWS, None)
    threads: int | None = None


def dry_run_options(model: Path, fp16: Path | None, clips: Path) -> CheckOptions:
    """The CI variant: CPU provider, 4 clips, two batch sizes, short timings, one emotion-score listing."""
    return CheckOptions(
        model,
        fp16,
        clips,
        "cpu",
        max_clips=4,
        batch_sizes=(1, 4),
        timed_s=0.2,
        live_steps=5,
        score_repeats=1,
        segment_batches=(None,),
        threads=2,
    )


# -- what runs where -------------------------------------------------------------------------------------------
def gpu_info() -> dict:
    """The GPU's name, memory and driver from nvidia-smi; empty when there is none."""
    if not shutil.which("nvidia-smi"):
        return {}
    query = "name,memory.total,driver_version"
    out = subprocess.run(
        ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"], capture_output=True, text=True
    )
    first = out.stdout.strip().splitlines()[:1]
    return (
        dict(zip(query.split(","), (v.strip() for v in first[0].split(",")), strict=False)) if first else {}
    )


def runtime_info() -> dict:
    return {
        "onnxruntime": ort.__version__,
        "onnxruntime_file": ort.__file__,
        "distributions": onnxruntime_distributions(),
        "available_providers": ort.get_available_providers(),
        "cuda_library_error": cuda_library_error(),
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
    }


def open_model(path: Path, provider: str, options: CheckOptions, batch_size: int | None = None):
    """(EmotionModel, its ``session`` record: seconds to create, providers running, why CUDA was skipped)."""
    start = time.perf_counter()
    model = EmotionModel(path, ModelOptions(provider, options.threads, batch_size))
    record = {
        "create_s": round(time.perf_counter() - start, 3),
        "providers": model.providers,
        "cuda_skipped": model.cuda_skipped,
        "variant": model.variant or "fp32",
    }
    return model, record


# -- measurements --------------------------------------------------------------------------------------------------
def clip_files(folder: Path, limit: int) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
    if not files:
        raise SystemExit(f"check_cuda: error: no audio files under {folder}")
    return files[:limit]


def scored_clips(model: EmotionModel, clips: list[tuple[str, np.ndarray]]) -> list[tuple[np.ndarray, str]]:
    """Each clip as emotion-score scores a whole file: (window probabilities, label)."""
    out = []
    for name, audio in clips:
        scores = score_clip(model, audio, model.sample_rate, name)
        label = clip_prediction(model.labels, scores.probs, scores.duration_s, scores.window_seconds).label
        out.append((scores.probs, label))
    return out


def parity(reference: list[tuple[np.ndarray, str]], other: list[tuple[np.ndarray, str]], names) -> dict:
    """Largest |Δ probability| over all windows, and the clips whose label is the same (fraction, the others)."""
    deltas = [float(np.max(np.abs(a - b))) for (a, _), (b, _) in zip(reference, other, strict=True)]
    differ = [n for n, (_, la), (_, lb) in zip(names, reference, other, strict=True) if la != lb]
    return {
        "clips": len(names),
        "max_abs_dprob": round(max(deltas), 6),
        "mean_max_abs_dprob": round(float(np.mean(deltas)), 6),
        "label_agreement": round(1 - len(differ) / len(names), 4),
        "labels_differ": differ[:10],
    }


def speech_windows(model: EmotionModel, clips: list[tuple[str, np.ndarray]], count: int) -> np.ndarray:
    """``count`` prepared model inputs ``[count, window samples]`` cut end to end from the clips (repeated)."""
    window = model.window_spec().window
    audio = np.concatenate([a for _, a in clips])
    starts = list(range(0, max(1, len(audio) - window), window)) or [0]
    cut = [np.resize(audio[s : s + window], window) for s in starts]
    return np.stack([prepare_input(cut[i % len(cut)], model.preprocess) for i in range(count)])


def model_throughput(model: EmotionModel, windows: np.ndarray, batch: int, timed_s: float) -> dict:
    """``session.run`` on batches of ``batch`` prepared windows for about ``timed_s`` (after one warm-up run)."""
    x = windows[:batch]
    model.session.run(None, {INPUT_NAME: x})
    runs, start = 0, time.perf_counter()
    while (elapsed := time.perf_counter() - start) < timed_s or runs < 3:
        model.session.run(None, {INPUT_NAME: x})
        runs += 1
    per_s = runs * batch / elapsed
    return {
        "windows_per_s": round(per_s, 1),
        "x_realtime": round(per_s * model.window_s, 1),
        "ms_per_batch": round(1000 * elapsed / runs, 3),
    }


def live_latency(model: EmotionModel, clips: list[tuple[str, np.ndarray]], steps: int) -> dict:
    """One window per hop, batch 1, as emotion-live scores: milliseconds per window (first call not counted)."""
    spec = model.window_spec()
    audio = np.concatenate([a for _, a in clips])
    hop = int(model.hop_s * model.sample_rate)
    starts = [s % max(1, len(audio) - spec.window) for s in range(0, (steps + 1) * hop, hop)]
    times = []
    for s in starts:
        t = time.perf_counter()
        model.score_windows([audio[s : s + spec.window]])
        times.append(1000 * (time.perf_counter() - t))
    ms = sorted(times[1:])
    return {
        "windows": len(ms),
        "hop_s": model.hop_s,
        "median_ms": round(statistics.median(ms), 3),
        "p95_ms": round(ms[int(0.95 * (len(ms) - 1))], 3),
        "max_ms": round(ms[-1], 3),
    }


def emotion_score_run(
    model_path: Path, files: list[Path], options: CheckOptions, segments: bool, batch: int | None = None
) -> dict:
    """``emotion-score`` as a user runs it, over the files listed ``score_repeats`` times (copies in a folder)."""
    with tempfile.TemporaryDirectory(prefix="check-cuda-") as tmp:
        folder = Path(tmp) / "clips"
        folder.mkdir()
        for r in range(options.score_repeats):
            for f in files:
                shutil.copyfile(f, folder / f"{r:02d}-{f.name}")  # emotion-score refuses links in folders
        command = [sys.executable, "-m", "emotion_monitor.realtime.score", "--model", str(model_path)]
        command += ["--provider", options.provider, "--out", str(Path(tmp) / "scores.csv"), str(folder)]
        command += ["--segments"] if segments else []
        command += ["--batch-size", str(batch)] if batch else []
        command += ["--threads", str(options.threads)] if options.threads else []
        start = time.perf_counter()
        done = subprocess.run(command, capture_output=True, text=True, timeout=600)
        wall_s = time.perf_counter() - start
    audio_s = options.score_repeats * sum(_duration_s(f) for f in files)
    return {
        "files": options.score_repeats * len(files),
        "audio_s": round(audio_s, 1),
        "wall_s": round(wall_s, 2),
        "x_realtime": round(audio_s / wall_s, 1),
        "exit": done.returncode,
        "stderr_tail": done.stderr.strip().splitlines()[-2:],
    }


def _duration_s(path: Path) -> float:
    import soundfile as sf

    return sf.info(str(path)).duration


# -- the whole check -------------------------------------------------------------------------------------------
def check(options: CheckOptions) -> dict:
    files = clip_files(options.clips, options.max_clips)
    reference, _ = open_model(options.model, "cpu", options)
    clips = [(f.name, load_audio(f, reference.sample_rate)) for f in files]
    names = [n for n, _ in clips]
    cpu_scores = scored_clips(reference, clips)
    doc = {"gpu": gpu_info(), "runtime": runtime_info(), "provider": options.provider, "goals": GOALS}
    doc.update(clips=len(clips), clip_audio_s=round(sum(len(a) for _, a in clips) / reference.sample_rate, 1))
    doc.update(session={}, parity={}, model_throughput={}, emotion_score={}, live={})

    windows = speech_windows(reference, clips, max(options.batch_sizes))
    cpu_batch = min(CPU_BATCH_WINDOWS, max(options.batch_sizes))  # the CPU at its own batch rule
    doc["model_throughput"]["fp32_cpu"] = {
        str(cpu_batch): model_throughput(reference, windows, cpu_batch, options.timed_s)
    }
    for name, path in (("fp32", options.model), ("fp16", options.fp16)):
        if path is None:
            continue
        try:
            model, doc["session"][name] = open_model(path, options.provider, options)
        except ModelError as exc:  # e.g. CUDA missing: the document still says what runs where
            doc["error"] = str(exc)
            return doc
        doc["parity"][f"{name}_{options.provider}_vs_fp32_cpu"] = parity(
            cpu_scores, scored_clips(model, clips), names
        )
        doc["model_throughput"][name] = {
            str(b): model_throughput(model, windows, b, options.timed_s) for b in options.batch_sizes
        }
        live_model, _ = open_model(path, options.provider, options, batch_size=1)
        doc["live"][name] = live_latency(live_model, clips, options.live_steps)
        doc["emotion_score"][f"{name}_whole_files"] = emotion_score_run(path, files, options, False)
        for batch in options.segment_batches:
            key = f"{name}_segments_batch_{batch or 'default'}"
            doc["emotion_score"][key] = emotion_score_run(path, files, options, True, batch)
    return doc


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Check the CUDA session: parity, throughput, latency (one JSON).")
    p.add_argument("--model", type=Path, required=True, help="the fp32 ONNX export")
    p.add_argument("--fp16", type=Path, help="its float16 copy (emotion-export --fp16)")
    p.add_argument("--clips", type=Path, required=True, help="a folder of real clips")
    p.add_argument("--out", type=Path, help="also write the JSON here")
    p.add_argument("--dry-run", action="store_true", help="CPU provider, 4 clips, short: checks the script")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    for path in (args.model, args.fp16, args.clips):
        if path is not None and not path.exists():
            print(f"check_cuda: error: {path}: not found", file=sys.stderr)
            return 2
    options = (
        dry_run_options(args.model, args.fp16, args.clips)
        if args.dry_run
        else CheckOptions(args.model, args.fp16, args.clips)
    )
    doc = check(options)
    text = json.dumps(doc, indent=1)
    if args.out:
        args.out.write_text(text + "\n")
    print(text)
    return 1 if "error" in doc else 0


if __name__ == "__main__":
    sys.exit(main())
