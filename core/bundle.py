"""Train the bundled default head on frozen Whisper-base features: ``python -m core.bundle``.

Protocol (speaker independent, no tuning on held-out actors 21–24, which are not even on disk here):

1. Pooled per-layer hidden states of every clip of actors 1–20 come from ``core.feature_cache`` (whole
   trimmed clip, and ``--crops`` evenly spaced windows of ``window_s`` seconds per clip).
2. Hyper-parameters are compared by 5-fold cross-validation by actor (4 actors per fold, never in
   training): ``--search`` runs the grid in ``SEARCH`` and prints/saves mean ± std of accuracy, macro-F1,
   weighted-F1 and UAR, for single windows and whole clips.
3. The chosen setting (``CHOSEN``) is cross-validated once more for the published numbers, then trained
   on all of actors 1–20 and written to ``export/bundled/`` (head weights + ``model.json``).

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

from core.backbones import SpeechBackbone
from core.data import EMOTIONS
from core.feature_cache import Crop, FeatureCache, crops_for, packaged_backbone, ravdess_files
from core.losses import FocalLoss, class_weights_from_labels
from core.metrics import confusion_matrix, metrics_from_confusion
from core.model import EmotionClassifier
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
    speaker_norm: standardise pooled features per speaker with that speaker's own clips (experiment only).
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


def speaker_standardise(x: np.ndarray, actors: np.ndarray) -> np.ndarray:
    """Per-speaker z-score of pooled features ``[N, L+1, H]`` using only that speaker's (unlabelled) clips."""
    out = np.empty_like(x)
    for actor in np.unique(actors):
        rows = actors == actor
        mean, std = x[rows].mean(axis=0), x[rows].std(axis=0)
        out[rows] = (x[rows] - mean) / (std + 1e-5)
    return out


class _ShapeOnly(SpeechBackbone):
    """Stand-in backbone with the encoder's sizes, so ``EmotionClassifier`` builds just its head."""

    def __init__(self, hidden_size: int, num_layers: int):
        super().__init__()
        self.hidden_size, self.num_layers = hidden_size, num_layers


def new_head(cfg: HeadConfig, hidden_size: int, num_layers: int) -> EmotionClassifier:
    """An ``EmotionClassifier`` without encoder weights; ``classify_pooled`` is all that is trained."""
    model = EmotionClassifier(
        _ShapeOnly(hidden_size, num_layers),
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
        x = speaker_standardise(x, np.tile(data.actors[rows], len(names)))
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


def _centre(x: np.ndarray, stats_rows: np.ndarray, scale: bool) -> np.ndarray:
    """Subtract the mean (and divide by the std when ``scale``) of ``x[stats_rows]`` from all of ``x``."""
    ref = x[stats_rows]
    out = x - ref.mean(axis=0)
    return out / (ref.std(axis=0) + 1e-5) if scale else out


def speaker_norm_study(
    cfg: HeadConfig, data: Dataset, counts=(5, 10, 20, 60), repeats: int = 5
) -> list[dict]:
    """Per-speaker normalisation when only ``k`` unlabelled clips of the test speaker are available.

    Training speakers are normalised with all their clips; each test speaker with the statistics of ``k``
    random clips of their own (repeated ``repeats`` times), then all their clips are classified whole.
    Both z-scoring and mean-only centring are measured. Optimistic for live use: the k clips are drawn
    from an emotion-balanced set, a live session's history is not.
    """
    rng = np.random.default_rng(cfg.seed)
    x, y, actors = data.feats["full"], data.labels, data.actors
    rows = []
    for scale in (True, False):
        confusions = {k: [] for k in counts}
        for fold in actor_folds():
            train = [a for a in np.unique(actors) if a not in fold]
            xs = np.concatenate(
                [_centre(x[actors == a], np.ones((actors == a).sum(), bool), scale) for a in train]
            )
            model = train_head(cfg, xs.astype(np.float32), np.concatenate([y[actors == a] for a in train]))
            for k in counts:
                true, pred = [], []
                for actor in fold:
                    xa, ya = x[actors == actor], y[actors == actor]
                    for _ in range(repeats if k < len(ya) else 1):
                        pick = np.zeros(len(ya), bool)
                        pick[rng.choice(len(ya), min(k, len(ya)), replace=False)] = True
                        pred += list(
                            predict_proba(model, _centre(xa, pick, scale).astype(np.float32)).argmax(1)
                        )
                        true += list(ya)
                confusions[k].append(metrics_from_confusion(confusion_matrix(true, pred, len(LABELS))))
        for k, scores in confusions.items():
            row = {"normalisation": "z-score" if scale else "mean-only", "clips": k}
            for name in scores[0]:
                row[name] = [
                    round(float(np.mean([s[name] for s in scores])), 4),
                    round(float(np.std([s[name] for s in scores])), 4),
                ]
            log.info("speaker norm %s", row)
            rows.append(row)
    return rows


PROTOCOL = (
    "RAVDESS speech, actors 1-20 (1200 clips, 8 emotions), 5-fold cross-validation by actor (actors 1-4, "
    "5-8, ... held out in turn; no clip of a test actor in training, no test-speaker statistics). "
    "'window': every {window_s:g} s window (3 evenly spaced per silence-trimmed clip; whole clip if shorter) "
    "scored on its own; 'clip': the whole trimmed clip in one pass. Mean and std over the 5 folds. "
    "Frozen whisper-base encoder; only the head is trained. Actors 21-24 never used."
)
REBUILD = (
    "python -m core.bundle  (features: python -m core.feature_cache; search: python -m core.bundle --search)"
)


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


def write_bundle(
    model: EmotionClassifier,
    cfg: HeadConfig,
    result: dict,
    out: Path,
    backbone_id: str,
    references: list[dict],
) -> Path:
    """``head.safetensors`` + ``model.json`` (+ ``confusion.png``) into ``out``."""
    from safetensors.torch import save_file

    from core.metrics import plot_confusion

    out.mkdir(parents=True, exist_ok=True)
    save_file(head_state(model), str(out / "head.safetensors"))
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
        (args.out / "speaker_norm.json").write_text(json.dumps(rows, indent=1) + "\n")
        return
    result = cross_validate(CHOSEN, data)
    log.info("%s", summary_line("chosen", result))
    names = [n for w, c in CHOSEN.train_crops for n in crop_names(w, c)]
    everyone = np.ones(len(data.labels), dtype=bool)
    model = train_head(CHOSEN, _features(data, names, everyone, CHOSEN), np.tile(data.labels, len(names)))
    write_bundle(model, CHOSEN, result, args.out, backbone_id, reference_predictions(model, data))


if __name__ == "__main__":
    main()
