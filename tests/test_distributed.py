"""``emotion-score --engine ray``: the same rows as the local engine, from actors on a local Ray instance."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import soundfile as sf
from support import ANGRY_CLIP

from emotion_monitor.realtime import score
from emotion_monitor.realtime.audio import load_audio
from emotion_monitor.realtime.batch import EXIT_SOME_FAILED, FileScorer, ScoreOptions, run_local
from emotion_monitor.realtime.discovery import find_audio_files
from emotion_monitor.realtime.distributed import run_on_ray


@pytest.fixture
def folder(tmp_path, ravdess_16k):
    """A short clip, a 10 s recording (several windows), and a corrupt file."""
    folder = tmp_path / "in"
    folder.mkdir()
    clip = load_audio(ravdess_16k / ANGRY_CLIP)
    sf.write(folder / "a_short.wav", clip, 16_000)
    sf.write(folder / "b_long.wav", np.concatenate([clip, clip, clip]), 16_000)
    (folder / "c_corrupt.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEfmt garbage" + bytes(100))
    return folder


@pytest.mark.parametrize("mode", [[], ["--segments"]], ids=["files", "segments"])
def test_ray_engine_writes_the_local_rows(ray_local, tiny_model, folder, tmp_path, capfd, mode):
    common = [str(folder), "--model", str(tiny_model), "--threads", "1", *mode]
    assert score.main([*common, "--out", str(tmp_path / "local.jsonl")]) == score.EXIT_SOME_FAILED
    local_err = capfd.readouterr().err
    assert (
        score.main([*common, "--out", str(tmp_path / "ray.jsonl"), "--engine", "ray", "--workers", "2"]) == 1
    )
    ray_err = capfd.readouterr().err
    local, remote = (tmp_path / "local.jsonl").read_text(), (tmp_path / "ray.jsonl").read_text()
    assert remote == local and local.count("\n") >= 2  # same rows, same order, same numbers
    assert "c_corrupt.wav: cannot decode audio" in ray_err
    assert "emotion-score: 2 scored, 1 failed" in ray_err.splitlines()
    assert "emotion-score: 2 scored, 1 failed" in local_err.splitlines()


def test_ray_engine_without_ray_names_the_extra(tiny_model, folder, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray → ImportError, as when the extra is missing
    assert score.main([str(folder), "--model", str(tiny_model), "--engine", "ray"]) == 2
    assert "pip install 'speech-emotion-monitor[ray]'" in capsys.readouterr().err


def test_a_bug_in_one_file_costs_only_that_file_locally_and_on_ray(
    ray_local, tiny_model, folder, tmp_path, capfd
):
    """An unexpected exception while scoring one file (a bug, injected into the real ``FileScorer`` that the Ray
    actors run) is that file's one-line failure on both engines; the other files' rows are written."""

    class BuggyScorer(FileScorer):  # defined here: Ray ships it to its actors by value
        def analyse(self, path, *args, **kwargs):
            if path.name == "b_long.wav":
                raise KeyError("injected bug")
            return super().analyse(path, *args, **kwargs)

    lines = {}
    for engine, run in (("local", run_local), ("ray", run_on_ray)):
        out = tmp_path / f"{engine}.jsonl"
        options = ScoreOptions((str(folder),), out=str(out), model=str(tiny_model), threads=1, workers=2)
        found = find_audio_files(options.paths, recursive=False)
        groups = [(None, [f]) for f in found.files]
        status = (
            run(options, found, groups, BuggyScorer)
            if engine == "local"
            else run(options, found, BuggyScorer)
        )
        assert status == EXIT_SOME_FAILED
        assert [json.loads(r)["path"].rsplit("/", 1)[-1] for r in out.read_text().splitlines()] == [
            "a_short.wav"
        ]
        lines[engine] = capfd.readouterr().err.splitlines()
        bug = f"emotion-score: {folder / 'b_long.wav'}: unexpected error (KeyError: 'injected bug')"
        assert bug in lines[engine], lines[engine]
        assert lines[engine][-1] == "emotion-score: 1 scored, 2 failed"
    assert lines["local"] == lines["ray"]
