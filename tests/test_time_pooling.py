"""Mean and standard deviation over time per layer (``time_pooling=mean_std``): the classifier's statistics, the
exported ``pooled`` output, the clip-only feature view that caches them, and the head trained and scored on them
with the project's commands."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from support import (
    LABELS,
    TINY_HEAD_RUN,
    TINY_WINDOW_S,
    FirstDims,
    make_set,
    run_emotion_train,
    synthetic_speechlike,
    tiny_classifier,
    tiny_info,
    write_manifest,
)

from emotion_monitor.core.data import DataError
from emotion_monitor.core.feature_data import select_time_pooling
from emotion_monitor.core.model import EmotionClassifier, ShapeOnlyBackbone, build_classifier, masked_mean_std
from emotion_monitor.core.protocol import format_table, score_speakers, summarise
from emotion_monitor.core.window_features import CLIP, VIEWS, compute, model_fingerprint
from emotion_monitor.realtime.windowing import SpeechGate


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    """The same random tiny encoder exported with ``pooled`` = means, and = means and standard deviations."""
    from emotion_monitor.export.onnx_export import export_onnx

    out = {}
    for pooling in ("mean", "mean_std"):
        info = tiny_info(window_s=TINY_WINDOW_S, backbone="tiny", time_pooling=pooling)
        path = tmp_path_factory.mktemp(pooling) / f"tiny-{pooling}.onnx"
        torch.manual_seed(1)
        speaker_head = EmotionClassifier(ShapeOnlyBackbone(32, 2), len(LABELS), time_pooling=pooling).eval()
        out[pooling] = export_onnx(
            tiny_classifier(time_pooling=pooling), info, path, speaker_heads={"running": speaker_head}
        )
    return out


def test_mean_std_is_the_mean_and_population_std_over_valid_frames():
    torch.manual_seed(0)
    hidden = torch.randn(2, 5, 3)
    mask = torch.tensor([[True] * 5, [True, True, True, False, False]])
    stats = masked_mean_std(hidden, mask)
    assert stats.shape == (2, 6)
    for b, n in ((0, 5), (1, 3)):
        frames = hidden[b, :n].numpy()
        assert np.allclose(stats[b, :3], frames.mean(axis=0), atol=1e-6)
        assert np.allclose(stats[b, 3:], frames.std(axis=0), atol=1e-6)  # padding frames left out
    assert torch.allclose(
        masked_mean_std(hidden, None)[1, 3:], torch.from_numpy(hidden[1].numpy().std(axis=0))
    )


def test_mean_std_classifier_pools_twice_as_wide_with_the_same_means():
    audio = torch.from_numpy(np.stack([synthetic_speechlike(1.0, seed=s) for s in (1, 2)]))
    mean, mean_std = tiny_classifier(time_pooling="mean"), tiny_classifier(time_pooling="mean_std")
    with torch.no_grad():
        pooled_mean, pooled_both = mean.pool(audio), mean_std.pool(audio)
    assert pooled_mean.shape == (2, 3, 32) and pooled_both.shape == (2, 3, 64)
    assert torch.allclose(pooled_both[..., :32], pooled_mean, atol=1e-5)
    assert (pooled_both[..., 32:] > 0).all()  # frames of speech-like audio vary over time
    head = EmotionClassifier(
        ShapeOnlyBackbone(32, 2), 8, (16,), layer_pooling="concat", time_pooling="mean_std"
    )
    assert head.features[0].in_features == 3 * 64 and head.classify_pooled(pooled_both).shape == (2, 8)
    rebuilt = build_classifier(head.spec())
    assert rebuilt.time_pooling == "mean_std" and rebuilt.features[0].in_features == 3 * 64
    with pytest.raises(ValueError, match="time_pooling"):
        EmotionClassifier(ShapeOnlyBackbone(32, 2), 8, time_pooling="max")


def test_heads_read_the_statistics_they_were_built_for():
    both = np.arange(2 * 3 * 8, dtype=np.float16).reshape(2, 3, 8)
    assert select_time_pooling(both, "mean_std", "mean_std") is both
    assert np.array_equal(select_time_pooling(both, "mean_std", "mean"), both[..., :4])
    with pytest.raises(DataError, match="time_pooling=mean statistics.*--time-pooling mean_std"):
        select_time_pooling(both[..., :4], "mean", "mean_std")


def test_a_clip_only_view_is_scored_on_its_own_windows_and_reports_no_window_level():
    fs = make_set()
    clip_only = fs.kind == CLIP
    fs.views = ["clean", "clip"]
    # The clip view repeats the clean clip windows with the other emotion on top: scoring it must read those.
    flipped = fs.pooled[clip_only][:, :, ::-1].copy()
    fs.pooled = np.concatenate([fs.pooled, flipped])
    for name in ("utt", "kind", "speech_s", "trailing_s"):
        setattr(fs, name, np.concatenate([getattr(fs, name), getattr(fs, name)[clip_only]]))
    fs.view = np.concatenate([fs.view, np.ones(int(clip_only.sum()), np.int64)])
    gate = SpeechGate(1.0, 1.0)
    clean = score_speakers(FirstDims(), fs, ["a:1", "a:2", "b:1"], gate)
    clip = score_speakers(FirstDims(), fs, ["a:1", "a:2", "b:1"], gate, view="clip")
    assert clip.confusion["a"]["clip"].sum() == clean.confusion["a"]["clip"].sum() == 2
    assert not np.array_equal(clip.confusion["a"]["clip"], clean.confusion["a"]["clip"])
    assert clip.confusion["a"]["window"].sum() == 0 and clip.coverage["a"] == (0, 2)
    table = format_table("t", summarise([clip]))
    assert "| a | clip | 2 |" in table and "| window |" not in table
    assert "| a | window |" in format_table("t", summarise([clean]))


def test_clip_view_caches_means_and_stds_of_emotion_score_windows(tiny_models, tmp_path):
    from emotion_monitor.core.corpora import Corpus, Utterance
    from emotion_monitor.realtime.model import load_model

    paths = []
    for i, seconds in enumerate((1.2, 4.5)):  # one window, and a clip longer than the 2 s tiny window
        paths.append(tmp_path / f"u{i}.wav")
        sf.write(paths[-1], synthetic_speechlike(seconds, seed=i), 16_000)
    corpus = Corpus("c", [Utterance(p, 2, "s", "c") for p in paths], tuple(range(8)))
    mean_model, both_model = (load_model(tiny_models[k], intra_op_threads=1) for k in ("mean", "mean_std"))
    assert both_model.info.time_pooling == "mean_std"
    # The runtime serves it as any model: its speaker head reads the same [mean | std] features.
    scores = both_model.score_windows([synthetic_speechlike(1.5, seed=5)] * 2, pooled=True)
    probs, pooled = scores.probs, scores.pooled
    assert pooled.shape == (2, 3, 64)
    centred = both_model.speaker_norm_head().probs(pooled, pooled.mean(axis=0))
    assert centred.shape == probs.shape and np.allclose(centred.sum(axis=1), 1.0, atol=1e-5)
    assert model_fingerprint(mean_model) != model_fingerprint(both_model)
    clean = compute(mean_model, corpus, VIEWS["clean"])
    clip = compute(both_model, corpus, VIEWS["clip"])
    assert set(clip.kind.tolist()) == {CLIP} and clip.pooled.shape[-1] == 2 * clean.pooled.shape[-1]
    rows = clean.kind == CLIP
    assert np.array_equal(clip.utt, clean.utt[rows]) and np.allclose(clip.start_s, clean.start_s[rows])
    assert np.bincount(clip.utt).tolist() == [1, 3]  # emotion-score's tiling of each file
    means = clip.pooled[..., : clean.pooled.shape[-1]].astype(np.float32)
    assert np.allclose(means, clean.pooled[rows].astype(np.float32), atol=2e-2, rtol=2e-3)


def test_clip_channel_view_is_each_clip_through_its_own_channel_at_the_clip_view_cost(tiny_models, tmp_path):
    from emotion_monitor.core.corpora import Corpus, Utterance
    from emotion_monitor.realtime.model import load_model

    paths = []
    for i in range(3):
        paths.append(tmp_path / f"u{i}.wav")
        sf.write(paths[-1], synthetic_speechlike(1.5, seed=i), 16_000)
    corpus = Corpus("c", [Utterance(p, 2, "s", "c") for p in paths], tuple(range(8)))
    model = load_model(tiny_models["mean"], intra_op_threads=1)
    clip = compute(model, corpus, VIEWS["clip"])
    channel = compute(model, corpus, VIEWS["clip-channel"])
    assert set(channel.kind.tolist()) == {CLIP} and set(channel.utt.tolist()) == {0, 1, 2}
    assert len(channel.utt) <= 2 * len(clip.utt)  # emotion-score's windows only (padding may add one)
    first = [channel.pooled[channel.utt == u][0].astype(np.float32) for u in range(3)]
    plain = [clip.pooled[clip.utt == u][0].astype(np.float32) for u in range(3)]
    assert all(not np.allclose(a, b, atol=1e-2) for a, b in zip(first, plain, strict=True))
    again = compute(model, corpus, VIEWS["clip-channel"])  # one seeded draw per clip
    assert np.array_equal(again.pooled, channel.pooled)


def test_mean_std_head_trains_and_is_evaluated_on_clip_windows(tiny_models, tmp_path):
    """The comparison's commands on a manifest: the same clip windows, read as means or as means and stds."""
    manifest = write_manifest(tmp_path)
    common = [
        f"manifest={manifest}",
        f"dataset.model={tiny_models['mean_std']}",
        "dataset.train_views=[clip]",
        "dataset.eval_view=clip",
        *TINY_HEAD_RUN,
        "task=evaluate",
    ]
    reports = {}
    for pooling in ("mean", "mean_std"):
        run = run_emotion_train(
            tmp_path, *common, f"model.time_pooling={pooling}", f"hydra.run.dir={tmp_path / pooling}"
        )
        assert run.returncode == 0, run.stderr[-2000:]
        reports[pooling] = json.loads((tmp_path / pooling / "evaluation.json").read_text())
        assert "| mine | clip | 18 |" in run.stdout and "| mine | window |" not in run.stdout
    for pooling, report in reports.items():
        assert report["config"]["dataset"]["time_pooling"] == pooling
        assert report["config"]["dataset"]["eval_view"] == "clip"
        assert report["kfold"]["mine"]["clip"]["n"] == 18
    cache = tmp_path / "cache" / "speech-emotion-monitor" / "window-features"
    assert [p.name for p in cache.glob("*/*.npz")] == ["mine-clip.npz"]  # one encoding serves both heads
