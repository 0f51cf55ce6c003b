"""Progress bars on long work: drawn on stderr when it is a terminal, absent from pipes, never in the results."""

from __future__ import annotations

import io
import os
import pty
import subprocess
import sys
import threading

import soundfile as sf
from support import REPO_ROOT

from emotion_monitor.core.corpora import Corpus, Utterance
from emotion_monitor.core.window_features import View, compute
from emotion_monitor.realtime.model import load_model
from emotion_monitor.realtime.progress import Progress


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def _clips(ravdess_16k, n: int = 3):
    return sorted((ravdess_16k / "Actor_01").glob("*.flac"))[:n]


def test_feature_caching_shows_a_bar_on_a_terminal_only(tiny_model, ravdess_16k, monkeypatch):
    model = load_model(tiny_model, intra_op_threads=1)
    corpus = Corpus("ravdess", [Utterance(p, 0, "ravdess:1", "ravdess") for p in _clips(ravdess_16k)], (0,))
    terminal = Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    features = compute(model, corpus, View())
    assert len(set(features.utt.tolist())) == 3
    assert "ravdess/clean features:" in terminal.getvalue() and "/3 [" in terminal.getvalue()
    piped = io.StringIO()
    monkeypatch.setattr(sys, "stderr", piped)
    again = compute(model, corpus, View())
    assert piped.getvalue() == ""
    assert (again.pooled == features.pooled).all()


def _score_with_stderr_on_a_terminal(args: list[str]) -> tuple[subprocess.CompletedProcess, str]:
    """Run emotion-score with stdout a pipe and stderr a pseudo-terminal; returns (result, what the terminal got)."""
    controller, terminal = pty.openpty()
    child = subprocess.Popen(
        [sys.executable, "-m", "emotion_monitor.realtime.score", *args],
        stdout=subprocess.PIPE,
        stderr=terminal,
        cwd=REPO_ROOT,
    )
    os.close(terminal)
    received = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(controller, 4096)
            except OSError:  # the child closed its end
                return
            if not chunk:
                return
            received.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    stdout, _ = child.communicate(timeout=120)
    reader.join(timeout=10)
    os.close(controller)
    result = subprocess.CompletedProcess(child.args, child.returncode, stdout.decode(), "")
    return result, received.decode(errors="replace")


def test_score_bar_counts_seconds_on_a_terminal_stderr_and_never_goes_into_results(
    tiny_model, ravdess_16k, tmp_path
):
    clips = [str(p) for p in _clips(ravdess_16k)]
    result, terminal = _score_with_stderr_on_a_terminal(["--model", str(tiny_model), *clips])
    assert result.returncode == 0, terminal
    audio_s = round(sum(sf.info(c).duration for c in clips))
    assert "scoring:" in terminal and f" 0/{audio_s} [" in terminal and "s/s]" in terminal  # seconds of audio
    assert terminal.rstrip().splitlines()[-1].endswith("emotion-score: 3 scored, 0 failed")
    lines = result.stdout.splitlines()
    assert lines[0].startswith("path ") and [line.split()[0] for line in lines[1:]] == clips
    assert "\r" not in result.stdout and "scoring" not in result.stdout

    piped = subprocess.run(
        [sys.executable, "-m", "emotion_monitor.realtime.score", "--model", str(tiny_model), *clips],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        timeout=120,
    )
    assert piped.returncode == 0 and piped.stdout == result.stdout
    assert piped.stderr == "emotion-score: 3 scored, 0 failed\n"  # no bar in a pipe or a log


def test_the_bar_moves_inside_a_long_file_in_seconds_of_audio():
    terminal = Terminal()
    progress = Progress(2, terminal, seconds=[3600.0, 60.0])
    progress.update(0, "meeting.flac")
    progress.audio(1800.4)  # half-way through the first file
    assert progress.bar.n == 1800 and progress.bar.total == 3660
    progress.audio(99999.0)  # never past the file's own length (a header that undercounts)
    assert progress.bar.n == 3600
    progress.update(1, "short.flac")
    assert progress.bar.n == 3600 and progress.bar.postfix == "file 2/2 short.flac"
    progress.update(2, "")
    assert progress.bar.n == 3660
    progress.close()
