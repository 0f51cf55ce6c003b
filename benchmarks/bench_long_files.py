"""Long recordings in ``emotion-score``: labels against another version, pause cost, throughput, peak memory.

Recordings are built from real clips (RAVDESS, CREMA-D; ``core.paths``), each trimmed as scoring trims it, joined
with pauses of low room-like noise (-60 dBFS), written as 16 kHz FLAC into a temporary folder (never committed).
Every ``emotion-score`` run is a child process timed as a user starts it; ``--old-python`` runs another checkout's
interpreter (e.g. a worktree of the previous version with its own venv) on the same files in the same rounds, so
the ratios come from one run on the same (possibly busy) machine.

Cases (``--cases``):
  labels      whole-file labels of ``--clips`` short clips (half RAVDESS, half CREMA-D): new vs old, same share;
              and of "joined" files (one actor's clips of one emotion joined with pauses, about half the file;
              RAVDESS ``--actors`` or ``--joined-crema N`` CREMA-D actors): accuracy of the whole-file label
              against that emotion, new and old.
  pauses      a conversation-like file (``--speech-s`` of speech, about half of it pauses) against the same speech
              without pauses: wall time ratio (new; old too with ``--old-python``).
  throughput  continuous speech (clips back to back, files of ``--file-s``; ``--continuous``): x real time, new and
              old, the median of the rounds' ratios.
  rss         peak RSS of ``emotion-score`` on a ``--hours`` recording (half pauses), whole and ``--segments``.

Usage:
    python benchmarks/bench_long_files.py --cases labels pauses throughput --old-python /tmp/old/.venv/bin/python
    python benchmarks/bench_long_files.py --cases rss --hours 3 --model constant
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from emotion_monitor.core.data import EMOTIONS
from emotion_monitor.core.paths import data_root, ravdess_dir
from emotion_monitor.export.quantize import cpu_flags
from emotion_monitor.realtime.audio import SAMPLE_RATE, PreprocessOptions, load_audio, prepare_clip
from emotion_monitor.realtime.file_scoring import WHOLE_CLIP_S

PAUSE_DBFS = -60.0
"""Level of the noise that fills pauses (a quiet room)."""
CREMA_EMOTIONS = {
    "NEU": "neutral",
    "HAP": "happy",
    "SAD": "sad",
    "ANG": "angry",
    "FEA": "fearful",
    "DIS": "disgust",
}


def ravdess_clips(actors: list[int]) -> list[tuple[Path, str]]:
    files = [f for a in actors for f in sorted((ravdess_dir() / f"Actor_{a:02d}").glob("*.flac"))]
    return [(f, EMOTIONS[int(f.name.split("-")[2]) - 1]) for f in files]


def crema_clips(n: int, seed: int = 0) -> list[tuple[Path, str]]:
    files = sorted((data_root() / "crema-d-16k").rglob("*.flac"))
    picked = [files[i] for i in sorted(np.random.default_rng(seed).choice(len(files), n, replace=False))]
    return [(f, CREMA_EMOTIONS[f.stem.split("_")[2]]) for f in picked]


def joined_groups(args) -> list[tuple[str, str, list[Path]]]:
    """(actor, emotion, clips) for the "joined" files: RAVDESS ``--actors``, or ``--joined-crema`` CREMA-D actors."""
    if args.joined_crema:
        files = sorted((data_root() / "crema-d-16k").glob("*.flac"))
        actors = sorted({f.name.split("_")[0] for f in files})[: args.joined_crema]
        return [
            (
                a,
                e,
                [
                    f
                    for f in files
                    if f.name.startswith(a + "_") and CREMA_EMOTIONS[f.stem.split("_")[2]] == e
                ],
            )
            for a in actors
            for e in CREMA_EMOTIONS.values()
        ]
    return [
        (f"{a:02d}", e, [f for f, label in ravdess_clips([a]) if label == e])
        for a in args.actors
        for e in EMOTIONS
    ]


def write_recording(
    path: Path, clips: list[Path], pause_share: float, seconds: float | None, rng: np.random.Generator
) -> dict:
    """``clips`` trimmed and joined (cycled until ``seconds`` when given) with pauses that make up about
    ``pause_share`` of the file (uniform 1-4 s), written block by block. Returns seconds of speech and in all."""
    options = PreprocessOptions()
    speech = total = 0
    cache: dict[Path, np.ndarray] = {}
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as out:
        i = 0
        while True:
            clip = clips[i % len(clips)]
            if clip not in cache:
                cache[clip] = prepare_clip(load_audio(clip), options)
            audio = cache[clip]
            out.write(audio)
            speech += len(audio)
            total += len(audio)
            if pause_share > 0:
                mean_pause = len(audio) * pause_share / (1 - pause_share)
                pause = int(mean_pause * rng.uniform(0.4, 1.6))
                out.write(rng.normal(0, 10 ** (PAUSE_DBFS / 20), pause).astype(np.float32))
                total += pause
            i += 1
            if (seconds is None and i == len(clips)) or (
                seconds is not None and total >= seconds * SAMPLE_RATE
            ):
                break
    return {"speech_s": round(speech / SAMPLE_RATE, 1), "total_s": round(total / SAMPLE_RATE, 1)}


def run_score(
    python: str, paths: list[Path], out: Path, model: str | None, threads: int, *extra: str
) -> dict:
    """One ``emotion-score`` child: wall seconds, CPU seconds (user + system), peak RSS (MB), labels by file name."""
    # /usr/bin/time measures the child alone (ru_maxrss of a forked child counts this process's own memory)
    cmd = ["/usr/bin/time", "-f", "child %M %U %S", python, "-m", "emotion_monitor.realtime.score"]
    cmd += [*map(str, paths), "--out", str(out)]
    cmd += (["--model", model] if model else []) + ["--threads", str(threads), *extra]
    start = time.perf_counter()
    child = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd="/")
    stderr = child.stderr.read()
    status = child.wait()
    wall_s = time.perf_counter() - start
    peak_kb, user_s, system_s = stderr.strip().rsplit("child ", 1)[-1].split()
    if status != 0:
        raise SystemExit(f"{python} emotion-score failed: {stderr.strip()[-800:]}")
    labels = {}
    if "--segments" not in extra:
        with out.open(newline="") as f:
            labels = {Path(row["path"]).name: row["label"] for row in csv.DictReader(f)}
    cpu_s = float(user_s) + float(system_s)
    return {"wall_s": wall_s, "cpu_s": cpu_s, "peak_rss_mb": int(peak_kb) / 1024, "labels": labels}


def versions(args) -> dict[str, str]:
    return {"new": sys.executable} | ({"old": args.old_python} if args.old_python else {})


def case_labels(args, tmp: Path) -> dict:
    clips = ravdess_clips(args.actors)
    rng = np.random.default_rng(0)
    short = [clips[i] for i in sorted(rng.choice(len(clips), args.clips // 2, replace=False))]
    short += crema_clips(args.clips - len(short))
    folder = tmp / "clips"
    folder.mkdir()
    for i, (f, _) in enumerate(short):
        (folder / f"{i:03d}_{f.name}").symlink_to(f)
    joined = tmp / "joined"
    joined.mkdir()
    truth = {}
    for actor, emotion, files in joined_groups(args):
        name = f"actor{actor}_{emotion}.flac"
        info = write_recording(joined / name, files, 0.5, None, rng)
        truth[name] = (emotion, info["total_s"])
    report: dict = {"clips": len(short), "joined_files": len(truth)}
    labels = {}
    for version, python in versions(args).items():
        labels[version] = run_score(python, [folder], tmp / f"{version}_clips.csv", args.model, args.threads)
        labels[version]["joined"] = run_score(
            python, [joined], tmp / f"{version}_joined.csv", args.model, args.threads
        )["labels"]
        right = sum(labels[version]["joined"][n] == e for n, (e, _) in truth.items())
        report[f"{version}_joined_accuracy"] = round(right / len(truth), 3)
        report[f"{version}_clip_accuracy"] = round(
            sum(labels[version]["labels"][f.name] == e for f, e in short) / len(short),
            3,
        )
    if "old" in labels:
        same = sum(labels["new"]["labels"][k] == v for k, v in labels["old"]["labels"].items())
        report["clips_same_label_as_old"] = f"{same}/{len(short)}"
        same = sum(labels["new"]["joined"][k] == v for k, v in labels["old"]["joined"].items())
        report["joined_same_label_as_old"] = f"{same}/{len(truth)}"
    report["joined_file_s"] = [min(s for _, s in truth.values()), max(s for _, s in truth.values())]
    report["joined_files_streamed"] = sum(s > WHOLE_CLIP_S for _, s in truth.values())
    return report


def case_pauses(args, tmp: Path) -> dict:
    files = [f for f, _ in ravdess_clips(args.actors)]
    rng = np.random.default_rng(1)
    paused, plain = tmp / "conversation.flac", tmp / "speech_only.flac"
    info = write_recording(paused, files, 0.5, args.speech_s * 2, np.random.default_rng(2))
    speech = write_recording(plain, files, 0.0, info["speech_s"], rng)  # the same clips, in the same order
    times: dict[str, list[float]] = {}
    for _ in range(args.repeats):
        for version, python in versions(args).items():
            for name, path in (("pauses", paused), ("no_pauses", plain)):
                r = run_score(python, [path], tmp / f"{version}_{name}.csv", args.model, args.threads)
                times.setdefault(f"{version}_{name}", []).append(r["wall_s"])
    report = {"conversation": info, "speech_only": speech, "repeats": args.repeats}
    for key, t in times.items():
        report[f"{key}_wall_s"] = round(statistics.median(t), 2)
    for version in versions(args):
        report[f"{version}_pauses_vs_no_pauses"] = round(
            statistics.median(times[f"{version}_pauses"]) / statistics.median(times[f"{version}_no_pauses"]),
            3,
        )
    return report


def continuous_clips(args) -> list[Path]:
    """The clips joined back to back for ``throughput``: RAVDESS ``--actors`` (every intensity, so soft sentences
    30 to 50 dB below shouted ones), or ``--continuous nemo``: nEMO's first 100 clips by name (a few speakers at
    an even level)."""
    if args.continuous == "nemo":
        return sorted((data_root() / "nemo-16k" / "samples").glob("*.opus"))[:100]
    return [f for f, _ in ravdess_clips(args.actors)]


def case_throughput(args, tmp: Path) -> dict:
    files = continuous_clips(args)
    folder = tmp / "continuous"
    folder.mkdir()
    per_file = max(1, len(files) // max(1, round(len(files) * 2.5 / args.file_s)))
    audio_s = 0.0
    for k in range(0, len(files), per_file):
        audio_s += write_recording(folder / f"c{k:04d}.flac", files[k : k + per_file], 0.0, None, None)[
            "total_s"
        ]
    times: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    for round_ in range(args.repeats):
        order = list(versions(args).items())
        for version, python in order[:: 1 if round_ % 2 == 0 else -1]:  # which goes first alternates
            r = run_score(python, [folder], tmp / f"{version}_cont.csv", args.model, args.threads)
            times.setdefault(version, []).append(r["wall_s"])
            cpu.setdefault(version, []).append(r["cpu_s"])
    report = {"files": len(list(folder.iterdir())), "audio_s": round(audio_s, 1), "repeats": args.repeats}
    for version, t in times.items():
        report[f"{version}_x_real_time"] = round(audio_s / statistics.median(t), 1)
        report[f"{version}_cpu_s"] = round(statistics.median(cpu[version]), 2)
    if "old" in times:
        # each round's ratio (the two runs next to each other see the same machine), then their median and
        # quartiles: the machine's speed drifts between rounds by more than the difference measured
        ratios = sorted(o / n for o, n in zip(times["old"], times["new"], strict=True))
        report["new_vs_old_speed"] = round(statistics.median(ratios), 3)
        if len(ratios) >= 4:
            quartiles = statistics.quantiles(ratios, n=4)
            report["new_vs_old_speed_quartiles"] = [round(quartiles[0], 3), round(quartiles[2], 3)]
        report["new_vs_old_cpu"] = round(statistics.median(cpu["old"]) / statistics.median(cpu["new"]), 3)
    return report


def case_rss(args, tmp: Path) -> dict:
    files = [f for f, _ in ravdess_clips(args.actors)]
    path = tmp / "long.flac"
    info = write_recording(path, files, 0.5, args.hours * 3600, np.random.default_rng(3))
    report: dict = {"recording": info}
    for name, extra in (("whole", ()), ("segments", ("--segments",))):
        r = run_score(sys.executable, [path], tmp / f"rss_{name}.csv", args.model, args.threads, *extra)
        report[name] = {"wall_s": round(r["wall_s"], 1), "peak_rss_mb": round(r["peak_rss_mb"])}
        if name == "whole":
            report[name]["label"] = next(iter(r["labels"].values()))
    return report


CASES = {"labels": case_labels, "pauses": case_pauses, "throughput": case_throughput, "rss": case_rss}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", nargs="+", choices=list(CASES), default=["labels", "pauses", "throughput"])
    p.add_argument(
        "--old-python", help="another checkout's interpreter, run on the same files in the same rounds"
    )
    p.add_argument(
        "--model", help="ONNX model; 'constant': the fuzz stand-in (memory only); default: bundled"
    )
    p.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    p.add_argument("--joined-crema", type=int, metavar="N", help="labels: joined files of N CREMA-D actors")
    p.add_argument("--clips", type=int, default=200, help="labels: short clips (half RAVDESS, half CREMA-D)")
    p.add_argument("--speech-s", type=float, default=300.0, help="pauses: seconds of speech in each file")
    p.add_argument("--file-s", type=float, default=60.0, help="throughput: seconds per continuous file")
    p.add_argument(
        "--continuous", choices=["ravdess", "nemo"], default="ravdess", help="throughput: whose clips"
    )
    p.add_argument("--hours", type=float, default=3.0, help="rss: length of the recording")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    report = {
        "benchmark": "emotion_score_long_files",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": f"{os.uname().machine}, {args.threads} threads of {os.cpu_count()} cores, CPU flags: {cpu_flags()}",
        "command": " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])]),
    }
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if (
            args.model is None
        ):  # built once now if it is not cached: a build must not count in a run's figures
            from emotion_monitor.realtime.model_store import resolve_model_path

            args.model = str(resolve_model_path())
        if args.model == "constant":
            from fuzz_inputs import write_constant_model  # same folder (run as a script)

            args.model = str(write_constant_model(tmp / "constant.onnx"))
        for case in args.cases:
            (tmp / case).mkdir()
            report[case] = CASES[case](args, tmp / case)
            print(json.dumps({case: report[case]}), file=sys.stderr, flush=True)
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
