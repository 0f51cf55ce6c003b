"""The live monitor under a long real-time replay: latency, CPU, peak memory, dropped samples.

Builds a long recording from RAVDESS clips separated by pauses (speech and silence alternate, as in a
conversation), replays it through ``emotion-live --input`` at real-time pace (the same ring buffer and windowing
as a microphone) and reads each hop's ``latency_ms`` (last sample in the ring → estimate ready) from its JSONL.
CPU and peak resident memory come from the kernel's accounting of each monitor process (``os.wait4``).
With ``--monitors 2`` two monitors run at once on the same recording.

Usage:
    python benchmarks/bench_live.py --minutes 10 --monitors 1
    python benchmarks/bench_live.py --minutes 10 --monitors 2 --model model.onnx
    python benchmarks/bench_live.py --minutes 2 --monitors 1 --live-args="--threads 1 --hop-s 0.1"
        (analysis slower than the hop: compare with --live-args="--threads 1 --hop-s 0.1 --every-window")
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from emotion_monitor.core.paths import ravdess_dir
from emotion_monitor.realtime.audio import SAMPLE_RATE, load_audio

RAVDESS_DIR = ravdess_dir()
"""RAVDESS 16 kHz clips: ``$EMOTION_DATA_DIR/ravdess-16k`` (core.paths.data_root), as the export checks use."""
PAUSE_S = 1.5


def long_recording(path: Path, minutes: float) -> float:
    """Concatenate RAVDESS clips (actors in turn) with ``PAUSE_S`` of silence between them; returns seconds."""
    clips = sorted(RAVDESS_DIR.glob("Actor_*/*.flac"))
    if not clips:
        raise SystemExit(f"no RAVDESS clips under {RAVDESS_DIR} (set EMOTION_DATA_DIR)")
    target = int(minutes * 60 * SAMPLE_RATE)
    pause = np.zeros(int(PAUSE_S * SAMPLE_RATE), dtype=np.float32)
    parts, total, i = [], 0, 0
    while total < target:
        clip = load_audio(clips[(i * 37) % len(clips)])  # stride through actors and emotions
        parts += [clip, pause]
        total += clip.size + pause.size
        i += 1
    audio = np.concatenate(parts)[:target]
    sf.write(path, audio, SAMPLE_RATE)
    return audio.size / SAMPLE_RATE


def run_monitors(
    recording: Path,
    count: int,
    model: str | None,
    workdir: Path,
    window_s: float | None = None,
    live_args: list[str] | None = None,
) -> list[dict]:
    procs = []
    for k in range(count):
        out = workdir / f"live{k}.jsonl"
        cmd = [
            sys.executable,
            "-m",
            "emotion_monitor.realtime.live",
            "--input",
            str(recording),
            "--jsonl",
            str(out),
        ]
        if model:
            cmd += ["--model", model]
        if window_s:
            cmd += ["--window-s", str(window_s)]
        cmd += live_args or []
        started = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        procs.append((proc, out, started))
    results = []
    for proc, out, started in procs:
        _, status, usage = os.wait4(proc.pid, 0)
        wall_s = time.monotonic() - started
        err = proc.stderr.read()
        if os.waitstatus_to_exitcode(status) != 0:
            raise SystemExit(f"emotion-live failed: {err.strip()[-500:]}")
        results.append(summarise(out, wall_s, usage))
    return results


def percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


def summarise(jsonl: Path, wall_s: float, usage) -> dict:
    hops = [json.loads(line) for line in jsonl.read_text().splitlines() if line.strip()]
    latency = [h["latency_ms"] for h in hops if h.get("latency_ms") is not None]
    speech_latency = [h["latency_ms"] for h in hops if h["speech"] and h.get("latency_ms") is not None]
    inference = [h["inference_ms"] for h in hops if h["inference_ms"] is not None]
    cpu_s = usage.ru_utime + usage.ru_stime
    return {
        "hops": len(hops),
        "speech_hops": sum(h["speech"] for h in hops),
        "latency_ms_all": {"median": percentile(latency, 50), "p95": percentile(latency, 95)},
        "latency_ms_speech": {
            "median": percentile(speech_latency, 50),
            "p95": percentile(speech_latency, 95),
        },
        "inference_ms": {"median": percentile(inference, 50), "p95": percentile(inference, 95)},
        "dropped_samples": hops[-1]["dropped_samples"] if hops else None,
        "skipped_windows": hops[-1].get("skipped_windows", 0) if hops else None,
        "wall_s": round(wall_s, 1),
        "cpu_s": round(cpu_s, 1),
        "cpu_cores_avg": round(cpu_s / wall_s, 3),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),  # Linux reports KiB
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the replayed recording")
    parser.add_argument("--monitors", type=int, nargs="+", default=[1, 2], help="monitors running at once")
    parser.add_argument("--model", help="ONNX model (default: the bundled one)")
    parser.add_argument("--window-s", type=float, help="analysis window, seconds (default: the model's)")
    parser.add_argument("--live-args", default="", help="more emotion-live options, one string")
    args = parser.parse_args(argv)

    report = {
        "benchmark": "live_monitor_realtime_replay",
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores",
        "live_args": args.live_args,
        "runs": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        recording = Path(tmp) / "long.wav"
        report["audio_s"] = round(long_recording(recording, args.minutes), 1)
        for count in args.monitors:
            report["runs"][f"{count}_monitor(s)"] = run_monitors(
                recording, count, args.model, Path(tmp), args.window_s, args.live_args.split()
            )
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
