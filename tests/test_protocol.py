"""The evaluation protocol on hand-made cached features: folds by speaker, clip and live-window scoring,
class masks for corpora without some emotions, and the loss that leaves absent classes out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from support import CALM, HAPPY, SAD, C, FirstDims, make_set, recipe_train_settings, scores_window

from emotion_monitor.core.corpora import Corpus, Utterance
from emotion_monitor.core.data import DataError
from emotion_monitor.core.feature_data import (
    FeatureSet,
    SessionCentres,
    SpeakerSubspace,
    fit_speaker_subspace,
    speaker_folds,
)
from emotion_monitor.core.losses import FocalLoss
from emotion_monitor.core.protocol import (
    format_deltas,
    score_speakers,
    session_order,
    session_scores,
    summarise,
    variant_deltas,
)
from emotion_monitor.core.window_features import CLIP
from emotion_monitor.realtime.windowing import SpeechGate


def test_scores_clips_by_mean_of_windows_and_live_windows_through_the_gate():
    fs = make_set()
    scores = score_speakers(FirstDims(), fs, ["a:1", "a:2", "b:1"], SpeechGate(1.0, 1.0))
    a, b = scores.confusion["a"], scores.confusion["b"]
    assert a["clip"][HAPPY, HAPPY] == 1 and a["clip"][SAD, HAPPY] == 1 and a["clip"].sum() == 2
    assert a["window"].sum() == 1 and a["window"][HAPPY, HAPPY] == 1
    assert b["clip"][SAD, SAD] == 1 and b["clip"][:, CALM].sum() == 0
    assert b["window"][SAD, HAPPY] == 1
    # As the product answers (argmax over every class the heads know): b's clip says calm, which b cannot hold.
    assert b["clip_all"][SAD, CALM] == 1 and b["clip_all"].sum() == 1 and b["window_all"][SAD, CALM] == 1
    assert (a["clip_all"] == a["clip"]).all()
    assert scores.coverage == {"a": (1, 2), "b": (1, 1)}
    summary = summarise([scores])
    assert summary["a"]["clip"]["accuracy"] == [0.5, 0.0] and summary["b"]["clip"]["accuracy"] == [1.0, 0.0]
    assert summary["a"]["coverage"] == 0.5


def test_only_the_listed_speakers_are_scored_and_classes_can_be_restricted():
    fs = make_set()
    scores = score_speakers(FirstDims(), fs, ["a:2"], SpeechGate(1.0, 1.0), classes=[HAPPY, SAD])
    assert set(scores.confusion) == {"a"} and scores.confusion["a"]["clip"].sum() == 1


def test_running_speaker_norm_hears_and_scores_only_the_heads_classes():
    fs = make_set()
    gate, speakers = SpeechGate(1.0, 1.0), ["a:1", "a:2", "b:1"]
    # Until min_speech_s of a speaker was heard the live rule is the plain head: score_speakers' confusions.
    never = session_scores(FirstDims(), FirstDims(), fs, speakers, gate, min_speech_s=1e9)
    plain = score_speakers(FirstDims(), fs, speakers, gate)
    for corpus in ("a", "b"):
        for level in ("clip", "window", "clip_all", "window_all"):
            assert (never.confusion[corpus][level] == plain.confusion[corpus][level]).all()
    assert never.coverage == plain.coverage == {"a": (1, 2), "b": (1, 1)}
    # Leave-one-corpus-out heads know the shared classes only: other utterances are neither heard nor scored.
    shared = session_scores(FirstDims(), FirstDims(), fs, speakers, gate, min_speech_s=1e9, classes=[SAD])
    assert shared.confusion["a"]["clip"].sum() == 1 and shared.confusion["a"]["clip"][SAD, SAD] == 1
    assert shared.coverage == {"a": (0, 1), "b": (1, 1)}


class Says:
    """A stand-in centred head that answers one class whatever it hears."""

    def __init__(self, label: int):
        self.label = label

    def eval(self):
        return self

    def classify_pooled(self, pooled: torch.Tensor) -> torch.Tensor:
        logits = torch.zeros(len(pooled), C)
        logits[:, self.label] = 10.0
        return logits


def test_running_speaker_norm_blends_as_the_runtime_by_how_varied_the_speaker_sounds():
    fs = make_set()
    gate, speakers = SpeechGate(1.0, 1.0), ["a:1", "a:2", "b:1"]
    plain = score_speakers(FirstDims(), fs, speakers, gate)
    adapted = session_scores(FirstDims(), Says(CALM), fs, speakers, gate, min_speech_s=0.0)
    # a:1's clip windows sound happy and sad to the plain head: a varied history, an even blend, and the
    # centred head's calm wins; a:2 and b:1 were heard in one window each (no spread): the plain head alone.
    assert adapted.confusion["a"]["clip"][HAPPY, CALM] == 1
    assert plain.confusion["a"]["clip"][HAPPY, HAPPY] == 1
    assert adapted.confusion["a"]["clip"][SAD, HAPPY] == plain.confusion["a"]["clip"][SAD, HAPPY] == 1
    assert (adapted.confusion["b"]["clip_all"] == plain.confusion["b"]["clip_all"]).all()


def test_speaker_folds_are_disjoint_cover_everyone_and_spread_each_corpus():
    speakers = {"r": [f"r:{i}" for i in range(20)], "c": [f"c:{i}" for i in range(46)]}
    folds = speaker_folds(speakers, 5, seed=3)
    flat = [s for f in folds for s in f]
    assert sorted(flat) == sorted(speakers["r"] + speakers["c"]) and len(flat) == len(set(flat))
    assert [sum(s.startswith("r:") for s in f) for f in folds] == [4] * 5
    assert sorted(sum(s.startswith("c:") for s in f) for f in folds) == [9, 9, 9, 9, 10]
    assert speaker_folds(speakers, 5, seed=3) == folds and speaker_folds(speakers, 5, seed=4) != folds


def test_speaker_means_centre_each_speaker_on_their_own_clips():
    fs = make_set()
    means = fs.speaker_means()
    a1 = fs.pooled[[0, 1]].astype(np.float32).mean(axis=0)
    assert np.allclose(means[0], a1) and np.allclose(means[1], fs.pooled[4].astype(np.float32))
    baseline = fs.speaker_means(reference=[SAD])
    assert np.allclose(baseline[0], 0.0)  # a:1 has no sad clip: nothing to centre on


def test_focal_loss_leaves_absent_classes_out_of_the_softmax():
    torch.manual_seed(0)
    logits, y = torch.randn(6, C), torch.tensor([0, 2, 3, 4, 5, 6])
    allowed = torch.ones(6, C, dtype=torch.bool)
    allowed[:, [CALM, 7]] = False
    keep = [c for c in range(C) if c not in (CALM, 7)]
    loss = FocalLoss(gamma=0.0)(logits, y, allowed)
    expected = F.cross_entropy(logits[:, keep], torch.tensor([keep.index(int(t)) for t in y]))
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)
    # Smoothing spreads only over the allowed classes, so the loss stays finite.
    smoothed = FocalLoss(gamma=1.0, label_smoothing=0.05)(logits, y, allowed, torch.full((6,), 0.5))
    assert torch.isfinite(smoothed)


def test_concat_pooling_reads_every_layer_standardised():
    """layer_pooling=concat: the head sees each layer's own dimensions, standardised, and has no layer weights to
    learn; the speaker-head export carries it unchanged."""
    from emotion_monitor.core.lightning_module import prepare_for_training
    from emotion_monitor.core.model import EmotionClassifier, ShapeOnlyBackbone

    torch.manual_seed(0)
    head = EmotionClassifier(ShapeOnlyBackbone(4, 2), C, (8,), 0.0, layer_pooling="concat")
    assert head.features[0].in_features == 3 * 4
    prepare_for_training(head, recipe_train_settings())
    assert not head.layer_logits.requires_grad
    x = torch.randn(32, 3, 4) * torch.tensor([1.0, 10.0, 100.0])[None, :, None]
    head.train()
    head.classify_pooled(x)  # one training batch fills the running statistics
    head.eval()
    normed = head.input_norm(x.flatten(1))
    assert normed.abs().mean() < 5.0  # the 100x layer no longer dominates
    # Only the last layer changes: the output changes (a weighted sum of other layers alone would not tell).
    y = x.clone()
    y[:, 2] += 1.0
    assert not torch.allclose(head.classify_pooled(x), head.classify_pooled(y))


def test_first_layers_keeps_the_embedding_and_the_first_layers_states_as_a_view():
    fs = make_set()
    assert fs.first_layers(None) is fs and fs.first_layers(1) is fs  # the set holds 1 layer + embeddings
    deeper = FeatureSet(**{**_fields(fs), "pooled": np.repeat(fs.pooled, 2, axis=1)})
    cut = deeper.first_layers(2)
    assert cut.pooled.shape[1] == 3 and np.shares_memory(cut.pooled, deeper.pooled)
    np.testing.assert_array_equal(cut.pooled, deeper.pooled[:, :3])
    with pytest.raises(DataError, match="encoder_layers must be in 1..3"):
        deeper.first_layers(4)


def test_variant_deltas_compare_the_same_heads_on_another_encoders_clip_windows():
    fs = make_set()
    speakers = ["a:1", "a:2", "b:1"]
    base = score_speakers(FirstDims(), fs, speakers, SpeechGate(1.0, 1.0))
    # The "variant" encoder hears a2 (sad) right; only its clip windows exist, in the view "clip".
    pooled = fs.pooled.copy()
    pooled[4] = scores_window({SAD: 1.0})
    keep = fs.kind == CLIP
    rows = {name: getattr(fs, name)[keep] for name in ("utt", "view", "kind", "speech_s", "trailing_s")}
    clips = FeatureSet(**{**_fields(fs), **rows, "views": ["clip"], "pooled": pooled[keep]})
    base.variant = score_speakers(FirstDims(), clips, speakers, SpeechGate(1.0, 1.0), view="clip")
    assert base.variant.confusion["a"]["window"].sum() == 0  # clip level only
    deltas = variant_deltas([base])
    assert deltas["a"]["accuracy"] == [0.5, 0.0] and deltas["a"]["variant_accuracy"] == [1.0, 0.0]
    assert deltas["a"]["delta_per_fold"] == [0.5] and deltas["b"]["delta"] == [0.0, 0.0]
    assert deltas["a"]["n"] == 2
    assert "| a | 2 | 0.500 ± 0.000 | 1.000 ± 0.000 | +0.500 ± 0.000 | +0.500 |" in format_deltas("t", deltas)


def _fields(fs: FeatureSet) -> dict:
    return {name: getattr(fs, name) for name in FeatureSet.__dataclass_fields__}


def test_one_mood_sessions_hold_one_emotion_each_and_cover_every_utterance():
    fs = make_set()
    fs.utterances.append(fs.utterances[0])  # a:1 gets a second (happy) clip and a sad one
    fs.utterances.append(fs.utterances[1].__class__(fs.utterances[1].path, SAD, "a:1", "a"))
    fs.__post_init__()  # the per-utterance label and speaker arrays
    rng = np.random.default_rng(0)
    mixed = session_order(fs, "a:1", "mixed", rng)
    moods = session_order(fs, "a:1", "one_mood", rng)
    assert len(mixed) == 1 and sorted(mixed[0]) == [0, 3, 4]
    assert sorted(sorted(s.tolist()) for s in moods) == [[0, 3], [4]]
    assert all(len(set(fs.utt_label[s])) == 1 for s in moods)
    with pytest.raises(ValueError, match="sessions"):
        session_order(fs, "a:1", "weekly", rng)


def test_one_mood_running_mean_hides_the_mood_and_a_speaker_subspace_keeps_it():
    """A speaker who keeps one mood: centring on their running mean removes the mood itself; centring only along
    the directions speakers differ in within an emotion keeps it."""
    shift = np.zeros((2, C), np.float32)
    shift[1, 0] = 5.0  # the voice: a direction of its own (layer 1)
    mood = scores_window({HAPPY: 1.0})
    subspace = SpeakerSubspace(np.zeros((2, C), np.float32), np.eye(2 * C, dtype=np.float32)[:, [C]])
    running = mood + shift
    assert np.allclose(subspace.centre(running[None])[0], shift)  # only the voice is removed
    assert np.allclose((running - subspace.centre(running[None])[0])[0], mood[0])


def test_speaker_subspace_is_fitted_on_within_emotion_speaker_differences():
    fs = make_set()
    # Two speakers of corpus a, both happy and sad; they differ by a constant offset in one dimension.
    utts = [(HAPPY, "a:1"), (SAD, "a:1"), (HAPPY, "a:2"), (SAD, "a:2")]
    fs.utterances = [fs.utterances[0].__class__(fs.utterances[0].path, y, s, "a") for y, s in utts]
    pooled = []
    for y, s in utts:
        x = scores_window({y: 1.0})
        x[1, 3] = 2.0 if s == "a:1" else -2.0
        pooled.append(x)
    fs.pooled = np.stack(pooled).astype(np.float16)
    fs.utt, fs.view = np.arange(4), np.zeros(4, np.int64)
    fs.kind, fs.speech_s, fs.trailing_s = (
        np.full(4, CLIP, np.int8),
        np.ones(4, np.float32),
        np.zeros(4, np.float32),
    )
    fs.__post_init__()  # the per-utterance label and speaker arrays
    subspace = fit_speaker_subspace(fs, ["a:1", "a:2"], rank=1)
    direction = subspace.basis[:, 0].reshape(2, C)
    assert abs(direction[1, 3]) == pytest.approx(1.0, abs=1e-4)  # the speaker offset, not the emotion
    assert np.allclose(subspace.mu[1, 3], 0.0)


def _one_speaker_set(labels: list[int]) -> FeatureSet:
    """One speaker, one clip window per utterance; window j is ``label`` in layer 0 and clip ``j`` in layer 1."""
    a = Corpus("a", [], tuple(range(C)))
    a.utterances = [Utterance(Path(f"a{j}.wav"), y, "a:1", "a") for j, y in enumerate(labels)]
    pooled = np.zeros((len(labels), 2, C), np.float32)
    for j, y in enumerate(labels):
        pooled[j, 0, y] = 1.0
        pooled[j, 1, j] = 1.0
    n = len(labels)
    return FeatureSet(
        corpora=[a],
        views=["clean"],
        utterances=a.utterances,
        pooled=pooled.astype(np.float16),
        utt=np.arange(n),
        view=np.zeros(n, np.int64),
        kind=np.full(n, CLIP, np.int8),
        speech_s=np.full(n, 3.0, np.float32),
        trailing_s=np.zeros(n, np.float32),
        allowed=np.ones((1, C), bool),
    )


def test_session_centres_are_means_of_sessions_that_hold_the_clip():
    """One-mood sessions hold only the clip's emotion; mixed ones draw from every emotion; each holds the clip."""
    labels = [HAPPY, SAD, HAPPY, SAD, HAPPY, SAD, HAPPY, SAD]
    fs = _one_speaker_set(labels)
    rows = np.arange(len(labels))
    one_mood = SessionCentres(fs, ["a:1"], one_mood_share=1.0, seed=0)
    for _ in range(20):
        centres = one_mood(rows)
        for j, y in enumerate(labels):
            assert centres[j, 0, y] == pytest.approx(1.0)  # every clip of the session has the clip's emotion
            assert centres[j, 1, j] > 0  # the clip itself is heard
            size = round(1 / centres[j, 1, j])
            assert 3 <= size <= 4  # 3 to all 4 clips of that emotion
    mixed = SessionCentres(fs, ["a:1"], one_mood_share=0.0, seed=0)
    draws = np.stack([mixed(rows) for _ in range(20)])
    assert (draws[:, :, 1] > 0).sum(axis=-1).max() == len(labels)  # some sessions are all of them
    assert (draws[:, :, 0, [HAPPY, SAD]].min(axis=-1) > 0).mean() > 0.5  # most hold both emotions
    with pytest.raises(DataError, match="one_mood_share"):
        SessionCentres(fs, ["a:1"], one_mood_share=1.5, seed=0)


