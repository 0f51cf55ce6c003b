"""Speaker turns in conversations built from corpus speakers: change detection and emotion accuracy.

Each conversation is built from RAVDESS or CREMA-D speakers (two or three; same-sex and cross-sex pairs; RAVDESS
odd actors are male, even female; CREMA-D's sexes come from VideoDemographics.csv): turns of 2-10 s, each one
emotion (chosen at random per turn), made of that speaker's clips trimmed of silence (0.15 s between clips,
0.2-0.7 s between turns). Every conversation streams through ``EmotionStream`` (0.1 s chunks) three times:

- per-speaker: ``speaker_turns=True`` (the GE2E speaker model + ``TurnDetector``) + running speaker means (one
  per detected speaker);
- running mean: one running mean of every voice (``emotion-live``'s adaptation without turns);
- none: no speaker adaptation.

The models run once per window (the three runs see the very same windows; caches hand the emotion scores and the
speaker embeddings back, so ``--grid`` only replays the detector).
Printed per group (two speakers same-sex / cross-sex, three speakers):

- recall@3s: share of true turn changes followed within 3 s by a change of the ``speaker`` field;
- false/min: changes of ``speaker`` that match no true turn change, per minute of conversation;
- delay: median seconds from a turn's first sample to its detection (window ends, so >= one hop);
- accuracy of each mode: speech windows whose top class (among the corpus's classes) is the emotion of the
  clip covering most of the window.

Usage:
    python benchmarks/turns_protocol.py                          # 24 conversations, seed 1
    python benchmarks/turns_protocol.py --conversations 12 --seed 0 --grid  # also a grid of detector settings
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import itertools
import os
import platform
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from emotion_monitor.core.corpora import Corpus, read_corpus
from emotion_monitor.core.data import EMOTIONS
from emotion_monitor.core.paths import data_root
from emotion_monitor.realtime.audio import load_audio, prepare_clip
from emotion_monitor.realtime.model import EmotionModel, WindowScores, load_model
from emotion_monitor.realtime.speaker_embedding import SpeakerEncoder
from emotion_monitor.realtime.stream import EmotionStream, StreamOptions, StreamResult
from emotion_monitor.realtime.turns import TurnOptions

RATE = 16_000
CHUNK_S = 0.1
TOLERANCE_S = 3.0
CLIP_GAP_S = 0.15
TURN_GAP_S = (0.2, 0.7)
TURN_S = (2.0, 10.0)
GRID_DISTANCES = (0.3, 0.35)
GRID_CONFIRM = (2, 3)
KINDS = (("2 speakers, same sex", 2, "same"), ("2 speakers, cross sex", 2, "cross"), ("3 speakers", 3, "any"))


@dataclass(frozen=True)
class Span:
    """A clip placed in a conversation: ``[start_s, end_s)``, its speaker's index and its emotion (EMOTIONS index)."""

    start_s: float
    end_s: float
    speaker: int
    emotion: int


@dataclass
class Conversation:
    name: str
    kind: str
    audio: np.ndarray
    spans: list[Span]
    turn_starts_s: list[float]  # every turn's first sample, the first turn's included
    classes: tuple[int, ...]


# -- corpora -------------------------------------------------------------------------------------------------
def speaker_sexes(corpus: Corpus, root: Path) -> dict[str, str]:
    """``speaker → "M"/"F"``: RAVDESS odd actors are male, even female; CREMA-D from VideoDemographics.csv."""
    if corpus.name == "ravdess":
        return {s: "M" if int(s.split(":")[1]) % 2 else "F" for s in corpus.speakers}
    with open(root / "VideoDemographics.csv", newline="") as f:
        sexes = {row["ActorID"]: row["Sex"][0].upper() for row in csv.DictReader(f)}
    return {s: sexes[s.split(":")[1]] for s in corpus.speakers if s.split(":")[1] in sexes}


