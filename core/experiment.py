"""``emotion-train task=evaluate`` and ``task=bundle``: the evaluation protocol and the bundled model, run through
the one trainer (``emotion_monitor.core.train.fit``: the same data module, LightningModule, loss and optimiser for every fold).

    emotion-train experiment=head task=evaluate     # k-fold per corpus + leave-one-corpus-out, printed and saved
    emotion-train experiment=head task=bundle       # the same, then train on every speaker, write export/bundled/
"""

from __future__ import annotations

import copy
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from emotion_monitor.core.calibration import calibration_report, format_calibration
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.core.model_card import TITLES
from emotion_monitor.core.paths import BUNDLE_DIR
from emotion_monitor.core.protocol import (
    FoldScores,
    format_deltas,
    format_table,
    score_speakers,
    session_scores,
    summarise,
    variant_deltas,
)

log = logging.getLogger("emotion-train")


def with_overrides(cfg: DictConfig, **overrides: Any) -> DictConfig:
    """A copy of ``cfg`` with dotted keys set (``dataset__fold=2`` sets ``dataset.fold``)."""
    out = copy.deepcopy(cfg)
    for key, value in overrides.items():
        OmegaConf.update(out, key.replace("__", "."), value, merge=False)
    return out


def _fold_scores(cfg: DictConfig, **overrides: Any) -> tuple[FoldScores, Any, Any]:
    """Train one head with ``overrides`` (a fold, a held-out corpus) and score its test speakers:
    ``(scores, trained classifier, data module)``."""
    from emotion_monitor.core.train import fit

    _, module, data = fit(with_overrides(cfg, **overrides), quiet=True)
    fs = data.feature_set()
    scores = score_speakers(
        module.model, fs, data.split["test"], data.gate, data.classes(), data.centre, data.eval_view
    )
    test_fs = data.test_feature_set()
    if test_fs is not None and data.centre is None:  # the same heads on the test model's clip features
        scores.variant = score_speakers(
            module.model, test_fs, data.split["test"], data.gate, data.classes(), view="clip"
        )
    return scores, module.model, data


def cross_validate(cfg: DictConfig) -> list[tuple[FoldScores, Any, Any]]:
    """Speaker k-fold over every corpus of ``cfg.corpora``: one head per fold, scored on that fold's speakers."""
    folds = []
    for fold in range(int(cfg.dataset.num_folds)):
        folds.append(_fold_scores(cfg, dataset__fold=fold, dataset__test_corpus=None))
        log.info("fold %d done", fold)
    return folds


def leave_one_corpus_out(cfg: DictConfig) -> dict[str, tuple[FoldScores, Any, Any]]:
    """Each corpus scored by a head trained on the others (their shared classes only): ``{corpus: (scores, trained
    classifier, data module)}``."""
    names = list(cfg.corpora)
    if len(names) < 2:
        return {}
    return {name: _fold_scores(cfg, dataset__fold=None, dataset__test_corpus=name) for name in names}


def _sessions(plain: tuple, centred: tuple, sessions: str, seed: int) -> FoldScores:
    """The live rule (running speaker mean, blend) for one split, on ``sessions`` (``mixed`` or ``one_mood``):
    its plain and centred ``_fold_scores``."""
    _, plain_model, data = plain
    _, centred_model, centred_data = centred
    subspace = centred_data.subspace
    return session_scores(
        plain_model,
        centred_model,
        data.feature_set(),
        data.split["test"],
        data.gate,
        sessions=sessions,
        centre_map=subspace.centre if subspace is not None else None,
        seed=seed,
        view=data.eval_view,
        classes=data.classes(),
    )


SPEAKER_NORM_KEYS = (
    "speaker_norm",
    "speaker_norm_one_mood",
    "speaker_norm_all",
    "speaker_norm_loco",
    "speaker_norm_one_mood_loco",
    "speaker_norm_all_loco",
)
"""The speaker-adaptation sections of the report, in print order (their titles: ``core.model_card.TITLES``)."""


