"""Training data for a head on a frozen encoder: cached window features of several corpora, split by speaker.

``FeatureDataModule`` is the ``dataset`` of the cached-feature experiments (``configs/dataset/features.yaml``):
the same ``emotion-train`` / ``EmotionModule`` trains on it as on raw audio, only the batches carry ``pooled``
features instead of ``input_values``. Splits are by speaker, stratified per corpus (``speaker_folds``), so no
voice is ever in training and test at once; ``test_corpus`` instead holds out a whole corpus (leave one corpus
out) and trains on the other corpora, each on its own classes, as the product is trained.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from functools import lru_cache

import numpy as np
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from emotion_monitor.core.corpora import Corpus, read_corpus
from emotion_monitor.core.data import DataError
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.window_features import CLIP, SEGMENT, VIEWS, load_or_compute
from emotion_monitor.realtime.audio import PreprocessOptions
from emotion_monitor.realtime.windowing import SpeechGate

log = logging.getLogger(__name__)

BASELINE_CLASSES = (EMOTIONS.index("neutral"), EMOTIONS.index("calm"))
"""A calm baseline recording: the speaker's neutral and calm speech (CREMA-D has neutral only)."""
CENTRES = {"all": None, "baseline": BASELINE_CLASSES, "subspace": None, "session": None}
"""``speaker_centre`` modes → the labels whose clips make a speaker's mean (None: all of them). ``subspace``: the
mean of all their clips, of which only the part in the speaker subspace is removed (``SpeakerSubspace``).
``session``: trained on the means of random sessions of the speaker (``SessionCentres``), mixed and one-mood;
tested, like ``all``, on the mean of all their clips."""


@dataclass
class SpeakerSubspace:
    """What of a speaker's mean voice to remove: only its offset from the population mean ``mu`` ``[L+1, H]``
    within the span of ``basis`` ``[D, k]`` (orthonormal columns, ``D = (L+1)·H``): the directions along which
    speakers differ *within one emotion* (estimated on training speakers, ``fit_speaker_subspace``). A mean heard
    from one mood shifts mostly along emotion directions, which this leaves alone; so the centre of a speaker who
    keeps one mood stays near their voice, not their mood. ``basis`` with ``k = 0`` centres every speaker on
    ``mu`` alone; a full basis is plain centring on the speaker's mean."""

    mu: np.ndarray
    basis: np.ndarray

    def centre(self, means: np.ndarray) -> np.ndarray:
        """``means [..., L+1, H]`` (speaker means) → the centres to subtract, same shape."""
        means = np.asarray(means, dtype=np.float32)
        flat = (means - self.mu).reshape(-1, self.basis.shape[0])
        projected = (flat @ self.basis) @ self.basis.T
        return (self.mu + projected.reshape(means.shape)).astype(np.float32)


def fit_speaker_subspace(
    fs: FeatureSet, speakers: Sequence[str], rank: int, view: int = 0
) -> SpeakerSubspace:
    """The ``rank`` principal directions of the speakers' per-emotion means around each emotion's mean (clip
    windows of ``speakers`` in view ``view``), and the mean of those speakers' own means (``mu``)."""
    clip = (fs.kind == CLIP) & (fs.view == view)
    row_speaker, row_label = fs.utt_speaker[fs.utt], fs.utt_label[fs.utt]
    means, labels, speaker_means = [], [], []
    for speaker in speakers:
        mine = clip & (row_speaker == speaker)
        if not mine.any():
            continue
        speaker_means.append(fs.pooled[mine].astype(np.float32).mean(axis=0))
        for label in np.unique(row_label[mine]):
            means.append(fs.pooled[mine & (row_label == label)].astype(np.float32).mean(axis=0))
            labels.append(label)
    if not speaker_means:
        raise DataError("no training speakers to estimate the speaker subspace from")
    means_arr, labels_arr = np.stack(means), np.array(labels)
    deviations = np.empty_like(means_arr)
    for label in np.unique(labels_arr):
        same = labels_arr == label
        deviations[same] = means_arr[same] - means_arr[same].mean(axis=0)
    flat = deviations.reshape(len(deviations), -1)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    basis = vt[: min(rank, len(vt))].T.astype(np.float32)
    return SpeakerSubspace(np.stack(speaker_means).mean(axis=0).astype(np.float32), basis)


