"""Train the bundled default head on frozen Whisper-base features: ``python -m core.bundle``.

Protocol (speaker independent, no tuning on held-out actors 21–24, which are not even on disk here):

1. Pooled per-layer hidden states of every clip of actors 1–20 come from ``core.feature_cache`` (whole
   trimmed clip, and ``--crops`` evenly spaced windows of ``window_s`` seconds per clip).
2. Hyper-parameters are compared by 5-fold cross-validation by actor (4 actors per fold, never in
   training): ``--search`` runs the grid in ``SEARCH`` and prints/saves mean ± std of accuracy, macro-F1,
   weighted-F1 and UAR, for single windows and whole clips.
3. The chosen setting (``CHOSEN``) is cross-validated once more for the published numbers, then trained
   on all of actors 1–20 and written to ``export/bundled/`` (head weights + ``model.json``).
4. Per-speaker normalisation is measured (``speaker_norm_study``: histories that help and that hurt), and two
   more heads are written beside the first: one on features centred on each speaker's mean
   (``head_speaker_norm.safetensors``, for ``--speaker-norm``) and one centred on their calm baseline
   (``head_speaker_baseline.safetensors``, for ``--speaker-baseline``; both in ``emotion-live`` /
   ``emotion-score``).

Only the head (layer weights + MLP) is trained; the encoder stays as pretrained, so the bundle is small
and the exported model is the encoder from the pip packages + this head (``export/default_model.py``).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from core.data import EMOTIONS
from core.feature_cache import Crop, FeatureCache, crops_for, packaged_backbone, ravdess_files
from core.losses import FocalLoss, class_weights_from_labels
from core.metrics import confusion_matrix, metrics_from_confusion
from core.model import EmotionClassifier, ShapeOnlyBackbone
from realtime.audio import PreprocessOptions

log = logging.getLogger(__name__)

LABELS = EMOTIONS
"""RAVDESS emotion codes 01..08 in order (defined once, in core.data)."""
WEIGHTS = "whisper-base"
NUM_FOLDS = 5
BUNDLE_DIR = Path(__file__).resolve().parents[1] / "export" / "bundled"
DEFAULT_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "ravdess-16k"
_OFF = -30.0
"""Layer logit for layers switched off when one layer is selected: softmax weight e^-30 ≈ 1e-13."""


@dataclass(frozen=True)
class HeadConfig:
    """Everything a head training run depends on.

    layer: None = learnt softmax weights over all hidden states; an int = that hidden state only
        (0 = embeddings, 6 = last layer), expressed as fixed one-hot layer logits so the model format
        (``layer_pooling="weighted"``) is unchanged.
    train_crops: ``(window_s or None, count)`` crop sets used as training examples (augmentation).
    window_s: the streaming window; single-window metrics use the ``window_s`` crops.
    speaker_norm: centre pooled features per speaker with the mean of all that speaker's clips (an upper
        bound: the runtime only has a running mean of what it has heard; see ``speaker_norm_study``).
    """

    layer: int | None = None
    hidden_dims: tuple[int, ...] = (512, 256)
    dropout: float = 0.3
    epochs: int = 40
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 1e-2
    focal_gamma: float = 1.0
    label_smoothing: float = 0.05
    train_crops: tuple[tuple[float | None, int], ...] = ((None, 1),)
    window_s: float = 3.0
    crops: int = 3
    speaker_norm: bool = False
    seed: int = 0


CHOSEN = HeadConfig(dropout=0.5)
"""Setting of the bundled head: the best ``--search`` result by mean single-window macro-F1
(export/bundled/search.json). Differences between the settings tried (±0.01) are well inside the
fold-to-fold spread (±0.07), so this is "a good setting", not a significantly better one."""


@dataclass
class Dataset:
    """Cached features of actors 1–20. feats[crop name] ``[N, L+1, H]``; labels, actors ``[N]``."""

    feats: dict[str, np.ndarray]
    labels: np.ndarray
    actors: np.ndarray
    files: list[str] = field(default_factory=list)


def parse_name(path: Path) -> tuple[int, int]:
    """RAVDESS file name → (label index 0..7, actor number)."""
    parts = path.stem.split("-")
    return int(parts[2]) - 1, int(parts[6])


def load_dataset(cache: FeatureCache, data_dir: Path, crop_sets: list[list[Crop]]) -> Dataset:
    """Features for every file of actors 1–20 and every crop in ``crop_sets`` (from the cache)."""
    files = ravdess_files(data_dir)
    crops = [c for crop_set in crop_sets for c in crop_set]
    stacked = np.stack([cache.get(f, crops) for f in files])  # [N, crops, L+1, H]
    feats = {c.name: stacked[:, i] for i, c in enumerate(crops)}
    labels, actors = zip(*(parse_name(f) for f in files), strict=True)
    return Dataset(feats, np.array(labels), np.array(actors), [f.name for f in files])


def actor_folds(num_folds: int = NUM_FOLDS, actors: range = range(1, 21)) -> list[list[int]]:
    """Consecutive actor groups (1–4, 5–8, ...): each has two men (odd) and two women (even)."""
    actors = list(actors)
    size = len(actors) // num_folds
    return [actors[i * size : (i + 1) * size] for i in range(num_folds)]


def crop_names(window_s: float | None, count: int) -> list[str]:
    return [c.name for c in crops_for(window_s, count)]


def new_head(cfg: HeadConfig, hidden_size: int, num_layers: int) -> EmotionClassifier:
    """An ``EmotionClassifier`` without encoder weights; ``classify_pooled`` is all that is trained."""
    model = EmotionClassifier(
        ShapeOnlyBackbone(hidden_size, num_layers),
        len(LABELS),
        cfg.hidden_dims,
        cfg.dropout,
        layer_pooling="weighted",
    )
    if cfg.layer is not None:
        with torch.no_grad():
            model.layer_logits.fill_(_OFF)
            model.layer_logits[cfg.layer] = 0.0
        model.layer_logits.requires_grad_(False)
    return model


def train_head(cfg: HeadConfig, x: np.ndarray, y: np.ndarray) -> EmotionClassifier:
    """Fit a head on pooled features ``x [N, L+1, H]`` with labels ``y [N]``: AdamW, cosine decay,
    focal loss with inverse-frequency class weights and label smoothing (the project's training loss)."""
    torch.manual_seed(cfg.seed)
    model = new_head(cfg, x.shape[2], x.shape[1] - 1)
    loss_fn = FocalLoss(
        cfg.focal_gamma, class_weights_from_labels(y.tolist(), len(LABELS)), cfg.label_smoothing
    )
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    steps_per_epoch = int(np.ceil(len(y) / cfg.batch_size))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, cfg.lr, total_steps=cfg.epochs * steps_per_epoch)
    xt, yt = torch.from_numpy(x).float(), torch.from_numpy(y).long()
    model.train()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(yt))
        for i in range(steps_per_epoch):
            idx = order[i * cfg.batch_size : (i + 1) * cfg.batch_size]
            if len(idx) < 2:  # BatchNorm needs two examples
                continue
            loss = loss_fn(model.classify_pooled(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return model.eval()


@torch.no_grad()
def predict_proba(model: EmotionClassifier, x: np.ndarray) -> np.ndarray:
    """``[N, L+1, H]`` → class probabilities ``[N, C]``."""
    return torch.softmax(model.classify_pooled(torch.from_numpy(x).float()), dim=-1).numpy()


def _features(data: Dataset, names: list[str], rows: np.ndarray, cfg: HeadConfig) -> np.ndarray:
    """Stack crop sets ``names`` for ``rows`` → ``[len(names) * rows, L+1, H]`` (crop-major)."""
    x = np.concatenate([data.feats[n][rows] for n in names])
    if cfg.speaker_norm:
        x = speaker_centred(x, np.tile(data.actors[rows], len(names)))
    return x


def run_fold(cfg: HeadConfig, data: Dataset, test_actors: list[int]) -> dict[str, np.ndarray]:
    """Train on the other actors, predict the test actors. Returns confusion matrices per eval mode."""
    train = ~np.isin(data.actors, test_actors)
    test = ~train
    names = [n for w, c in cfg.train_crops for n in crop_names(w, c)]
    x = _features(data, names, train, cfg)
    y = np.tile(data.labels[train], len(names))
    model = train_head(cfg, x, y)
    y_test = data.labels[test]
    windows = crop_names(cfg.window_s, cfg.crops)
    p_windows = predict_proba(model, _features(data, windows, test, cfg))
    p_clip = predict_proba(model, _features(data, ["full"], test, cfg))
    k = len(LABELS)
    return {
        # Every window of every test clip scored on its own (what the live monitor sees).
        "window": confusion_matrix(np.tile(y_test, len(windows)), p_windows.argmax(1), k),
        # Whole trimmed clip in one pass (what batch scoring of a file does).
        "clip": confusion_matrix(y_test, p_clip.argmax(1), k),
    }


def cross_validate(cfg: HeadConfig, data: Dataset) -> dict:
    """k-fold by actor: per-mode mean ± std over folds of each metric, plus the summed confusion matrix."""
    per_fold = [run_fold(cfg, data, fold) for fold in actor_folds()]
    out = {}
    for mode in per_fold[0]:
        scores = [metrics_from_confusion(f[mode]) for f in per_fold]
        out[mode] = {
            name: {
                "mean": float(np.mean([s[name] for s in scores])),
                "std": float(np.std([s[name] for s in scores])),
            }
            for name in scores[0]
        }
        out[mode]["confusion_matrix"] = np.sum([f[mode] for f in per_fold], axis=0).tolist()
    return out


SEARCH = {
    "layer": [None, 2, 3, 4],
    "dropout": [0.3, 0.5],
    "hidden_dims": [(512, 256), (256, 128)],
    "train_crops": [((None, 1),), ((None, 1), (3.0, 3))],
    "window_s": [3.0, 2.0],
    "speaker_norm": [False, True],
}
"""Grid explored one axis at a time (greedy, in this order), each step keeping the best value so far.
``window_s`` and ``speaker_norm`` are reported, not selected: a shorter window always scores lower (less
speech per decision) and is a latency choice; speaker statistics are not available for a single clip."""
REPORT_ONLY = ("window_s", "speaker_norm")


def summary_line(name: str, result: dict) -> str:
    w, c = result["window"], result["clip"]
    return (
        f"{name:45s} window acc {w['accuracy']['mean']:.3f}±{w['accuracy']['std']:.3f} "
        f"F1 {w['macro_f1']['mean']:.3f}±{w['macro_f1']['std']:.3f} | clip acc {c['accuracy']['mean']:.3f}"
        f"±{c['accuracy']['std']:.3f} F1 {c['macro_f1']['mean']:.3f}±{c['macro_f1']['std']:.3f}"
    )


def search(data: Dataset, base: HeadConfig, out_path: Path) -> HeadConfig:
    """Greedy one-axis-at-a-time search by k-fold macro-F1 on single windows; speaker_norm is reported but
    never selected (the bundled model must work on a single clip of an unknown speaker)."""
    results, best, seen = [], base, {}
    for axis, values in SEARCH.items():
        scored = []
        for value in values:
            cfg = replace(best, **{axis: value})
            if axis == "window_s":
                # Train on whole clips + crops of the window being evaluated.
                cfg = replace(cfg, train_crops=((None, 1), (value, cfg.crops)))
            needed = [n for w, c in cfg.train_crops for n in crop_names(w, c)] + crop_names(
                cfg.window_s, cfg.crops
            )
            if any(n not in data.feats for n in needed):
                log.info("skip %s=%s: crops not cached", axis, value)
                continue
            key = json.dumps(asdict(cfg), sort_keys=True)
            if key in seen:  # the best value of the previous axis: already measured
                scored.append((seen[key]["window"]["macro_f1"]["mean"], cfg))
                continue
            start = time.time()
            result = seen[key] = cross_validate(cfg, data)
            log.info("%s  (%.0f s)", summary_line(f"{axis}={value}", result), time.time() - start)
            results.append({"config": asdict(cfg), "result": result})
            scored.append((result["window"]["macro_f1"]["mean"], cfg))
            out_path.write_text(json.dumps(results, indent=1))
        if axis not in REPORT_ONLY and scored:
            best = max(scored, key=lambda s: s[0])[1]
    log.info("best: %s", best)
    return best


def speaker_centred(x: np.ndarray, actors: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Each speaker's pooled features ``[N, L+1, H]`` minus that speaker's own mean (mean-only centring, what
    the runtime does with its running per-speaker mean). ``reference`` ``[N]`` bool: only those rows of each
    speaker make the mean (None: all of them)."""
    out = np.empty_like(x)
    for actor in np.unique(actors):
        rows = actors == actor
        mean_rows = rows if reference is None else rows & reference
        out[rows] = x[rows] - x[mean_rows].mean(axis=0)
    return out


def train_speaker_norm_head(cfg: HeadConfig, x: np.ndarray, y: np.ndarray, actors: np.ndarray):
    """A head for speaker-centred features: every training speaker centred with all of their own clips."""
    return train_head(cfg, speaker_centred(x, actors).astype(np.float32), y)


BASELINE_EMOTIONS = (0, 1)
"""Label indices of a calm baseline recording: neutral and calm (what a speaker sounds like at rest)."""
BASELINE_CLIPS = 5
"""Baseline clips per test speaker in the study: about 10 s of calm speech, what a user records once."""


def train_baseline_head(cfg: HeadConfig, x: np.ndarray, y: np.ndarray, actors: np.ndarray):
    """A head for features centred on each speaker's calm baseline (the mean of their neutral and calm clips).
    Unlike the running mean, a baseline recorded once does not drift towards a mood that lasts, so that mood
    stays visible."""
    calm = np.isin(y, BASELINE_EMOTIONS)
    return train_head(cfg, speaker_centred(x, actors, calm).astype(np.float32), y)


NORM_MIN_CLIPS = 5
"""Clips (utterances) of a speaker the running mean needs before the centred head takes over."""


def _history_scenarios(ya: np.ndarray, rng: np.random.Generator, repeats: int) -> dict[str, list[np.ndarray]]:
    """Index sets of a test speaker's clips used as that speaker's unlabelled history (the mean's input).

    balanced-k: k random clips (the emotion mix of RAVDESS: neutral 1/15, every other emotion 2/15).
    low-arousal: only the speaker's neutral and calm clips (a calm conversation).
    one-emotion-E: only clips of emotion E (a history of one mood, judging clips of every mood).
    The worst case, every clip judged against a history of its own mood, is ``own-emotion`` in the study.
    """
    out: dict[str, list[np.ndarray]] = {}
    for k in (5, 10, 20):
        out[f"balanced-{k}"] = [rng.choice(len(ya), k, replace=False) for _ in range(repeats)]
    out["balanced-all"] = [np.arange(len(ya))]
    out["low-arousal"] = [np.flatnonzero(np.isin(ya, BASELINE_EMOTIONS))]
    for e, name in enumerate(LABELS):
        out[f"one-emotion-{name}"] = [np.flatnonzero(ya == e)]
    return out


def speaker_norm_study(cfg: HeadConfig, data: Dataset, repeats: int = 5) -> list[dict]:
    """How per-speaker mean centring does on unseen speakers, with histories that help and that hurt.

    Per fold (by actor): a plain head and a centred head (``train_speaker_norm_head``) are trained on the
    other actors. Each test speaker's clips (whole, trimmed) are classified by the centred head after
    subtracting the mean of a "history" of their own unlabelled clips (``_history_scenarios``), and by the
    runtime's causal rule ("running"): clips in random order, clip i centred with the mean of clips 0..i,
    the plain head until ``NORM_MIN_CLIPS`` clips were heard; and with a "calm baseline" (``BASELINE_CLIPS``
    neutral/calm clips as an enrolment, the baseline head, scored on the remaining clips, next to the plain head
    on the same clips). "centred" uses the centred head alone,
    "blend" the mean of its probabilities and the plain head's (the runtime's default: it gains less
    from a balanced history and loses far less from a one-sided one). Metrics: mean ± std over folds.
    """
    rng = np.random.default_rng(cfg.seed)
    x, y, actors = data.feats["full"], data.labels, data.actors
    confusions: dict[str, list[np.ndarray]] = {}

    def add(name: str, fold_i: int, true, pred) -> None:
        per_fold = confusions.setdefault(name, [np.zeros((len(LABELS),) * 2, int) for _ in actor_folds()])
        per_fold[fold_i] += confusion_matrix(list(true), list(pred), len(LABELS))

    for fold_i, fold in enumerate(actor_folds()):
        train = ~np.isin(actors, fold)
        plain = train_head(cfg, x[train], y[train])
        centred = train_speaker_norm_head(cfg, x[train], y[train], actors[train])
        baseline = train_baseline_head(cfg, x[train], y[train], actors[train])
        for actor in fold:
            xa, ya = x[actors == actor], y[actors == actor]
            p_plain = predict_proba(plain, xa)
            add("none (single clip, plain head)", fold_i, ya, p_plain.argmax(1))
            # Calm baseline: BASELINE_CLIPS neutral/calm clips recorded once; scored on the other clips only.
            calm = np.flatnonzero(np.isin(ya, BASELINE_EMOTIONS))
            for _ in range(repeats):
                enrol = rng.choice(calm, BASELINE_CLIPS, replace=False)
                rest = np.setdiff1d(np.arange(len(ya)), enrol)
                p_base = predict_proba(baseline, (xa[rest] - xa[enrol].mean(axis=0)).astype(np.float32))
                add("calm baseline / centred", fold_i, ya[rest], p_base.argmax(1))
                add("calm baseline / blend", fold_i, ya[rest], (p_base + p_plain[rest]).argmax(1))
                add("calm baseline: plain head, same clips", fold_i, ya[rest], p_plain[rest].argmax(1))
            for name, histories in _history_scenarios(ya, rng, repeats).items():
                for rows in histories:
                    p_centred = predict_proba(centred, (xa - xa[rows].mean(axis=0)).astype(np.float32))
                    add(f"{name} / centred", fold_i, ya, p_centred.argmax(1))
                    add(f"{name} / blend", fold_i, ya, (p_centred + p_plain).argmax(1))
            # Every clip judged against a history of its own mood only (a speaker who stayed in one mood).
            p_own = np.zeros_like(p_plain)
            for e in np.unique(ya):
                rows = ya == e
                p_own[rows] = predict_proba(centred, (xa[rows] - xa[rows].mean(axis=0)).astype(np.float32))
            add("own-emotion / centred", fold_i, ya, p_own.argmax(1))
            add("own-emotion / blend", fold_i, ya, (p_own + p_plain).argmax(1))
            for _ in range(repeats):
                order = rng.permutation(len(ya))
                running = np.cumsum(xa[order], axis=0) / np.arange(1, len(ya) + 1)[:, None, None]
                p_centred = predict_proba(centred, (xa[order] - running).astype(np.float32))
                p_first = p_plain[order]
                ready = (np.arange(len(ya)) + 1 >= NORM_MIN_CLIPS)[:, None]
                add("running / centred", fold_i, ya[order], np.where(ready, p_centred, p_first).argmax(1))
                p_blend = np.where(ready, (p_centred + p_first) / 2, p_first)
                add("running / blend", fold_i, ya[order], p_blend.argmax(1))
    rows = []
    for name, per_fold in confusions.items():
        scores = [metrics_from_confusion(c) for c in per_fold]
        row = {"history": name}
        for metric in scores[0]:
            values = [s[metric] for s in scores]
            row[metric] = [round(float(np.mean(values)), 4), round(float(np.std(values)), 4)]
        row["recall"] = dict(
            zip(LABELS, np.round(np.diag(sum(per_fold)) / sum(per_fold).sum(1), 3).tolist(), strict=True)
        )
        log.info("speaker norm %-36s acc %.3f F1 %.3f", name, row["accuracy"][0], row["macro_f1"][0])
        rows.append(row)
    return rows


PROTOCOL = (
    "RAVDESS speech, actors 1-20 (1200 clips, 8 emotions), 5-fold cross-validation by actor (actors 1-4, "
    "5-8, ... held out in turn; no clip of a test actor in training, no test-speaker statistics). "
    "'window': every {window_s:g} s window (3 evenly spaced per silence-trimmed clip; whole clip if shorter) "
    "scored on its own; 'clip': the whole trimmed clip in one pass. Mean and std over the 5 folds. "
    "Frozen whisper-base encoder; only the head is trained. Actors 21-24 never used."
)
REBUILD = "python -m core.bundle  (all three heads, speaker_norm.json; features: python -m core.feature_cache; search: python -m core.bundle --search)"


def head_state(model: EmotionClassifier) -> dict[str, torch.Tensor]:
    """The trained part only (layer logits, MLP, BatchNorm statistics): never encoder weights."""
    return {
        k: v.detach().contiguous() for k, v in model.state_dict().items() if not k.startswith("backbone.")
    }


REFERENCE_FILES = (
    "Actor_01/03-01-05-02-01-01-01.flac",
    "Actor_10/03-01-04-01-02-02-10.flac",
    "Actor_17/03-01-03-02-01-01-17.flac",
    "Actor_20/03-01-01-01-02-01-20.flac",
)
"""Clips whose bundled-model probabilities are stored in model.json, so a test can check the full model on raw
audio against the cached-feature path the head was trained with."""


def reference_predictions(model: EmotionClassifier, data: Dataset) -> list[dict]:
    """Whole-clip probabilities of ``REFERENCE_FILES`` from cached features."""
    refs = []
    for rel in REFERENCE_FILES:
        row = data.files.index(Path(rel).name)
        probs = predict_proba(model, data.feats["full"][row : row + 1])[0]
        refs.append({"file": rel, "crop": "full", "probs": [round(float(p), 6) for p in probs]})
    return refs


SPEAKER_NORM_SUMMARY = (
    "none (single clip, plain head)",
    "balanced-10 / blend",
    "balanced-all / blend",
    "low-arousal / blend",
    "own-emotion / blend",
    "running / blend",
    "balanced-all / centred",
    "low-arousal / centred",
    "own-emotion / centred",
    "running / centred",
    "calm baseline: plain head, same clips",
    "calm baseline / blend",
    "calm baseline / centred",
)
"""Rows of the speaker-normalisation study copied into model.json (the full table is speaker_norm.json)."""


def speaker_norm_info(study: list[dict]) -> dict:
    """model.json's ``speaker_norm``: runtime defaults, protocol and the study's key figures (incl. the worst)."""
    by_name = {row["history"]: row for row in study}
    one_emotion = [
        row for row in study if row["history"].startswith("one-emotion") and "blend" in row["history"]
    ]
    worst = min(one_emotion, key=lambda row: row["accuracy"][0]) if one_emotion else None
    figures = {
        name: {"accuracy": by_name[name]["accuracy"], "macro_f1": by_name[name]["macro_f1"]}
        for name in SPEAKER_NORM_SUMMARY
        if name in by_name
    }
    if worst is not None:
        figures[f"worst one-emotion history: {worst['history']}"] = {
            "accuracy": worst["accuracy"],
            "macro_f1": worst["macro_f1"],
        }
    return {
        "default_mode": "blend",
        "min_clips": NORM_MIN_CLIPS,
        "baseline_clips": BASELINE_CLIPS,
        "protocol": (
            "5-fold by actor on actors 1-20; whole clips of each unseen test speaker, centred with the mean "
            "pooled features of an unlabelled history of that speaker's own clips, or of a calm baseline "
            f"({BASELINE_CLIPS} neutral/calm clips, scored on the others). [mean, std] over folds. "
            "Full table: speaker_norm.json (python -m core.bundle --speaker-norm-study)."
        ),
        "results": figures,
    }


def write_bundle(
    model: EmotionClassifier,
    cfg: HeadConfig,
    result: dict,
    out: Path,
    backbone_id: str,
    references: list[dict],
    speaker_norm: tuple[dict[str, EmotionClassifier], list[dict]] | None = None,
) -> Path:
    """``head.safetensors`` + ``model.json`` (+ ``confusion.png``) into ``out``; with ``speaker_norm`` (the
    speaker heads by file name and the study rows) also those head files and ``speaker_norm.json``."""
    from safetensors.torch import save_file

    from core.metrics import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    save_file(head_state(model), str(out / "head.safetensors"))
    if speaker_norm is not None:
        for file_name, head in speaker_norm[0].items():
            save_file(head_state(head), str(out / file_name))
        (out / "speaker_norm.json").write_text(json.dumps(speaker_norm[1], indent=1) + "\n")
    metrics = {
        mode: {name: round(v["mean"], 4) for name, v in result[mode].items() if name != "confusion_matrix"}
        for mode in result
    }
    metrics_std = {
        mode: {name: round(v["std"], 4) for name, v in result[mode].items() if name != "confusion_matrix"}
        for mode in result
    }
    info = {
        "labels": list(LABELS),
        "sample_rate": 16_000,
        "window_s": cfg.window_s,
        "hop_s": 0.5,
        "weights": WEIGHTS,
        "backbone": f"{WEIGHTS} (CTranslate2 pip packages, frozen) id {backbone_id}",
        "num_classes": len(LABELS),
        "hidden_dims": list(cfg.hidden_dims),
        "dropout": cfg.dropout,
        "layer_pooling": "weighted",
        "layer": cfg.layer,
        "layer_weights": [round(float(w), 4) for w in model.layer_weights().detach()],
        "preprocessing": PreprocessOptions().to_dict(),
        "metrics": {"mean": metrics, "std": metrics_std, "folds": NUM_FOLDS},
        "confusion_matrix": {mode: result[mode]["confusion_matrix"] for mode in result},
        "protocol": PROTOCOL.format(window_s=cfg.window_s),
        "train_config": asdict(cfg),
        "trained_on": "RAVDESS actors 1-20 (all 1200 clips)",
        "rebuild": REBUILD,
        "reference_predictions": references,
    }
    if speaker_norm is not None:
        info["speaker_norm"] = speaker_norm_info(speaker_norm[1])
    (out / "model.json").write_text(json.dumps(info, indent=1) + "\n")
    cm = np.array(result["window"]["confusion_matrix"])
    title = f"{cfg.window_s:g} s windows, 5-fold by actor (actors 1-20)"
    plot_confusion(cm, LABELS, out / "confusion.png", title=title)
    log.info("wrote %s", out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--search", action="store_true", help="run the hyper-parameter search and stop")
    parser.add_argument(
        "--speaker-norm-study",
        action="store_true",
        help="measure per-speaker normalisation from k clips and stop",
    )
    parser.add_argument("--out", type=Path, default=BUNDLE_DIR)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--windows", type=float, nargs="*", default=[3.0], help="cached crop lengths to load")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    backbone, backbone_id = packaged_backbone(WEIGHTS)
    cache = FeatureCache(backbone, backbone_id, PreprocessOptions())
    crop_sets = [crops_for(None, 1)] + [crops_for(w, 3) for w in args.windows]
    data = load_dataset(cache, args.data_dir, crop_sets)
    if args.search:
        search(data, CHOSEN, args.out / "search.json")
        return
    if args.speaker_norm_study:
        rows = speaker_norm_study(CHOSEN, data)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "speaker_norm.json").write_text(json.dumps(rows, indent=1) + "\n")
        return
    result = cross_validate(CHOSEN, data)
    log.info("%s", summary_line("chosen", result))
    study = speaker_norm_study(CHOSEN, data)
    names = [n for w, c in CHOSEN.train_crops for n in crop_names(w, c)]
    everyone = np.ones(len(data.labels), dtype=bool)
    model = train_head(CHOSEN, _features(data, names, everyone, CHOSEN), np.tile(data.labels, len(names)))
    x, y, actors = data.feats["full"], data.labels, data.actors
    speaker_heads = {
        "head_speaker_norm.safetensors": train_speaker_norm_head(CHOSEN, x, y, actors),
        "head_speaker_baseline.safetensors": train_baseline_head(CHOSEN, x, y, actors),
    }
    references = reference_predictions(model, data)
    write_bundle(model, CHOSEN, result, args.out, backbone_id, references, (speaker_heads, study))


if __name__ == "__main__":
    main()
