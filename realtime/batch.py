"""The batch engine behind ``emotion-score``: what one file's scores are (``FileScorer``), the one run loop over
many files (``score_files``, used by the local engine here and by the Ray actors in ``distributed``), and the
local engine itself (``run_local``). The command line only builds a ``ScoreOptions`` and calls ``run_batch``.

Per file: ``FileScorer.analyse`` → ``Analysed`` (the file's window probabilities and how they become rows).
``score_files`` reports a file that cannot be scored as that file's one-line failure, whatever the reason, and
goes on with the next: only a model that does not fit (``ModelMismatchError``) stops a run.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.analysis import (
    ClipScores,
    TimelineScores,
    clip_prediction,
    timeline_segments,
)
from emotion_monitor.realtime.audio import AudioError, AudioStream, report_notices
from emotion_monitor.realtime.discovery import FoundFiles, find_audio_files
from emotion_monitor.realtime.errors import EXIT_ERROR, ModelError, ModelMismatchError, one_line
from emotion_monitor.realtime.file_scoring import score_file, score_file_timeline, ticker
from emotion_monitor.realtime.model import EmotionModel, ModelOptions, load_model
from emotion_monitor.realtime.progress import Progress, is_terminal
from emotion_monitor.realtime.results import ResultWriter, output_format, prediction_row, segment_row
from emotion_monitor.realtime.speaker_groups import make_normaliser, normalise_group, speaker_groups
from emotion_monitor.realtime.speaker_norm import DEFAULT_MIN_SPEECH_S, SpeakerNormaliser, SpeakerNormOptions
from emotion_monitor.realtime.vad import FrameVAD, load_vad

EXIT_SOME_FAILED = 1
"""Exit status when some files could not be scored (the others were); 0: every file scored. ``EXIT_ERROR`` (2)
is a usage error (a PATH that does not exist: the other paths are still scored, as ``emotion-live`` exits 2 for
a missing ``--input``) or a model or output error that stops the run."""
SEGMENTS_HOP_S = 1.5
"""``--segments`` hop for files: a third of the windows of the live hop (``DEFAULT_HOP_S``), so with the bundled
model's 3 s window every second is encoded twice instead of six times. The speed and accuracy this trades are
measured in the README (``benchmarks/bench_score.py --continuous``); ``--hop-s`` at the live hop gives exactly
the live monitor's timeline."""
PROG = "emotion-score"


@dataclass(frozen=True)
class ScoreOptions:
    """Everything an ``emotion-score`` run is asked to do (the command line's options, one field each).

    paths: files and folders; recursive: descend into sub-folders; out: ``.csv``/``.jsonl`` file (None: a
    table on stdout); resume: skip files already in ``out``. segments: one row per window (timeline) with
    ``window_s`` (None: the model's) and ``hop_s``. speaker_norm (``folder``/``file``/``map`` with ``speakers``,
    a CSV) or speaker_baseline (a calm recording), speaker_norm_mode, speaker_min_s: speaker normalisation.
    engine: ``local`` or ``ray`` (with workers, ray_address). model (None: the bundled one), provider, threads,
    batch_size: how the model runs.
    """

    paths: tuple[str, ...]
    recursive: bool = False
    out: str | None = None
    resume: bool = False
    segments: bool = False
    window_s: float | None = None
    hop_s: float = SEGMENTS_HOP_S
    batch_size: int | None = None
    speaker_norm: str | None = None
    speaker_baseline: str | None = None
    speakers: str | None = None
    speaker_norm_mode: str = "blend"
    speaker_min_s: float = DEFAULT_MIN_SPEECH_S
    engine: str = "local"
    workers: int | None = None
    ray_address: str | None = None
    model: str | None = None
    provider: str = "auto"
    threads: int | None = None

    @property
    def normalised(self) -> bool:
        """Whether windows are judged against a speaker's own voice (needs the model's pooled features)."""
        return bool(self.speaker_norm or self.speaker_baseline)

    def model_options(self) -> ModelOptions:
        return ModelOptions(self.provider, self.threads, self.batch_size)


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
    rows: Callable[[np.ndarray], Iterable[dict]]