class ClipLibrary:
    """Every corpus clip by speaker and emotion, loaded and trimmed on first use."""

    def __init__(self, model: EmotionModel, corpora: list[tuple[Corpus, Path]]):
        self.model = model
        self.by_speaker: dict[str, dict[int, list[Path]]] = {}
        self.sex: dict[str, str] = {}
        self.corpus_of: dict[str, Corpus] = {}
        for corpus, root in corpora:
            sexes = speaker_sexes(corpus, root)
            for u in corpus.utterances:
                if u.speaker in sexes:
                    self.by_speaker.setdefault(u.speaker, defaultdict(list))[u.label].append(u.path)
                    self.sex[u.speaker] = sexes[u.speaker]
                    self.corpus_of[u.speaker] = corpus
        self._audio: dict[Path, np.ndarray] = {}

    def clip(self, path: Path) -> np.ndarray:
        if path not in self._audio:
            self._audio[path] = prepare_clip(load_audio(path, RATE), self.model.preprocess, RATE)
        return self._audio[path]


def pick_speakers(lib: ClipLibrary, rng, corpus: str, count: int, sex_rule: str) -> list[str]:
    pool = sorted(s for s in lib.by_speaker if lib.corpus_of[s].name == corpus)
    if sex_rule == "same":
        sex = rng.choice(["M", "F"])
        return list(rng.choice([s for s in pool if lib.sex[s] == sex], count, replace=False))
    if sex_rule == "cross":
        return [rng.choice([s for s in pool if lib.sex[s] == sex]) for sex in ("M", "F")]
    return list(rng.choice(pool, count, replace=False))


def build_conversation(lib: ClipLibrary, rng, name: str, corpus: str, kind) -> Conversation:
    label, count, sex_rule = kind
    speakers = pick_speakers(lib, rng, corpus, count, sex_rule)
    parts, spans, starts = [np.zeros(RATE, np.float32)], [], []
    t = 1.0
    previous = None
    for turn in range(int(rng.integers(6, 11)) if count == 2 else int(rng.integers(9, 13))):
        who = turn % 2 if count == 2 else int(rng.choice([k for k in range(count) if k != previous]))
        previous = who
        clips = lib.by_speaker[speakers[who]]
        emotion = int(rng.choice(sorted(clips)))
        target = rng.uniform(*TURN_S)
        starts.append(t)
        spoken = 0.0
        for path in rng.permutation(clips[emotion]):
            audio = lib.clip(Path(path))
            parts.append(audio)
            spans.append(Span(t, t + len(audio) / RATE, who, emotion))
            t += len(audio) / RATE
            spoken += len(audio) / RATE
            if spoken >= target:
                break
            parts.append(np.zeros(round(CLIP_GAP_S * RATE), np.float32))
            t += CLIP_GAP_S
        gap = rng.uniform(*TURN_GAP_S)
        parts.append(np.zeros(round(gap * RATE), np.float32))
        t += gap
    audio = np.concatenate(parts)
    # Span times were accumulated in seconds; the samples are what they describe.
    return Conversation(name, label, audio, spans, starts, lib.corpus_of[speakers[0]].classes)


# -- running the stream --------------------------------------------------------------------------------------
class CachedModel:
    """An ``EmotionModel`` whose ``score_windows`` remembers each window's scores (with ``pooled``), so the runs
    of one conversation share one model pass; everything else is the model's own."""

    def __init__(self, model: EmotionModel):
        self._model = model
        self.cache: dict[bytes, WindowScores] = {}
        self.model_s = 0.0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def score_windows(self, windows, pooled: bool = False) -> WindowScores:
        scores = []
        for w in windows:
            key = hashlib.blake2b(np.ascontiguousarray(w).tobytes(), digest_size=16).digest()
            if key not in self.cache:
                started = time.perf_counter()
                self.cache[key] = self._model.score_windows([w], pooled=True)
                self.model_s += time.perf_counter() - started
            scores.append(self.cache[key])
        return WindowScores(
            np.concatenate([s.probs for s in scores]),
            np.concatenate([s.seconds for s in scores]),
            np.concatenate([s.pooled for s in scores]) if pooled else None,
        )


