"""Corpora as data: one reader per corpus, each yielding the same ``Utterance`` records.

    read_corpus("ravdess", root)     # Actor_XX/03-01-EE-II-SS-RR-AA.(wav|flac), 8 emotions
    read_corpus("crema-d", root)     # AAAA_SSS_EEE_LL.flac (+ summaryTable.csv crowd votes), 6 emotions
    read_corpus("ased", root)        # ASED v1 (Amharic): 01Neutral/ … 05Angry/xn-SS-RR-GG-PP.opus, 5 emotions
    read_corpus("nemo", root)        # nEMO (Polish): samples/*.opus + data.tsv, 6 emotions
    read_corpus("manifest", "my.csv")  # a user's own recordings: CSV with columns path,label,speaker

Every reader maps its labels onto the product's eight ``EMOTIONS`` and says which of them the corpus can hold
(``Corpus.classes``): CREMA-D has no calm and no surprised, so a CREMA-D clip is never a "not calm" example;
training leaves a corpus's absent classes out of that clip's softmax (``emotion_monitor.core.window_features`` / ``emotion_monitor.core.heads``).
Files that do not parse are returned as ``Problem``s (file + reason), never silently dropped.
"""

from __future__ import annotations

import csv
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from emotion_monitor.core.data import DataError, Problem, index_ravdess
from emotion_monitor.core.emotions import EMOTIONS

CREMA_CODES = {
    "ANG": "angry",
    "DIS": "disgust",
    "FEA": "fearful",
    "HAP": "happy",
    "NEU": "neutral",
    "SAD": "sad",
}
"""CREMA-D emotion codes → ``EMOTIONS`` names."""
CREMA_VOTES = {"A": "angry", "D": "disgust", "F": "fearful", "H": "happy", "N": "neutral", "S": "sad"}
"""Letters of CREMA-D's crowd votes (``summaryTable.csv``) → ``EMOTIONS`` names."""


@dataclass(frozen=True)
class Utterance:
    """One labelled recording.

    label: index into ``EMOTIONS``. speaker: unique across corpora (``"<corpus>:<id>"``), the unit that never
    crosses a train/test split. agreement: share of crowd raters whose audio-only vote matched the label
    (1.0 where a corpus has no ratings; CREMA-D: 1.0 when the majority vote matches, 0.5 for a tie that
    includes it, 0.0 otherwise).
    """

    path: Path
    label: int
    speaker: str
    corpus: str
    agreement: float = 1.0


@dataclass
class Corpus:
    """The utterances of one corpus, the classes it can hold (indices into ``EMOTIONS``), and what was left out."""

    name: str
    utterances: list[Utterance]
    classes: tuple[int, ...]
    problems: list[Problem] = field(default_factory=list)

    @property
    def speakers(self) -> list[str]:
        return sorted({u.speaker for u in self.utterances})


def read_ravdess(root: str | Path) -> Corpus:
    """RAVDESS speech below ``root`` (``Actor_XX`` folders); all eight emotions."""
    files, problems = index_ravdess(root)
    utterances = [Utterance(f.path, f.label, f"ravdess:{f.actor:02d}", "ravdess") for f in files]
    return Corpus("ravdess", utterances, tuple(range(len(EMOTIONS))), problems)


def _crema_votes(root: Path) -> dict[str, str]:
    table = root / "summaryTable.csv"
    if not table.is_file():
        return {}
    with table.open(newline="") as f:
        return {row["FileName"]: row["VoiceVote"] for row in csv.DictReader(f)}


def _agreement(vote: str | None, label: str) -> float:
    if vote is None:
        return 1.0
    voted = [CREMA_VOTES.get(v) for v in vote.split(":")]
    return 1.0 / len(voted) if label in voted else 0.0


def read_crema_d(root: str | Path) -> Corpus:
    """CREMA-D clips ``AAAA_SSS_EEE_LL.(flac|wav)`` directly in ``root``; six emotions (no calm, no surprised).
    ``summaryTable.csv`` beside them, when present, gives each clip's crowd agreement."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: CREMA-D directory not found (set EMOTION_DATA_DIR)")
    votes = _crema_votes(root)
    utterances, problems = [], []
    for path in sorted(p for p in root.iterdir() if p.suffix.lower() in (".flac", ".wav")):
        parts = path.stem.split("_")
        if len(parts) != 4 or not parts[0].isdigit() or parts[2] not in CREMA_CODES:
            problems.append(Problem(path, "name is not AAAA_SSS_EEE_LL with a CREMA-D emotion code"))
            continue
        name = CREMA_CODES[parts[2]]
        utterances.append(
            Utterance(
                path,
                EMOTIONS.index(name),
                f"crema-d:{parts[0]}",
                "crema-d",
                _agreement(votes.get(path.stem), name),
            )
        )
    if not utterances:
        raise DataError(f"{root}: no CREMA-D clips (AAAA_SSS_EEE_LL.flac)")
    return Corpus(
        "crema-d", utterances, tuple(sorted(EMOTIONS.index(n) for n in CREMA_CODES.values())), problems
    )


ASED_FOLDERS = {
    "01Neutral": "neutral",
    "02Fearful": "fearful",
    "03Happy": "happy",
    "04Sad": "sad",
    "05Angry": "angry",
}
"""ASED's emotion folders → ``EMOTIONS`` names (the folder is the label; the name's first letter repeats it)."""
ASED_SUFFIXES = (".opus", ".ogg", ".wav", ".flac")
NEMO_EMOTIONS = {
    "anger": "angry",
    "fear": "fearful",
    "happiness": "happy",
    "neutral": "neutral",
    "sadness": "sad",
    "surprised": "surprised",
}
"""nEMO's ``data.tsv`` emotions → ``EMOTIONS`` names (no calm, no disgust)."""