def speaker_norm_report(cfg: DictConfig, plain: list, plain_loco: dict) -> dict:
    """The same splits with speaker adaptation: heads trained on speaker-centred features (``speaker_norm_centre``
    of the config: ``subspace`` or ``all``), scored with each test speaker centred on all their clips, and the
    live rule (``_sessions``) with the plain heads on mixed and one-mood sessions; k-fold and leave-one-corpus-out.
    ``plain``/``plain_loco``: the plain heads' ``cross_validate``/``leave_one_corpus_out``."""
    centred_cfg = with_overrides(cfg, dataset__speaker_centre=str(cfg.speaker_norm_centre))
    centred = cross_validate(centred_cfg)
    centred_loco = leave_one_corpus_out(centred_cfg)
    report: dict = {"speaker_norm_all": summarise([scores for scores, _, _ in centred])}
    for sessions, key in (("mixed", "speaker_norm"), ("one_mood", "speaker_norm_one_mood")):
        pairs = zip(plain, centred, strict=True)
        report[key] = summarise([_sessions(p, c, sessions, seed=i) for i, (p, c) in enumerate(pairs)])
        if plain_loco:
            report[f"{key}_loco"] = {
                name: summarise([_sessions(plain_loco[name], centred_loco[name], sessions, seed=0)])[name]
                for name in plain_loco
            }
    if plain_loco:
        report["speaker_norm_all_loco"] = {
            name: summarise([centred_loco[name][0]])[name] for name in centred_loco
        }
    return {key: report[key] for key in SPEAKER_NORM_KEYS if key in report}


def evaluate(cfg: DictConfig, folds: list | None = None, speaker_norm: bool | None = None) -> dict:
    """The protocol: prints the tables, writes ``evaluation.json`` and ``evaluation.md`` into the run directory.
    ``folds``: the k-fold results when already computed (``cross_validate``). ``speaker_norm`` (default: the
    config's ``speaker_norm``): also the speaker-normalised rows (``speaker_norm_report``)."""
    folds = folds if folds is not None else cross_validate(cfg)
    kfold = summarise([scores for scores, _, _ in folds])
    plain_loco = leave_one_corpus_out(cfg)
    loco = {name: summarise([scores])[name] for name, (scores, _, _) in plain_loco.items()}
    k = int(cfg.dataset.num_folds)
    text = format_table(f"Speaker-independent {k}-fold, mean ± std over folds", kfold)
    if loco:
        title = "Leave one corpus out (trained on the other corpora; one run, std 0)"
        text += "\n\n" + format_table(title, loco) + "\n\n" + format_loco_mean(loco_mean(loco))
    deltas = variant_deltas([scores for scores, _, _ in folds])
    if deltas:
        title = f"The same {k}-fold heads on the clip windows of {cfg.dataset.test_model} (clip level)"
        text += "\n\n" + format_deltas(title, deltas)
    report = {
        "protocol": PROTOCOL.format(k=k),
        "config": {
            "corpora": OmegaConf.to_container(cfg.corpora, resolve=True),
            "dataset": {
                key: OmegaConf.to_container(cfg.dataset, resolve=True)[key]
                for key in (
                    "train_views",
                    "encoder_layers",
                    "eval_view",
                    "time_pooling",
                    "gate",
                    "agreement_weight",
                    "speaker_centre",
                    "num_folds",
                    "split_seed",
                )
            },
            "model": OmegaConf.to_container(cfg.model, resolve=True),
            "train": OmegaConf.to_container(cfg.train, resolve=True),
        },
        "kfold": kfold,
        "leave_one_corpus_out": loco,
    }
    if loco:
        report["leave_one_corpus_out_mean"] = loco_mean(loco)
        report["calibration_loco"] = calibration_report(loco_clip_probs(plain_loco), list(EMOTIONS))
        text += "\n\n" + format_calibration(
            "Calibration, leave one corpus out (clips)", report["calibration_loco"]
        )
    if deltas:
        report["test_model"] = {"path": str(cfg.dataset.test_model), "clip": deltas}
    if speaker_norm if speaker_norm is not None else bool(cfg.speaker_norm):
        report.update(speaker_norm_report(cfg, folds, plain_loco))
        for key in SPEAKER_NORM_KEYS:
            if key in report:
                text += "\n\n" + format_table(TITLES[key], report[key])
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_text(json.dumps(report, indent=1) + "\n")
    (out / "evaluation.md").write_text(text + "\n")
    print(text)
    return report


