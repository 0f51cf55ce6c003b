"""Cached encoder frames for fine-tuning the top Whisper layer(s) on ``emotion-score``'s windows (issue 12 pilot).

A frozen-encoder head needs only each window's time-means (``core.window_features``). Fine-tuning the top
``k`` layers needs the *frames* that enter them: the output of layer ``L - k`` for every window, plus the frozen
time-means of the states below (embeddings .. layer ``L - k``) that the concat head also reads. Both are computed
once by the torch encoder (``core.whisper.WhisperBackbone``, the weights the exported model was built from) on
exactly the model inputs ``emotion-score`` makes: the file trimmed (``prepare_clip``), cut into ``clip_bounds``
windows (``window_features._score_windows``), each window trimmed and level-normalised as
``EmotionModel.score_windows`` does (``prepare_clip`` + ``prepare_input``).

Layout: ``<cache>/frame-features/<key>/<corpus>-clip.npz`` holding ``frames`` float16 ``[sum T, H]`` (every
window's frames end to end), ``offset`` / ``length`` ``[W]`` (its frames' rows), ``pooled`` float16
``[W, L+1, H]`` (the time-means of every state of the frozen torch encoder, for the frozen control and the check
against the ONNX model), ``utt`` / ``kind`` / ``speech_s`` / ``trailing_s`` / ``start_s`` as in
``WindowFeatures``, ``files``, ``problems``. Fill it with ``python -m emotion_monitor.core.frame_features``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emotion_monitor.core.corpora import Corpus
from emotion_monitor.core.window_features import (
    CLIP,
    FEATURE_VERSION,
    WindowFeatures,
    _score_windows,
    model_fingerprint,
)
from emotion_monitor.realtime.audio import AudioError, load_audio, prepare_clip, prepare_input

log = logging.getLogger(__name__)


@dataclass
class FrameFeatures(WindowFeatures):
    """Cached clip windows of one corpus (``WindowFeatures``) with the frames entering the fine-tuned layers
    (module doc)."""

    frames: np.ndarray
    offset: np.ndarray
    length: np.ndarray


def window_inputs(model, samples: np.ndarray, sample_rate: int, source: str):
    """``emotion-score``'s model inputs of one recording: ``(inputs, untrimmed windows, bounds)``; each input is
    its window trimmed and level-normalised exactly as ``EmotionModel.score_windows`` prepares it."""
    _, clip, bounds = _score_windows(model, samples, sample_rate, source)
    windows = [clip[s:e] for s, e in bounds]
    inputs = [
        prepare_input(prepare_clip(w, model.preprocess, model.sample_rate), model.preprocess) for w in windows
    ]
    return inputs, windows, bounds


def encode_states(backbone, x: np.ndarray):
    """One model input ``[S]`` → the torch encoder's hidden states (``L + 1`` × ``[T, H]`` float32 tensors)."""
    import torch

    with torch.no_grad():
        states, _ = backbone(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None])
    return [s[0] for s in states]


def compute(
    model, backbone, corpus: Corpus, cut: int, every: int = 200, keep: set[int] | None = None
) -> FrameFeatures:
    """Every utterance of ``corpus`` (``keep``: only these indices): the frames after layer ``cut`` (0 =
    embeddings) of each clip window."""
    frames, offset, length, pooled, utt, speech_s, start_s, problems = [], [], [], [], [], [], [], []
    start, rows = time.time(), 0
    for i, u in enumerate(corpus.utterances):
        if keep is not None and i not in keep:
            continue
        try:
            inputs, _, bounds = window_inputs(
                model, load_audio(u.path, model.sample_rate), model.sample_rate, str(u.path)
            )
        except AudioError as exc:
            problems.append(str(exc))
            continue
        for x, (s, e) in zip(inputs, bounds, strict=True):
            states = encode_states(backbone, x)
            f = states[cut].numpy().astype(np.float16)
            frames.append(f)
            offset.append(rows)
            length.append(len(f))
            rows += len(f)
            pooled.append(np.stack([h.mean(dim=0).numpy() for h in states]).astype(np.float16))
            utt.append(i)
            speech_s.append((e - s) / model.sample_rate)
            start_s.append(s / model.sample_rate)
        if (i + 1) % every == 0:
            log.info(
                "%s: %d/%d files, %.0f s", corpus.name, i + 1, len(corpus.utterances), time.time() - start
            )
    n = len(utt)
    return FrameFeatures(
        frames=np.concatenate(frames),
        offset=np.array(offset, np.int64),
        length=np.array(length, np.int32),
        pooled=np.stack(pooled),
        utt=np.array(utt, np.int32),
        kind=np.full(n, CLIP, np.int8),
        speech_s=np.array(speech_s, np.float32),
        trailing_s=np.zeros(n, np.float32),
        start_s=np.array(start_s, np.float32),
        files=[str(Path(u.path).resolve()) for u in corpus.utterances],
        problems=problems,
    )


def cache_key(model, cut: int, weights: str | None) -> str:
    """The ONNX model's feature fingerprint (windows, preprocessing, encoder), the torch weights and the cut."""
    parts = [FEATURE_VERSION, model_fingerprint(model), "frames", weights or "default", cut]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:16]


def cache_path(model, corpus_name: str, cut: int, weights: str | None = None, subset: str = "") -> Path:
    """``subset``: a name for a selection of the corpus's utterances (``fold_subset``), "" for all of them."""
    from emotion_monitor.core.ct2 import cache_dir

    name = f"{corpus_name}-clip{'-' + subset if subset else ''}.npz"
    return cache_dir() / "frame-features" / cache_key(model, cut, weights) / name