class SessionCentres:
    """Training centres as the live monitor's running mean sees a speaker: for each training window, the mean clip
    features of a random session of its speaker (in its view) that holds its own clip: ``k`` of the speaker's clips,
    ``k`` uniform from ``min(3, n)`` to all ``n``, of every emotion (a *mixed* session) or, with probability
    ``one_mood_share``, of its own emotion only (a speaker who keeps one mood). Redrawn at every call, so every
    epoch sees other sessions; seeded."""

    def __init__(self, fs: FeatureSet, speakers: Sequence[str], one_mood_share: float, seed: int):
        if not 0.0 <= one_mood_share <= 1.0:
            raise DataError(f"one_mood_share must be in [0, 1], got {one_mood_share}")
        self.fs, self.one_mood_share = fs, one_mood_share
        self.rng = np.random.default_rng(seed)
        views = len(fs.views)
        clip = np.flatnonzero((fs.kind == CLIP) & np.isin(fs.utt_speaker[fs.utt], list(speakers)))
        slot = fs.centre_index(clip)
        self.sums = np.zeros((len(fs.utterances) * views, *fs.pooled.shape[1:]), np.float32)
        np.add.at(self.sums, slot, fs.pooled[clip].astype(np.float32))
        self.counts = np.bincount(slot, minlength=len(self.sums)).astype(np.float32)
        # Per (speaker, view): the slots (utterance x view) that hold clip windows; per label too.
        self.by_speaker: dict[tuple[str, int], np.ndarray] = {}
        for key in {(fs.utt_speaker[u], v) for u, v in zip(fs.utt[clip], fs.view[clip], strict=True)}:
            utts = np.flatnonzero(fs.utt_speaker == key[0])
            slots = utts * views + key[1]
            self.by_speaker[key] = slots[self.counts[slots] > 0]

    def __call__(self, rows: np.ndarray) -> np.ndarray:
        """``[len(rows), L+1, H]``: one freshly drawn session mean per window row."""
        fs, views = self.fs, len(self.fs.views)
        out = np.empty((len(rows), *fs.pooled.shape[1:]), np.float32)
        for i, row in enumerate(rows):
            own = fs.utt[row] * views + fs.view[row]
            pool = self.by_speaker[(fs.utt_speaker[fs.utt[row]], fs.view[row])]
            if self.rng.random() < self.one_mood_share:
                pool = pool[fs.utt_label[pool // views] == fs.utt_label[fs.utt[row]]]
            others = pool[pool != own]
            k = int(self.rng.integers(min(3, len(others) + 1), len(others) + 2))
            chosen = np.append(self.rng.choice(others, size=k - 1, replace=False), own)
            out[i] = self.sums[chosen].sum(axis=0) / max(self.counts[chosen].sum(), 1.0)
        return out


@dataclass
class FeatureSet:
    """Every cached window of the chosen corpora and views, one row per window.

    corpus / utt / view: indices into ``corpora`` / ``utterances`` / ``views``. allowed: ``[corpora, C]`` bool,
    the classes each corpus can hold. encoder: the ``backbone`` metadata of the model that encoded them
    (``whisper-base:frozen+bundled-head``; its part before ``:`` names the encoder weights).
    """

    corpora: list[Corpus]
    views: list[str]
    utterances: list
    pooled: np.ndarray
    utt: np.ndarray
    view: np.ndarray
    kind: np.ndarray
    speech_s: np.ndarray
    trailing_s: np.ndarray
    allowed: np.ndarray
    encoder: str = ""

    @property
    def corpus(self) -> np.ndarray:
        return self._utt_corpus[self.utt]

    def __post_init__(self):
        names = [c.name for c in self.corpora]
        self._utt_corpus = np.array([names.index(u.corpus) for u in self.utterances], dtype=np.int64)
        self.utt_label = np.array([u.label for u in self.utterances], dtype=np.int64)
        self.utt_speaker = np.array([u.speaker for u in self.utterances])
        self.utt_agreement = np.array([u.agreement for u in self.utterances], dtype=np.float32)

    def first_layers(self, encoder_layers: int | None) -> FeatureSet:
        """The same windows as an encoder cut after its first ``encoder_layers`` transformer layers would see
        them: ``pooled[:, :encoder_layers + 1]`` (a view, no copy); None = every layer. Exact because the cache
        holds each layer's raw output and a truncated encoder returns those same states (``emotion_monitor.core.whisper``)."""
        states = self.pooled.shape[1]
        if encoder_layers is None or encoder_layers + 1 == states:
            return self
        if not 0 < encoder_layers < states:
            raise DataError(
                f"encoder_layers must be in 1..{states - 1} for these features, got {encoder_layers}"
            )
        return replace(self, pooled=self.pooled[:, : encoder_layers + 1])

    def centre_index(self, rows: np.ndarray) -> np.ndarray:
        """Row of ``speaker_means`` for each window row: its utterance in its view."""
        return self.utt[rows] * len(self.views) + self.view[rows]

    def speaker_means(self, reference: Sequence[int] | None = None) -> np.ndarray:
        """``[utterances * views, L+1, H]``: for every utterance in every view, the mean pooled features of its
        speaker's clip windows in that view (a voice's average, what ``--speaker-norm`` subtracts).
        ``reference``: only utterances with these labels make the mean (``BASELINE_CLASSES``: a calm baseline)."""
        out = np.zeros((len(self.utterances) * len(self.views), *self.pooled.shape[1:]), dtype=np.float32)
        clip = self.kind == CLIP
        if reference is not None:
            clip &= np.isin(self.utt_label[self.utt], list(reference))
        row_speaker = self.utt_speaker[self.utt]
        for v in range(len(self.views)):
            for speaker in np.unique(self.utt_speaker):
                rows = np.flatnonzero(clip & (self.view == v) & (row_speaker == speaker))
                if not len(rows):
                    continue
                mean = self.pooled[rows].astype(np.float32).mean(axis=0)
                utts = np.flatnonzero(self.utt_speaker == speaker)
                out[utts * len(self.views) + v] = mean
        return out

    def rows(
        self,
        speakers: Sequence[str],
        views: Sequence[str] = ("clean",),
        kinds: Sequence[int] = (CLIP, SEGMENT),
        gate: SpeechGate | None = None,
        classes: Sequence[int] | None = None,
    ) -> np.ndarray:
        """Window rows of ``speakers`` in ``views`` of ``kinds``; segment windows pass ``gate``; utterances whose
        label is in ``classes`` (None: all)."""
        keep = np.isin(self.utt_speaker[self.utt], list(speakers))
        keep &= np.isin(self.view, [self.views.index(v) for v in views if v in self.views])
        keep &= np.isin(self.kind, list(kinds))
        if gate is not None:
            keep &= (self.kind == CLIP) | gate.is_speech(self.speech_s, self.trailing_s)
        if classes is not None:
            keep &= np.isin(self.utt_label[self.utt], list(classes))
        return np.flatnonzero(keep)


def select_time_pooling(pooled: np.ndarray, stored: str, wanted: str, source: str = "features") -> np.ndarray:
    """Features ``[W, L+1, K x H]`` holding ``stored`` statistics (``emotion_monitor.core.model.TIME_POOLING``) → those the head
    reads (``wanted``): the same array, or the means alone (the first H of each layer's ``[mean | std]``)."""
    if wanted == stored:
        return pooled
    if wanted == "mean" and stored == "mean_std":
        return np.ascontiguousarray(pooled[..., : pooled.shape[-1] // 2])
    raise DataError(
        f"{source} hold time_pooling={stored} statistics, the head reads {wanted}: encode the features with a "
        f"{wanted} model (emotion-export --time-pooling {wanted}) and pass it as dataset.model=FILE"
    )


@lru_cache(maxsize=4)
def _load(
    corpora_key: tuple[tuple[str, str, str], ...],
    views: tuple[str, ...],
    model_path: str | None,
    time_pooling: str,
):
    from emotion_monitor.realtime.model import load_model

    model = load_model(model_path, batch_size=16)
    corpora, parts = [], []
    offset = 0
    utterances = []
    for name, kind, root in corpora_key:
        corpus = read_corpus(kind, root)
        # The config's name for it (corpora.<name>) is used in every report and in its speakers' ids, so that two
        # corpora of the same kind (two manifests both called manifest.csv) never share a speaker.
        corpus.name = name
        corpus.utterances = [
            replace(u, corpus=name, speaker=f"{name}:{u.speaker.partition(':')[2]}")
            for u in corpus.utterances
        ]
        corpora.append(corpus)
        for v, view in enumerate(views):
            f = load_or_compute(model, corpus, VIEWS[view])
            parts.append((f, offset, v))
        utterances += corpus.utterances
        offset += len(corpus.utterances)
    allowed = np.zeros((len(corpora), len(EMOTIONS)), dtype=bool)
    for i, corpus in enumerate(corpora):
        allowed[i, list(corpus.classes)] = True
    cat = np.concatenate
    return FeatureSet(
        corpora=corpora,
        views=list(views),
        utterances=utterances,
        pooled=select_time_pooling(
            cat([f.pooled for f, _, _ in parts]),
            model.info.time_pooling,
            time_pooling,
            f"the features of {model_path or 'the bundled model'}",
        ),
        utt=cat([f.utt.astype(np.int64) + off for f, off, _ in parts]),
        view=cat([np.full(len(f.utt), v, dtype=np.int64) for f, _, v in parts]),
        kind=cat([f.kind for f, _, _ in parts]),
        speech_s=cat([f.speech_s for f, _, _ in parts]),
        trailing_s=cat([f.trailing_s for f, _, _ in parts]),
        allowed=allowed,
        encoder=model.info.backbone,
    )


def load_feature_set(
    corpora: dict,
    views: Sequence[str] = ("clean",),
    model_path: str | None = None,
    time_pooling: str = "mean",
) -> FeatureSet:
    """``corpora``: ``{name: {kind, root}}`` (the ``corpora`` config group); ``time_pooling``: the statistics the
    head reads (``select_time_pooling``). Loaded once per process."""
    key = tuple((name, c["kind"], str(c["root"])) for name, c in corpora.items())
    return _load(key, tuple(views), model_path, time_pooling)


def speaker_folds(speakers_by_corpus: dict[str, list[str]], num_folds: int, seed: int) -> list[list[str]]:
    """``num_folds`` disjoint speaker groups; each corpus's speakers are shuffled (seeded) and dealt round-robin,
    so every fold holds a share of every corpus."""
    folds: list[list[str]] = [[] for _ in range(num_folds)]
    for _, speakers in sorted(speakers_by_corpus.items()):
        order = sorted(speakers)
        random.Random(seed).shuffle(order)
        for i, speaker in enumerate(order):
            folds[i % num_folds].append(speaker)
    return [sorted(f) for f in folds]


class PooledDataset(Dataset):
    """Rows of a FeatureSet as ``{"pooled", "label", "allowed", "weight"}``; batches are fetched whole.
    ``centres``: rows → the speaker centres ``[n, L+1, H]`` to subtract from them (None: none)."""

    def __init__(
        self,
        fs: FeatureSet,
        rows: np.ndarray,
        allowed: np.ndarray,
        weights: np.ndarray,
        centres: Callable[[np.ndarray], np.ndarray] | None,
    ):
        self.fs, self.rows = fs, rows
        self.labels = fs.utt_label[fs.utt[rows]]
        self.allowed = allowed
        self.weights = weights
        self.centres = centres

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([i])[0]

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        idx = np.asarray(indices)
        x = self.fs.pooled[self.rows[idx]].astype(np.float32)
        if self.centres is not None:
            x = x - self.centres(self.rows[idx])
        return [
            {
                "pooled": torch.from_numpy(x),
                "label": torch.from_numpy(self.labels[idx]),
                "allowed": torch.from_numpy(self.allowed[idx]),
                "weight": torch.from_numpy(self.weights[idx]),
            }
        ]


def _first(batch):
    return batch[0]


class FeatureDataModule(pl.LightningDataModule):
    """Cached features of ``corpora`` for head training.

    corpora: ``{name: {kind, root}}``. train_views: views whose windows train (``clean``, ``channel``, ``clip``).
    eval_view: the view whose windows are scored (``clean``; ``clip`` has clip windows only). time_pooling: the
    statistics over time the head reads (``select_time_pooling``). gate: ``SpeechGate`` fields for the segment windows used. fold / num_folds / split_seed: speaker k-fold
    (test = fold; the rest train; None = train on every speaker). test_corpus: leave this corpus out instead
    (training on the other corpora, each on its own classes). agreement_weight: weight each utterance by its
    crowd agreement (``Utterance.agreement``) mixed with 1 by this share (0 = unweighted). corpus_balance /
    class_balance: weigh corpora towards equal shares of the loss, classes equally within each corpus
    (``corpus_weights``). speaker_centre: None, or subtract each
    speaker's mean features (``all`` their clips, their calm ``baseline`` clips, or the ``subspace`` part of
    the mean of all their clips, of rank ``speaker_rank``) in training and test alike (the speaker-normalised
    heads), or train on random session means, ``one_mood_share`` of them one-mood (``session``,
    ``SessionCentres``). encoder_layers: train on the first this many
    transformer layers' features only (a truncated encoder; None = all the cache holds). test_model: another
    ONNX model (an int8 copy of ``model``) whose clip windows (view ``clip``) the protocol also scores with the
    same heads (``test_feature_set``). No argument has a default: ``configs/dataset/features.yaml`` is their
    one home (``hydra.utils.instantiate``).
    """

    def __init__(
        self,
        *,
        corpora: dict,
        train_views: Sequence[str],
        eval_view: str,
        time_pooling: str,
        gate: dict,
        batch_size: int,
        fold: int | None,
        num_folds: int,
        split_seed: int,
        test_corpus: str | None,
        agreement_weight: float,
        corpus_balance: float,
        class_balance: bool,
        speaker_centre: str | None,
        speaker_rank: int,
        one_mood_share: float,
        window_s: float,
        model: str | None,
        encoder_layers: int | None,
        test_model: str | None,
        seed: int,
    ):
        super().__init__()
        self.corpora_cfg = dict(corpora)
        self.train_views = tuple(train_views)
        self.eval_view = eval_view
        self.time_pooling = time_pooling
        self.gate = SpeechGate(**gate)
        self.batch_size = batch_size
        self.fold, self.num_folds, self.split_seed = fold, num_folds, split_seed
        self.test_corpus = test_corpus
        self.agreement_weight = agreement_weight
        self.corpus_balance = corpus_balance
        self.class_balance = class_balance
        self.speaker_rank = speaker_rank
        self.one_mood_share = one_mood_share
        self.seed = seed
        self.subspace: SpeakerSubspace | None = None
        if speaker_centre is not None and speaker_centre not in CENTRES:
            raise DataError(
                f"speaker_centre must be null or one of {sorted(CENTRES)}, got {speaker_centre!r}"
            )
        self.speaker_centre = speaker_centre
        self.centre: np.ndarray | None = None
        self.window_s = window_s
        self.model_path = model
        self.encoder_layers = encoder_layers
        self.test_model = test_model
        self.test_fs: FeatureSet | None = None
        self.labels = list(EMOTIONS)
        self.split: dict[str, list[str]] = {}
        self.datasets: dict[str, PooledDataset] = {}
        self.fs: FeatureSet | None = None
        self.preprocessing = PreprocessOptions()  # the bundled model's; features come through it

    def feature_set(self) -> FeatureSet:
        if self.fs is None:
            views = tuple(dict.fromkeys((self.eval_view, *self.train_views)))
            fs = load_feature_set(self.corpora_cfg, views, self.model_path, self.time_pooling)
            self.fs = fs.first_layers(self.encoder_layers)
        return self.fs

    def test_feature_set(self) -> FeatureSet | None:
        """The corpora's clip windows through ``test_model`` (cut to ``encoder_layers``); None without one."""
        if self.test_model is None:
            return None
        if self.test_fs is None:
            fs = load_feature_set(self.corpora_cfg, ("clip",), self.test_model).first_layers(
                self.encoder_layers
            )
            if [u.path for u in fs.utterances] != [u.path for u in self.feature_set().utterances]:
                raise DataError(
                    f"test_model {self.test_model}: its corpora do not match the training features'"
                )
            self.test_fs = fs
        return self.test_fs

    def classes(self) -> list[int]:
        """Classes the heads are trained on: every class of the training corpora (each corpus masked to its own
        classes); under leave-one-corpus-out the held-out corpus adds none."""
        corpora = [c for c in self.feature_set().corpora if c.name != self.test_corpus]
        return sorted(set().union(*(set(c.classes) for c in corpora)))

    def speakers_by_corpus(self) -> dict[str, list[str]]:
        fs = self.feature_set()
        return {c.name: c.speakers for c in fs.corpora}

    def make_split(self) -> dict[str, list[str]]:
        by_corpus = self.speakers_by_corpus()
        if self.test_corpus is not None:
            if self.test_corpus not in by_corpus:
                raise DataError(f"test_corpus {self.test_corpus!r} is not one of {sorted(by_corpus)}")
            train = [s for name, sp in by_corpus.items() if name != self.test_corpus for s in sp]
            return {"train": sorted(train), "test": by_corpus[self.test_corpus]}
        if self.fold is None:
            return {"train": sorted(s for sp in by_corpus.values() for s in sp), "test": []}
        if not 0 <= self.fold < self.num_folds:
            raise DataError(f"fold must be in 0..{self.num_folds - 1}, got {self.fold}")
        folds = speaker_folds(by_corpus, self.num_folds, self.split_seed)
        test = folds[self.fold]
        return {"train": sorted(s for i, f in enumerate(folds) if i != self.fold for s in f), "test": test}

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        fs = self.feature_set()
        self.split = self.make_split()
        rows = fs.rows(self.split["train"], self.train_views, gate=self.gate)
        if not len(rows):
            raise DataError("no training windows (check corpora, views and the speech gate)")
        allowed = fs.allowed[fs.corpus[rows]].copy()
        agreement = fs.utt_agreement[fs.utt[rows]]
        weights = (1.0 - self.agreement_weight) + self.agreement_weight * agreement
        weights = weights * self.corpus_weights(fs.corpus[rows], fs.utt_label[fs.utt[rows]])
        centres = None
        if self.speaker_centre is not None:
            self.centre = fs.speaker_means(CENTRES[self.speaker_centre])
            if self.speaker_centre == "subspace":
                view = fs.views.index(self.eval_view)
                self.subspace = fit_speaker_subspace(fs, self.split["train"], self.speaker_rank, view)
                self.centre = self.subspace.centre(self.centre)
            if self.speaker_centre == "session":
                centres = SessionCentres(fs, self.split["train"], self.one_mood_share, self.seed)
            else:
                centre = self.centre
                centres = lambda rows: centre[fs.centre_index(rows)]  # noqa: E731
        self.datasets["train"] = PooledDataset(fs, rows, allowed, weights.astype(np.float32), centres)
        log.info("training windows: %d from %d speakers", len(rows), len(self.split["train"]))

    def corpus_weights(self, corpus: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per training window ``(corpus index, label)``: with ``class_balance`` every class of a corpus weighs the
        same within it (a class only one corpus holds, RAVDESS's calm, then weighs what it does there, instead of
        being lifted by global inverse-frequency class weights); times ``(mean windows per corpus / this
        corpus's windows) ** corpus_balance``, so that at 1 every corpus weighs the same in the loss."""
        weights = np.ones(len(corpus), np.float64)
        if self.class_balance:
            for c in np.unique(corpus):
                mine = corpus == c
                classes, counts = np.unique(labels[mine], return_counts=True)
                per_class = dict(zip(classes, mine.sum() / (len(classes) * counts), strict=True))
                weights[mine] = [per_class[y] for y in labels[mine]]
        counts = np.bincount(corpus, minlength=int(corpus.max()) + 1).astype(np.float64)
        present = counts[counts > 0]
        factor = np.ones_like(counts)
        factor[counts > 0] = (present.mean() / present) ** self.corpus_balance
        return weights * factor[corpus]

    def split_info(self) -> dict:
        return {
            "speakers": self.split,
            "fold": self.fold,
            "num_folds": self.num_folds if self.fold is not None else None,
            "split_seed": self.split_seed,
            "test_corpus": self.test_corpus,
            "train_views": list(self.train_views),
            "encoder_layers": self.encoder_layers,
            "eval_view": self.eval_view,
            "time_pooling": self.time_pooling,
            "gate": asdict(self.gate),
            "num_windows": {k: len(v) for k, v in self.datasets.items()},
        }

    def train_labels(self) -> list[int]:
        return self.datasets["train"].labels.tolist()

    def train_dataloader(self) -> DataLoader:
        ds = self.datasets["train"]
        return DataLoader(
            ds,
            batch_size=self.batch_size,
            shuffle=True,
            drop_last=len(ds) > self.batch_size,
            collate_fn=_first,
            num_workers=0,
        )
