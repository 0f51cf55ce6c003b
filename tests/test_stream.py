"""``EmotionStream``: the live pipeline as a library object, fed real recordings in chunks.

The tiny model (tests/support.py) is random, so its probabilities mean nothing, but every path is the real one:
the stream must give what ``emotion-score --segments`` and ``emotion-live`` give for the same audio.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf
from support import ANGRY_CLIP, run_cli

from emotion_monitor.realtime import EmotionStream, StreamOptions, StreamResult
from emotion_monitor.realtime.audio import load_audio
from emotion_monitor.realtime.model import EmotionModel
from emotion_monitor.realtime.smoothing import Smoother, SmootherOptions
from emotion_monitor.realtime.speaker_norm import SpeakerNormOptions

PLAIN = StreamOptions(hop_s=0.5, speaker_norm=False)
CALLER_FIELDS = {"timestamp", "dropped_samples", "latency_ms", "skipped_windows"}
"""What emotion-live adds to a ``StreamResult`` in its JSONL: its clock and its ring buffer."""


@pytest.fixture(scope="module")
def model(tiny_model) -> EmotionModel:
    return EmotionModel(tiny_model)


@pytest.fixture(scope="module")
def talk(ravdess_16k, tmp_path_factory):
    """About 12 s of actor 1: three takes (angry, sad, happy) with pauses, as a 16 kHz WAV file."""
    clips = [ANGRY_CLIP, "Actor_01/03-01-04-02-01-01-01.flac", "Actor_01/03-01-03-02-02-01-01.flac"]
    pause = np.zeros(16_000, np.float32)
    audio = np.concatenate([part for clip in clips for part in (load_audio(ravdess_16k / clip), pause)])
    path = tmp_path_factory.mktemp("talk") / "talk.wav"
    sf.write(path, audio, 16_000)
    return path


def stream_file(model, path, options=PLAIN, blocksize=320, always_2d=False) -> list[StreamResult]:
    """The file through a fresh stream, ``blocksize`` frames at a time (320 = 20 ms at 16 kHz), then flushed."""
    stream = EmotionStream(model, options)
    rate = sf.info(str(path)).samplerate
    results = []
    for block in sf.blocks(str(path), blocksize=blocksize, dtype="float32", always_2d=always_2d):
        results += stream.process(block, rate)
    return results + stream.flush()


def probs_matrix(rows, labels) -> np.ndarray:
    return np.array([[row["probs"][label] for label in labels] for row in rows if row["probs"]])


def test_20ms_chunks_give_the_probabilities_of_score_segments(model, tiny_model, talk, tmp_path):
    out = tmp_path / "segments.jsonl"
    score = run_cli(
        "score", "--model", str(tiny_model), str(talk), "--segments", "--hop-s", "0.5", "--out", str(out)
    )
    assert score.returncode == 0, score.stderr
    segments = [json.loads(line) for line in out.read_text().splitlines()]
    results = [r.to_dict() for r in stream_file(model, talk)]

    assert [(r["start_s"], r["end_s"], r["speech"]) for r in results] == [
        (s["start_s"], s["end_s"], s["speech"]) for s in segments
    ]
    assert sum(r["speech"] for r in results) >= 10 and not all(r["speech"] for r in results)
    np.testing.assert_allclose(
        probs_matrix(results, model.labels), probs_matrix(segments, model.labels), rtol=0, atol=1e-5
    )
    assert all(r["probs"] is None and r["label"] == "silence" for r in results if not r["speech"])
    assert {r["speaker"] for r in results} == {"S1"}


def test_emotion_live_jsonl_is_the_stream_result_serialised(model, tiny_model, talk, tmp_path):
    out = tmp_path / "live.jsonl"
    live = run_cli(
        "live",
        "--model",
        str(tiny_model),
        "--input",
        str(talk),
        "--fast",
        "--no-speaker-norm",
        "--jsonl",
        str(out),
    )
    assert live.returncode == 0, live.stderr
    hops = [json.loads(line) for line in out.read_text().splitlines()]
    results = [r.to_dict() for r in stream_file(model, talk)]
    assert len(hops) == len(results)
    for hop, result in zip(hops, results, strict=True):
        assert set(hop) == set(result) | CALLER_FIELDS
        for key in set(result) - {"probs", "smoothed", "confidence", "inference_ms"}:
            assert hop[key] == result[key], key
        if result["probs"]:
            for key in ("probs", "smoothed"):
                np.testing.assert_allclose(list(hop[key].values()), list(result[key].values()), atol=1e-5)


def test_any_chunk_size_and_channel_layout_gives_the_same_results(model, talk):
    reference = stream_file(model, talk, blocksize=320)
    audio, rate = sf.read(str(talk), dtype="float32")
    for blocksize in (7, 4_001, len(audio)):
        got = stream_file(model, talk, blocksize=blocksize)
        assert [(r.end_s, r.speech, r.label) for r in got] == [
            (r.end_s, r.speech, r.label) for r in reference
        ]
        np.testing.assert_allclose(_probs(got), _probs(reference), atol=1e-6)
    # [frames, channels]: the same voice on both channels is the same mono signal.
    stream = EmotionStream(model, PLAIN)
    stereo = np.stack([audio, audio], axis=1)
    got = [r for k in range(0, len(stereo), 960) for r in stream.process(stereo[k : k + 960], rate)]
    got += stream.flush()
    np.testing.assert_allclose(_probs(got), _probs(reference), atol=1e-6)
    # One column of [frames, 1] is mono as well.
    assert len(stream_file(model, talk, blocksize=1_000, always_2d=True)) == len(reference)


def test_another_rate_is_resampled_across_chunks(model, ravdess_48k, ravdess_16k):
    """An original 48 kHz RAVDESS file (a stereo one) in 20 ms chunks: the same results whatever the chunking,
    the same windows as the 16 kHz copy, and close probabilities (two resamplers differ in the last digits)."""
    stereo = next(p for p in sorted(ravdess_48k.glob("*.wav")) if sf.info(str(p)).channels == 2)
    in_20ms = stream_file(model, stereo, blocksize=960)
    whole = stream_file(model, stereo, blocksize=10**7)
    assert [(r.end_s, r.speech) for r in in_20ms] == [(r.end_s, r.speech) for r in whole]
    np.testing.assert_allclose(_probs(in_20ms), _probs(whole), atol=1e-5)
    copy = ravdess_16k / "Actor_01" / stereo.with_suffix(".flac").name
    at_16k = stream_file(model, copy)
    assert [r.end_s for r in in_20ms] == [r.end_s for r in at_16k]
    assert sum(r.speech for r in in_20ms) >= 2
    both = [(a, b) for a, b in zip(in_20ms, at_16k, strict=True) if a.speech and b.speech]
    np.testing.assert_allclose(_probs([a for a, _ in both]), _probs([b for _, b in both]), atol=0.02)


def test_a_rate_change_mid_stream_keeps_time_going(model, talk):
    audio, _ = sf.read(str(talk), dtype="float32")
    stream = EmotionStream(model, PLAIN)
    first = stream.process(audio[:80_000], 16_000)
    at_8k = load_audio(talk, target_rate=8_000)[40_000:]
    rest = stream.process(at_8k, 8_000) + stream.flush()
    ends = [r.end_s for r in first + rest]
    assert ends == sorted(ends) and abs(stream.received_s - len(audio) / 16_000) < 0.01


def test_reset_starts_the_session_again(model, talk):
    audio, rate = sf.read(str(talk), dtype="float32")
    stream = EmotionStream(
        model, StreamOptions(speaker_norm=True, speaker_norm_options=SpeakerNormOptions(min_speech_s=1.0))
    )
    first = stream.process(audio, rate) + stream.flush()
    stream.new_speaker()
    stream.reset()
    assert stream.speaker == "S1" and stream.received_s == 0
    again = stream.process(audio, rate) + stream.flush()
    assert [r.to_dict() | {"inference_ms": 0} for r in again] == [
        r.to_dict() | {"inference_ms": 0} for r in first
    ]


def test_new_speaker_gets_a_new_id_a_fresh_baseline_and_a_fresh_smoother(model, talk):
    audio, rate = sf.read(str(talk), dtype="float32")
    stream = EmotionStream(
        model, StreamOptions(speaker_norm=True, speaker_norm_options=SpeakerNormOptions(min_speech_s=1.0))
    )
    assert stream.adaptation == "running", "the tiny model carries a running speaker head"
    half = len(audio) // 2
    first = [r for r in stream.process(audio[:half], rate) if r.speech]
    assert first[-1].speaker == "S1" and first[-1].speaker_norm == "active"
    # the adapted head's share: that of the speaker's normaliser (blend: 0 to 0.5 by the spread heard), in the JSONL
    assert first[-1].speaker_norm_weight == stream.speakers.normaliser.weight
    assert 0.0 <= first[-1].speaker_norm_weight <= 0.5
    assert first[-1].to_dict()["speaker_norm_weight"] == round(first[-1].speaker_norm_weight, 3)
    assert stream.new_speaker() == "S2"
    second = [r for r in stream.process(audio[half:], rate) if r.speech]
    assert {r.speaker for r in second} == {"S2"}
    assert second[0].speaker_norm == "warming" and second[0].speaker_speech_s == pytest.approx(0.5)
    assert second[0].speaker_norm_weight == 0.0
    assert second[0].smoothed == second[0].probs, "the smoother starts afresh with the new speaker"


def test_bad_chunks_are_clear_errors(model):
    stream = EmotionStream(model, PLAIN)
    with pytest.raises(ValueError, match="NaN or infinite"):
        stream.process(np.full(320, np.nan, np.float32), 16_000)
    with pytest.raises(ValueError, match="frames, channels"):
        stream.process(np.zeros((2, 2, 2), np.float32), 16_000)
    with pytest.raises(ValueError, match="sample rate"):
        stream.process(np.zeros(320, np.float32), 0)
    assert stream.process(np.zeros(0, np.float32), 16_000) == []


def test_smoother_forgets_after_seconds_of_silence_whatever_the_hop():
    for hop_s, hops_to_reset in ((0.5, 2), (0.1, 10)):
        smoother = Smoother(SmootherOptions(reset_after_silence_s=1.0))
        smoother.update(np.array([0.2, 0.8]), speech_s=1.0)
        for _ in range(hops_to_reset - 1):
            smoother.silence(hop_s)
        assert smoother.state is not None, f"{hop_s} s hops: not yet a second of silence"
        smoother.silence(hop_s)
        assert smoother.state is None, f"{hop_s} s hops: a second of silence resets"


def _probs(results: list[StreamResult]) -> np.ndarray:
    return np.array([list(r.probs.values()) for r in results if r.probs])


def test_speaker_turns_without_a_speaker_model_is_one_clear_error(constant_model, tmp_path, monkeypatch):
    """Turns need the speaker model (not the emotion model's ``pooled``): where it is neither cached nor
    buildable, one line says which extra builds it."""
    from emotion_monitor.realtime import speaker_embedding
    from emotion_monitor.realtime.errors import ModelError

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(speaker_embedding, "BUILD_MODULES", ("no_such_module_for_this_test",))
    model = EmotionModel(constant_model)
    assert not model.has_pooled
    with pytest.raises(ModelError, match=r"cannot build the speaker model .*\[speakers\]"):
        EmotionStream(model, StreamOptions(speaker_turns=True, speaker_norm=False))


def test_speaker_adaptation_is_off_unless_asked(model, talk):
    """Off by default (it hurts a speaker who keeps one mood: model card); on when asked, or with None when the
    model carries a running speaker head."""
    audio, rate = sf.read(str(talk), dtype="float32")
    plain = EmotionStream(model)
    assert plain.adaptation is None
    assert all(r.speaker_norm is None for r in plain.process(audio, rate) + plain.flush())
    assert EmotionStream(model, StreamOptions(speaker_norm=None)).adaptation == "running"
