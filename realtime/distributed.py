"""``emotion-score --engine ray``: the same per-file scoring on a Ray cluster, for archives one machine cannot finish.

Files are a Ray Data dataset of paths; ``map_batches`` sends them to a pool of actors (``ScoreFiles``), each
holding one ONNX Runtime session, which run exactly ``emotion_monitor.realtime.score.analyse_file`` on every file. The driver
streams the results back in input order and writes them with ``emotion_monitor.realtime.score.ResultWriter``, so the CSV/JSONL
rows are the ones the local engine writes.

Ray is an optional extra (``pip install 'speech-emotion-monitor[ray]'``) imported only here, only when asked for.
Cluster: ``--ray-address ADDR`` (or ``$RAY_ADDRESS``) connects to a running cluster, e.g. ``ray://head:10001`` or
``auto`` on a cluster node; without either, a local Ray instance is started on this machine's cores. Every
worker node needs this package installed and the model and audio files at the same paths (shared storage).
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from emotion_monitor.realtime.audio import AudioError
from emotion_monitor.realtime.errors import ModelError
from emotion_monitor.realtime.model import ModelOptions, load_model
from emotion_monitor.realtime.model_store import resolve_model_path
from emotion_monitor.realtime.progress import Progress
from emotion_monitor.realtime.score import FoundFiles, ResultWriter, analyse_file, finish
from emotion_monitor.realtime.vad import load_vad

RAY_EXTRA = (
    "the ray engine needs Ray Data: pip install 'speech-emotion-monitor[ray]' (or pip install 'ray[data]')"
)
DEFAULT_WORKER_THREADS = 1
"""Intra-op threads per actor when ``--threads`` is not given: one single-threaded session per core scales best."""


@dataclass(frozen=True)
class ScoreJob:
    """What every actor needs to score a file as ``emotion-score`` does (the fields ``analyse_file`` reads)."""

    model_path: str
    provider: str
    threads: int
    batch_size: int | None
    segments: bool
    window_s: float | None
    hop_s: float


def import_ray():
    """``ray`` with Ray Data, or ValueError (one line) naming the extra to install."""
    try:
        import ray
        import ray.data  # noqa: F401  (the part of Ray this engine uses)
    except ImportError:
        raise ValueError(RAY_EXTRA) from None
    return ray


class ScoreFiles:
    """A Ray Data actor: one model session for its lifetime; a batch of paths → their rows or error lines."""

    def __init__(self, job: ScoreJob):
        self.job = job
        self.model = load_model(job.model_path, ModelOptions(job.provider, job.threads, job.batch_size))
        self.vad = load_vad()[0] if job.segments else None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list[str]]:
        rows, errors = [], []
        for path in batch["file"]:
            try:
                analysed = analyse_file(self.model, Path(str(path)), self.job, self.vad)
                rows.append(json.dumps(analysed.rows(analysed.probs)))
                errors.append("")
            except (AudioError, ModelError) as exc:  # this file is unusable; the others still get scored
                rows.append("")
                errors.append(str(exc))
        return {"path": [str(p) for p in batch["path"]], "rows": rows, "error": errors}


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


def score_on_ray(job: ScoreJob, paths: list[str], workers: int | None = None, address: str | None = None):
    """Yield ``(path, rows, error)`` per file, in order: rows (``analyse_file``'s, as dicts) or an error line.

    ``paths`` are reported as given; workers open them as absolute paths (their working folder is not ours).
    ``workers``: actors, each with ``job.threads`` CPUs (default: as many as the cluster's CPUs allow).
    """
    ray = start_ray(address)
    if workers is None:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)) // job.threads)
    items = [{"path": p, "file": str(Path(p).resolve())} for p in paths]
    dataset = ray.data.from_items(items, override_num_blocks=max(1, len(items)))
    results = dataset.map_batches(
        ScoreFiles,
        fn_constructor_kwargs={"job": job},
        batch_size=1,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=job.threads,
    )
    for row in results.iter_rows():
        yield row["path"], (json.loads(row["rows"]) if row["rows"] else None), row["error"]


def make_job(args) -> ScoreJob:
    """The job of an ``emotion-score`` command line (builds the default model once, here, when needed)."""
    return ScoreJob(
        model_path=str(resolve_model_path(args.model).resolve()),
        provider=args.provider,
        threads=args.threads or DEFAULT_WORKER_THREADS,
        batch_size=args.batch_size,
        segments=args.segments,
        window_s=args.window_s,
        hop_s=args.hop_s,
    )


def run_on_ray(args, found: FoundFiles) -> int:
    """``emotion-score --engine ray``: every file scored by ``analyse_file`` on Ray actors, the rows written here by
    ``emotion-score``'s own ``ResultWriter``, in the same order; returns the exit status (``score.finish``)."""
    if args.speaker_norm or args.speaker_baseline:
        raise ValueError(
            "--engine ray scores files independently: --speaker-norm/--speaker-baseline need local"
        )
    import_ray()
    job = make_job(args)
    labels = load_model(job.model_path, ModelOptions("cpu", 1)).labels
    writer = ResultWriter(args.out, labels, args.segments, args.resume, found.files)
    todo = [str(f) for f in found.files if not writer.is_done(f)]
    failures, progress, scored = found.failures(), Progress(len(todo), sys.stderr), 0
    for line in found.lines():
        progress.message(f"emotion-score: {line}")
    try:
        for i, (path, rows, error) in enumerate(score_on_ray(job, todo, args.workers, args.ray_address)):
            progress.update(i, Path(path).name)
            if error:
                failures.append(error)
                progress.message(f"emotion-score: {error}")
            else:
                writer.write_file(writer.row_path(Path(path)), rows)
                scored += 1
        progress.update(len(todo), "")
    finally:
        progress.close()
        writer.close()
    return finish(scored, found, len(found.files) - len(todo), failures)
