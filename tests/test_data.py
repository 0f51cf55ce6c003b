"""RAVDESS indexing, problem reporting, speaker-independent splits, crops, augmentation, datamodule."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from support import ravdess_datamodule, synthetic_speechlike

from emotion_monitor.core.augment import Augmenter, AugmentOptions, add_noise, time_shift
from emotion_monitor.core.data import (
    ClipDataset,
    DataError,
    centre_crop,
    decode_clips,
    fold_actors,
    index_ravdess,
    limit_per_actor,
    parse_name,
    random_crop,
    report_problems,
    split_actors,
)
from emotion_monitor.core.emotions import EMOTIONS
from emotion_monitor.realtime.audio import PreprocessOptions, rms_dbfs


def test_parse_name_reads_all_seven_fields():
    item = parse_name("Actor_07/03-01-05-02-01-02-07.wav")
    assert (item.modality, item.vocal_channel, item.emotion, item.intensity) == (3, 1, 5, 2)
    assert (item.statement, item.repetition, item.actor) == (1, 2, 7)
    assert item.emotion_name == "angry" and item.label == EMOTIONS.index("angry")
    assert item.gender == "male"
    assert parse_name("03-01-08-01-02-01-12.flac").gender == "female"
    assert parse_name("03-01-08-01-02-01-12.flac").emotion_name == "surprised"


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("03-01-05-02-01-02.wav", "seven two-digit fields"),
        ("03-01-09-01-01-01-01.wav", "emotion 09"),
        ("03-02-05-01-01-01-01.wav", "song"),
        ("03-01-01-02-01-01-01.wav", "neutral has no strong"),
        ("03-01-05-01-01-01-30.wav", "actor 30"),
        ("03-01-05-01-01-01-01.mp3", "not a .wav/.flac"),
    ],
)
def test_parse_name_reasons(name, reason):
    with pytest.raises(ValueError, match=reason):
        parse_name(name)


def _write(path: Path, seconds: float = 1.0, rate: int = 16_000) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    audio = synthetic_speechlike(seconds, rate)
    sf.write(path, audio, rate, format="FLAC" if path.suffix == ".flac" else "WAV")
    return path


def test_index_reports_every_bad_file_by_name(tmp_path, caplog):
    root = tmp_path / "data"
    good = [
        _write(root / "Actor_01" / "03-01-03-01-01-01-01.flac"),
        _write(root / "Actor_01" / "03-01-04-02-02-01-01.flac"),
        _write(root / "Audio_Speech_Actors_01-24" / "Actor_02" / "03-01-05-01-01-01-02.wav", rate=48_000),
    ]
    bad_name = _write(root / "Actor_01" / "notes-take2.wav")
    wrong_actor = _write(root / "Actor_01" / "03-01-03-01-01-01-05.wav")
    # Same recording as WAV and FLAC: the first in sorted order (.flac) is kept, the other reported.
    duplicate = _write(root / "Actor_01" / "03-01-03-01-01-01-01.wav")
    corrupt = root / "Actor_02" / "03-01-06-01-01-01-02.wav"
    corrupt.parent.mkdir()
    corrupt.write_bytes(b"RIFF\x00\x00\x00\x00WAVEgarbage")

    files, problems = index_ravdess(root)
    assert sorted(f.path for f in files) == sorted(good + [corrupt])
    reasons = {p.path: p.reason for p in problems}
    assert "seven two-digit fields" in reasons[bad_name]
    assert "folder is Actor_01" in reasons[wrong_actor]
    assert "duplicate" in reasons[duplicate]

    kept, clips, undecodable = decode_clips(files, PreprocessOptions())
    assert corrupt not in {f.path for f in kept} and len(kept) == 3
    assert [p.path for p in undecodable] == [corrupt] and "cannot decode" in undecodable[0].reason
    assert all(c.dtype == np.float32 and c.ndim == 1 for c in clips)

    with caplog.at_level(logging.WARNING):
        report_problems(problems + undecodable)
    logged = caplog.text
    for path in (bad_name, wrong_actor, duplicate, corrupt):
        assert str(path) in logged
    assert "4 file(s) left out" in logged


def test_index_errors_are_one_line(tmp_path):
    with pytest.raises(DataError, match="data directory not found"):
        index_ravdess(tmp_path / "missing")
    with pytest.raises(DataError, match="no Actor_XX folders"):
        index_ravdess(tmp_path)


def test_real_ravdess_index(ravdess_16k):
    files, problems = index_ravdess(ravdess_16k)
    assert problems == [] and len(files) == 1200
    actors = {f.actor for f in files}
    assert actors == set(range(1, 21))
    per_class = np.bincount([f.label for f in files if f.actor == 3], minlength=8)
    assert per_class.tolist() == [4, 8, 8, 8, 8, 8, 8, 8]


def test_limit_per_actor_covers_the_classes(ravdess_16k):
    files, _ = index_ravdess(ravdess_16k)
    eight = limit_per_actor(files, 8)
    assert len(eight) == 8 * 20
    assert all(len({f.emotion for f in eight if f.actor == a}) == 8 for a in range(1, 21))
    two = limit_per_actor([f for f in files if f.actor <= 4], 2)
    assert len(two) == 8 and len({f.emotion for f in two}) == 8


def test_48k_originals_decode_to_16k(ravdess_48k):
    files, problems = index_ravdess(ravdess_48k.parent)
    assert problems == [] and len(files) == 60
    kept, clips, bad = decode_clips(files[:3], PreprocessOptions(trim_db=None))
    info = sf.info(str(files[0].path))
    assert bad == [] and abs(len(clips[0]) - info.frames / 3) <= 2


ACTORS = list(range(1, 21))


def test_ratio_split_is_speaker_independent():
    split = split_actors(ACTORS, (0.7, 0.15, 0.15), seed=5)
    assert [len(split[k]) for k in ("train", "val", "test")] == [14, 3, 3]
    sets = [set(split[k]) for k in ("train", "val", "test")]
    assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
    assert set().union(*sets) == set(ACTORS)
    for k in ("val", "test"):  # gender-interleaved: both genders held out
        assert {a % 2 for a in split[k]} == {0, 1}
    assert split == split_actors(ACTORS, seed=5)
    assert split != split_actors(ACTORS, seed=6)


def test_kfold_by_actor_groups():
    tested = []
    for fold in range(5):
        split = fold_actors(ACTORS, fold, 5, seed=1)
        sets = [set(split[k]) for k in ("train", "val", "test")]
        assert sets[0].isdisjoint(sets[1]) and sets[0].isdisjoint(sets[2]) and sets[1].isdisjoint(sets[2])
        assert set().union(*sets) == set(ACTORS)
        assert len(sets[2]) == 4
        tested += split["test"]
    assert sorted(tested) == ACTORS  # every actor is tested exactly once over the folds
    with pytest.raises(DataError):
        fold_actors(ACTORS, 5, 5)


def test_crops_pad_and_are_deterministic_for_eval():
    rng = np.random.default_rng(0)
    clip = np.arange(100, dtype=np.float32) + 1
    crops = {tuple(random_crop(clip, 40, rng)[:1]) for _ in range(20)}
    assert len(crops) > 1 and all(len(random_crop(clip, 40, rng)) == 40 for _ in range(5))
    assert np.array_equal(centre_crop(clip, 40), clip[30:70])
    short = centre_crop(clip[:10], 40)
    assert len(short) == 40 and np.count_nonzero(short) == 10 and short[15] == 1.0
    padded = random_crop(clip[:10], 40, rng)
    assert len(padded) == 40 and np.count_nonzero(padded) == 10


def test_clip_dataset_normalises_each_window_like_the_runtime():
    t = np.arange(32_000) / 16_000
    clips = [(0.01 * np.sin(2 * np.pi * (200 + 50 * i) * t)).astype(np.float32) for i in range(3)]
    options = PreprocessOptions()
    ds = ClipDataset(clips, [0, 1, 2], 1.0, options, train=False)
    item = ds[1]
    assert item["input_values"].shape == (16_000,) and int(item["label"]) == 1
    assert rms_dbfs(item["input_values"].numpy()) == pytest.approx(options.target_dbfs, abs=0.1)
    assert np.array_equal(ds[1]["input_values"].numpy(), item["input_values"].numpy())
    train = ClipDataset(clips, [0, 1, 2], 1.0, options, train=True)
    assert not np.array_equal(train[0]["input_values"].numpy(), train[0]["input_values"].numpy())


def test_augmentations():
    rng = np.random.default_rng(0)
    x = synthetic_speechlike(1.0)
    shifted = time_shift(x, 100)
    assert np.array_equal(shifted[100:], x[:-100]) and not shifted[:100].any()
    assert np.array_equal(time_shift(x, -50)[:-50], x[50:])
    noisy = add_noise(x, 10.0, rng)
    snr = 10 * np.log10(np.mean(x.astype(np.float64) ** 2) / np.mean((noisy - x).astype(np.float64) ** 2))
    assert snr == pytest.approx(10.0, abs=0.5)
    pink = add_noise(x, 20.0, rng, pink=True)
    assert np.isfinite(pink).all() and not np.array_equal(pink, x)

    quiet = Augmenter(AugmentOptions(gain_prob=1.0, gain_db=(-12.0, -12.0)))
    assert rms_dbfs(quiet.after_normalisation(x, rng)) == pytest.approx(rms_dbfs(x) - 12.0, abs=0.05)
    off = Augmenter(AugmentOptions(enabled=False))
    assert off.before_normalisation(x, rng) is x and off.after_normalisation(x, rng) is x
    with pytest.raises(ValueError, match="unknown augmentation"):
        AugmentOptions.from_dict({"reverb": 1})


def test_datamodule_on_real_files(ravdess_16k):
    dm = ravdess_datamodule(
        ravdess_16k, window_s=1.0, actors=list(range(1, 11)), max_files_per_actor=4, split_seed=3
    )
    dm.setup("fit")
    split = dm.split_info()
    assert split["num_clips"] == {"train": 24, "val": 8, "test": 8}
    for a, b in (("train", "val"), ("train", "test"), ("val", "test")):
        assert not {f.actor for f in dm.files[a]} & {f.actor for f in dm.files[b]}
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_values"].shape == (8, 16_000)
    assert dm.problems == []