def fold_subset(speakers_by_corpus: dict, corpus: Corpus, fold: int, num_folds: int, seed: int, stride: int):
    """``(name, indices)``: every utterance of ``fold``'s test speakers (``feature_data.speaker_folds``, the
    protocol's split) and a seeded random 1/``stride`` of each other speaker's utterances of each label: a cheaper
    pilot cache for that one fold. (Not every stride-th file: file lists are sorted by sentence and emotion, so a
    fixed stride keeps only some emotions.)"""
    import random

    from emotion_monitor.core.feature_data import speaker_folds

    test = set(speaker_folds(speakers_by_corpus, num_folds, seed)[fold])
    groups: dict[tuple[str, int], list[int]] = {}
    for i, u in enumerate(corpus.utterances):
        groups.setdefault((u.speaker, u.label), []).append(i)
    keep: set[int] = set()
    rng = random.Random(seed)
    for (speaker, _), indices in sorted(groups.items()):
        if speaker in test:
            keep.update(indices)
        else:
            keep.update(rng.sample(indices, -(-len(indices) // stride)))
    return f"f{fold}of{num_folds}s{seed}r{stride}", keep


def torch_backbone(weights: str | None = None):
    """The frozen torch Whisper encoder of the packaged weights (all layers), in eval mode."""
    from emotion_monitor.core.whisper import build_whisper_backbone

    return build_whisper_backbone(weights).eval()


def load_or_compute(
    model,
    corpus: Corpus,
    cut: int,
    weights: str | None = None,
    backbone=None,
    subset: str = "",
    keep: set[int] | None = None,
) -> FrameFeatures:
    """The corpus's cached frames; ``subset`` / ``keep``: a named selection of utterances (``fold_subset``), read
    from the cache by name alone (``keep`` is needed only to compute it)."""
    path = cache_path(model, corpus.name, cut, weights, subset)
    files = [str(Path(u.path).resolve()) for u in corpus.utterances]
    if path.is_file():
        cached = FrameFeatures.load(path)
        if cached.files == files:
            return cached
        log.info("%s: corpus changed since it was cached; recomputing", path)
    log.info("computing frames after layer %d of %s (%d files) into %s", cut, corpus.name, len(files), path)
    if subset and keep is None:
        raise FileNotFoundError(f"{path}: the subset {subset} is not cached (python -m {__name__} --help)")
    features = compute(model, backbone or torch_backbone(weights), corpus, cut, keep=keep)
    features.save(path)
    return features


def check_against_onnx(model, backbone, corpus: Corpus, files: int = 8) -> dict:
    """The torch encoder's time-means vs the ONNX model's ``pooled`` output on the clip windows of the first
    ``files`` utterances: ``{"windows", "max_abs", "max_rel"}`` (max |Δ| over every state and dimension, and
    that over the largest |value|)."""
    max_abs, max_ref, n = 0.0, 0.0, 0
    for u in corpus.utterances[:files]:
        samples = load_audio(u.path, model.sample_rate)
        inputs, windows, _ = window_inputs(model, samples, model.sample_rate, str(u.path))
        onnx_pooled = model.score_windows(windows, pooled=True).pooled
        for x, ref in zip(inputs, onnx_pooled, strict=True):
            mine = np.stack([h.mean(dim=0).numpy() for h in encode_states(backbone, x)])
            max_abs = max(max_abs, float(np.abs(mine - ref).max()))
            max_ref = max(max_ref, float(np.abs(ref).max()))
            n += 1
    return {"windows": n, "max_abs": max_abs, "max_rel": max_abs / max_ref if max_ref else 0.0}


def main(argv: list[str] | None = None) -> None:
    import torch

    from emotion_monitor.core.corpora import read_corpus
    from emotion_monitor.realtime.model import load_model

    parser = argparse.ArgumentParser(description="Cache the frames entering the top Whisper layer(s).")
    parser.add_argument(
        "corpora", nargs="+", help="NAME:KIND=PATH, e.g. ravdess:ravdess=../shared/data/ravdess-16k"
    )
    parser.add_argument(
        "--cut", type=int, default=5, help="frames after this layer (default 5: fine-tune layer 6)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--check-files", type=int, default=8, help="files checked against the ONNX pooled output"
    )
    parser.add_argument(
        "--fold", type=int, default=None, help="cache only this fold's test speakers (all files)..."
    )
    parser.add_argument(
        "--stride", type=int, default=4, help="... and a random 1/stride of the others per label"
    )
    parser.add_argument("--num-folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42, help="the protocol's split seed (config seed)")
    parser.add_argument("--only", nargs="*", default=None, help="compute only these corpora (names)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    model = load_model(None, intra_op_threads=args.threads, batch_size=16)
    backbone = torch_backbone()
    corpora = []
    for spec in args.corpora:
        name, _, rest = spec.partition(":")
        kind, _, root = rest.partition("=")
        corpus = read_corpus(kind, root)
        corpus.name = name
        corpus.utterances = [replace(u, corpus=name) for u in corpus.utterances]
        corpora.append(corpus)
    by_corpus = {c.name: c.speakers for c in corpora}
    for corpus in corpora:
        if args.only is not None and corpus.name not in args.only:
            continue
        if args.check_files:
            check = check_against_onnx(model, backbone, corpus, args.check_files)
            print(f"{corpus.name}: torch time-means vs ONNX pooled: {check}", flush=True)
        subset, keep = "", None
        if args.fold is not None:
            subset, keep = fold_subset(by_corpus, corpus, args.fold, args.num_folds, args.seed, args.stride)
        load_or_compute(model, corpus, args.cut, backbone=backbone, subset=subset, keep=keep)


if __name__ == "__main__":
    main()