def test_cached_clip_windows_are_stale_only_when_the_tiling_moved():
    """The cache's clip windows are re-encoded when emotion-score would now tile the clip differently, not when
    the length read back from float32 seconds is a sample off (that re-encoded the same files at every run)."""
    from types import SimpleNamespace

    from emotion_monitor.core.window_features import stale_clip_windows
    from emotion_monitor.realtime.windowing import tile_bounds

    rate, window = 16_000, 48_000
    model = SimpleNamespace(sample_rate=rate, window_spec=lambda: SimpleNamespace(window=window))
    lengths = [30_001, 116_803, 49_520]  # 1.9 s, 7.3 s, and a 3.1 s clip whose start sat on a rounding edge
    rows = [(u, s, e) for u, n in enumerate(lengths) for s, e in tile_bounds(n, window)]
    features = SimpleNamespace(
        kind=np.full(len(rows), CLIP, np.int8),
        utt=np.array([u for u, _, _ in rows]),
        start_s=np.array([s / rate for _, s, _ in rows], np.float32),
        speech_s=np.array([(e - s) / rate for _, s, e in rows], np.float32),
    )
    assert stale_clip_windows(model, features) == []
    moved = features.start_s.copy()
    moved[features.utt == 1] += 0.05  # another tiling of the 7.3 s clip
    assert stale_clip_windows(model, SimpleNamespace(**{**vars(features), "start_s": moved})) == [1]
