"""Study: timeline windows pooled from frames of longer chunks encoded once, against today's timeline.

Today ``emotion-score --segments`` encodes every timeline window on its own (trimmed, level-normalised), so each
second of audio is encoded window_s / hop_s times. Here each file is encoded once, in chunks of ``--chunks``
seconds (end to end, or overlapping by ``--overlap-s``: each frame is then taken from the chunk where it lies
farthest from an edge), every hidden state's frames are kept, and a window's ``pooled`` features are the time
mean of the frames inside it (inside its trimmed span with ``trim``, the span ``prepare_clip`` keeps of it). The
SAME shipped head (pooled → probs, exported from the bundled classifier) labels them. Each chunk is
level-normalised as a whole (``prepare_input``): a window can no longer be normalised on its own.

Files: ``bench_score.write_continuous`` (each actor's trimmed clips, shuffled, joined). Windows and speech flags:
``StreamWindower`` with the model's speech gate (as ``score_timeline``). Reported per variant and hop: wall time
in process (model loaded, VAD included, no start-up), × real time, speech-window accuracy (bench_score's
definition: the emotion of the clip covering most of the window) and agreement of speech-window labels with
today's timeline. Variants are timed in interleaved rounds (``--repeats``, median).

The study graphs (``frames``: audio → every hidden state's frames; ``head``: pooled → probs) are exported once
from ``build_default_classifier()`` into ``--work-dir``; ``--model`` must be the bundled model's export (checked:
the head graph on the model's ``pooled`` gives its ``probs``; a window's frame mean gives its ``pooled``).

Usage:
    python benchmarks/study_chunk_pooling.py --model k6.onnx --actors 1 2 --hops 0.5 1.5 --chunks 6 10 30 \
        --overlap-s 0 1 --repeats 2
    python benchmarks/study_chunk_pooling.py --model k6.onnx --actors 1 2 --hops 1.5 \
        --probe-train-actors 3 4 5 6 7 8 9 10

Findings (2026-11-25, docs/benchmarks.md 2d): with the shipped head, chunk-pooled windows lose 23-42 points of
speech-window accuracy against today's timeline (actors 1-2: 0.731 -> 0.35-0.47 at hop 1.5, 0.744 -> 0.33-0.52
at hop 0.5; 35-65 % of labels agree), worse for longer chunks; the cause is the features (Whisper frames depend on
absolute position and context), not the level. A linear probe trained on chunk-pooled features matches one trained
on per-window features (0.593 vs 0.569), so a head trained on them would be needed and looks feasible. Speed, on
a loaded machine: 2.4-3.5x today's at hop 0.5, 1.1-1.4x at hop 1.5 (6-10 s chunks). Not productised.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_score import files_for, machine, write_continuous  # noqa: E402

from emotion_monitor.realtime.analysis import score_timeline  # noqa: E402
from emotion_monitor.realtime.audio import load_audio, prepare_clip, prepare_input  # noqa: E402
from emotion_monitor.realtime.model import load_model  # noqa: E402
from emotion_monitor.realtime.vad import load_vad  # noqa: E402
from emotion_monitor.realtime.windowing import StreamWindower  # noqa: E402

SAMPLES_PER_FRAME = 320
"""Whisper encoder frame: 2 mel frames of 160 samples (20 ms at 16 kHz)."""


def export_study_graphs(work_dir: Path) -> tuple[Path, Path]:
    """``frames.onnx`` (``input_values [B, S]`` → ``frames [B, L+1, T, H]``) and ``head.onnx`` (``pooled [B, L+1, H]``
    → ``probs [B, C]``) of the bundled classifier, exported once."""
    frames_path, head_path = work_dir / "frames.onnx", work_dir / "head.onnx"
    if frames_path.is_file() and head_path.is_file():
        return frames_path, head_path
    import warnings

    import torch
    from torch import nn

    from emotion_monitor.export.default_model import build_default_classifier

    model, _ = build_default_classifier()
    model.eval()

    class Frames(nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.backbone = classifier.backbone

        def forward(self, input_values):
            states, _ = self.backbone(input_values)
            return torch.stack(states, dim=1)

    class Head(nn.Module):
        def __init__(self, classifier):
            super().__init__()
            self.classifier = classifier

        def forward(self, pooled):
            return torch.softmax(self.classifier.classify_pooled(pooled), dim=-1)

    work_dir.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            Frames(model).eval(),
            (torch.randn(2, 32000) * 0.1,),
            str(frames_path),
            input_names=["input_values"],
            output_names=["frames"],
            dynamic_axes={"input_values": {0: "batch", 1: "samples"}, "frames": {0: "batch", 2: "time"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
        states = model.backbone.num_layers + 1
        torch.onnx.export(
            Head(model).eval(),
            (torch.randn(2, states, model.backbone.hidden_size),),
            str(head_path),
            input_names=["pooled"],
            output_names=["probs"],
            dynamic_axes={"pooled": {0: "batch"}, "probs": {0: "batch"}},
            opset_version=17,
            do_constant_folding=True,
            dynamo=False,
        )
    return frames_path, head_path


def session(path: Path, threads: int) -> ort.InferenceSession:
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])


def n_frames(n_samples: int) -> int:
    """Encoder frames of an input of ``n_samples`` (``core.whisper.encoder_frames``)."""
    return (n_samples // 160 + 1) // 2


@dataclass(frozen=True)
class Variant:
    """chunk_s: seconds per encoded chunk; overlap_s: overlap of consecutive chunks; trim: pool only each
    window's trimmed span (as today's path trims each window)."""

    chunk_s: float
    overlap_s: float = 0.0
    trim: bool = True

    @property
    def name(self) -> str:
        return f"chunk {self.chunk_s:g} s, overlap {self.overlap_s:g} s, {'trimmed' if self.trim else 'whole'} windows"


def chunk_starts(n_samples: int, chunk: int, step: int) -> list[int]:
    """Chunk starts (multiples of a frame): every ``step``, the last one moved back to end at the last sample
    (within a frame)."""
    if n_samples <= chunk:
        return [0]
    starts = list(range(0, n_samples - chunk, step))
    last = -(-(n_samples - chunk) // SAMPLES_PER_FRAME) * SAMPLES_PER_FRAME
    return [s for s in starts if s < last] + [last]


def file_frames(frames_session, audio: np.ndarray, variant: Variant, preprocess) -> np.ndarray:
    """Every hidden state's frames over the whole file ``[L+1, T, H]``, encoded chunk by chunk; where chunks
    overlap, each frame comes from the chunk where it lies farther from the edge (the overlap is split in half)."""
    rate = 16000
    chunk = int(variant.chunk_s * rate)
    step = chunk - int(variant.overlap_s * rate)
    starts = chunk_starts(len(audio), chunk, step)
    firsts = [s // SAMPLES_PER_FRAME for s in starts]
    ends = [f + n_frames(min(chunk, len(audio) - s)) for f, s in zip(firsts, starts, strict=True)]
    total = n_frames(len(audio))
    bounds = [0] + [(firsts[k] + ends[k - 1]) // 2 for k in range(1, len(starts))] + [total]
    out = None
    for k, start in enumerate(starts):
        x = prepare_input(audio[start : start + chunk], preprocess)[None]
        frames = frames_session.run(["frames"], {"input_values": x})[0][0]  # [L+1, t, H]
        if out is None:
            out = np.zeros((frames.shape[0], total, frames.shape[2]), dtype=np.float32)
        lo, hi = bounds[k], bounds[k + 1]
        out[:, lo:hi] = frames[:, lo - firsts[k] : hi - firsts[k]]
    return out


def window_span(window, preprocess, trim: bool) -> tuple[int, int]:
    """Absolute sample span ``[a, b)`` of the audio today's path feeds the model for ``window``."""
    if not trim:
        return window.start, window.end
    kept = prepare_clip(window.samples, preprocess)
    offset = (kept.__array_interface__["data"][0] - window.samples.__array_interface__["data"][0]) // 4
    return window.start + offset, window.start + offset + len(kept)


