"""Per-speaker normalisation: the running mean, the head stored in the model, emotion-score and emotion-live.

The tiny model (tests/support.py) carries a random speaker-normalised head: the numbers mean
nothing, but every path is the real one, so results are checked against the same computation done by hand.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import threading
from contextlib import ExitStack
from pathlib import Path

import numpy as np
import pytest
from support import build_tiny_model, run_cli

from emotion_monitor.realtime.analysis import score_clip, score_timeline
from emotion_monitor.realtime.errors import ModelError
from emotion_monitor.realtime.model import EmotionModel
from emotion_monitor.realtime.score import SEGMENTS_HOP_S
from emotion_monitor.realtime.speaker_norm import (
    SPREAD_HIGH,
    SPREAD_LOW,
    PredictionSpread,
    SpeakerNormaliser,
    SpeakerNormOptions,
    blend_weight,
)

ACTOR_CLIPS = 3
"""Clips per actor folder in the scoring tests (about 10 s of speech)."""


@pytest.fixture(scope="module")
def model(tiny_model) -> EmotionModel:
    return EmotionModel(tiny_model)


@pytest.fixture(scope="module")
def two_speakers(ravdess_16k, tmp_path_factory) -> Path:
    """``A/`` and ``B/``: three clips of actor 1 and three of actor 2 (different emotions)."""
    root = tmp_path_factory.mktemp("speakers")
    for name, actor in (("A", "Actor_01"), ("B", "Actor_02")):
        (root / name).mkdir()
        for clip in sorted((ravdess_16k / actor).glob("*.flac"))[::20][:ACTOR_CLIPS]:
            shutil.copy(clip, root / name / clip.name)
    return root


def _windows(model: EmotionModel, seed: int, count: int = 4) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [(0.1 * rng.standard_normal(int(model.window_s * model.sample_rate))).astype(np.float32)] * count


# -- the normaliser ------------------------------------------------------------------------------------------
def test_running_mean_is_the_mean_of_every_window_and_reset_forgets(model):
    scores = model.score_windows(_windows(model, 0) + _windows(model, 1), pooled=True)
    probs, pooled = scores.probs, scores.pooled
    assert pooled.shape[0] == 8 and pooled.ndim == 3
    norm = SpeakerNormaliser(model.speaker_norm_head(), SpeakerNormOptions("centred", min_speech_s=2.0))
    norm.update(pooled[:3], speech_s=1.5)
    assert not norm.ready, "1.5 s < 2 s of speech: not yet"
    np.testing.assert_array_equal(norm.apply(probs[:3], pooled[:3]), probs[:3])
    norm.update(pooled[3:], speech_s=1.0)
    assert norm.ready and norm.windows == 8
    np.testing.assert_allclose(norm.mean, pooled.mean(axis=0), rtol=1e-6, atol=1e-7)
    norm.reset()
    assert not norm.ready and norm.mean is None and norm.speech_s == 0


def test_blend_is_the_mean_of_plain_and_centred(model):
    scores = model.score_windows(_windows(model, 2) + _windows(model, 3), pooled=True)
    probs, pooled = scores.probs, scores.pooled
    head = model.speaker_norm_head()
    centred = SpeakerNormaliser(head, SpeakerNormOptions("centred", 0.0))
    blend = SpeakerNormaliser(head, SpeakerNormOptions("blend", 0.0))
    for norm in (centred, blend):
        norm.update(pooled, speech_s=4.0)
    want_centred = head.probs(pooled, pooled.mean(axis=0))
    np.testing.assert_allclose(centred.apply(probs, pooled), want_centred, atol=1e-6)
    np.testing.assert_allclose(blend.apply(probs, pooled), (probs + want_centred) / 2, atol=1e-6)
    np.testing.assert_allclose(want_centred.sum(axis=1), 1.0, atol=1e-5)
    assert not np.allclose(want_centred, probs, atol=1e-3), "centring must change the estimate"


def test_blend_weighs_the_centred_head_by_how_varied_the_plain_estimates_heard_were(model):
    scores = model.score_windows(_windows(model, 2) + _windows(model, 3), pooled=True)
    probs, pooled = scores.probs, scores.pooled
    head = model.speaker_norm_head()
    one_mood = SpeakerNormaliser(head, SpeakerNormOptions("blend", 0.0))
    one_estimate = np.repeat(probs[:1], len(probs), axis=0)  # the same estimate throughout
    one_mood.update(pooled, speech_s=4.0, probs=one_estimate)
    assert one_mood.weight == 0.0
    np.testing.assert_array_equal(one_mood.apply(probs, pooled), probs)
    labels = len(model.labels)
    history = np.eye(labels)[np.arange(len(probs)) % labels]  # a different mood each window
    varied = SpeakerNormaliser(head, SpeakerNormOptions("blend", 0.0))
    varied.update(pooled[:3], speech_s=2.0, probs=history[:3])
    varied.update(pooled[3:], speech_s=2.0, probs=history[3:])
    assert varied.spread.value == pytest.approx(np.mean(np.sum((history - history.mean(0)) ** 2, axis=1)))
    assert varied.weight == 0.5
    want = (probs + head.probs(pooled, pooled.mean(axis=0))) / 2
    np.testing.assert_allclose(varied.apply(probs, pooled), want, atol=1e-6)
    varied.reset()
    assert varied.spread.windows == 0 and varied.spread.value == 0.0
    middle = (SPREAD_LOW + SPREAD_HIGH) / 2
    assert blend_weight(SPREAD_LOW) == 0.0 and blend_weight(SPREAD_HIGH) == 0.5 == blend_weight(1.0)
    assert blend_weight(middle) == pytest.approx(0.25)
    spread = PredictionSpread()
    spread.add(np.array([[0.6, 0.4], [0.2, 0.8]]))
    assert spread.value == pytest.approx(0.08)


def test_bad_options_are_one_line_errors():
    with pytest.raises(ValueError, match="mode 'loud'"):
        SpeakerNormOptions("loud")
    with pytest.raises(ValueError, match="min_speech_s"):
        SpeakerNormOptions(min_speech_s=-1)


def test_model_without_head_says_so(tmp_path):
    path = build_tiny_model(tmp_path / "plain.onnx", speaker_norm=False)
    plain = EmotionModel(path)
    assert (
        plain.has_pooled and not plain.has_speaker_head("running") and not plain.has_speaker_head("baseline")
    )
    with pytest.raises(ModelError, match="no speaker-normalised head"):
        plain.speaker_norm_head()
    result = run_cli("score", str(path), "--model", str(path), "--speaker-norm", "file")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "no speaker-normalised head" in result.stderr


# -- emotion-score -------------------------------------------------------------------------------------------
def _score_rows(model_path: Path, *args: str, out: Path) -> tuple[list[dict], str]:
    """emotion-score ARGS --out OUT (JSONL) → (rows, stderr); the run must succeed."""
    result = run_cli("score", *args, "--model", str(model_path), "--out", str(out))
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in out.read_text().splitlines()], result.stderr


def _score(model_path: Path, *args: str, out: Path) -> tuple[dict[str, dict], str]:
    """As ``_score_rows``, rows keyed by file name."""
    rows, stderr = _score_rows(model_path, *args, out=out)
    return {Path(r["path"]).name: r for r in rows}, stderr


def _by_hand(model: EmotionModel, files: list[Path], mode: str) -> dict[str, np.ndarray]:
    """Per-file probabilities with one speaker mean over all windows of ``files`` (what --speaker-norm does)."""
    from emotion_monitor.realtime.audio import load_audio

    clips = [score_clip(model, load_audio(f), model.sample_rate, str(f), pooled=True) for f in files]
    mean = np.concatenate([c.pooled for c in clips]).mean(axis=0)
    head = model.speaker_norm_head()
    weight = blend_weight(_spread(np.concatenate([c.probs for c in clips])))
    out = {}
    for f, c in zip(files, clips, strict=True):
        centred = head.probs(c.pooled, mean)
        out[f.name] = (centred if mode == "centred" else (1 - weight) * c.probs + weight * centred).mean(
            axis=0
        )
    return out


def _spread(probs: np.ndarray) -> float:
    """The mean squared distance of estimates to their mean, by hand."""
    return float(np.mean(np.sum((probs - probs.mean(axis=0)) ** 2, axis=1)))


@pytest.mark.data
@pytest.mark.parametrize("mode", ["blend", "centred"])
def test_score_per_folder_uses_each_folders_own_mean(tiny_model, model, two_speakers, tmp_path, mode):
    args = [
        str(two_speakers),
        "-r",
        "--speaker-norm",
        "folder",
        "--speaker-norm-mode",
        mode,
        "--speaker-min-s",
        "3",
    ]
    got, _ = _score(tiny_model, *args, out=tmp_path / "norm.jsonl")
    plain, _ = _score(tiny_model, str(two_speakers), "-r", out=tmp_path / "plain.jsonl")
    assert len(got) == 2 * ACTOR_CLIPS
    for folder in ("A", "B"):
        want = _by_hand(model, sorted((two_speakers / folder).glob("*.flac")), mode)
        for name, probs in want.items():
            np.testing.assert_allclose(
                [got[name]["probs"][label] for label in model.labels], probs, atol=1e-5
            )
    changed = [
        n for n in got if not np.allclose(list(got[n]["probs"].values()), list(plain[n]["probs"].values()))
    ]
    # centred: every file is normalised; blend: as far as the folder's plain estimates vary (the tiny model's
    # random head gives near-uniform ones, too alike to blend in any centred head)
    assert len(changed) == (len(got) if mode == "centred" else 0)


@pytest.mark.data
def test_score_speaker_map_groups_across_folders_and_leaves_unmapped_files_plain(
    tiny_model,
    model,
    two_speakers,
    tmp_path,
):
    files = sorted(two_speakers.rglob("*.flac"))
    unmapped = files[-1]
    table = tmp_path / "speakers.csv"
    with open(table, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "speaker"])
        for file in files[:-1]:  # one speaker across both folders, relative to the CSV's folder
            writer.writerow([os.path.relpath(file, tmp_path), "same-person"])
    args = [
        str(two_speakers),
        "-r",
        "--speaker-norm",
        "map",
        "--speakers",
        str(table),
        "--speaker-min-s",
        "3",
    ]
    got, _ = _score(tiny_model, *args, out=tmp_path / "map.jsonl")
    plain, _ = _score(tiny_model, str(unmapped), out=tmp_path / "plain.jsonl")
    for name, probs in _by_hand(model, files[:-1], "blend").items():
        np.testing.assert_allclose([got[name]["probs"][label] for label in model.labels], probs, atol=1e-5)
    assert got[unmapped.name]["probs"] == plain[unmapped.name]["probs"]


@pytest.mark.data
def test_score_too_little_speech_is_plain_with_a_notice(tiny_model, two_speakers, tmp_path):
    folder = str(two_speakers / "A")
    got, stderr = _score(tiny_model, folder, "--speaker-norm", "folder", out=tmp_path / "n.jsonl")
    plain, _ = _score(tiny_model, folder, out=tmp_path / "p.jsonl")
    assert "scored without speaker normalisation" in stderr and "< --speaker-min-s 10" in stderr
    assert got == plain


def test_score_speakers_argument_mistakes_are_one_line(tiny_model, tmp_path):
    clip = tmp_path / "x.wav"
    import soundfile as sf

    sf.write(clip, np.zeros(16000, np.float32), 16000)
    for args in (
        ["--speaker-norm", "map"],
        ["--speakers", "s.csv"],
        ["--speaker-norm", "map", "--speakers", "no.csv"],
    ):
        result = run_cli("score", str(clip), "--model", str(tiny_model), *args)
        assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
        assert "--speakers" in result.stderr


# -- emotion-live --------------------------------------------------------------------------------------------
def _live_speech_hops(model_path: Path, ravdess_16k: Path, tmp_path: Path, *extra: str):
    """emotion-live over an angry RAVDESS take (fast replay) → (CompletedProcess, JSONL records of speech hops)."""
    clip = ravdess_16k / "Actor_01" / "03-01-05-02-01-01-01.flac"
    out = tmp_path / "hops.jsonl"
    args = [
        "--input",
        str(clip),
        "--fast",
        "--model",
        str(model_path),
        "--jsonl",
        str(out),
        "--vad",
        "energy",
    ]
    result = run_cli("live", *args, *extra)
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in out.read_text().splitlines()]
    return result, [r for r in records if r["speech"]]


@pytest.mark.data
def test_live_warms_up_then_normalises(tiny_model, ravdess_16k, tmp_path):
    result, speech = _live_speech_hops(
        tiny_model, ravdess_16k, tmp_path, "--speaker-norm", "--speaker-min-s", "1"
    )
    states = [r["speaker_norm"] for r in speech]
    assert states[0] == "warming" and states[-1] == "active", states
    assert "speaker normalisation: active at the end" in result.stdout
    assert all(
        b["speaker_speech_s"] >= a["speaker_speech_s"] for a, b in zip(speech, speech[1:], strict=False)
    )


def test_sigusr1_requests_a_speaker_reset():
    from emotion_monitor.realtime.live import install_reset_triggers

    class Recorder:
        requests = 0

        def request_speaker_reset(self):
            self.requests += 1

    monitor = Recorder()
    fired = threading.Event()
    with ExitStack() as stack:
        install_reset_triggers(monitor, stack, use_stdin=False)
        ours = signal.getsignal(signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGUSR1)
        fired.wait(0.2)  # the handler runs in the main thread at the next bytecode boundary
        assert monitor.requests == 1
    assert signal.getsignal(signal.SIGUSR1) is not ours, "the previous handler is restored on exit"


# -- calm baseline -------------------------------------------------------------------------------------------
def test_baseline_is_fixed_ready_at_once_and_survives_reset(model):
    scores = model.score_windows(_windows(model, 4) + _windows(model, 5), pooled=True)
    probs, pooled = scores.probs, scores.pooled
    head = model.speaker_norm_head("baseline")
    norm = SpeakerNormaliser.from_baseline(
        head, pooled[:4], speech_s=1.0, options=SpeakerNormOptions("centred")
    )
    assert norm.ready, "a baseline needs no warm-up"
    norm.update(pooled[4:], speech_s=100.0)
    norm.reset()
    np.testing.assert_allclose(norm.mean, pooled[:4].mean(axis=0), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        norm.apply(probs, pooled), head.probs(pooled, pooled[:4].mean(axis=0)), atol=1e-6
    )
    assert not np.allclose(
        head.probs(pooled, norm.mean), model.speaker_norm_head("running").probs(pooled, norm.mean)
    )


@pytest.fixture(scope="module")
def calm_baseline(ravdess_16k, tmp_path_factory) -> Path:
    """About 8 s of actor 1 talking calmly: four neutral/calm takes back to back."""
    import soundfile as sf

    from emotion_monitor.realtime.audio import load_audio

    takes = sorted((ravdess_16k / "Actor_01").glob("03-01-0[12]-*.flac"))[:4]
    path = tmp_path_factory.mktemp("baseline") / "calm.wav"
    sf.write(path, np.concatenate([load_audio(t) for t in takes]), 16_000)
    return path


@pytest.mark.data
def test_score_with_a_baseline_judges_every_file_against_it(
    tiny_model, model, two_speakers, calm_baseline, tmp_path
):
    from emotion_monitor.realtime.audio import load_audio

    folder = two_speakers / "A"
    got, _ = _score(
        tiny_model, str(folder), "--speaker-baseline", str(calm_baseline), out=tmp_path / "b.jsonl"
    )
    base = score_clip(model, load_audio(calm_baseline), 16_000, "calm", pooled=True).pooled.mean(axis=0)
    head = model.speaker_norm_head("baseline")
    for f in sorted(folder.glob("*.flac")):
        clip = score_clip(model, load_audio(f), 16_000, str(f), pooled=True)
        want = ((clip.probs + head.probs(clip.pooled, base)) / 2).mean(axis=0)
        np.testing.assert_allclose([got[f.name]["probs"][label] for label in model.labels], want, atol=1e-5)


@pytest.mark.data
def test_live_with_a_baseline_is_normalised_from_the_first_window(
    tiny_model, ravdess_16k, calm_baseline, tmp_path
):
    _, speech = _live_speech_hops(tiny_model, ravdess_16k, tmp_path, "--speaker-baseline", str(calm_baseline))
    assert speech and all(r["speaker_norm"] == "baseline" for r in speech)


def test_too_short_baseline_and_conflicting_options_are_one_line(tiny_model, tmp_path):
    import soundfile as sf

    short = tmp_path / "short.wav"
    sf.write(short, (0.1 * np.sin(np.arange(32_000) / 5)).astype(np.float32), 16_000)
    result = run_cli("score", str(short), "--model", str(tiny_model), "--speaker-baseline", str(short))
    assert result.returncode == 2 and result.stderr.count("\n") == 1, result.stderr
    assert "too short for a speaker baseline" in result.stderr and str(short) in result.stderr
    result = run_cli("live", "--input", str(short), "--speaker-norm", "--speaker-baseline", str(short))
    assert result.returncode == 2 and "not allowed with argument" in result.stderr


@pytest.mark.data
def test_score_segments_normalise_speech_windows_only(tiny_model, model, ravdess_16k, tmp_path):
    """--segments --speaker-norm file: the mean is over the file's speech windows; silent windows carry the
    label "silence" and no probabilities, with or without normalisation."""
    import soundfile as sf

    from emotion_monitor.realtime.audio import load_audio

    speech = load_audio(ravdess_16k / "Actor_01" / "03-01-05-02-01-01-01.flac")
    audio = np.concatenate([np.zeros(3 * 16_000, np.float32), speech, speech])
    path = tmp_path / "talk.wav"
    sf.write(path, audio, 16_000)
    norm_args = ["--segments", "--speaker-norm", "file", "--speaker-min-s", "1"]
    got, _ = _score_rows(tiny_model, str(path), *norm_args, out=tmp_path / "n.jsonl")
    plain, _ = _score_rows(tiny_model, str(path), "--segments", out=tmp_path / "p.jsonl")
    timeline = score_timeline(model, audio, 16_000, hop_s=SEGMENTS_HOP_S, pooled=True)
    windows, probs, pooled = timeline.windows, timeline.probs, timeline.pooled
    is_speech = np.array([w.speech for w in windows])
    assert is_speech.any() and not is_speech.all()
    want = probs.copy()
    weight = blend_weight(_spread(probs[is_speech]))
    centred = model.speaker_norm_head().probs(pooled[is_speech], pooled[is_speech].mean(0))
    want[is_speech] = (1 - weight) * probs[is_speech] + weight * centred
    assert [r["speech"] for r in got] == is_speech.tolist()
    for row, plain_row, p, speech_window in zip(got, plain, want, is_speech, strict=True):
        if speech_window:
            np.testing.assert_allclose([row["probs"][label] for label in model.labels], p, atol=1e-5)
        else:
            assert row["label"] == plain_row["label"] == "silence"
            assert row["probs"] is None and plain_row["probs"] is None


def test_reset_request_restarts_the_running_mean_and_tells_the_user(model):
    """What Enter / SIGUSR1 trigger: the next chunk starts a new speaker, and the view says so once."""
    from types import SimpleNamespace

    from emotion_monitor.realtime.live import Monitor
    from emotion_monitor.realtime.ringbuffer import RingBuffer
    from emotion_monitor.realtime.stream import EmotionStream, StreamOptions

    class View:
        def __init__(self):
            self.notes, self.records = [], []

        def show(self, hop):
            self.records.append(hop.result)

        def note(self, line):
            self.notes.append(line)

    view = View()
    ring = RingBuffer(16_000 * 10)
    source = SimpleNamespace(ring=ring, sample_rate=model.sample_rate, live=False)
    options = StreamOptions(
        hop_s=0.5, vad="energy", speaker_norm=True, speaker_norm_options=SpeakerNormOptions(min_speech_s=1.0)
    )
    stream = EmotionStream(model, options)
    monitor = Monitor(stream, view, None, source)
    samples = _windows(model, 6, count=1)[0]  # 2 s of loud noise: speech to the energy gate
    ring.write(np.concatenate([samples, samples]))
    ring.close()
    monitor.run()
    speech = [r for r in view.records if r.speech]
    assert speech[-1].speaker_norm == "active" and speech[-1].speaker == "S1"
    norm = stream.speakers.normaliser
    assert norm.speech_s == pytest.approx(0.5 * len(speech))
    shown = len(view.records)
    monitor.request_speaker_reset()
    ring = source.ring = RingBuffer(16_000 * 10)
    ring.write(samples[:8_000])
    ring.close()
    monitor.run(max_seconds=0.5)
    after = view.records[shown:]
    assert after and after[0].speaker == "S2" and after[0].speaker_norm == "warming"
    assert stream.speakers.normaliser.windows == 1 and norm.windows == len(speech)
    assert view.notes == ["new speaker S2: speaker statistics reset"]
