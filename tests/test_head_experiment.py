"""A user's own recordings: a path,label,speaker manifest trains and evaluates with the project's commands
(``emotion-train experiment=head corpora=manifest``), features from a tiny exported model."""

from __future__ import annotations

import json

from support import MANIFEST_LABELS, TINY_HEAD_RUN, run_emotion_train, write_manifest

from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.realtime.model import load_model


def _train(tmp_path, model, manifest, *overrides):
    return run_emotion_train(
        tmp_path,
        f"manifest={manifest}",
        f"dataset.model={model}",
        "dataset.train_views=[clean]",
        *TINY_HEAD_RUN,
        *overrides,
    )


def test_manifest_trains_and_evaluates_with_the_same_commands(tiny_model, tmp_path):
    manifest = write_manifest(tmp_path)
    # The evaluation also trains on the first layer only of the 2-layer encoder's cached features
    # (model.backbone.num_layers=1) and scores the same fold heads on a test model's clip windows (view clips).
    run = _train(
        tmp_path,
        tiny_model,
        manifest,
        "task=evaluate",
        "model.backbone.num_layers=1",
        f"dataset.test_model={tiny_model}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["config"]["dataset"]["encoder_layers"] == 1
    # With the training model itself as the test model, every fold's accuracy change is exactly zero.
    deltas = report["test_model"]["clip"]["mine"]
    assert deltas["n"] == 18 and deltas["delta_per_fold"] == [0.0, 0.0, 0.0]
    assert deltas["variant_accuracy"] == deltas["accuracy"] == report["kfold"]["mine"]["clip"]["accuracy"]
    assert "| mine | 18 |" in run.stdout.split("clip windows of")[1]
    cache = tmp_path / "cache" / "speech-emotion-monitor" / "window-features"
    assert list(cache.glob("*/mine-clip.npz"))
    mine = report["kfold"]["mine"]
    assert (
        mine["folds"] == 3 and mine["clip"]["n"] == 18
    )  # every clip scored once, by a head that never heard its voice
    assert set(report["leave_one_corpus_out"]) == set()  # one corpus: nothing to leave out
    confusion = mine["confusion"]["clip"]
    assert sum(map(sum, confusion)) == 18
    classes = {EMOTIONS.index(label) for label in MANIFEST_LABELS}
    assert all(sum(row) == 0 for i, row in enumerate(confusion) if i not in classes)
    assert all(
        confusion[i][j] == 0 for i in range(8) for j in range(8) if j not in classes
    )  # only its own labels
    assert "| mine | clip | 18 |" in run.stdout
    # Features were computed once and cached for the next command.
    assert list((tmp_path / "cache" / "speech-emotion-monitor" / "window-features").glob("*/mine-clean.npz"))

    fit = _train(tmp_path, tiny_model, manifest, f"hydra.run.dir={tmp_path / 'fit'}")
    assert fit.returncode == 0, fit.stderr[-2000:]
    assert (tmp_path / "fit" / "checkpoints" / "best.ckpt").is_file()

    heads = tmp_path / "heads"
    bundle = _train(
        tmp_path,
        tiny_model,
        manifest,
        "task=bundle",
        f"bundle_dir={heads}",
        f"hydra.run.dir={tmp_path / 'b'}",
    )
    assert bundle.returncode == 0, bundle.stderr[-2000:]
    info = json.loads((heads / "model.json").read_text())
    assert set(info["metrics"]) == {"mine"} and info["metrics"]["mine"]["clip"]["n"] == 18
    assert info["encoder_layers"] == 2
    # The encoder that made the features: the tiny model's backbone metadata, up to its ':'.
    assert info["weights"] == load_model(tiny_model).info.backbone.partition(":")[0] != ""
    assert set(info["speaker_norm"]["results"]) == {"mine"}
    for name in ("head.safetensors", "head_speaker_norm.safetensors", "head_speaker_baseline.safetensors"):
        assert (heads / name).stat().st_size > 0
    # The whole report travels in model.json, and the bundle's card is written from it.
    assert {"kfold", "leave_one_corpus_out", "speaker_norm", "speaker_norm_all"} <= set(info["evaluation"])
    card = (heads / "model-card.md").read_text()
    assert "| mine | clip | 18 |" in card and "](confusion-mine.png)" in card
    assert "Speaker-normalised head alone, each test speaker centred on all their clips" in card


def test_manifest_without_a_path_is_one_line(tmp_path):
    run = run_emotion_train(tmp_path, f"hydra.run.dir={tmp_path}", timeout=120)
    assert run.returncode == 2
    assert run.stderr.strip().splitlines()[-1] == (
        "emotion-train: error: corpus of kind manifest has no root (for corpora=manifest: manifest=FILE)"
    )


def test_a_head_deeper_than_the_cached_features_is_one_line(tiny_model, tmp_path):
    run = _train(
        tmp_path,
        tiny_model,
        write_manifest(tmp_path),
        "model.backbone.num_layers=3",
        f"hydra.run.dir={tmp_path}",
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert run.stderr.strip().splitlines()[-1] == (
        "emotion-train: error: encoder_layers must be in 1..2 for these features, got 3"
    )


def test_two_corpora_report_speaker_normalised_leave_one_corpus_out(tiny_model, tmp_path):
    mine = write_manifest(tmp_path)
    (tmp_path / "theirs").mkdir()
    theirs = write_manifest(tmp_path / "theirs")
    run = _train(
        tmp_path,
        tiny_model,
        mine,
        "task=evaluate",
        "speaker_norm=true",
        f"+corpora.theirs={{kind: manifest, root: {theirs}}}",
        f"hydra.run.dir={tmp_path / 'eval'}",
    )
    assert run.returncode == 0, run.stderr[-2000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    for key in (
        "leave_one_corpus_out",
        "speaker_norm_loco",
        "speaker_norm_one_mood_loco",
        "speaker_norm_all_loco",
    ):
        # Each corpus scored once, every clip, by heads trained on the other corpus only.
        assert {name: entry["clip"]["n"] for name, entry in report[key].items()} == {"mine": 18, "theirs": 18}
    for key in ("kfold", "speaker_norm", "speaker_norm_one_mood", "speaker_norm_all"):
        assert {name: entry["folds"] for name, entry in report[key].items()} == {"mine": 3, "theirs": 3}
    # One-mood sessions hear and score every clip once, as mixed ones do; both scorings are reported.
    assert report["speaker_norm_one_mood"]["mine"]["clip_all"]["n"] == 18
    assert set(report["calibration_loco"]["corpora"]) == {"mine", "theirs"}
    assert report["calibration_loco"]["temperature"] > 0
    assert "Leave one corpus out, speaker adaptation (blend), one-mood sessions" in run.stdout
    assert "Leave one corpus out, mean over the held-out corpora" in run.stdout