def window_mean(frames: np.ndarray, window, preprocess, trim: bool) -> np.ndarray:
    """``[L+1, H]``: the time mean of the file's frames ``[L+1, T, H]`` that today's path would encode for
    ``window`` (as many frames as its trimmed span gives, from the frame nearest the span's start)."""
    a, b = window_span(window, preprocess, trim)
    first = round(a / SAMPLES_PER_FRAME)
    last = min(frames.shape[1], first + max(1, n_frames(b - a)))
    first = min(first, last - 1)
    return frames[:, first:last].mean(axis=1)


def chunk_timeline(model, frames_session, head_session, audio, hop_s, vad, variant: Variant):
    """Speech windows of the timeline and their probabilities from chunk-pooled frames."""
    windower = StreamWindower(model.window_spec(None, hop_s), vad, model.speech_gate)
    windows = windower.feed(audio) + windower.flush()
    speech = [w for w in windows if w.speech]
    frames = file_frames(frames_session, audio, variant, model.preprocess)
    pooled = np.zeros((len(speech), frames.shape[0], frames.shape[2]), dtype=np.float32)
    for i, w in enumerate(speech):
        pooled[i] = window_mean(frames, w, model.preprocess, variant.trim)
    probs = head_session.run(["probs"], {"pooled": pooled})[0] if len(speech) else np.zeros((0, 8))
    return windows, probs


