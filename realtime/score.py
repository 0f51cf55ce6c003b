"""``emotion-score``: the emotion of every audio file in a set of files and folders, or a timeline per file.

The command line only: it parses the arguments into a ``batch.ScoreOptions`` and runs ``batch.run_batch``
(the batch engine: ``batch``, ``file_scoring``, ``discovery``, ``results``, ``distributed`` for ``--engine ray``).
User documentation: docs/batch-scoring.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from emotion_monitor.realtime.batch import (
    EXIT_SOME_FAILED,
    SEGMENTS_HOP_S,
    ScoreOptions,
    run_batch,
)
from emotion_monitor.realtime.display import command_parser
from emotion_monitor.realtime.errors import ModelError, run_command
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.providers import CPU_BATCH_WINDOWS, CUDA_BATCH_WINDOWS, PROVIDER_CHOICES
from emotion_monitor.realtime.speaker_norm import DEFAULT_MIN_SPEECH_S, SPEAKER_NORM_MODES

__all__ = ["EXIT_SOME_FAILED", "SEGMENTS_HOP_S", "build_parser", "main", "options_from_args"]

EPILOG = f"""\
examples:
  emotion-score clip.wav                           # table on stdout
  emotion-score recordings/ --recursive --out results.csv
  emotion-score recordings/ -r --out results.jsonl --resume     # continue an interrupted run
  emotion-score talk.flac --segments --out timeline.csv         # a label every {SEGMENTS_HOP_S:g} s
  emotion-score talk.flac --segments --hop-s {DEFAULT_HOP_S:g}                # exactly emotion-live's timeline
  emotion-score actors/ -r --speaker-norm folder --out results.csv  # each folder holds one speaker
  emotion-score alice/ --speaker-baseline alice-calm.wav            # one speaker, against her calm voice

Unusable files are reported on stderr, one line each; the others are still scored.
exit status: 0 every file scored; 1 some files could not be scored (the others were); 2 a PATH does not exist
(the others are still scored), or a usage, model or output error (nothing more scored).
Details: docs/scoring.md; accuracy: docs/model-card.md (in the project's repository).
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "emotion-score", "Score the emotion in audio files (batch, offline) with an exported model.", EPILOG
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="audio files and/or folders")
    p.add_argument("-r", "--recursive", action="store_true", help="descend into sub-folders")
    p.add_argument(
        "-o", "--out", metavar="FILE", help="results file, .csv or .jsonl (default: table on stdout)"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="skip files already in --out (matched by resolved absolute path) and append to it",
    )
    p.add_argument(
        "--segments", action="store_true", help="one row per window (timeline) instead of per file"
    )
    p.add_argument("--window-s", type=float, help="--segments window in seconds (default: the model's)")
    p.add_argument(
        "--hop-s",
        type=float,
        default=SEGMENTS_HOP_S,
        help=f"--segments hop in seconds ({DEFAULT_HOP_S:g} = the live monitor's hop: "
        f"{SEGMENTS_HOP_S / DEFAULT_HOP_S:g}x the windows)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        help=f"windows per model call (default: {CPU_BATCH_WINDOWS} on the CPU, {CUDA_BATCH_WINDOWS} on CUDA)",
    )
    speaker = p.add_mutually_exclusive_group()
    speaker.add_argument(
        "--speaker-norm",
        choices=("folder", "file", "map"),
        help="normalise per speaker; a speaker = a folder, a file, or an entry of --speakers",
    )
    speaker.add_argument(
        "--speaker-baseline",
        metavar="FILE",
        help="all files are one speaker: normalise by this recording of them talking calmly (10 s or more)",
    )
    p.add_argument("--speakers", metavar="CSV", help="with --speaker-norm map: CSV with columns path,speaker")
    p.add_argument(
        "--speaker-norm-mode",
        choices=SPEAKER_NORM_MODES,
        default="blend",
        help="blend: average plain and speaker-normalised estimates (safer); centred: normalised only",
    )
    p.add_argument(
        "--speaker-min-s",
        type=float,
        default=DEFAULT_MIN_SPEECH_S,
        help="seconds of a speaker's speech needed for normalisation (else plain estimates, with a notice)",
    )
    p.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="ray: score on a Ray cluster (extra 'ray'; same rows; no speaker normalisation)",
    )
    p.add_argument("--workers", type=int, help="--engine ray: actors (default: cluster CPUs / --threads)")
    p.add_argument(
        "--ray-address",
        metavar="ADDR",
        help="--engine ray: cluster to join (default: $RAY_ADDRESS, else local)",
    )
    p.add_argument("--model", help="exported .onnx model (default: bundled model)")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    p.add_argument(
        "--threads", type=int, help="intra-op threads (default: cores, at most 4; --engine ray: 1 per actor)"
    )
    return p


def options_from_args(args: argparse.Namespace) -> ScoreOptions:
    """The run the command line asks for (the one place a Namespace is read)."""
    values = {f.name: getattr(args, f.name) for f in fields(ScoreOptions)}
    return ScoreOptions(**{**values, "paths": tuple(args.paths)})


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("emotion-score", lambda: run_batch(options_from_args(args)), (ModelError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
