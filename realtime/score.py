"""``emotion-score``: the emotion of every audio file in a set of files and folders, or a timeline per file.

Per file: decode (any soundfile format, rate, channel count) → 16 kHz mono → trim silence like a training clip →
one model input when it fits the model's window, else full windows end to end and the length-weighted mean of
their probabilities (``analysis.score_clip``, ``analysis.clip_prediction``). With ``--segments``: the live
monitor's windows and speech gate instead, a window ending every ``--hop-s``.
Results are written and flushed file by file, so an interrupted run keeps its work (``--resume`` continues it).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.analysis import (
    SILENCE_LABEL,
    Prediction,
    Segment,
    clip_prediction,
    ensure_audible,
    score_clip,
    score_timeline,
    timeline_segments,
)
from emotion_monitor.realtime.audio import AUDIO_SUFFIXES, AudioError, check_audio_path, load_audio
from emotion_monitor.realtime.display import command_parser
from emotion_monitor.realtime.errors import EXIT_ERROR, ModelError, ModelMismatchError, one_line, run_command
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.model import EmotionModel, ModelOptions, load_model
from emotion_monitor.realtime.outputs import LockedOutput, csv_header, output_key, read_done_paths
from emotion_monitor.realtime.progress import Progress
from emotion_monitor.realtime.providers import CPU_BATCH_WINDOWS, CUDA_BATCH_WINDOWS, PROVIDER_CHOICES
from emotion_monitor.realtime.speaker_norm import (
    DEFAULT_MIN_SPEECH_S,
    SPEAKER_NORM_MODES,
    SpeakerNormalizer,
    SpeakerNormOptions,
)
from emotion_monitor.realtime.vad import load_vad

EXIT_SOME_FAILED = 1
"""Exit status when some files could not be scored (the others were); 0: every file scored. ``EXIT_ERROR`` (2)
is a usage error (a PATH that does not exist: the other paths are still scored, as ``emotion-live`` exits 2 for
a missing ``--input``) or a model or output error that stops the run."""
NOTICE = "notice: "
"""Marks a line of ``find_audio_files`` that informs (a folder link not followed) rather than fails."""
TABLE_NUMBER_CHARS = 8
"""Width of the table's number columns (``3600.000`` s, ``0.123456``)."""
SEGMENTS_HOP_S = 1.5
"""``--segments`` hop for files: a third of the windows of the live hop (``DEFAULT_HOP_S``), so with the bundled
model's 3 s window every second is encoded twice instead of six times. The speed and accuracy this trades are
measured in the README (``benchmarks/bench_score.py --continuous``); ``--hop-s`` at the live hop gives exactly
the live monitor's timeline."""

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

