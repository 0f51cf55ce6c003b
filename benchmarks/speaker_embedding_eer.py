"""How well the speaker model tells corpus speakers apart across emotions: equal error rates of "same speaker?".

For each corpus (RAVDESS actors 1-12, the first 12 CREMA-D speakers here), 30 random clips per speaker, each
trimmed of silence and cut to its first ``--seconds`` (what the turn detector embeds): the EER of cosine
similarity between two clips' embeddings, and between a clip and a speaker's centroid (the mean of 10 other
clips of theirs: what the detector compares a window with).

Usage:
    python benchmarks/speaker_embedding_eer.py [--seconds 2.0] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys
from collections import defaultdict

import numpy as np
from turns_protocol import machine  # run as a script: benchmarks/ is on sys.path

from emotion_monitor.core.corpora import read_corpus
from emotion_monitor.core.paths import data_root
from emotion_monitor.realtime.audio import load_audio, trim_silence
from emotion_monitor.realtime.speaker_embedding import SAMPLE_RATE, SpeakerEncoder

SPEAKERS = 12
CLIPS = 30
CENTROID_CLIPS = 10


def eer(scores: np.ndarray, same: np.ndarray) -> float:
    """Equal error rate: the threshold where false accepts and false rejects meet (the larger of the two)."""
    best = 1.0
    for t in np.quantile(scores, np.linspace(0, 1, 2001)):
        best = min(best, max(np.mean(scores[~same] >= t), np.mean(scores[same] < t)))
    return float(best)


def corpus_embeddings(
    encoder: SpeakerEncoder, corpus: str, seconds: float, rng
) -> tuple[np.ndarray, np.ndarray]:
    root = data_root() / f"{corpus}-16k"
    by_speaker = defaultdict(list)
    for u in read_corpus(corpus, root).utterances:
        by_speaker[u.speaker].append(u.path)
    embeddings, speakers = [], []
    for speaker in sorted(by_speaker)[:SPEAKERS]:
        for path in rng.choice(sorted(by_speaker[speaker]), CLIPS, replace=False):
            audio = trim_silence(load_audio(path, SAMPLE_RATE))
            embeddings.append(encoder.embed(audio[: round(seconds * SAMPLE_RATE)]))
            speakers.append(speaker)
    return np.array(embeddings), np.array(speakers)


def eers(x: np.ndarray, speakers: np.ndarray) -> tuple[float, float]:
    """(clip vs clip, clip vs another speaker's or their own centroid of CENTROID_CLIPS other clips)."""
    upper = np.triu_indices(len(x), 1)
    pair = eer((x @ x.T)[upper], (speakers[:, None] == speakers[None, :])[upper])
    centroids = {}
    for s in np.unique(speakers):
        members = np.flatnonzero(speakers == s)[:CENTROID_CLIPS]
        mean = x[members].mean(axis=0)
        centroids[s] = (set(members.tolist()), mean / np.linalg.norm(mean))
    scores, same = [], []
    for i in range(len(x)):
        for s, (members, centroid) in centroids.items():
            if i not in members:
                scores.append(float(x[i] @ centroid))
                same.append(speakers[i] == s)
    return pair, eer(np.array(scores), np.array(same))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=2.0, help="seconds of each clip embedded")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    encoder = SpeakerEncoder.load()
    print(f"# {encoder.path.name}, {args.seconds} s per clip, seed {args.seed}, {machine()}")
    print(f"{'corpus':<10} {'clip vs clip':>13} {'clip vs centroid':>17}")
    for corpus in ("ravdess", "crema-d"):
        x, speakers = corpus_embeddings(encoder, corpus, args.seconds, np.random.default_rng(args.seed))
        pair, centroid = eers(x, speakers)
        print(f"{corpus:<10} {pair:13.3f} {centroid:17.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
