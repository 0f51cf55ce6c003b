"""RAVDESS speech: file-name indexing, speaker-independent splits, decoded-clip cache and crop datasets.

File names are ``MM-VV-EE-II-SS-RR-AA`` (see ../shared/data/README.md). Files that do not parse or do not
decode are collected as ``Problem``s (file + reason), logged, and left out: never silently, never a crash.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from emotion_monitor.core.augment import Augmenter, AugmentOptions
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.realtime.audio import (
    SAMPLE_RATE,
    AudioError,
    PreprocessOptions,
    load_audio,
    prepare_clip,
    prepare_input,
)

log = logging.getLogger(__name__)

MODALITIES = {1: "audio-video", 2: "video-only", 3: "audio-only"}
VOCAL_CHANNELS = {1: "speech", 2: "song"}
INTENSITIES = {1: "normal", 2: "strong"}
STATEMENTS = {1: "Kids are talking by the door", 2: "Dogs are sitting by the door"}
RAVDESS_SUFFIXES = (".wav", ".flac")
"""File endings of RAVDESS copies (the original WAVs, the 16 kHz FLAC copy); any other file is left out of the
index. What the runtime can decode is wider: ``emotion_monitor.realtime.audio.AUDIO_SUFFIXES``."""
NUM_ACTORS = 24
SPLITS = ("train", "val", "test")


class DataError(RuntimeError):
    """The data set as a whole cannot be used (no files, empty split); ``str()`` is one line."""


@dataclass(frozen=True)
class RavdessFile:
    """One recording and the seven fields of its name (codes as integers)."""

    path: Path
    modality: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    actor: int

    @property
    def label(self) -> int:
        """Class index into ``EMOTIONS``: RAVDESS emotion code ``k`` (01–08) is ``EMOTIONS[k - 1]``."""
        return self.emotion - 1

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.label]

    @property
    def gender(self) -> str:
        """RAVDESS: odd-numbered actors are male, even-numbered female."""
        return "male" if self.actor % 2 else "female"


@dataclass(frozen=True)
class Problem:
    """A file left out, and why (one line)."""

    path: Path
    reason: str

    def __str__(self) -> str:
        return f"{self.path}: {self.reason}"


def parse_name(path: str | Path) -> RavdessFile:
    """Parse ``MM-VV-EE-II-SS-RR-AA.(wav|flac)``; raises ValueError with the reason when it does not fit."""
    path = Path(path)
    if path.suffix.lower() not in RAVDESS_SUFFIXES:
        raise ValueError(f"not a {'/'.join(RAVDESS_SUFFIXES)} file")
    parts = path.stem.split("-")
    if len(parts) != 7 or not all(len(p) == 2 and p.isdigit() for p in parts):
        raise ValueError("name is not seven two-digit fields MM-VV-EE-II-SS-RR-AA")
    modality, channel, emotion, intensity, statement, repetition, actor = (int(p) for p in parts)
    checks = [
        (modality in MODALITIES, f"modality {modality:02d} is not 01-03"),
        (channel in VOCAL_CHANNELS, f"vocal channel {channel:02d} is not 01 or 02"),
        (channel == 1, "song (vocal channel 02) is not used: the classes are defined for speech"),
        (1 <= emotion <= len(EMOTIONS), f"emotion {emotion:02d} is not 01-{len(EMOTIONS):02d}"),
        (intensity in INTENSITIES, f"intensity {intensity:02d} is not 01 or 02"),
        (not (emotion == 1 and intensity == 2), "neutral has no strong intensity in RAVDESS"),
        (statement in STATEMENTS, f"statement {statement:02d} is not 01 or 02"),
        (repetition in (1, 2), f"repetition {repetition:02d} is not 01 or 02"),
        (1 <= actor <= NUM_ACTORS, f"actor {actor:02d} is not 01-{NUM_ACTORS}"),
    ]
    for ok, reason in checks:
        if not ok:
            raise ValueError(reason)
    return RavdessFile(path, modality, channel, emotion, intensity, statement, repetition, actor)


def index_ravdess(root: str | Path) -> tuple[list[RavdessFile], list[Problem]]:
    """Every file under ``Actor_XX`` folders below ``root`` (also inside ``Audio_Speech_Actors_01-24``).

    Returns the parsed files (sorted by path) and the problems: unparsable names, an actor number that
    contradicts its folder, and duplicates (the same name as WAV and FLAC: the first in sorted order is kept).
    Raises DataError when ``root`` holds no ``Actor_XX`` folder at all.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: data directory not found (set data_dir= or EMOTION_DATA_DIR)")
    actor_dirs = sorted(p for p in root.rglob("Actor_*") if p.is_dir())
    if not actor_dirs:
        raise DataError(f"{root}: no Actor_XX folders (expected RAVDESS speech, e.g. Actor_01/03-01-...wav)")
    files, problems, seen = [], [], {}
    for path in sorted(
        p for d in actor_dirs for p in d.iterdir() if p.is_file() and not p.name.startswith(".")
    ):
        try:
            item = parse_name(path)
            folder_actor = path.parent.name.removeprefix("Actor_")
            if folder_actor.isdigit() and int(folder_actor) != item.actor:
                raise ValueError(f"actor {item.actor:02d} in the name but the folder is {path.parent.name}")
            if path.stem in seen:
                raise ValueError(f"duplicate of {seen[path.stem]}")
        except ValueError as exc:
            problems.append(Problem(path, str(exc)))
            continue
        seen[path.stem] = path
        files.append(item)
    return files, problems


