"""``emotion-score``: folders with good and bad files, output formats, resume, segments."""

from __future__ import annotations

import csv
import json
import os
import re
import shutil

import numpy as np
import pytest
import soundfile as sf
from support import ANGRY_CLIP, LABELS, run_cli


def read_csv(path) -> list[dict]:
    with open(path, encoding="utf-8", newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


@pytest.fixture
def mixed_folder(tmp_path, ravdess_16k, ravdess_48k):
    """corrupt.wav, empty.wav, a stereo 48 kHz original, a normal 16 kHz FLAC (+ a non-audio file to ignore)."""
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(100))
    (folder / "empty.wav").write_bytes(b"")
    stereo = next(p for p in sorted(ravdess_48k.glob("*.wav")) if sf.info(str(p)).channels == 2)
    assert sf.info(str(stereo)).samplerate == 48_000
    shutil.copy(stereo, folder / "stereo48k.wav")
    shutil.copy(ravdess_16k / ANGRY_CLIP, folder / "normal.flac")
    (folder / "notes.txt").write_text("not audio")
    return folder


def test_folder_with_bad_files_scores_the_good_ones_and_exits_1(tiny_model, mixed_folder, tmp_path):
    out = tmp_path / "results.csv"
    result = run_cli("score", "--model", str(tiny_model), str(mixed_folder), "--out", str(out))
    assert result.returncode == 1, result.stderr
    rows = read_csv(out)
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in rows) == ["normal.flac", "stereo48k.wav"]
    for row in rows:
        probs = np.array([float(row[label]) for label in LABELS])
        assert abs(probs.sum() - 1) < 1e-4 and row["label"] == LABELS[int(np.argmax(probs))]
    errors = [line for line in result.stderr.splitlines() if "corrupt.wav" in line or "empty.wav" in line]
    assert len(errors) == 2, result.stderr  # one line each, naming the file and the reason
    assert "1 failed" not in result.stderr and "2 scored, 2 failed" in result.stderr


def test_resume_skips_files_already_scored(tiny_model, mixed_folder, tmp_path):
    out = tmp_path / "results.jsonl"
    first = run_cli("score", "--model", str(tiny_model), str(mixed_folder / "normal.flac"), "--out", str(out))
    assert first.returncode == 0, first.stderr
    with open(out, "a", encoding="utf-8") as f:
        f.write('{"path": "torn')  # a run killed mid-line
    second = run_cli("score", "--model", str(tiny_model), str(mixed_folder), "--out", str(out), "--resume")
    assert second.returncode == 1
    assert "1 already done" in second.stderr
    records = read_jsonl(out)  # every line parses again
    assert sorted(r["path"].rsplit("/", 1)[-1] for r in records) == ["normal.flac", "stereo48k.wav"]


def test_quiet_real_speech_is_scored_not_called_silent(tiny_model, ravdess_16k):
    # One of the quietest RAVDESS takes (a soft "calm", about -61 dBFS RMS): quiet is not silent.
    quiet = ravdess_16k / "Actor_20" / "03-01-02-01-02-01-20.flac"
    result = run_cli("score", "--model", str(tiny_model), str(quiet))
    assert result.returncode == 0, result.stderr
    assert quiet.name in result.stdout


def test_silent_file_is_reported_not_scored(tiny_model, tmp_path):
    silent = tmp_path / "silent.wav"
    sf.write(silent, np.zeros(32_000, np.float32), 16_000)
    result = run_cli("score", "--model", str(tiny_model), str(silent))
    assert result.returncode == 1
    assert f"{silent}: silent" in result.stderr
    assert result.stdout == ""  # nothing scored: no table, not even its header
    assert result.stderr.splitlines()[-1] == "emotion-score: 0 scored, 1 failed"


def score_timeline(model, clip, out, *extra: str) -> None:
    """``emotion-score --segments`` of one clip into ``out``, which must succeed."""
    result = run_cli("score", "--model", str(model), str(clip), "--segments", "--out", str(out), *extra)
    assert result.returncode == 0, result.stderr


def test_segments_timeline_and_stdout_table(tiny_model, ravdess_16k, tmp_path):
    clip = ravdess_16k / ANGRY_CLIP
    out = tmp_path / "timeline.csv"
    score_timeline(tiny_model, clip, out)
    rows = read_csv(out)
    ends = [float(r["end_s"]) for r in rows]
    assert ends[:2] == [1.5, 3.0] and np.all(np.diff(ends) <= 1.5 + 1e-9)  # files: a window every 1.5 s
    assert abs(ends[-1] - sf.info(str(clip)).duration) < 0.01
    silence = [r for r in rows if r["speech"] == "False"]
    assert silence and {r["label"] for r in silence} == {"silence"}
    assert all(r[label] == "" for r in silence for label in LABELS)  # a silence row carries no emotion
    for r in rows:
        if r["speech"] == "True":
            assert abs(sum(float(r[label]) for label in LABELS) - 1) < 1e-4
    score_timeline(tiny_model, clip, out, "--hop-s", "0.5")
    ends = [float(r["end_s"]) for r in read_csv(out)]
    assert ends[:3] == [1.0, 1.5, 2.0] and np.all(np.diff(ends) <= 0.5 + 1e-9)  # the live monitor's hop
    table = run_cli("score", "--model", str(tiny_model), str(clip), "--batch-size", "3")
    assert table.returncode == 0
    header, line = table.stdout.strip().splitlines()
    assert header.split()[:3] == ["path", "label", "confidence"] and line.startswith(str(clip))


