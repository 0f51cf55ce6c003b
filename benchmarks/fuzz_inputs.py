"""Hostile input for ``emotion-score``: generate bad (and good) audio files, score them all, count what happened.

Every generated file is either good (it must be scored: a row in the output), bad (it must be refused with one
stderr line naming it) or either (e.g. random bytes flipped in a header: scored or one line, nothing else).
The script reports files tried, the reasons given, tracebacks (must be 0), lost good files (must be 0), files
neither scored nor reported (must be 0) and the peak memory of the scoring process.

Usage:
    python benchmarks/fuzz_inputs.py --count 1000                  # constant stand-in model: the decode path
    python benchmarks/fuzz_inputs.py --count 200 --model default    # the bundled model
The tests (``tests/test_hostile_input.py``) use the same generators on a few files of each class.
"""

from __future__ import annotations

import argparse
import collections
import csv
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf

SYNTHETIC_LABELS = ("neutral", "calm", "happy", "sad", "angry", "fearful", "disgust", "surprised")


# -- a constant stand-in model (no torch, built in milliseconds) ---------------------------------------------
def write_constant_model(
    path: Path,
    logits=None,
    classes: int | None = None,
    input_rank: int = 2,
    labels: tuple[str, ...] = SYNTHETIC_LABELS,
) -> Path:
    """An exported-model stand-in: ``input_values`` ``[batch, samples]`` → the same ``logits``/``probs`` for
    every window (plus a data-dependent zero, so the input is really read). ``logits`` may hold NaN; ``classes``
    other than ``len(labels)`` and ``input_rank`` other than 2 make models that do not fit their metadata."""
    import onnx
    from onnx import TensorProto, helper

    from emotion_monitor.realtime.metadata import ModelInfo

    classes = len(labels) if classes is None else classes
    values = np.linspace(-1.0, 1.0, classes) if logits is None else np.asarray(logits, np.float64)
    nodes = [
        helper.make_node(
            "ReduceMean", ["input_values"], ["mean"], axes=list(range(1, input_rank)), keepdims=0
        ),
        helper.make_node("Unsqueeze", ["mean", "one"], ["col"]),  # [batch, 1]
        helper.make_node("Mul", ["col", "zeros"], ["zero"]),  # [batch, classes] of 0
        helper.make_node("Add", ["zero", "const"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
    ]
    inits = [
        helper.make_tensor("one", TensorProto.INT64, [1], [1]),
        helper.make_tensor("zeros", TensorProto.FLOAT, [1, classes], [0.0] * classes),
        helper.make_tensor("const", TensorProto.FLOAT, [1, classes], values.astype(np.float32).tolist()),
    ]
    out_shape = ["batch", classes]
    graph = helper.make_graph(
        nodes,
        "constant",
        [
            helper.make_tensor_value_info(
                "input_values", TensorProto.FLOAT, ["batch", "samples"] + [1] * (input_rank - 2)
            )
        ],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, out_shape),
            helper.make_tensor_value_info("probs", TensorProto.FLOAT, out_shape),
        ],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    helper.set_model_props(
        model, ModelInfo(labels=labels, window_s=2.0, hop_s=0.5, backbone="constant").to_metadata()
    )
    onnx.save(model, str(path))
    return path


# -- generators --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    path: Path
    kind: str
    expect: str  # "good" (scored), "bad" (one line), "either"


def speechlike(seconds: float, rate: int, rng: np.random.Generator) -> np.ndarray:
    """A voiced-like signal: a pitch-modulated harmonic tone with a syllable envelope, in [-0.5, 0.5]."""
    t = np.arange(int(seconds * rate)) / rate
    f0 = 120 + 30 * np.sin(2 * np.pi * 0.7 * t) + rng.uniform(-20, 20)
    phase = 2 * np.pi * np.cumsum(f0) / rate
    tone = sum(np.sin(k * phase) / k for k in range(1, 6))
    env = 0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2
    x = tone * env
    return (0.5 * x / max(1e-9, np.max(np.abs(x)))).astype(np.float32)


def _good(folder: Path, i: int, rng) -> Case:
    """A usable file at the edges of what is accepted too: 100 Hz to 384 kHz, 1 to 8 channels, 8 to 64 bits."""
    rate = int(rng.choice([100, 8000, 16000, 22050, 44100, 48000, 384000]))
    channels = int(rng.choice([1, 2, 6, 8]))
    fmt = str(rng.choice(["wav", "flac"]))
    subtypes = ["PCM_U8", "PCM_16", "PCM_24", "PCM_32", "FLOAT", "DOUBLE"]
    subtype = str(rng.choice(subtypes)) if fmt == "wav" else "PCM_16"
    if fmt == "flac" and rate > 192000:  # FLAC stores rates only up to 655,350 Hz, libsndfile up to 192 kHz
        rate = 48000
    x = speechlike(rng.uniform(0.5, 2.0), rate, rng)
    path = folder / f"good_{i}.{fmt}"
    sf.write(path, np.stack([x] * channels, axis=1), rate, subtype=subtype)
    return Case(path, "good", "good")


def _good_bytes(rng, fmt: str = "wav", seconds: float = 1.0) -> bytes:
    import io

    buf = io.BytesIO()
    sf.write(buf, speechlike(seconds, 16000, rng), 16000, format=fmt.upper(), subtype="PCM_16")
    return buf.getvalue()


def _random_bytes(folder: Path, i: int, rng) -> Case:
    ext = str(rng.choice(["wav", "flac", "mp3", "ogg", "aiff", "au"]))
    path = folder / f"random_{i}.{ext}"
    path.write_bytes(rng.bytes(int(rng.integers(1, 20_000))))
    return Case(path, "random bytes", "either")  # a few random headers do parse as raw-ish audio


def _empty(folder: Path, i: int, rng) -> Case:
    path = folder / f"empty_{i}.{rng.choice(['wav', 'flac', 'mp3'])}"
    path.write_bytes(b"")
    return Case(path, "empty", "bad")


def _truncated_wav(folder: Path, i: int, rng) -> Case:
    data = _good_bytes(rng, "wav", 2.0)
    path = folder / f"truncated_{i}.wav"
    path.write_bytes(data[: int(len(data) * rng.uniform(0.3, 0.9))])
    return Case(path, "truncated wav", "good")  # scored on the part present, with a notice


def _truncated_flac(folder: Path, i: int, rng) -> Case:
    data = _good_bytes(rng, "flac", 2.0)
    path = folder / f"truncated_{i}.flac"
    path.write_bytes(data[: int(len(data) * rng.uniform(0.05, 0.9))])
    return Case(path, "truncated flac", "either")


def flac_header_bomb(path: Path, rng=None) -> Path:
    """A real FLAC clip whose STREAMINFO claims 2^36-1 samples (what made ``sf.read`` ask for 256 GiB)."""
    data = bytearray(_good_bytes(rng or np.random.default_rng(0), "flac", 1.0))
    info = 8  # "fLaC" + the 4-byte metadata block header
    fields = int.from_bytes(data[info + 10 : info + 18], "big") | ((1 << 36) - 1)
    data[info + 10 : info + 18] = fields.to_bytes(8, "big")
    path.write_bytes(bytes(data))
    return path


def wav_with_rate(path: Path, rate: int, samples: int = 8000, rng=None) -> Path:
    """A 16-bit mono WAV whose header says ``rate`` Hz (1 Hz: what crashed the resampler)."""
    x = speechlike(samples / 16000, 16000, rng or np.random.default_rng(0))
    sf.write(path, x, 16000, subtype="PCM_16")
    data = bytearray(path.read_bytes())
    data[24:28] = rate.to_bytes(4, "little")
    data[28:32] = (rate * 2 % (1 << 32)).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    return path


def _bomb(folder: Path, i: int, rng) -> Case:
    return Case(flac_header_bomb(folder / f"bomb_{i}.flac", rng), "header bomb", "bad")


def _low_rate(folder: Path, i: int, rng) -> Case:
    rate = int(rng.choice([1, 2, 10, 50]))
    return Case(
        wav_with_rate(folder / f"rate{rate}_{i}.wav", rate, int(rng.integers(1000, 600_000)), rng),
        "rate too low",
        "bad",
    )


def _high_rate(folder: Path, i: int, rng) -> Case:
    rate = int(rng.choice([1_000_000, 10_000_000, 2**31 - 1]))
    return Case(wav_with_rate(folder / f"rate{rate}_{i}.wav", rate, 8000, rng), "rate too high", "bad")


def _float_values(folder: Path, i: int, rng) -> Case:
    value = float(rng.choice([np.nan, np.inf, -np.inf, 3e38]))
    x = speechlike(1.0, 16000, rng)
    x[int(rng.integers(0, len(x)))] = value
    if value == 3e38:
        x[:] = 3e38
    path = folder / f"float_{value}_{i}.wav"
    sf.write(path, np.stack([x, x], axis=1), 16000, subtype="FLOAT")
    return Case(path, "non-finite or huge samples", "bad")


def _flipped(folder: Path, i: int, rng) -> Case:
    fmt = str(rng.choice(["wav", "flac"]))
    data = bytearray(_good_bytes(rng, fmt, 1.0))
    for _ in range(int(rng.integers(1, 6))):
        data[int(rng.integers(0, 64))] = int(rng.integers(0, 256))
    path = folder / f"flipped_{i}.{fmt}"
    path.write_bytes(bytes(data))
    return Case(path, "header bytes flipped", "either")


def _silent(folder: Path, i: int, rng) -> Case:
    path = folder / f"silent_{i}.wav"
    sf.write(path, np.zeros(16000, np.float32), 16000)
    return Case(path, "silent", "bad")


def _too_short(folder: Path, i: int, rng) -> Case:
    path = folder / f"short_{i}.wav"
    sf.write(path, speechlike(0.05, 16000, rng), 16000)
    return Case(path, "too short", "bad")


def _odd_name(folder: Path, i: int, rng) -> Case:
    mark = ["\r", "\x1c", "\x85", "\u2028", "\n", ",", '"', "é"][i % 8]
    path = folder / f"odd{mark}name_{i}.wav"
    sf.write(path, speechlike(1.0, 16000, rng), 16000)
    return Case(path, "odd file name", "good")


def _special(folder: Path, i: int, rng) -> Case:
    kind = ["dangling link", "link loop", "fifo"][i % 3]
    path = folder / f"special_{i}.wav"
    if kind == "dangling link":
        os.symlink(folder / f"missing_{i}.wav", path)
    elif kind == "link loop":
        os.symlink(path.name, path)
    else:
        os.mkfifo(path)
    return Case(path, kind, "bad")


GENERATORS: dict[str, Callable] = {
    "good": _good,
    "random bytes": _random_bytes,
    "empty": _empty,
    "truncated wav": _truncated_wav,
    "truncated flac": _truncated_flac,
    "header bomb": _bomb,
    "rate too low": _low_rate,
    "rate too high": _high_rate,
    "non-finite or huge samples": _float_values,
    "header bytes flipped": _flipped,
    "silent": _silent,
    "too short": _too_short,
    "odd file name": _odd_name,
    "special file": _special,
}


def generate(folder: Path, count: int, seed: int = 0, kinds: list[str] | None = None) -> list[Case]:
    """``count`` files in ``folder``, cycling through ``kinds`` (default: all generators)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = kinds or list(GENERATORS)
    return [GENERATORS[names[i % len(names)]](folder, i, rng) for i in range(count)]


# -- checking a run ----------------------------------------------------------------------------------------
@dataclass
class Outcome:
    scored: set[str]
    lines: list[str]
    tracebacks: int
    lost_good: list[Case]
    unreported_bad: list[Case]
    unaccounted: list[Case]
    reasons: collections.Counter


def check(cases: list[Case], out: Path, stderr: str) -> Outcome:
    """What became of every case: scored (a row in ``out``), reported (a stderr line naming it), or neither."""
    with open(out, encoding="utf-8", errors="surrogateescape", newline="") as f:
        scored = {row["path"] for row in csv.DictReader(f)}
    lines = [line for line in stderr.split("\n") if line]
    reported = collections.Counter()
    reasons = collections.Counter()
    for case in cases:
        name = str(case.path)
        hits = [line for line in lines if name + ":" in line and "notice:" not in line]
        reported[name] = len(hits)
        for line in hits:
            reasons[_reason(line.split(name + ": ", 1)[-1])] += 1
    lost, unreported, unaccounted = [], [], []
    for case in cases:
        key = str(case.path.resolve()) if case.expect == "good" else None
        is_scored = key in scored if key else any(s.endswith(case.path.name) for s in scored)
        if case.expect == "good" and not is_scored:
            lost.append(case)
        elif case.expect == "bad" and reported[str(case.path)] != 1:
            unreported.append(case)
        elif case.expect == "either" and (is_scored + (reported[str(case.path)] == 1)) != 1:
            unaccounted.append(case)
    return Outcome(scored, lines, stderr.count("Traceback"), lost, unreported, unaccounted, reasons)


def _reason(text: str) -> str:
    """A reason without its numbers, so equal reasons count together."""
    return re.sub(r"[-+]?\d[\d.e+]*", "N", text)[:90]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=1000, help="files to generate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--model", default="constant", help="'constant' (stand-in), 'default' (bundled) or a file")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cases = generate(tmp / "in", args.count, args.seed)
        model = []
        if args.model == "constant":
            model = ["--model", str(write_constant_model(tmp / "constant.onnx"))]
        elif args.model != "default":
            model = ["--model", args.model]
        out = tmp / "results.csv"
        t0 = time.perf_counter()
        run = subprocess.run(
            [
                sys.executable,
                "-m",
                "emotion_monitor.realtime.score",
                str(tmp / "in"),
                "--out",
                str(out),
                *model,
            ],
            capture_output=True,
            text=True,
            errors="surrogateescape",
        )
        seconds = time.perf_counter() - t0
        peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        result = check(cases, out, run.stderr)
    kinds = collections.Counter(c.kind for c in cases)
    print(f"files tried: {len(cases)} ({', '.join(f'{k} {n}' for k, n in kinds.items())})")
    print(f"exit status: {run.returncode}; {seconds:.1f} s; peak RSS of emotion-score: {peak_mb:.0f} MB")
    print(f"scored: {len(result.scored)}; stderr lines: {len(result.lines)}; summary: {result.lines[-1:]}")
    print(f"tracebacks: {result.tracebacks}")
    print(f"good files lost: {len(result.lost_good)}  {[str(c.path.name) for c in result.lost_good[:5]]}")
    print(
        f"bad files without exactly one line: {len(result.unreported_bad)}  {[c.path.name for c in result.unreported_bad[:5]]}"
    )
    print(f"files neither scored nor reported once: {len(result.unaccounted)}")
    print("reasons:")
    for reason, n in result.reasons.most_common():
        print(f"  {n:5d}  {reason}")
    notices = collections.Counter(
        _reason(line.split(": notice: ", 1)[1]) for line in result.lines if ": notice: " in line
    )
    print(f"notices (file scored with a caveat): {sum(notices.values())}")
    for reason, n in notices.most_common():
        print(f"  {n:5d}  {reason}")
    ok = not (result.tracebacks or result.lost_good or result.unreported_bad or result.unaccounted)
    return 0 if ok and run.returncode in (0, 1) else 1


if __name__ == "__main__":
    sys.exit(main())