def report_problems(problems: Iterable[Problem], what: str = "left out") -> None:
    """Log each problem file by name with its reason, then a count."""
    problems = list(problems)
    for problem in problems:
        log.warning("%s: %s", what, problem)
    if problems:
        log.warning("%d file(s) %s; see the warnings above", len(problems), what)


def decode_clips(
    files: Sequence[RavdessFile], options: PreprocessOptions
) -> tuple[list[RavdessFile], list[np.ndarray], list[Problem]]:
    """Decode (``load_audio``) and trim (``prepare_clip``) every file, keeping only those that decode.

    Returns the kept files, their clips (float32 ``[samples]`` at 16 kHz, cached in memory: 1200 RAVDESS
    clips are ~100 MB) and one Problem per file that failed.
    """
    kept, clips, problems = [], [], []
    for item in files:
        try:
            clip = prepare_clip(load_audio(item.path), options)
        except AudioError as exc:
            problems.append(Problem(item.path, exc.reason))
            continue
        kept.append(item)
        clips.append(clip)
    return kept, clips, problems


# ---- speaker-independent splits ------------------------------------------------------------------------
def _gender_interleaved(actors: Iterable[int], seed: int) -> list[int]:
    """Actors shuffled with ``seed``, alternating male/female so every contiguous cut mixes genders."""
    rng = random.Random(seed)
    male = sorted(a for a in set(actors) if a % 2)
    female = sorted(a for a in set(actors) if a % 2 == 0)
    rng.shuffle(male)
    rng.shuffle(female)
    order = []
    for i in range(max(len(male), len(female))):
        order += male[i : i + 1] + female[i : i + 1]
    return order


def split_actors(
    actors: Iterable[int], ratios: Sequence[float] = (0.7, 0.15, 0.15), seed: int = 0
) -> dict[str, list[int]]:
    """Train/val/test actor lists by ratio (no actor in two splits). val and test get at least one actor."""
    order = _gender_interleaved(actors, seed)
    total = sum(ratios)
    n_val = max(1, round(len(order) * ratios[1] / total))
    n_test = max(1, round(len(order) * ratios[2] / total)) if ratios[2] > 0 else 0
    if len(order) - n_val - n_test < 1:
        raise DataError(f"{len(order)} actors cannot be split into train/val/test by {list(ratios)}")
    return {
        "test": sorted(order[:n_test]),
        "val": sorted(order[n_test : n_test + n_val]),
        "train": sorted(order[n_test + n_val :]),
    }


def fold_actors(actors: Iterable[int], fold: int, num_folds: int, seed: int = 0) -> dict[str, list[int]]:
    """k-fold by actor groups: test = group ``fold``, val = group ``fold + 1`` (mod k), train = the rest.

    Over ``fold = 0..k-1`` every actor is in exactly one test group.
    """
    order = _gender_interleaved(actors, seed)
    if num_folds < 3 or num_folds > len(order):
        raise DataError(
            f"num_folds must be between 3 and the number of actors ({len(order)}), got {num_folds}"
        )
    if not 0 <= fold < num_folds:
        raise DataError(f"fold must be in 0..{num_folds - 1}, got {fold}")
    groups = [sorted(order[i::num_folds]) for i in range(num_folds)]
    val = (fold + 1) % num_folds
    train = sorted(a for i, g in enumerate(groups) if i not in (fold, val) for a in g)
    return {"train": train, "val": groups[val], "test": groups[fold]}