def today_timeline(model, audio, hop_s, vad):
    timeline = score_timeline(model, audio, model.sample_rate, None, hop_s, vad)
    return timeline.windows, timeline.probs[[w.speech for w in timeline.windows]]


def speech_labels(model, windows, probs) -> list[tuple[float, float, str]]:
    speech = [w for w in windows if w.speech]
    return [(w.start_s, w.end_s, model.labels[int(np.argmax(p))]) for w, p in zip(speech, probs, strict=True)]


def accuracy(rows: dict[str, list], truth: dict[str, list]) -> float:
    right = total = 0
    for name, labelled in rows.items():
        for start, end, label in labelled:
            clips = truth[name]
            overlap = [max(0.0, min(end, b) - max(start, a)) for a, b, _ in clips]
            right += label == clips[int(np.argmax(overlap))][2]
            total += 1
    return right / max(1, total)


def check_graphs(model, frames_session, head_session, audio) -> dict:
    """The study graphs reproduce the model: head(pooled) = probs, mean(frames) = pooled, on a 3 s window."""
    x = prepare_input(audio[: 3 * 16000], model.preprocess)[None]
    probs, pooled = model.session.run(["probs", "pooled"], {"input_values": x})
    frames = frames_session.run(["frames"], {"input_values": x})[0]
    head = head_session.run(["probs"], {"pooled": pooled})[0]
    return {
        "max_abs_probs_head_vs_model": float(np.abs(head - probs).max()),
        "max_abs_frame_mean_vs_pooled": float(np.abs(frames.mean(axis=2) - pooled).max()),
    }