def test_bad_output_name_and_missing_path(tiny_model, tmp_path):
    bad = run_cli("score", "--model", str(tiny_model), str(tmp_path), "--out", str(tmp_path / "x.txt"))
    assert bad.returncode == 2 and "use a .csv or .jsonl" in bad.stderr
    missing = run_cli("score", "--model", str(tiny_model), str(tmp_path / "nope.wav"))
    assert missing.returncode == 2 and "nope.wav: no such file or folder" in missing.stderr


def test_too_short_file_is_reported_in_both_modes(tiny_model, tmp_path):
    blip = tmp_path / "blip.wav"
    sf.write(blip, 0.3 * np.sin(np.arange(800) / 5.0).astype(np.float32), 16_000)  # 50 ms
    per_file = run_cli("score", "--model", str(tiny_model), str(blip))
    assert per_file.returncode == 1 and f"{blip}: too short" in per_file.stderr
    segments = run_cli("score", "--model", str(tiny_model), str(blip), "--segments")
    assert segments.returncode == 1 and f"{blip}: too short for a window" in segments.stderr


def test_only_missing_paths_fail_fast_without_a_model(tmp_path):
    # No --model and an empty cache: were a model needed, this would start building the default one.
    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    env.pop("EMOTION_MODEL", None)
    result = run_cli("score", str(tmp_path / "nope.wav"), env=env)
    assert result.returncode == 2  # a usage error, as emotion-live --input nope.wav
    assert "nope.wav: no such file" in result.stderr
    assert "building the default model" not in result.stderr


def test_silence_rows_carry_no_emotion_in_jsonl_and_table(tiny_model, ravdess_16k, tmp_path):
    clip = ravdess_16k / ANGRY_CLIP
    out = tmp_path / "timeline.jsonl"
    score_timeline(tiny_model, clip, out)
    records = read_jsonl(out)
    silence = [r for r in records if not r["speech"]]
    assert silence and all(r["label"] == "silence" and r["probs"] is None for r in silence)
    assert all(set(r["probs"]) == set(LABELS) for r in records if r["speech"])
    table = run_cli("score", "--model", str(tiny_model), str(clip), "--segments")
    assert table.returncode == 0, table.stderr
    header, *lines = table.stdout.splitlines()
    silent_lines = [line for line in lines if " False " in line]
    assert len(silent_lines) == len(silence)
    for line in silent_lines:  # path, start_s, end_s, speech, label; no probability
        assert line.split()[3:] == ["False", "silence"]


def test_missing_path_exits_2_like_emotion_live_and_the_others_are_scored(tiny_model, ravdess_16k, tmp_path):
    clip, nope = ravdess_16k / ANGRY_CLIP, tmp_path / "nope.wav"
    score = run_cli("score", "--model", str(tiny_model), str(clip), str(nope))
    live = run_cli("live", "--model", str(tiny_model), "--input", str(nope), "--fast")
    assert score.returncode == live.returncode == 2
    assert str(clip) in score.stdout  # the other results are not lost
    assert f"emotion-score: {nope}: no such file or folder" in score.stderr.splitlines()
    assert "emotion-score: 1 scored, 1 failed" in score.stderr.splitlines()


def test_empty_files_are_reported_as_empty(tiny_model, tmp_path):
    no_bytes, no_samples = tmp_path / "no_bytes.wav", tmp_path / "no_samples.wav"
    no_bytes.write_bytes(b"")
    sf.write(no_samples, np.zeros(0, np.float32), 16_000)  # a valid header and no audio
    result = run_cli("score", "--model", str(tiny_model), str(no_bytes), str(no_samples))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr.splitlines() == [
        f"emotion-score: {no_bytes}: empty file (0 bytes)",
        f"emotion-score: {no_samples}: empty file (no audio samples)",
        "emotion-score: 0 scored, 2 failed",
    ]


def test_stdout_table_columns_line_up(tiny_model, ravdess_16k, tmp_path):
    long_name = tmp_path / "a_much_longer_file_name_than_the_other_one.flac"
    shutil.copy(ravdess_16k / ANGRY_CLIP, long_name)
    short = ravdess_16k / "Actor_20" / "03-01-02-01-02-01-20.flac"
    for mode in ([], ["--segments"]):
        result = run_cli("score", "--model", str(tiny_model), str(short), str(long_name), *mode)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.splitlines()
        assert len(lines) >= 3 and lines[0].startswith("path ")
        header = list(re.finditer(r"\S+", lines[0]))
        for line in lines[1:]:
            cells = list(re.finditer(r"\S+", line))
            if " False " in line:  # a silence row stops after its label
                header_part = header[: len(cells)]
                assert len(cells) == len(header) - len(LABELS)
            else:
                header_part = header
            assert len(cells) == len(header_part), line
            # Each cell starts under its column's name (text) or ends under it (numbers).
            for cell, name in zip(cells, header_part, strict=True):
                assert cell.start() == name.start() or cell.end() == name.end(), (line, name.group())