# ---- crops and datasets --------------------------------------------------------------------------------
def fit_length(clip: np.ndarray, length: int, offset: int) -> np.ndarray:
    """Exactly ``length`` samples of ``clip``: a slice from ``offset`` when long enough, else the clip
    zero-padded with ``offset`` zeros first (offset in ``[0, length - len(clip)]``)."""
    if len(clip) >= length:
        return clip[offset : offset + length]
    out = np.zeros(length, dtype=np.float32)
    out[offset : offset + len(clip)] = clip
    return out


def random_crop(clip: np.ndarray, length: int, rng: np.random.Generator) -> np.ndarray:
    """Training crop: a random ``length`` window, or the short clip at a random place in a zero window."""
    slack = abs(len(clip) - length)
    return fit_length(clip, length, int(rng.integers(0, slack + 1)))


def centre_crop(clip: np.ndarray, length: int) -> np.ndarray:
    """Evaluation crop: the centred ``length`` window (short clips centred in zeros); deterministic."""
    return fit_length(clip, length, abs(len(clip) - length) // 2)


class ClipDataset(Dataset):
    """Cached clips → fixed-length model inputs ``{"input_values": [S] float32, "label": int64}``.

    S = ``round(window_s * SAMPLE_RATE)``, the streaming window, so training sees what the runtime sees.
    Training: random crop → augmentation → ``prepare_input`` (+ post-normalisation gain); evaluation: centre
    crop → ``prepare_input``. No attention mask: the exported model gets none either, so padding must be
    learnt as the runtime presents it.
    """

    def __init__(
        self,
        clips: Sequence[np.ndarray],
        labels: Sequence[int],
        window_s: float,
        options: PreprocessOptions,
        train: bool,
        augmenter=None,
        seed: int = 0,
    ):
        if len(clips) != len(labels):
            raise ValueError("clips and labels differ in length")
        self.clips = list(clips)
        self.labels = [int(x) for x in labels]
        self.length = int(round(window_s * SAMPLE_RATE))
        self.options = options
        self.train = train
        self.augmenter = augmenter
        self.seed = seed

    def __len__(self) -> int:
        return len(self.clips)

    def _rng(self, index: int) -> np.random.Generator:
        # Seeded by torch's per-worker/per-epoch seed so crops differ between epochs and workers, yet a run
        # is reproducible under seed_everything.
        return np.random.default_rng([self.seed, index, int(torch.randint(0, 2**31 - 1, (1,)))])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip = self.clips[index]
        if self.train:
            rng = self._rng(index)
            window = random_crop(clip, self.length, rng)
            if self.augmenter is not None:
                window = self.augmenter.before_normalisation(window, rng)
            window = prepare_input(window, self.options)
            if self.augmenter is not None:
                window = self.augmenter.after_normalisation(window, rng)
        else:
            window = prepare_input(centre_crop(clip, self.length), self.options)
        return {
            "input_values": torch.from_numpy(np.ascontiguousarray(window, dtype=np.float32)),
            "label": torch.tensor(self.labels[index], dtype=torch.long),
        }


def limit_per_actor(files: Sequence[RavdessFile], max_files: int | None) -> list[RavdessFile]:
    """At most ``max_files`` per actor for debug/smoke runs, taken round-robin over emotions (each actor
    starting where the previous actor stopped) so small subsets still cover every class; None keeps all."""
    if max_files is None:
        return list(files)
    by_actor: dict[int, list[RavdessFile]] = {}
    for item in sorted(files, key=lambda f: str(f.path)):
        by_actor.setdefault(item.actor, []).append(item)
    kept = []
    for actor, items in by_actor.items():
        seen: dict[int, int] = {}
        ranked = []
        for item in items:
            seen[item.emotion] = seen.get(item.emotion, 0) + 1
            start = (actor - 1) * max_files  # consecutive actors continue where the previous one stopped
            ranked.append(((seen[item.emotion], (item.emotion - 1 - start) % len(EMOTIONS)), item))
        kept += [item for _, item in sorted(ranked, key=lambda pair: pair[0])[:max_files]]
    return sorted(kept, key=lambda f: str(f.path))


class RavdessDataModule(pl.LightningDataModule):
    """Indexes, splits (by actor) and decodes RAVDESS once; serves crop datasets for train/val/test.

    root: folder holding ``Actor_XX`` (directly or inside ``Audio_Speech_Actors_01-24``).
    window_s: crop length in seconds (= the streaming window). batch_size / eval_batch_size: clips per batch.
    split_ratios: train/val/test shares of the actors, used when ``fold`` is None.
    fold / num_folds: k-fold by actor groups (``fold_actors``). split_seed: seed of the actor shuffle.
    actors: restrict to these actor numbers (None = all found). max_files_per_actor: debug/smoke limit.
    preprocessing: ``PreprocessOptions`` fields. augment: ``AugmentOptions`` fields (training only).
    seed: crop/augmentation seed. No argument has a default: ``configs/dataset/ravdess.yaml`` is their one home
    (``hydra.utils.instantiate``).
    """

    def __init__(
        self,
        *,
        root: str | Path,
        window_s: float,
        batch_size: int,
        eval_batch_size: int,
        num_workers: int,
        split_ratios: Sequence[float],
        fold: int | None,
        num_folds: int,
        split_seed: int,
        actors: Sequence[int] | None,
        max_files_per_actor: int | None,
        preprocessing: dict,
        augment: dict,
        seed: int,
    ):
        super().__init__()
        self.root = Path(root)
        self.window_s = float(window_s)
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.split_ratios = tuple(split_ratios)
        self.fold = fold
        self.num_folds = num_folds
        self.split_seed = split_seed
        self.actors = None if actors is None else sorted(int(a) for a in actors)
        self.max_files_per_actor = max_files_per_actor
        self.preprocessing = PreprocessOptions.from_dict(preprocessing)
        self.augment = AugmentOptions.from_dict(augment)
        self.seed = seed
        self.labels = list(EMOTIONS)
        self.problems: list[Problem] = []
        self.split: dict[str, list[int]] = {}
        self.files: dict[str, list[RavdessFile]] = {}
        self.datasets: dict[str, ClipDataset] = {}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:  # decoded once per process; fit, validate and test share the cache
            return
        files, problems = index_ravdess(self.root)
        if self.actors is not None:
            files = [f for f in files if f.actor in self.actors]
        files = limit_per_actor(files, self.max_files_per_actor)
        files, clips, bad = decode_clips(files, self.preprocessing)
        self.problems = problems + bad
        report_problems(self.problems)
        if not files:
            raise DataError(f"{self.root}: no usable RAVDESS speech files ({len(self.problems)} left out)")
        self.split = self.split_actors(sorted({f.actor for f in files}))
        augmenter = Augmenter(self.augment) if self.augment.enabled else None
        for name in SPLITS:
            chosen = [i for i, f in enumerate(files) if f.actor in self.split[name]]
            self.files[name] = [files[i] for i in chosen]
            self.datasets[name] = ClipDataset(
                [clips[i] for i in chosen],
                [files[i].label for i in chosen],
                self.window_s,
                self.preprocessing,
                train=name == "train",
                augmenter=augmenter if name == "train" else None,
                seed=self.seed,
            )
        sizes = {name: len(ds) for name, ds in self.datasets.items()}
        log.info("RAVDESS %s: actors %s, clips %s", self.root, self.split, sizes)
        for name in ("train", "val"):
            if not sizes[name]:
                raise DataError(f"the {name} split is empty (actors {self.split[name]})")

    def split_actors(self, actors: list[int]) -> dict[str, list[int]]:
        if self.fold is None:
            return split_actors(actors, self.split_ratios, self.split_seed)
        return fold_actors(actors, self.fold, self.num_folds, self.split_seed)

    def split_info(self) -> dict:
        """Plain description of the split (stored in checkpoints, used by emotion-eval)."""
        return {
            "actors": {k: list(v) for k, v in self.split.items()},
            "fold": self.fold,
            "num_folds": self.num_folds if self.fold is not None else None,
            "split_ratios": list(self.split_ratios),
            "split_seed": self.split_seed,
            "num_clips": {k: len(v) for k, v in self.datasets.items()},
            "problems": [str(p) for p in self.problems],
        }

    def train_labels(self) -> list[int]:
        return list(self.datasets["train"].labels)

    def _loader(self, name: str, shuffle: bool) -> DataLoader:
        return DataLoader(
            self.datasets[name],
            batch_size=self.batch_size if name == "train" else self.eval_batch_size,
            shuffle=shuffle,
            # BatchNorm in the head cannot take a batch of one; drop a ragged last training batch.
            drop_last=name == "train" and len(self.datasets[name]) > self.batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