def probe(args, model, frames_session, vad, variant: Variant) -> dict:
    """Would a head trained on chunk-pooled features recover? The same recipe (standardised features, logistic
    regression) trained on speech windows of ``--probe-train-actors``' continuous files and tested on
    ``--actors``', once on today's per-window features and once on ``variant``'s chunk-pooled ones (and crossed:
    trained on per-window, tested on chunk-pooled, the shipped head's situation). Hop ``--hops[-1]``."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    hop = args.hops[-1]

    def features(actors):
        per_window, chunked, y = [], [], []
        with tempfile.TemporaryDirectory() as tmp:
            truth = write_continuous(files_for(actors), Path(tmp), args.file_s)
            for name, clips in truth.items():
                audio = load_audio(Path(tmp) / name)
                windower = StreamWindower(model.window_spec(None, hop), vad, model.speech_gate)
                speech = [w for w in windower.feed(audio) + windower.flush() if w.speech]
                per_window.append(model.score_windows([w.samples for w in speech], pooled=True).pooled)
                frames = file_frames(frames_session, audio, variant, model.preprocess)
                chunked.append(
                    np.stack([window_mean(frames, w, model.preprocess, variant.trim) for w in speech])
                )
                for w in speech:
                    overlap = [max(0.0, min(w.end_s, b) - max(w.start_s, a)) for a, b, _ in clips]
                    y.append(clips[int(np.argmax(overlap))][2])
        flat = lambda parts: np.concatenate(parts).reshape(len(y), -1)  # noqa: E731
        return flat(per_window), flat(chunked), np.array(y)

    train_w, train_c, train_y = features(args.probe_train_actors)
    test_w, test_c, test_y = features(args.actors)

    def fit(x):
        clf = make_pipeline(StandardScaler(), LogisticRegression(C=0.01, max_iter=2000))
        return clf.fit(x, train_y)

    on_windows, on_chunks = fit(train_w), fit(train_c)
    return {
        "variant": variant.name,
        "hop_s": hop,
        "train_actors": args.probe_train_actors,
        "train_windows": len(train_y),
        "test_actors": args.actors,
        "test_windows": len(test_y),
        "trained_per_window_tested_per_window": round(float(on_windows.score(test_w, test_y)), 3),
        "trained_per_window_tested_chunk_pooled": round(float(on_windows.score(test_c, test_y)), 3),
        "trained_chunk_pooled_tested_chunk_pooled": round(float(on_chunks.score(test_c, test_y)), 3),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", required=True, help="the bundled model's ONNX export (e.g. k6.onnx)")
    parser.add_argument("--actors", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--hops", type=float, nargs="+", default=[0.5, 1.5])
    parser.add_argument("--chunks", type=float, nargs="+", default=[6.0, 10.0, 30.0])
    parser.add_argument("--overlap-s", type=float, nargs="+", default=[0.0])
    parser.add_argument("--untrimmed", action="store_true", help="also pool whole windows (no trimming)")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument(
        "--probe-train-actors",
        type=int,
        nargs="*",
        help="instead of timing: a linear probe trained on these actors' windows (see probe())",
    )
    parser.add_argument("--probe-chunk-s", type=float, default=10.0, help="the probe's chunk seconds")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--file-s", type=float, default=60.0)
    parser.add_argument("--work-dir", type=Path, default=Path(tempfile.gettempdir()) / "study_chunk_pooling")
    args = parser.parse_args(argv)

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    frames_path, head_path = export_study_graphs(args.work_dir)
    model = load_model(args.model, intra_op_threads=args.threads)
    frames_session, head_session = session(frames_path, args.threads), session(head_path, 1)
    vad = load_vad()[0]
    if args.probe_train_actors:
        report = probe(args, model, frames_session, vad, Variant(args.probe_chunk_s))
        report["machine"] = machine(args.threads)
        json.dump(report, sys.stdout, indent=2)
        print()
        return 0
    variants = [Variant(c, o) for c in args.chunks for o in args.overlap_s if o < c]
    if args.untrimmed:
        variants += [Variant(c, o, trim=False) for c in args.chunks for o in args.overlap_s if o < c]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        truth = write_continuous(files_for(args.actors), folder, args.file_s)
        audios = {name: load_audio(folder / name) for name in truth}
    audio_s = sum(len(a) for a in audios.values()) / 16000
    checks = check_graphs(model, frames_session, head_session, next(iter(audios.values())))
    cases = {"today (every window encoded)": None} | {v.name: v for v in variants}
    times: dict[tuple, list[float]] = {}
    labels: dict[tuple, dict] = {}
    for _ in range(args.repeats):  # interleaved: load on the shared machine hits every case alike
        for hop in args.hops:
            for case, variant in cases.items():
                start = time.perf_counter()
                rows = {}
                for name, audio in audios.items():
                    if variant is None:
                        windows, probs = today_timeline(model, audio, hop, vad)
                    else:
                        windows, probs = chunk_timeline(
                            model, frames_session, head_session, audio, hop, vad, variant
                        )
                    rows[name] = speech_labels(model, windows, probs)
                times.setdefault((case, hop), []).append(time.perf_counter() - start)
                labels[(case, hop)] = rows
    report = {
        "study": "chunk_pooled_timeline",
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine(args.threads),
        "load_average_1_5_15_min": {"start": load_at_start, "end": [round(x, 2) for x in os.getloadavg()]},
        "model": str(args.model),
        "actors": args.actors,
        "files": len(audios),
        "audio_s": round(audio_s, 1),
        "repeats": args.repeats,
        "graph_checks": checks,
        "rows": [],
    }
    for (case, hop), wall in times.items():
        today = labels[("today (every window encoded)", hop)]
        mine = labels[(case, hop)]
        same = sum(a[2] == b[2] for n in today for a, b in zip(today[n], mine[n], strict=True))
        n = sum(len(v) for v in today.values())
        report["rows"].append(
            {
                "variant": case,
                "hop_s": hop,
                "wall_s": round(statistics.median(wall), 2),
                "x_real_time": round(audio_s / statistics.median(wall), 1),
                "speech_windows": n,
                "accuracy": round(accuracy(mine, truth), 3),
                "agreement_with_today": round(same / max(1, n), 3),
            }
        )
    json.dump(report, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
