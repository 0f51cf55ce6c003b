"""``emotion-score --engine ray``: the same per-file scoring on a Ray cluster, for archives one machine cannot finish.

Files are a Ray Data dataset of paths; ``map_batches`` sends them to a pool of actors (``ScoreFiles``), each
holding one ``batch.FileScorer`` (one ONNX Runtime session) and running the batch engine's own run loop
(``batch.score_files``) on its files: the same scoring and the same per-file error handling as the local engine
(a file that fails, for whatever reason, is that file's one-line failure and the batch goes on). The driver
streams the results back in input order and writes them with the local engine's ``ResultWriter``, so the
CSV/JSONL rows are the ones the local engine writes.

Ray is an optional extra (``pip install 'speech-emotion-monitor[ray]'``) imported only here, only when asked for.
Cluster: ``--ray-address ADDR`` (or ``$RAY_ADDRESS``) connects to a running cluster, e.g. ``ray://head:10001`` or
``auto`` on a cluster node; without either, a local Ray instance is started on this machine's cores. Every
worker node needs this package installed and the model and audio files at the same paths (shared storage).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.batch import (
    PROG,
    BatchSink,
    FileScorer,
    ScoreOptions,
    finish,
    header_seconds,
    score_files,
)
from emotion_monitor.realtime.discovery import FoundFiles
from emotion_monitor.realtime.errors import ModelMismatchError
from emotion_monitor.realtime.model import ModelOptions, load_model
from emotion_monitor.realtime.model_store import resolve_model_path
from emotion_monitor.realtime.progress import Progress
from emotion_monitor.realtime.results import ResultWriter

RAY_EXTRA = (
    "the ray engine needs Ray Data: pip install 'speech-emotion-monitor[ray]' (or pip install 'ray[data]')"
)
DEFAULT_WORKER_THREADS = 1
"""Intra-op threads per actor when ``--threads`` is not given: one single-threaded session per core scales best."""


def import_ray():
    """``ray`` with Ray Data, or ValueError (one line) naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (the part of Ray this engine uses)
    except ImportError:
        raise ValueError(RAY_EXTRA) from None
    return ray


class ScoreFiles:
    """A Ray Data actor: one ``FileScorer`` for its lifetime; a batch of paths → per path its rows, its failure
    lines and its notices (JSON), all from ``score_files``; ``fatal``: a model that does not fit (stops the run)."""

    def __init__(self, options: ScoreOptions, scorer_class: type[FileScorer] = FileScorer):
        self.scorer = scorer_class(options)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {"path": [], "rows": [], "failures": [], "notices": [], "fatal": []}
        for shown, file in zip(batch["path"], batch["file"], strict=True):
            sink = BatchSink()
            fatal = ""
            try:
                score_files(self.scorer, [(None, [Path(str(file))])], sink)
            except ModelMismatchError as exc:
                fatal = str(exc)
            named = [_named(line, str(file), str(shown)) for line in sink.failures]
            out["path"].append(str(shown))
            out["rows"].append(json.dumps([rows for _, rows in sink.written][0]) if sink.written else "")
            out["failures"].append(json.dumps(named))
            out["notices"].append(json.dumps([_named(n, str(file), str(shown)) for n in sink.notices]))
            out["fatal"].append(fatal)
        return out


def _named(line: str, file: str, shown: str) -> str:
    """A worker's line about ``file`` (the absolute path it opened) naming the file as the user gave it."""
    return shown + line[len(file) :] if line.startswith(file + ":") else line


def start_ray(address: str | None):
    """Connect to ``address`` (or ``$RAY_ADDRESS``), else start Ray locally; reuses a running ``ray.init``."""
    ray = import_ray()
    if not ray.is_initialized():
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
    logging.getLogger("ray.data").setLevel(
        logging.ERROR
    )  # per-run execution plans and notices: not for users
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True  # rows come back in the order of the files
    context.enable_progress_bars = False
    return ray


def score_on_ray(
    options: ScoreOptions, paths: list[str], scorer_class: type[FileScorer] = FileScorer
) -> Iterator[tuple[str, list[dict] | None, list[str], list[str]]]:
    """Yield ``(path, rows, failures, notices)`` per file, in order: rows (as dicts; None when it failed), its
    failure lines and notices. ModelMismatchError when the model does not fit (every file would fail).

    ``paths`` are reported as given; workers open them as absolute paths (their working folder is not ours).
    ``options.workers``: actors, each with ``options.threads`` CPUs (default: as many as the cluster allows).
    ``options.model`` must be a resolved path (``ray_options``).
    """
    ray = start_ray(options.ray_address)
    workers = options.workers
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // options.threads)
    items = [{"path": p, "file": str(Path(p).resolve())} for p in paths]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    results = dataset.map_batches(
        ScoreFiles,
        fn_constructor_kwargs={"options": options, "scorer_class": scorer_class},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=options.threads,
    )
    for row in results.iter_rows():
        if row["fatal"]:
            raise ModelMismatchError(row["fatal"])
        rows = json.loads(row["rows"]) if row["rows"] else None
        yield row["path"], rows, json.loads(row["failures"]), json.loads(row["notices"])


def ray_options(options: ScoreOptions) -> ScoreOptions:
    """``options`` as every actor gets them: the model's resolved path (the default model is built once, here),
    ``threads`` per actor set."""
    return dataclasses.replace(
        options,
        model=str(resolve_model_path(options.model).resolve()),
        threads=options.threads or DEFAULT_WORKER_THREADS,
    )


def run_on_ray(options: ScoreOptions, found: FoundFiles, scorer_class: type[FileScorer] = FileScorer) -> int:
    """``emotion-score --engine ray``: every file scored by ``score_files`` on Ray actors, the rows written here by
    the local engine's ``ResultWriter``, in the same order; returns the exit status (``batch.finish``)."""
    if options.normalised:
        raise ValueError(
            "--engine ray scores files independently: --speaker-norm/--speaker-baseline need local"
        )
    import_ray()
    options = ray_options(options)
    labels = load_model(options.model, ModelOptions("cpu", 1)).labels
    writer = ResultWriter(options.out, labels, options.segments, options.resume, found.files)
    todo = [str(f) for f in found.files if not writer.is_done(f)]
    progress = Progress(len(todo), sys.stderr, seconds=header_seconds([Path(p) for p in todo]))
    failures, scored = found.failures(), 0
    for line in found.lines():
        progress.message(f"{PROG}: {line}")
    try:
        for i, (path, rows, failed, notices) in enumerate(score_on_ray(options, todo, scorer_class)):
            progress.update(i, Path(path).name)
            for line in notices:
                progress.message(f"{PROG}: {line}")
            for line in failed:
                failures.append(line)
                progress.message(f"{PROG}: {line}")
            if rows is not None:
                writer.write_file(writer.row_path(Path(path)), rows)
                scored += 1
        progress.update(len(todo), "")
    finally:
        progress.close()
        writer.close()
    return finish(scored, found, len(found.files) - len(todo), failures)