class CachedSpeakerEncoder:
    """A ``SpeakerEncoder`` that remembers each embedding (the detector's settings change, the audio does not)."""

    def __init__(self, encoder: SpeakerEncoder):
        self._encoder = encoder
        self.cache: dict[bytes, np.ndarray] = {}
        self.embed_s = 0.0

    def embed(self, samples: np.ndarray) -> np.ndarray:
        key = hashlib.blake2b(np.ascontiguousarray(samples).tobytes(), digest_size=16).digest()
        if key not in self.cache:
            started = time.perf_counter()
            self.cache[key] = self._encoder.embed(samples)
            self.embed_s += time.perf_counter() - started
        return self.cache[key]


def stream_conversation(
    model, conv: Conversation, options: StreamOptions, encoder=None
) -> list[StreamResult]:
    stream = EmotionStream(model, options, speaker_encoder=encoder if options.speaker_turns else None)
    step = round(CHUNK_S * RATE)
    results = []
    for k in range(0, len(conv.audio), step):
        results += stream.process(conv.audio[k : k + step], RATE)
    return results + stream.flush()


MODES = {
    "none": StreamOptions(speaker_norm=False),
    "running mean": StreamOptions(speaker_norm=True),
    "per-speaker": StreamOptions(speaker_norm=True, speaker_turns=True),
}


# -- metrics -------------------------------------------------------------------------------------------------
def change_times(results: list[StreamResult]) -> list[float]:
    """When the ``speaker`` field changed: the end of the first window with the new speaker."""
    return [b.end_s for a, b in itertools.pairwise(results) if b.speaker != a.speaker]


def match_changes(truth_s: list[float], detected_s: list[float]) -> tuple[int, list[float], int]:
    """(true changes found within TOLERANCE_S, their delays, detections matching none)."""
    unused = list(detected_s)
    delays = []
    for t in truth_s:
        hit = next((d for d in unused if t <= d <= t + TOLERANCE_S), None)
        if hit is not None:
            delays.append(hit - t)
            unused.remove(hit)
    return len(delays), delays, len(unused)


def window_truth(conv: Conversation, result: StreamResult) -> int | None:
    """The emotion of the clip covering most of the window (None when no clip overlaps it)."""
    best, covered = None, 0.0
    for span in conv.spans:
        overlap = min(span.end_s, result.end_s) - max(span.start_s, result.start_s)
        if overlap > covered:
            best, covered = span.emotion, overlap
    return best


def accuracy_counts(
    conv: Conversation, results: list[StreamResult], labels: tuple[str, ...]
) -> tuple[int, int]:
    allowed = [labels.index(EMOTIONS[c]) for c in conv.classes]
    right = total = 0
    for r in results:
        if r.probs is None:
            continue
        truth = window_truth(conv, r)
        if truth is None:
            continue
        probs = np.array([r.probs[label] for label in labels])
        right += allowed[int(np.argmax(probs[allowed]))] == labels.index(EMOTIONS[truth])
        total += 1
    return right, total


@dataclass
class Tally:
    convs: int = 0
    minutes: float = 0.0
    changes: int = 0
    found: int = 0
    false: int = 0
    delays: list = None
    right: dict = None
    total: dict = None

    def __post_init__(self):
        self.delays, self.right, self.total = [], defaultdict(int), defaultdict(int)