def loco_mean(loco: dict) -> dict:
    """``{level: {metric: mean over the held-out corpora}}`` of a leave-one-corpus-out summary."""
    out = {}
    for level in ("clip", "clip_all", "window", "window_all"):
        rows = [entry[level] for entry in loco.values() if level in entry and entry[level]["n"]]
        if rows:
            out[level] = {
                m: round(float(np.mean([r[m][0] for r in rows])), 4) for m in ("accuracy", "macro_f1")
            }
    return out


def format_loco_mean(mean: dict) -> str:
    lines = [
        "**Leave one corpus out, mean over the held-out corpora**",
        "",
        "| level | accuracy | macro-F1 |",
        "| --- | --- | --- |",
    ]
    lines += [f"| {level} | {m['accuracy']:.3f} | {m['macro_f1']:.3f} |" for level, m in mean.items()]
    return "\n".join(lines)


def loco_clip_probs(plain_loco: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each held-out corpus's clip probabilities and labels (``FoldScores.clip_probs``) for calibration."""
    out = {}
    for name, (scores, _, _) in plain_loco.items():
        parts = scores.clip_probs[name]
        out[name] = (np.concatenate([p for p, _ in parts]), np.concatenate([y for _, y in parts]))
    return out


PROTOCOL = (
    "Speaker-independent {k}-fold: every corpus's speakers dealt into {k} folds (seeded); each fold scored by a head "
    "trained on the other folds' speakers of all corpora. Clip level: emotion-score's windows of each file, mean "
    "probability, top class among the corpus's classes. Window level: the speech windows (live speech gate) of each "
    "file's live timeline, each scored alone against the file's label. Mean ± std over folds, per corpus. "
    "Leave one corpus out: trained on the other corpora (each on its own classes), tested on this corpus. "
    "Levels *_all: the top class among every class the heads were trained on, as the product answers."
)


def bundle(cfg: DictConfig) -> dict:
    """Evaluate (plain and speaker-normalised rows), then train the shipped heads on every speaker and write them
    with ``model.json`` (metrics, protocol, how to rebuild) into ``cfg.bundle_dir`` (default: export/bundled/)."""
    from hydra.utils import to_absolute_path

    from emotion_monitor.core.bundle import (
        calibration_temperature,
        reference_predictions,
        with_temperature,
        write_bundle,
    )
    from emotion_monitor.core.train import fit

    out = Path(to_absolute_path(cfg.bundle_dir)) if cfg.bundle_dir else BUNDLE_DIR
    report = evaluate(with_overrides(cfg, dataset__speaker_centre=None), speaker_norm=True)
    heads, subspace = {}, None
    for file_name, centre in (
        ("head.safetensors", None),
        ("head_speaker_norm.safetensors", str(cfg.speaker_norm_centre)),
        ("head_speaker_baseline.safetensors", "baseline"),
    ):
        _, module, data = fit(
            with_overrides(cfg, dataset__speaker_centre=centre, dataset__fold=None), quiet=True
        )
        heads[file_name] = module.model
        subspace = data.subspace if file_name == "head_speaker_norm.safetensors" else subspace
    for model in heads.values():
        with_temperature(model, calibration_temperature(report))  # every exported probability is calibrated
    references = reference_predictions(heads["head.safetensors"], data.feature_set(), data.eval_view)
    write_bundle(out, heads, report, cfg, data, references, subspace)
    return report