class FileScorer:
    """One model session (and, for timelines, a VAD) scoring files as ``options`` say."""

    def __init__(self, options: ScoreOptions, model: EmotionModel | None = None, vad: FrameVAD | None = None):
        self.options = options
        self.model = model or load_model(options.model, options.model_options())
        self.vad = vad
        self.vad_notice = None
        if vad is None:
            self.vad, self.vad_notice = load_vad(deferred=True)  # whole files may never need it
        self.clip_vad: FrameVAD | None = None if options.segments else self.vad
        """Whole files: the VAD whose pauses a long file's windows skip (``file_scoring.SpeechTiler``)."""

    def analyse(self, path: Path, pooled: bool = False, on_notice=None, on_audio=None) -> Analysed:
        """Score one file's windows as it is read (``file_scoring``); raises AudioError for unusable audio.
        Notices (e.g. a truncated file scored on the part present) go to ``on_notice``, else to warnings;
        ``on_audio(seconds)``: how far into the file the reading is (progress)."""
        model, options = self.model, self.options
        if not options.segments:
            return self._clip(score_file(model, path, self.clip_vad, pooled, on_notice, on_audio))
        with AudioStream(path, model.sample_rate) as stream:
            timeline = score_file_timeline(
                model,
                stream.blocks(),
                options.window_s,
                options.hop_s,
                self.vad,
                str(path),
                pooled,
                ticker(stream, on_audio),
            )
        report_notices(stream.notices, on_notice)
        return self._timeline(timeline)

    def _clip(self, clip: ClipScores) -> Analysed:
        labels = self.model.labels
        return Analysed(
            clip.probs,
            clip.pooled,
            np.ones(len(clip.probs), bool),
            clip.duration_s,
            lambda probs: [
                prediction_row(clip_prediction(labels, probs, clip.duration_s, clip.window_seconds))
            ],
        )

    def _timeline(self, timeline: TimelineScores) -> Analysed:
        windows, labels = timeline.windows, self.model.labels
        speech = np.array([w.speech for w in windows])
        return Analysed(
            timeline.probs,
            timeline.pooled,
            speech,
            float(speech.sum()) * self.model.window_spec(self.options.window_s, self.options.hop_s).hop_s,
            lambda p: (segment_row(s) for s in timeline_segments(labels, windows, p)),
        )


class BatchSink:
    """Where ``score_files`` puts what it finds. This base collects rows, failures and notices in lists (what a
    Ray actor sends back); the local engine's ``WriterSink`` writes rows and prints lines as they come."""

    def __init__(self) -> None:
        self.written: list[tuple[Path, list[dict]]] = []
        self.failures: list[str] = []
        self.notices: list[str] = []

    def is_done(self, path: Path) -> bool:
        """Whether ``path`` is already in the results (``--resume``): it is not written again."""
        return False

    def start(self, path: Path) -> None:
        """``path`` is the file being scored now."""

    def skip(self, paths: list[Path]) -> None:
        """``paths`` are not scored: all of them are in the results already (``--resume``)."""

    def audio(self, position_s: float) -> None:
        """The file being scored has been read up to ``position_s`` seconds."""

    def write(self, path: Path, rows: Iterable[dict]) -> None:
        self.written.append((path, list(rows)))

    def failed(self, line: str) -> None:
        self.failures.append(line)

    def notice(self, line: str) -> None:
        self.notices.append(line)


def score_files(
    scorer: FileScorer,
    groups: list[tuple[str | None, list[Path]]],
    sink: BatchSink,
    normaliser: SpeakerNormaliser | None = None,
) -> None:
    """The run loop: every group's files scored, normalised per speaker (``speaker`` not None, with
    ``normaliser``) and handed to ``sink``. A file that cannot be scored, for any reason but a model that does not
    fit, is ``sink.failed`` in one line naming it; the others go on."""
    for speaker, group in groups:
        if all(sink.is_done(path) for path in group):
            sink.skip(group)
            continue
        analysed: list[tuple[Path, Analysed]] = []
        for path in group:
            sink.start(path)
            result = _analyse_one(scorer, path, speaker is not None, sink)
            if result is not None:
                analysed.append((path, result))
        probs = [a.probs for _, a in analysed]
        if speaker is not None and analysed:
            probs = normalise_group(
                normaliser, [(a.probs, a.pooled, a.speech, a.speech_s) for _, a in analysed]
            )
            if not normaliser.ready:
                sink.notice(
                    f"notice: speaker {speaker}: {normaliser.speech_s:.1f} s of speech "
                    f"< --speaker-min-s {scorer.options.speaker_min_s:g}; scored without speaker normalisation"
                )
        for (path, a), p in zip(analysed, probs, strict=True):
            if not np.isfinite(p).all():  # the speaker head's output: never a row
                sink.failed(f"{path}: speaker-normalised probabilities are NaN or infinite")
            elif not sink.is_done(path):  # in the group's mean, but already written by an earlier run
                sink.write(path, a.rows(p))


def _analyse_one(scorer: FileScorer, path: Path, pooled: bool, sink: BatchSink) -> Analysed | None:
    """One file's ``Analysed``, or None after ``sink.failed`` (one line) when it cannot be scored."""
    try:
        return scorer.analyse(path, pooled, sink.notice, sink.audio)
    except ModelMismatchError:  # the model, not the file: every file would fail the same way
        raise
    except AudioError as exc:  # this file is unusable; the others still get scored
        sink.failed(str(exc))
    except ModelError as exc:  # the model failed on this file (e.g. NaN probabilities): the others go on
        sink.failed(f"{path}: {exc}")
    except MemoryError:
        sink.failed(f"{path}: out of memory while scoring it")
    except Exception as exc:  # a bug must not cost the batch: this file fails, in one line, the rest go on
        sink.failed(f"{path}: unexpected error ({one_line(exc, with_type=True)})")
    return None


