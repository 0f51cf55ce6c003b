"""Pooled features of exactly the windows the product scores, computed once per corpus and view, cached on disk.

The encoder is frozen, so a head only needs each model input's pooled hidden states ``[L+1, H]``. They come
from the exported ONNX model's ``pooled`` output through the runtime's own code (``emotion_monitor.realtime.model``): the same
trimming, level normalisation, windows and VAD gate as ``emotion-score`` and ``emotion-live``, so training,
evaluation and serving cannot drift apart. Per utterance, two kinds of window:

- ``clip``: ``emotion-score``'s windows of the file (one input for a clip up to ``window_s``); its label is the
  mean of their probabilities.
- ``segment``: the speech windows of the live monitor's timeline (``StreamWindower``: every ``hop_s``, the last
  ``window_s``, the VAD's speech flag), each with its seconds of speech.

A *view* says how the utterance is presented first: ``clean`` (the file as recorded, live hop) or a channel
simulation (``emotion_monitor.core.augment.through_channel``: padding, noise, room, band, level, 44.1/48 kHz device), for
training only. Identical model inputs within an utterance are encoded once.

Layout: ``<cache>/window-features/<model fingerprint>/<corpus>-<view>.npz`` holding ``pooled`` float16
``[W, L+1, H]`` and per window ``utt`` (row in ``files``), ``kind`` (0 clip, 1 segment), ``speech_s``,
``start_s``; ``files``; ``problems``. ``python -m emotion_monitor.core.window_features --help`` fills it.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from emotion_monitor.core.augment import ChannelOptions, through_channel
from emotion_monitor.core.corpora import Corpus
from emotion_monitor.realtime.analysis import clip_bounds, ensure_audible, model_rate_audio
from emotion_monitor.realtime.audio import AudioError, load_audio, prepare_clip
from emotion_monitor.realtime.progress import progress_bar
from emotion_monitor.realtime.windowing import SpeechGate

log = logging.getLogger(__name__)

CLIP, SEGMENT = 0, 1
"""Window kinds."""
CACHE_GATE = SpeechGate(min_speech_s=0.25, max_trailing_silence_s=1.5)
"""A wider speech gate than any the product uses: the cache keeps every window a stricter gate might pass, with
its ``speech_s`` and ``trailing_s``, so gates can be compared (and chosen) without re-encoding."""


@dataclass(frozen=True)
class View:
    """How utterances are presented before windowing: ``channel`` None = as recorded; ``hop_s`` of the segment
    windows (None = the model's live hop); ``seed`` drives the channel simulation (one draw per utterance);
    ``stride``: only every stride-th utterance (a training-only view need not cover every clip);
    ``timeline``: False = the ``emotion-score`` (clip) windows only, no live-timeline windows."""

    name: str = "clean"
    hop_s: float | None = None
    channel: ChannelOptions | None = None
    seed: int = 0
    stride: int = 1
    timeline: bool = True


VIEWS = {
    "clean": View("clean"),
    "channel": View("channel", hop_s=1.0, channel=ChannelOptions(), seed=1, stride=2),
    "clip": View("clip", timeline=False),
    "clip-channel": View("clip-channel", channel=ChannelOptions(), seed=1, timeline=False),
}
"""Views by name: the clean files at the live hop (training and evaluation), one simulated channel for every
second clip at a 1 s hop (training only; coarser and sparser because neighbouring windows and clips of one speaker
add little, and encoding is the slow part); ``clip``: the clean files' ``emotion-score`` windows alone (about a
fifth of the clean view's windows), to compare feature variants (int8, mean+std pooling) at clip level without
encoding timelines; ``clip-channel``: every clip through its own simulated channel, its ``emotion-score`` windows
alone (training only: the channel view at the cost of the clip view)."""


class NpzCache:
    """A dataclass of arrays plus ``files`` and ``problems`` (lists of str), stored as one .npz written atomically
    (a temporary file renamed into place, so a reader never sees half a cache)."""

    LISTS = ("files", "problems")

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        arrays = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in self.LISTS}
        lists = {name: np.array(getattr(self, name), dtype=str) for name in self.LISTS}
        np.savez(tmp, **arrays, **lists)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path):
        z = np.load(path)
        return cls(
            **{f.name: [str(x) for x in z[f.name]] if f.name in cls.LISTS else z[f.name] for f in fields(cls)}
        )


@dataclass
class WindowFeatures(NpzCache):
    """Cached windows of one corpus in one view (see the module doc for the fields)."""

    pooled: np.ndarray
    utt: np.ndarray
    kind: np.ndarray
    speech_s: np.ndarray
    trailing_s: np.ndarray
    start_s: np.ndarray
    files: list[str]
    problems: list[str]


FEATURE_VERSION = 1
"""Bumped when the windowing or feature code changes what is computed, so older caches are never reused."""


def model_fingerprint(model) -> str:
    """Names what the features depend on: the encoder (``backbone`` metadata, which carries the weights' hash),
    preprocessing, rate, window and hop, the statistics over time (``time_pooling``; ``mean`` keeps the key that
    caches were written under before it existed), and the variant (int8...) when it is one. Not the heads:
    retraining a head keeps the cache valid."""
    info = model.info
    parts = [FEATURE_VERSION, info.backbone, info.preprocessing, info.sample_rate, info.window_s, info.hop_s]
    if info.time_pooling != "mean":
        parts.append(info.time_pooling)
    variant = getattr(model, "variant", "")
    key = json.dumps(parts + [variant] if variant else parts, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _unique_inputs(model, windows: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
    """Windows whose trimmed audio is identical are one model input: ``(unique windows, index per window)``."""
    keys: dict[bytes, int] = {}
    unique, index = [], []
    for w in windows:
        key = hashlib.sha1(prepare_clip(w, model.preprocess, model.sample_rate).tobytes()).digest()
        if key not in keys:
            keys[key] = len(unique)
            unique.append(w)
        index.append(keys[key])
    return unique, np.array(index, dtype=np.int64)


def _score_windows(model, samples: np.ndarray, sample_rate: int, source: str):
    """``(audio at the model rate, trimmed clip, emotion-score's window bounds in the clip)``; AudioError when
    silent."""
    audio = ensure_audible(model_rate_audio(model, samples, sample_rate, source), source)
    clip = prepare_clip(audio, model.preprocess, model.sample_rate)
    return audio, clip, clip_bounds(model, len(clip))


def utterance_windows(
    model,
    vad,
    samples: np.ndarray,
    sample_rate: int,
    hop_s: float | None,
    source: str,
    with_timeline: bool = True,
):
    """One recording → ``(pooled [W, L+1, H], kind [W], speech_s [W], trailing_s [W], start_s [W])``: its
    ``emotion-score`` windows (speech_s = their length) and, ``with_timeline``, the speech windows of its live
    timeline under ``CACHE_GATE``. Raises AudioError for unusable audio."""
    from emotion_monitor.realtime.windowing import StreamWindower

    audio, clip, bounds = _score_windows(model, samples, sample_rate, source)
    clip_windows = [clip[s:e] for s, e in bounds]
    timeline = []
    if with_timeline:
        windower = StreamWindower(model.window_spec(None, hop_s), vad, CACHE_GATE)
        timeline = [w for w in windower.feed(audio) + windower.flush() if w.speech]
    windows = clip_windows + [w.samples for w in timeline]
    unique, index = _unique_inputs(model, windows)
    pooled = model.score_windows(unique, pooled=True).pooled
    kind = np.array([CLIP] * len(clip_windows) + [SEGMENT] * len(timeline), dtype=np.int8)
    speech_s = [(e - s) / model.sample_rate for s, e in bounds] + [w.speech_s for w in timeline]
    trailing_s = [0.0] * len(clip_windows) + [w.trailing_silence_s for w in timeline]
    start_s = [s / model.sample_rate for s, _ in bounds] + [w.start_s for w in timeline]
    columns = (np.array(c, dtype=np.float32) for c in (speech_s, trailing_s, start_s))
    return (pooled[index].astype(np.float16), kind, *columns)


def compute(model, corpus: Corpus, view: View, every: int = 200) -> WindowFeatures:
    """Every utterance of ``corpus`` through ``view`` (see the module doc). Progress: a bar on stderr when it
    is a terminal, else a log line every ``every`` files."""
    from emotion_monitor.realtime.vad import load_vad

    rng = np.random.default_rng([view.seed, len(corpus.utterances)])
    vad = load_vad()[0]  # one session, reset by the windower for every utterance
    parts, problems, start = [], [], time.time()
    total = -(-len(corpus.utterances) // view.stride)
    with progress_bar(total, f"{corpus.name}/{view.name} features") as bar:
        for i, u in enumerate(corpus.utterances):
            if i % view.stride:
                continue
            try:
                samples = load_audio(u.path, model.sample_rate)
                rate = model.sample_rate
                if view.channel is not None:
                    samples, rate = through_channel(samples, view.channel, rng)
                columns = utterance_windows(model, vad, samples, rate, view.hop_s, str(u.path), view.timeline)
            except AudioError as exc:
                problems.append(str(exc))
                continue
            finally:
                bar.update(1)
            parts.append((i, *columns))
            if bar.disable and len(parts) % every == 0:
                log.info(
                    "%s/%s: %d/%d files, %.0f s",
                    corpus.name,
                    view.name,
                    len(parts),
                    total,
                    time.time() - start,
                )
    return WindowFeatures(
        pooled=np.concatenate([p[1] for p in parts]),
        utt=np.concatenate([np.full(len(p[2]), p[0], dtype=np.int32) for p in parts]),
        kind=np.concatenate([p[2] for p in parts]),
        speech_s=np.concatenate([p[3] for p in parts]),
        trailing_s=np.concatenate([p[4] for p in parts]),
        start_s=np.concatenate([p[5] for p in parts]),
        files=[str(Path(u.path).resolve()) for u in corpus.utterances],
        problems=problems,
    )


def stale_clip_windows(model, features: WindowFeatures) -> list[int]:
    """Utterances whose cached clip windows are not the ones ``emotion-score`` would take now (its tiling of a
    file changed): the trimmed clip's length is the end of its last cached clip window."""
    rate = model.sample_rate
    stale = []
    clip = features.kind == CLIP
    for u in np.unique(features.utt[clip]):
        rows = np.flatnonzero(clip & (features.utt == u))
        ends = features.start_s[rows] + features.speech_s[rows]
        length = int(round(float(ends.max()) * rate))
        expected = np.array([s / rate for s, _ in clip_bounds(model, length)])
        cached = features.start_s[rows].astype(np.float64)
        # The length comes back from float32 seconds, a sample or two off: a real change of tiling moves windows
        # by far more than that (a tolerance, not rounding, so a start near a rounding edge is never stale).
        if len(expected) != len(cached) or np.abs(expected - cached).max(initial=0.0) > 4 / rate:
            stale.append(int(u))
    return stale


def refresh_clip_windows(model, corpus: Corpus, features: WindowFeatures) -> WindowFeatures:
    """Re-encode only the clip windows of ``stale_clip_windows`` (the live windows do not depend on the tiling)."""
    stale = stale_clip_windows(model, features)
    if not stale:
        return features
    log.info("%s: %d files' emotion-score windows changed; re-encoding those", corpus.name, len(stale))
    keep = ~np.isin(features.utt, stale) | (features.kind != CLIP)
    parts = [
        (
            features.pooled[keep],
            features.utt[keep],
            features.kind[keep],
            features.speech_s[keep],
            features.trailing_s[keep],
            features.start_s[keep],
        )
    ]
    for u in stale:
        path = corpus.utterances[u].path
        pooled, kind, length_s, trailing_s, start_s = utterance_windows(
            model,
            None,
            load_audio(path, model.sample_rate),
            model.sample_rate,
            None,
            str(path),
            with_timeline=False,
        )
        parts.append((pooled, np.full(len(kind), u, np.int32), kind, length_s, trailing_s, start_s))
    cat = [np.concatenate([p[i] for p in parts]) for i in range(6)]
    return WindowFeatures(*cat, files=features.files, problems=features.problems)


def cache_path(model, corpus: Corpus, view: View, root: str | Path | None = None) -> Path:
    from emotion_monitor.core.ct2 import cache_dir

    base = Path(root) if root else cache_dir() / "window-features"
    return base / model_fingerprint(model) / f"{corpus.name}-{view.name}.npz"


def load_or_compute(model, corpus: Corpus, view: View, root: str | Path | None = None) -> WindowFeatures:
    """Cached features of ``corpus`` in ``view`` (computed and stored on first use); the cache is keyed by the
    model file and checked against the corpus's file list."""
    path = cache_path(model, corpus, view, root)
    files = [str(Path(u.path).resolve()) for u in corpus.utterances]
    if path.is_file():
        cached = WindowFeatures.load(path)
        if [str(Path(f).resolve()) for f in cached.files] == files:
            if view.channel is None:  # the clean view is the evaluation's: its clip windows must be today's
                refreshed = refresh_clip_windows(model, corpus, cached)
                if refreshed is not cached:
                    refreshed.save(path)
                return refreshed
            return cached
        log.info("%s: corpus changed since it was cached; recomputing", path)
    log.info("computing %s features of %s (%d files) into %s", view.name, corpus.name, len(files), path)
    features = compute(model, corpus, view)
    features.save(path)
    return features


def main(argv: list[str] | None = None) -> None:
    from emotion_monitor.core.corpora import read_corpus
    from emotion_monitor.realtime.model import load_model

    parser = argparse.ArgumentParser(description="Fill the window-feature cache of corpora (frozen encoder).")
    parser.add_argument("corpora", nargs="+", help="KIND=PATH, e.g. ravdess=../shared/data/ravdess-16k")
    parser.add_argument("--views", nargs="+", default=["clean"], choices=sorted(VIEWS))
    parser.add_argument("--model", default=None, help="ONNX model (default: the bundled one)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    model = load_model(args.model, intra_op_threads=args.threads, batch_size=16)
    for view in args.views:
        for spec in args.corpora:
            kind, _, root = spec.partition("=")
            load_or_compute(model, read_corpus(kind, root), VIEWS[view])


if __name__ == "__main__":
    main()