def _classes(names) -> tuple[int, ...]:
    return tuple(sorted(EMOTIONS.index(n) for n in set(names)))


def read_ased(root: str | Path) -> Corpus:
    """ASED v1 below ``root``: ``01Neutral/`` … ``05Angry/`` holding ``xn-SS-RR-GG-PP.<ext>`` (emotion letter and
    number, sentence, repetition, gender, speaker 01–65); five emotions (no calm, disgust, surprised)."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: ASED directory not found (set EMOTION_DATA_DIR)")
    utterances, problems = [], []
    for folder, name in ASED_FOLDERS.items():
        for path in sorted((root / folder).glob("*")):
            if path.suffix.lower() not in ASED_SUFFIXES:
                continue
            parts = path.stem.split("-")
            if len(parts) != 5 or not all(p.isdigit() for p in parts[1:]):
                problems.append(Problem(path, "name is not xn-SS-RR-GG-PP (ASED)"))
                continue
            if parts[0].lower() != f"{name[0]}{folder[1]}":
                problems.append(Problem(path, f"name says {parts[0]!r} but the folder is {folder}"))
                continue
            utterances.append(Utterance(path, EMOTIONS.index(name), f"ased:{int(parts[4]):02d}", "ased"))
    if not utterances:
        raise DataError(f"{root}: no ASED clips (01Neutral/ … 05Angry/*.opus)")
    return Corpus("ased", utterances, _classes(ASED_FOLDERS.values()), problems)


def read_nemo(root: str | Path) -> Corpus:
    """nEMO below ``root``: ``data.tsv`` (file_id, emotion, …, speaker_id) naming clips in ``samples/``; six
    emotions (no calm, no disgust). Rows whose file is missing or whose emotion is unknown are Problems."""
    root = Path(root)
    table = root / "data.tsv"
    if not table.is_file():
        raise DataError(f"{table}: nEMO table not found (set EMOTION_DATA_DIR)")
    with table.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    utterances, problems = [], []
    for row in rows:
        path = root / "samples" / (row.get("file_id") or "").strip()
        emotion, speaker = (row.get("emotion") or "").strip(), (row.get("speaker_id") or "").strip()
        if emotion not in NEMO_EMOTIONS:
            problems.append(
                Problem(path, f"emotion {emotion!r} is not one of nEMO's {', '.join(NEMO_EMOTIONS)}")
            )
        elif not speaker:
            problems.append(Problem(path, "no speaker_id"))
        elif not path.is_file():
            problems.append(Problem(path, "no such file"))
        else:
            utterances.append(
                Utterance(path, EMOTIONS.index(NEMO_EMOTIONS[emotion]), f"nemo:{speaker}", "nemo")
            )
    if not utterances:
        raise DataError(f"{table}: no usable nEMO rows ({len(problems)} left out)")
    utterances.sort(key=lambda u: str(u.path))
    return Corpus("nemo", utterances, _classes(NEMO_EMOTIONS.values()), problems)


def read_manifest(path: str | Path) -> Corpus:
    """A CSV with columns ``path,label,speaker`` (paths relative to the CSV; labels from ``EMOTIONS``).

    The corpus is named after the CSV's stem; its classes are the labels it uses. Rows that do not fit (unknown
    label, missing file, empty speaker) are Problems.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: manifest not found")
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label", "speaker"} - set(reader.fieldnames or [])
        if missing:
            raise DataError(f"{path}: manifest lacks column(s) {sorted(missing)} (needs path,label,speaker)")
        rows = list(reader)
    name = path.stem
    utterances, problems = [], []
    for row in rows:
        audio = (path.parent / row["path"]).resolve()
        label, speaker = row["label"].strip().lower(), row["speaker"].strip()
        if label not in EMOTIONS:
            problems.append(Problem(audio, f"label {label!r} is not one of {', '.join(EMOTIONS)}"))
        elif not speaker:
            problems.append(Problem(audio, "no speaker"))
        elif not audio.is_file():
            problems.append(Problem(audio, "no such file"))
        else:
            utterances.append(Utterance(audio, EMOTIONS.index(label), f"{name}:{speaker}", name))
    if not utterances:
        raise DataError(f"{path}: no usable rows ({len(problems)} left out)")
    return Corpus(name, utterances, tuple(sorted({u.label for u in utterances})), problems)


READERS: dict[str, Callable[[str | Path], Corpus]] = {
    "ravdess": read_ravdess,
    "crema-d": read_crema_d,
    "ased": read_ased,
    "nemo": read_nemo,
    "manifest": read_manifest,
}


def read_corpus(kind: str, root: str | Path) -> Corpus:
    """The corpus of ``kind`` (``ravdess`` | ``crema-d`` | ``ased`` | ``nemo`` | ``manifest``) at ``root``."""
    if kind not in READERS:
        raise DataError(f"unknown corpus kind {kind!r}; choose from {', '.join(READERS)}")
    return READERS[kind](root)