class WriterSink(BatchSink):
    """The local engine's sink: rows to the ``ResultWriter``, lines above the ``Progress`` bar, counts kept."""

    def __init__(self, writer: ResultWriter, progress: Progress, failures: list[str]):
        super().__init__()
        self.writer = writer
        self.progress = progress
        self.failures = failures
        self.scored = 0
        self.started = 0

    def is_done(self, path: Path) -> bool:
        return self.writer.is_done(path)

    def start(self, path: Path) -> None:
        self.progress.update(self.started, path.name)
        self.started += 1

    def skip(self, paths: list[Path]) -> None:
        self.started += len(paths)

    def audio(self, position_s: float) -> None:
        self.progress.audio(position_s)

    def write(self, path: Path, rows: Iterable[dict]) -> None:
        self.writer.write_file(self.writer.row_path(path), rows)
        self.scored += 1

    def failed(self, line: str) -> None:
        self.failures.append(line)
        self.progress.message(f"{PROG}: {line}")

    def notice(self, line: str) -> None:
        self.progress.message(f"{PROG}: {line}")


def run_batch(options: ScoreOptions) -> int:
    """An ``emotion-score`` run: find the files, score them on the chosen engine, write the results; returns the
    exit status. ValueError/ModelError (one line) for what stops the run before or while it goes."""
    output_format(options.out)  # a bad --out fails before anything else happens
    if (options.speaker_norm == "map") != bool(options.speakers):
        raise ValueError("--speakers CSV goes with --speaker-norm map (and map needs --speakers)")
    found = find_audio_files(options.paths, options.recursive)
    if (
        not found.files
    ):  # only missing paths and bad entries: say so without loading (or first building) a model
        for line in found.lines():
            print(f"{PROG}: {line}", file=sys.stderr)
        if not found.failures():
            raise ValueError(f"no audio files found in {' '.join(options.paths)}")
        return finish(0, found, 0)
    # a bad --speakers file fails before a model is loaded
    groups = speaker_groups(
        found.files, options.speaker_norm, options.speakers, bool(options.speaker_baseline)
    )
    if options.engine == "ray":
        from emotion_monitor.realtime.distributed import run_on_ray  # Ray is an optional extra

        return run_on_ray(options, found)
    return run_local(options, found, groups)


def run_local(
    options: ScoreOptions,
    found: FoundFiles,
    groups: list[tuple[str | None, list[Path]]],
    scorer_class: type[FileScorer] = FileScorer,
) -> int:
    """The local engine: one model session in this process, rows written file by file."""
    scorer = scorer_class(options)
    for notice in (scorer.model.provider_notice, scorer.vad_notice):
        if notice:
            print(notice, file=sys.stderr)
    normaliser = make_normaliser(
        scorer.model,
        options.speaker_norm,
        options.speaker_baseline,
        SpeakerNormOptions(options.speaker_norm_mode, options.speaker_min_s),
    )
    writer = ResultWriter(options.out, scorer.model.labels, options.segments, options.resume, found.files)
    progress = Progress(len(found.files), seconds=header_seconds(found.files))
    sink = WriterSink(writer, progress, found.failures())
    for line in found.lines():
        progress.message(f"{PROG}: {line}")
    skipped = sum(writer.is_done(path) for path in found.files)
    try:
        score_files(scorer, groups, sink, normaliser)
        progress.update(len(found.files), "")
    finally:
        progress.close()
        writer.close()
    return finish(sink.scored, found, skipped, sink.failures)


def header_seconds(files: list[Path]) -> list[float] | None:
    """Each file's length from its header (0 when it has none or cannot be read) for a progress bar that counts
    seconds of audio; None when stderr is not a terminal (no bar: nothing is read)."""
    if not is_terminal(sys.stderr):
        return None
    seconds = []
    for path in files:
        try:
            with AudioStream(path) as stream:
                seconds.append(stream.header_s)
        except Exception:  # the file fails later, in its place, with its one line
            seconds.append(0.0)
    return seconds


def finish(scored: int, found: FoundFiles, skipped: int, failures: list[str] | None = None) -> int:
    """The closing summary line on stderr; the exit status: 2 when a PATH does not exist, else 1 when any
    file failed (``failures``: all of them, by default ``found``'s), else 0."""
    failures = found.failures() if failures is None else failures
    resumed = f", {skipped} already done" if skipped else ""
    print(f"{PROG}: {scored} scored, {len(failures)} failed{resumed}", file=sys.stderr)
    if found.missing:
        return EXIT_ERROR
    return EXIT_SOME_FAILED if failures else 0