Per file, leading and trailing silence is trimmed and the label is the most probable emotion. A file up to the
model's window (3 s for the bundled model) is one model input. A longer file is covered by as few full windows
as fit end to end (the first at its start, the last at its end, the small overlap spread evenly: each second is
encoded about once), and its probabilities are the mean of its windows' probabilities, weighted by each
window's seconds of audio after trimming its edge silence (the model was trained on window-length crops).
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
Unusable files (corrupt, empty, silent, unreadable, over the limits: 1 h, 100 Hz to 768 kHz, 256 channels;
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


# -- finding files -------------------------------------------------------------------------------------------
@dataclass
class FoundFiles:
    """What ``find_audio_files`` found: ``files`` to score; ``problems``, one line per entry inside a folder
    that cannot be scored (a broken or looping link, a FIFO, a device, an unreadable sub-folder) or is skipped
    with a notice; ``missing``, one line per PATH on the command line that does not exist (a usage error)."""

    files: list[Path]
    problems: list[str]
    missing: list[str]

    def failures(self) -> list[str]:
        """The lines that are failures (not notices), missing paths first."""
        return self.missing + [line for line in self.problems if f": {NOTICE}" not in line]

    def lines(self) -> list[str]:
        return self.missing + self.problems


def find_audio_files(paths: list[str], recursive: bool) -> FoundFiles:
    """Files to score (folders expanded, sorted; each file once however often it is named), with a line per
    path that does not exist and per folder entry that cannot be scored. Named files are always tried."""
    files, problems, missing = [], [], []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = output_key(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, found_problems = _scan_folder(path, recursive)
            for f in found:
                add(f)
            problems += found_problems
        elif path.exists() or path.is_symlink():
            add(path)
        else:
            missing.append(f"{path}: no such file or folder")
    return FoundFiles(files, problems, missing)


def _scan_folder(folder: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """Audio files in ``folder`` (sorted) and one line per entry that is skipped for a reason worth telling."""
    found, problems = [], []

    def unreadable(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot read folder ({exc.strerror or exc})")

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        if not recursive:
            dirs.clear()
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                problems.append(f"{Path(root, name)}: {NOTICE}link to a folder, not followed")
        for name in names:
            entry = Path(root, name)
            if entry.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            try:
                found.append(check_audio_path(entry))
            except AudioError as exc:
                problems.append(str(exc))
    return sorted(found), sorted(problems)


# -- output --------------------------------------------------------------------------------------------------
class ResultWriter:
    """Rows to CSV, JSONL or a stdout table; flushed after every file.

    The table's header is printed with the first row (nothing on stdout when nothing is scored), and its
    columns are padded to a fixed width: the path column to the longest of ``paths`` (the files to be scored),
    so rows line up as they stream. A silence window (``--segments``) has empty probability fields in CSV, null
    ``probs`` in JSONL and blanks in the table.
    """

    def __init__(
        self,
        out: str | None,
        labels: tuple[str, ...],
        segments: bool,
        resume: bool,
        paths: Sequence[Path] = (),
    ):
        self.labels = labels
        self.segments = segments
        self.format = output_format(out)
        self.done: set[str] = set()
        self._header_due = self.format == "table"
        self._widths = self._table_widths(paths) if self.format == "table" else []
        if out is None:
            self.stream = sys.stdout
            if hasattr(self.stream, "reconfigure"):  # file names that are not UTF-8 print as their raw bytes
                self.stream.reconfigure(errors="surrogateescape")
        else:
            # Locked for the whole run (released in close()); each file's rows are appended in one write.
            self.stream = LockedOutput(out, append=resume)
            if resume:
                self._check_columns(out)
                self.done = read_done_paths(self.stream, self.format)
            if self.stream.size == 0 and self.format == "csv":
                self.stream.write(_csv_line(self.columns()))

    def _check_columns(self, out: str) -> None:
        """ValueError (one line) when a CSV being resumed holds other columns than this run would append."""
        header = csv_header(self.stream) if self.format == "csv" and self.stream.size else self.columns()
        if header != self.columns():
            self.stream.close()
            first = next(
                (
                    f"{a!r} where this run writes {b!r}"
                    for a, b in zip(header, self.columns(), strict=False)
                    if a != b
                ),
                f"{len(header)} columns where this run writes {len(self.columns())}",
            )
            raise ValueError(
                f"--out {out}: its columns differ ({first}); resume with the same model and --segments "
                "setting, or choose another --out"
            )

    def row_path(self, path: Path) -> str:
        """What a file's rows name it by: its resolved absolute path in a results file (``--resume``'s key),
        as given on the command line in the stdout table."""
        return str(path) if self.format == "table" else output_key(path)

    def is_done(self, path: Path) -> bool:
        return output_key(path) in self.done

    def columns(self) -> list[str]:
        key = (
            ["path", "start_s", "end_s", "speech", "label"]
            if self.segments
            else ["path", "label", "confidence"]
        )
        return key + list(self.labels)

    def write_file(self, path: str, rows: list[dict]) -> None:
        text = "".join(self._format(path, row) for row in rows)
        if self._header_due:
            text = self._table_line(self.columns()) + text
            self._header_due = False
        self.stream.write(text)  # one append: whole lines
        self.stream.flush()

    def _format(self, path: str, row: dict) -> str:
        if self.format == "jsonl":
            return json.dumps({"path": path, **row}, allow_nan=False) + "\n"
        values = [path] + [row[c] for c in self.columns()[1 : -len(self.labels)]]
        probs = row["probs"]  # None: a silence window, which carries no emotion
        values += [f"{probs[label]:.6f}" if probs is not None else "" for label in self.labels]
        if self.format == "table":
            return self._table_line([f"{v:.3f}" if isinstance(v, float) else str(v) for v in values])
        return _csv_line(values)

    def _table_widths(self, paths) -> list[int]:
        """Column widths of the table: the header's, the path's and the label's longest, numbers' fixed."""
        widths = [len(c) for c in self.columns()]
        widths[0] = max([widths[0]] + [len(self.row_path(Path(p))) for p in paths])
        label = self.columns().index("label")
        widths[label] = max([widths[label], len(SILENCE_LABEL)] + [len(x) for x in self.labels])
        return [
            max(w, TABLE_NUMBER_CHARS) if _is_number_column(c, self.labels) else w
            for c, w in zip(self.columns(), widths, strict=True)
        ]

    def _table_line(self, values: list[str]) -> str:
        """Text left-aligned (path, label, speech), numbers right-aligned, two spaces between columns."""
        cells = [
            v.rjust(w) if _is_number_column(c, self.labels) else v.ljust(w)
            for c, v, w in zip(self.columns(), values, self._widths, strict=True)
        ]
        return "  ".join(cells).rstrip() + "\n"

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


def _is_number_column(name: str, labels: tuple[str, ...]) -> bool:
    return name in ("start_s", "end_s", "confidence") or name in labels


class _CsvLine:
    """A minimal file object capturing one csv.writer row as text."""

    text = ""

    def write(self, s: str) -> None:
        self.text += s


def _csv_line(values: list) -> str:
    line = _CsvLine()
    csv.writer(line).writerow(values)
    return line.text


def output_format(out: str | None) -> str:
    if out is None:
        return "table"
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"--out {out}: use a .csv or .jsonl file name")
    return suffix[1:]


def prediction_row(p: Prediction) -> dict:
    return {
        "label": p.label,
        "confidence": round(p.confidence, 6),
        "probs": p.probs,
        "duration_s": round(p.duration_s, 3),
        "windows": p.windows,
    }


def segment_row(s: Segment) -> dict:
    return {
        "start_s": round(s.start_s, 3),
        "end_s": round(s.end_s, 3),
        "speech": s.speech,
        "label": s.label,
        "probs": s.probs,
    }


# -- scoring -------------------------------------------------------------------------------------------------
@dataclass
class Analysed:
    """One file's scored windows, before any speaker normalisation.

    probs ``[W, classes]``, pooled ``[W, L+1, H]`` (None unless asked for), speech ``[W]`` bool: windows that
    count as the speaker's speech; speech_s: seconds of speech they carry. ``rows(probs)`` turns (possibly
    normalised) window probabilities into output rows.
    """

    probs: np.ndarray
    pooled: np.ndarray | None
    speech: np.ndarray
    speech_s: float
    rows: Callable[[np.ndarray], list[dict]]


def analyse_file(
    model: EmotionModel, path: Path, args, vad, pooled: bool = False, on_notice=None
) -> Analysed:
    """Score one file's windows; raises AudioError for unusable audio (notices, e.g. truncation: ``on_notice``)."""
    if not args.segments:
        audio = load_audio(path, model.sample_rate, on_notice)
        clip = score_clip(model, audio, model.sample_rate, str(path), pooled)
        return Analysed(
            clip.probs,
            clip.pooled,
            np.ones(len(clip.probs), bool),
            clip.duration_s,
            lambda probs: [
                prediction_row(clip_prediction(model.labels, probs, clip.duration_s, clip.window_seconds))
            ],
        )
    audio = load_audio(path, model.sample_rate, on_notice)
    ensure_audible(audio, str(path))
    timeline = score_timeline(model, audio, model.sample_rate, args.window_s, args.hop_s, vad, pooled)
    windows, probs, pooled_out = timeline.windows, timeline.probs, timeline.pooled
    spec = model.window_spec(args.window_s, args.hop_s)
    if not windows:
        raise AudioError(
            path, f"too short for a window ({len(audio) / model.sample_rate:.2f} s < {spec.min_window_s:g} s)"
        )
    speech = np.array([w.speech for w in windows])
    return Analysed(
        probs,
        pooled_out,
        speech,
        float(speech.sum()) * spec.hop_s,
        lambda p: [segment_row(s) for s in timeline_segments(model.labels, windows, p)],
    )


# -- speakers ------------------------------------------------------------------------------------------------
def read_speaker_map(path: str) -> dict[Path, str]:
    """``--speakers`` CSV (columns ``path,speaker``) → {resolved file path: speaker}; paths are taken relative
    to the CSV's folder unless absolute. ValueError (one line) when the file or its columns are wrong."""
    csv_path = Path(path)
    if not csv_path.is_file():
        raise ValueError(f"--speakers {path}: no such file")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "speaker"} <= set(reader.fieldnames):
            raise ValueError(f"--speakers {path}: needs a header with columns path,speaker")
        return {
            (csv_path.parent / row["path"]).resolve(): row["speaker"]
            for row in reader
            if row.get("path") and row.get("speaker")
        }


def speaker_groups(files: list[Path], args) -> list[tuple[str | None, list[Path]]]:
    """Files grouped by speaker, in order of first appearance; ``(None, [file])`` = scored without
    normalisation (no --speaker-norm, or a file missing from --speakers)."""
    if args.speaker_baseline:
        return [("baseline", [f]) for f in files]  # one fixed baseline: each file can be written at once
    if not args.speaker_norm:
        return [(None, [f]) for f in files]
    mapping = read_speaker_map(args.speakers) if args.speaker_norm == "map" else {}
    groups: dict[str | None, list[Path]] = {}
    alone = []
    for f in files:
        if args.speaker_norm == "folder":
            key = str(f.parent)
        elif args.speaker_norm == "file":
            key = str(f)
        else:
            key = mapping.get(f.resolve())
            if key is None:
                alone.append(f)
                continue
        groups.setdefault(key, []).append(f)
    return list(groups.items()) + [(None, [f]) for f in alone]


def normalise_group(normalizer: SpeakerNormalizer, analysed: list[Analysed]) -> list[np.ndarray]:
    """Each file's window probabilities normalised with the mean of the whole group's speech windows
    (unchanged when the group has too little speech: ``normalizer.ready`` is then False)."""
    normalizer.reset()
    for a in analysed:
        normalizer.update(a.pooled[a.speech], a.speech_s)
    out = []
    for a in analysed:
        probs = a.probs.copy()
        if a.speech.any():
            probs[a.speech] = normalizer.apply(a.probs[a.speech], a.pooled[a.speech])
        out.append(probs)
    return out


# -- main ----------------------------------------------------------------------------------------------------
def make_normalizer(model: EmotionModel, args) -> SpeakerNormalizer | None:
    """The speaker normaliser the options ask for (running mean or calm baseline), or None."""
    if not (args.speaker_norm or args.speaker_baseline):
        return None
    options = SpeakerNormOptions(args.speaker_norm_mode, args.speaker_min_s)
    try:
        return model.speaker_normalizer(options, args.speaker_baseline)
    except AudioError as exc:  # the whole run depends on the baseline: an error, not one failed file
        raise ValueError(f"--speaker-baseline: {exc}") from None


def score_group(
    model: EmotionModel,
    speaker: str | None,
    group: list[Path],
    args,
    vad,
    normalizer: SpeakerNormalizer | None,
    progress: Progress,
    done: int,
    failures: list[str],
) -> list[tuple[Path, list[dict]]]:
    """Output rows of one speaker's files (``speaker`` None: no normalisation). Unusable files are reported
    (appended to ``failures``) and left out; the others are normalised with the group's mean."""
    analysed: list[tuple[Path, Analysed]] = []
    for i, path in enumerate(group):
        progress.update(done + i, path.name)
        try:
            analysed.append(
                (path, analyse_file(model, path, args, vad, speaker is not None, notice_line(progress)))
            )
        except ModelMismatchError:  # the model, not the file: every file would fail the same way
            raise
        except AudioError as exc:  # this file is unusable; the others still get scored
            file_failed(failures, progress, str(exc))
        except ModelError as exc:  # the model failed on this file (e.g. NaN probabilities): the others go on
            file_failed(failures, progress, f"{path}: {exc}")
        except MemoryError:
            file_failed(failures, progress, f"{path}: out of memory while scoring it")
        except (
            Exception
        ) as exc:  # a bug must not cost the batch: this file fails, in one line, the rest go on
            file_failed(failures, progress, f"{path}: unexpected error ({one_line(exc, with_type=True)})")
    probs = [a.probs for _, a in analysed]
    if speaker is not None and analysed:
        probs = normalise_group(normalizer, [a for _, a in analysed])
        if not normalizer.ready:
            progress.message(
                f"emotion-score: notice: speaker {speaker}: {normalizer.speech_s:.1f} s of speech "
                f"< --speaker-min-s {args.speaker_min_s:g}; scored without speaker normalisation"
            )
    scored = []
    for (path, a), p in zip(analysed, probs, strict=True):
        if np.isfinite(p).all():
            scored.append((path, a.rows(p)))
        else:  # the speaker head's output: never a row
            file_failed(failures, progress, f"{path}: speaker-normalised probabilities are NaN or infinite")
    return scored


def file_failed(failures: list[str], progress: Progress, line: str) -> None:
    failures.append(line)
    progress.message(f"emotion-score: {line}")


def notice_line(progress: Progress):
    """A callback printing a file's notice (e.g. a truncated file scored on the part present) as one line."""
    return lambda line: progress.message(f"emotion-score: {line}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command("emotion-score", lambda: run(args), (ModelError, ValueError))


def run(args) -> int:
    output_format(args.out)  # a bad --out fails before anything else happens
    if (args.speaker_norm == "map") != bool(args.speakers):
        raise ValueError("--speakers CSV goes with --speaker-norm map (and map needs --speakers)")
    found = find_audio_files(args.paths, args.recursive)
    files = found.files
    if not files:  # only missing paths and bad entries: say so without loading (or first building) a model
        for line in found.lines():
            print(f"emotion-score: {line}", file=sys.stderr)
        if not found.failures():
            raise ValueError(f"no audio files found in {' '.join(args.paths)}")
        return finish(0, found, 0)
    groups = speaker_groups(files, args)  # a bad --speakers file fails before a model is loaded
    if args.engine == "ray":
        from emotion_monitor.realtime.distributed import (
            run_on_ray,  # Ray is an optional extra: imported only when asked for
        )

        return run_on_ray(args, found)
    model = load_model(args.model, ModelOptions(args.provider, args.threads, args.batch_size))
    if model.provider_notice:
        print(model.provider_notice, file=sys.stderr)
    vad = None
    if args.segments:
        vad, notice = load_vad()
        if notice:
            print(notice, file=sys.stderr)
    normalizer = make_normalizer(model, args)
    writer = ResultWriter(args.out, model.labels, args.segments, args.resume, files)
    failures = found.failures()
    progress = Progress(len(files))
    for line in found.lines():
        progress.message(f"emotion-score: {line}")
    scored = skipped = done = 0
    try:
        for speaker, group in groups:
            if all(writer.is_done(path) for path in group):
                skipped += len(group)
                done += len(group)
                continue
            for path, rows in score_group(
                model, speaker, group, args, vad, normalizer, progress, done, failures
            ):
                if writer.is_done(path):  # in the group's mean, but already written by an earlier run
                    skipped += 1
                    continue
                writer.write_file(writer.row_path(path), rows)
                scored += 1
            done += len(group)
        progress.update(len(files), "")
    finally:
        progress.close()
        writer.close()
    return finish(scored, found, skipped, failures)


def finish(scored: int, found: FoundFiles, skipped: int, failures: list[str] | None = None) -> int:
    """The closing summary line on stderr; the exit status: 2 when a PATH does not exist, else 1 when any
    file failed (``failures``: all of them, by default ``found``'s), else 0."""
    failures = found.failures() if failures is None else failures
    resumed = f", {skipped} already done" if skipped else ""
    print(f"emotion-score: {scored} scored, {len(failures)} failed{resumed}", file=sys.stderr)
    if found.missing:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if failures else 0


if __name__ == "__main__":
    sys.exit(main())