def evaluate(
    model: CachedModel, encoder: CachedSpeakerEncoder, convs: list[Conversation], turn_options, modes=MODES
) -> dict:
    tallies: dict[str, Tally] = defaultdict(Tally)
    for conv in convs:
        tally = tallies[conv.kind]
        tally.convs += 1
        tally.minutes += len(conv.audio) / RATE / 60
        for mode, options in modes.items():
            if options.speaker_turns:
                options = replace(options, turn_options=turn_options)
            results = stream_conversation(model, conv, options, encoder)
            right, total = accuracy_counts(conv, results, model.labels)
            tally.right[mode] += right
            tally.total[mode] += total
            if options.speaker_turns:
                found, delays, false = match_changes(conv.turn_starts_s[1:], change_times(results))
                tally.changes += len(conv.turn_starts_s) - 1
                tally.found += found
                tally.false += false
                tally.delays += delays
    return tallies


def report(tallies: dict, modes) -> str:
    head = f"{'conversations':<24}{'n':>3} {'min':>5} {'turns':>6} {'recall@3s':>10} {'false/min':>10} {'delay':>6}"
    head += "".join(f" {'acc ' + m:>17}" for m in modes)
    lines = [head]
    for kind, *_ in KINDS:
        t = tallies.get(kind)
        if t is None:
            continue
        delay = f"{np.median(t.delays):.1f}s" if t.delays else "-"
        line = f"{kind:<24}{t.convs:>3} {t.minutes:5.1f} {t.changes:>6} {t.found / max(1, t.changes):10.1%}"
        line += f" {t.false / t.minutes:10.2f} {delay:>6}"
        line += "".join(f" {t.right[m] / max(1, t.total[m]):17.1%}" for m in modes)
        lines.append(line)
    return "\n".join(lines)


def machine() -> str:
    flags = ""
    try:
        with open("/proc/cpuinfo") as f:
            line = next(x for x in f if x.startswith("flags"))
        wanted = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "fma", "f16c")
        flags = " ".join(w for w in wanted if f" {w}" in line)
    except (OSError, StopIteration):
        pass
    return f"{platform.machine()}, {os.cpu_count()} cores, CPU flags: {flags or 'unknown'}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", help="exported .onnx model (default: bundled)")
    p.add_argument("--conversations", type=int, default=24, help="conversations (cycling through the groups)")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument(
        "--grid", action="store_true", help="also detection figures for a grid of detector settings"
    )
    args = p.parse_args(argv)
    started = time.time()
    root = data_root()
    corpora = [
        (read_corpus("ravdess", root / "ravdess-16k"), root / "ravdess-16k"),
        (read_corpus("crema-d", root / "crema-d-16k"), root / "crema-d-16k"),
    ]
    model = CachedModel(load_model(args.model, batch_size=1))
    encoder = CachedSpeakerEncoder(SpeakerEncoder.load())
    lib = ClipLibrary(model, corpora)
    rng = np.random.default_rng(args.seed)
    convs = []
    for i in range(args.conversations):
        corpus = ("ravdess", "crema-d")[(i // len(KINDS)) % 2]
        convs.append(build_conversation(lib, rng, f"conv{i:02d}", corpus, KINDS[i % len(KINDS)]))
    print(
        f"# {len(convs)} conversations ({sum(len(c.audio) for c in convs) / RATE / 60:.1f} min), seed {args.seed}, "
        f"model {model.path.name}, speaker model {encoder._encoder.path.name}, {time.strftime('%Y-%m-%d')}, "
        f"{machine()}"
    )
    print(f"# detector: {TurnOptions()}")
    print(report(evaluate(model, encoder, convs, TurnOptions()), MODES))
    if args.grid:
        turns_only = {"per-speaker": MODES["per-speaker"]}
        for distance, confirm in itertools.product(GRID_DISTANCES, GRID_CONFIRM):
            options = TurnOptions(change_distance=distance, confirm_windows=confirm)
            print(f"\n## change_distance {distance}, confirm_windows {confirm}")
            print(report(evaluate(model, encoder, convs, options, turns_only), turns_only))
    print(
        f"# {time.time() - started:.0f} s ({model.model_s:.0f} s in the emotion model, "
        f"{encoder.embed_s:.0f} s in the speaker model)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
