"""``emotion-score``: the emotion of every audio file in a set of files and folders, or a timeline per file.

The command line only: it parses the arguments into a ``batch.ScoreOptions`` and runs ``batch.run_batch``
(the batch engine: ``batch``, ``file_scoring``, ``discovery``, ``results``, ``distributed`` for ``--engine ray``).
User documentation: docs/batch-scoring.md.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields

from emotion_monitor.realtime.audio import MAX_AUDIO_S
from emotion_monitor.realtime.batch import (
    EXIT_SOME_FAILED,
    SEGMENTS_HOP_S,
    ScoreOptions,
    run_batch,
)
from emotion_monitor.realtime.display import command_parser
from emotion_monitor.realtime.errors import ModelError, run_command
from emotion_monitor.realtime.file_scoring import MIN_PAUSE_S, WHOLE_CLIP_S
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.providers import PROVIDER_CHOICES
from emotion_monitor.realtime.speaker_norm import DEFAULT_MIN_SPEECH_S, SPEAKER_NORM_MODES

__all__ = ["EXIT_SOME_FAILED", "SEGMENTS_HOP_S", "build_parser", "main", "options_from_args"]

EPILOG = f"""\
examples:
  emotion-score clip.wav                           # table on stdout
  emotion-score recordings/ --recursive --out results.csv
  emotion-score recordings/ -r --out results.jsonl --resume     # continue an interrupted run
  emotion-score talk.flac --segments --out timeline.csv         # a label every {SEGMENTS_HOP_S:g} s
  emotion-score talk.flac --segments --hop-s {DEFAULT_HOP_S:g}                # every {DEFAULT_HOP_S:g} s, exactly like emotion-live
  emotion-score actors/ -r --speaker-norm folder --out results.csv  # each folder holds one speaker
  emotion-score calls/ --speaker-norm map --speakers speakers.csv    # CSV columns: path,speaker
  emotion-score alice/ --speaker-baseline alice-calm.wav            # one speaker, against her calm voice

Per file, the label is the most probable emotion. A file up to {WHOLE_CLIP_S:g} s is scored like a training clip:
leading and trailing silence trimmed, one model input when it fits the model's window (3 s for the bundled
model), else as few full windows as fit end to end (the overlap spread evenly). A longer file (a meeting, a
call, a podcast) is read as a stream, in constant memory whatever its length: pauses the VAD finds ({MIN_PAUSE_S:g} s
or more of non-speech) are left out and its speech is cut into full windows as it arrives, so pauses cost
next to nothing. Either way the probabilities are the mean of the windows', weighted by each window's seconds
of audio after trimming its edge silence (the model was trained on window-length crops). On a terminal the
progress bar counts seconds of audio.
--segments lists every window (start_s, end_s, speech, label, probabilities) with the live monitor's window
and speech gate, one window ending every --hop-s ({SEGMENTS_HOP_S:g} s; --hop-s {DEFAULT_HOP_S:g} for the live monitor's exact
timeline). Windows without enough speech for the speech gate are labelled "silence" and carry no
probabilities (empty in CSV, null in JSONL, blank in the table).
--speaker-norm judges every window against its speaker's own average voice: the mean of that speaker's
speech windows over all their files (per folder, per file, or per speaker from --speakers), once there are
--speaker-min-s seconds of it. It helps when a speaker's recordings are varied, and hides a mood they all share
(the README's model card has the measurements). Needs a model
with speaker heads (the bundled model has them). --speaker-baseline FILE instead judges every file against one recording of the
speaker talking calmly (10 s or more), which does not drift towards a mood shared by all the files.
Output format follows --out's extension (.csv or .jsonl); its path column holds each file's resolved absolute
path, and --resume skips files whose resolved path is already there (any spelling of the same file counts).
--out is locked for the whole run: a second run writing the same file stops at once, naming the first.
Unusable files (corrupt, empty, silent, unreadable, over the limits: {MAX_AUDIO_S / 3600:g} h, 100 Hz to 768 kHz, 256 channels;
links and special files found in folders) are reported on stderr, one line each; the others are still scored.
A truncated file is scored on the audio present, with a notice. The stdout table starts with the first scored
file: when nothing is scored, stdout stays empty and the last line on stderr says so.

exit status: 0 every file scored; 1 some files could not be scored (the others were); 2 a PATH does not exist
(the others are still scored), or a usage, model or output error (nothing more scored).
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
    p.add_argument("--batch-size", type=int, default=8, help="windows per model call")
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
