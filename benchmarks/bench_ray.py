"""``emotion-score --engine ray`` scaling: 1 vs 2 single-threaded workers on a local Ray instance, against the local
engine on the same continuous-speech files (``bench_score.write_continuous``: joined trimmed RAVDESS clips in files
of at least ``--file-s`` seconds).

Every run is ``emotion_monitor.realtime.score.main`` in this process (Ray started once, ``ray.init(num_cpus=2)``), actor start-up
and model loading included; rounds are interleaved and the median is reported.

Usage:
    python benchmarks/bench_ray.py --actors 1 2 --repeats 3
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import soundfile as sf
from bench_score import files_for, machine, write_continuous  # same folder (run as a script)

from emotion_monitor.realtime import score
from emotion_monitor.realtime.model_store import resolve_model_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--file-s", type=float, default=60.0, help="shortest joined file, seconds")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds")
    parser.add_argument("--model", help="ONNX model (default: the bundled model)")
    args = parser.parse_args(argv)
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    model = str(args.model or resolve_model_path())
    runs = {
        "local_1_thread": ["--threads", "1"],
        "local_2_threads": ["--threads", "2"],
        "ray_1_worker_1_thread": ["--engine", "ray", "--workers", "1", "--threads", "1"],
        "ray_2_workers_1_thread": ["--engine", "ray", "--workers", "2", "--threads", "1"],
    }
    times: dict[str, list[float]] = {name: [] for name in runs}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "continuous"
        folder.mkdir()
        truth = write_continuous(files_for(args.actors), folder, args.file_s)
        audio_s = sum(sf.info(str(f)).duration for f in folder.iterdir())
        for _ in range(args.repeats):
            for name, extra in runs.items():
                out = Path(tmp) / f"{name}.csv"
                start = time.perf_counter()
                with contextlib.redirect_stderr(io.StringIO()):
                    status = score.main([str(folder), "--model", model, "--out", str(out), *extra])
                times[name].append(time.perf_counter() - start)
                if status != 0:
                    raise SystemExit(f"{name}: emotion-score exited {status}")
        same = len({(Path(tmp) / f"{name}.csv").read_text() for name in runs if "1_thread" in name}) == 1
    ray.shutdown()
    median = {name: statistics.median(t) for name, t in times.items()}
    report = {
        "benchmark": "emotion_score_ray_scaling",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine(2),
        "files": len(truth),
        "audio_s": round(audio_s, 1),
        "repeats": args.repeats,
        **{name: {"wall_s": round(m, 2), "x_real_time": round(audio_s / m, 1)} for name, m in median.items()},
        "ray_2_vs_1_workers": round(median["ray_1_worker_1_thread"] / median["ray_2_workers_1_thread"], 2),
        "same_rows_local_and_ray_1_thread": same,
    }
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
