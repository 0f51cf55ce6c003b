"""Bundled head training (synthetic features) and the shipped default model (real weights, slow)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core import bundle

BUNDLED = Path(__file__).resolve().parents[1] / "export" / "bundled"


def test_folds_are_disjoint_balanced_by_sex_and_cover_actors_1_to_20():
    folds = bundle.actor_folds()
    assert len(folds) == 5 and sorted(a for f in folds for a in f) == list(range(1, 21))
    assert all(sum(a % 2 for a in f) == 2 for f in folds), "two male (odd) and two female actors per fold"


def test_parse_name():
    assert bundle.parse_name(Path("03-01-05-02-01-01-17.flac")) == (4, 17)


def test_speaker_centring_uses_each_speakers_own_mean_only():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 3, 4)) + np.repeat([0.0, 5.0], 20)[:, None, None]
    actors = np.repeat([1, 2], 20)
    centred = bundle.speaker_centred(x, actors)
    for actor in (1, 2):
        rows = actors == actor
        np.testing.assert_allclose(centred[rows].mean(0), 0, atol=1e-9)
        # mean-only: the spread within a speaker is untouched
        np.testing.assert_allclose(centred[rows].std(0), x[rows].std(0))


def test_single_layer_head_ignores_other_layers():
    head = bundle.new_head(bundle.HeadConfig(layer=2), hidden_size=8, num_layers=4).eval()
    weights = head.layer_weights()
    assert weights[2] == pytest.approx(1.0) and not head.layer_logits.requires_grad
    x = torch.randn(5, 5, 8)
    y = x.clone()
    y[:, [0, 1, 3, 4]] = torch.randn(5, 4, 8)
    torch.testing.assert_close(head.classify_pooled(x), head.classify_pooled(y))


def test_train_head_learns_separable_classes_and_state_has_no_encoder():
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(8), 30)
    centres = rng.normal(size=(8, 16)) * 3
    x = centres[y][:, None, :] + rng.normal(size=(len(y), 3, 16))
    cfg = bundle.HeadConfig(hidden_dims=(32, 16), epochs=30, batch_size=32)
    model = bundle.train_head(cfg, x.astype(np.float32), y)
    acc = (bundle.predict_proba(model, x.astype(np.float32)).argmax(1) == y).mean()
    assert acc > 0.9
    assert not any(k.startswith("backbone.") for k in bundle.head_state(model))


@pytest.mark.slow
@pytest.mark.data
def test_default_model_on_raw_audio_reproduces_bundle_predictions(ravdess_16k):
    """Full model (installed encoder + shipped head) on raw audio through the shared preprocessing
    = the probabilities the head gave on cached features when the bundle was written."""
    from core.ct2 import MissingWeightsError
    from export.default_model import build_default_classifier
    from realtime.audio import PreprocessOptions, load_audio, prepare_clip, prepare_input

    if not (BUNDLED / "model.json").is_file():
        pytest.skip("no bundled model (python -m core.bundle)")
    try:
        model, info = build_default_classifier()
    except MissingWeightsError as exc:
        pytest.skip(str(exc))
    assert info.labels == bundle.LABELS and info.metrics
    options = PreprocessOptions.from_dict(info.preprocessing)
    refs = json.loads((BUNDLED / "model.json").read_text())["reference_predictions"]
    torch.set_num_threads(2)
    for ref in refs:
        audio = prepare_input(prepare_clip(load_audio(ravdess_16k / ref["file"]), options), options)
        with torch.no_grad():
            probs = torch.softmax(model(torch.from_numpy(audio)[None]), -1)[0].numpy()
        np.testing.assert_allclose(probs, ref["probs"], atol=2e-3, err_msg=ref["file"])


def test_bundled_speaker_heads_load_and_match_their_study():
    """The shipped speaker heads fit the model's sizes, and model.json reports the study they came with."""
    from export.default_model import build_speaker_heads

    heads = build_speaker_heads()
    assert set(heads) == {"running", "baseline"}
    for head in heads.values():
        probs = torch.softmax(head.classify_pooled(torch.randn(3, 7, 512)), -1)
        assert probs.shape == (3, len(bundle.LABELS)) and not head.training
    info = json.loads((BUNDLED / "model.json").read_text())["speaker_norm"]
    study = {row["history"]: row for row in json.loads((BUNDLED / "speaker_norm.json").read_text())}
    for name, figures in info["results"].items():
        if name in study:
            assert figures["accuracy"] == study[name]["accuracy"]
