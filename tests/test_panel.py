"""The live panel in a real terminal: ``emotion-live`` runs in a tmux pane of 80 columns, and the captured pane is
checked as a user would read it (header within 80 columns, headline = the marked bar, the strip of the last hops).
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest
import soundfile as sf
from support import ANGRY_CLIP, REPO_ROOT

from emotion_monitor.realtime.audio import load_audio
from emotion_monitor.realtime.display import STRIP_CELLS

COLUMNS, ROWS = 80, 40
SGR = re.compile(r"\x1b\[([0-9;]*)m")


def _tmux(server: str, *args: str) -> str:
    return subprocess.run(
        ["tmux", "-L", server, *args], capture_output=True, text=True, timeout=30, check=True
    ).stdout


def run_in_tmux(command: list[str], timeout_s: float = 90) -> tuple[list[str], list[str]]:
    """Run ``command`` in a detached 80-column tmux pane until its summary shows; the pane's lines as plain text
    (wrapped lines joined, so a line wider than the pane shows as one long line) and with colour codes."""
    server = f"emotion-test-{uuid.uuid4().hex[:8]}"  # a private tmux server: no other session is touched
    shell = f"cd {shlex.quote(str(REPO_ROOT))} && {shlex.join(command)}; sleep 600"
    _tmux(server, "new-session", "-d", "-x", str(COLUMNS), "-y", str(ROWS), shell)
    try:
        deadline = time.monotonic() + timeout_s
        while "summary:" not in (text := _tmux(server, "capture-pane", "-p", "-J")):
            assert time.monotonic() < deadline, f"no summary in the pane after {timeout_s} s:\n{text}"
            time.sleep(0.5)
        coloured = _tmux(server, "capture-pane", "-p", "-J", "-e")
    finally:
        subprocess.run(["tmux", "-L", server, "kill-server"], capture_output=True, timeout=30)
    return text.splitlines(), coloured.splitlines()


@pytest.mark.data
def test_panel_in_a_real_terminal(tiny_model, ravdess_16k, tmp_path):
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (apt-get install tmux)")
    pause = np.zeros(16_000, np.float32)
    talk = np.concatenate(
        [
            pause,
            load_audio(ravdess_16k / ANGRY_CLIP),
            pause,
            load_audio(ravdess_16k / "Actor_02/03-01-04-02-01-01-02.flac"),
        ]
    )
    wav = tmp_path / "talk.wav"
    sf.write(wav, talk, 16_000)
    command = [sys.executable, "-m", "emotion_monitor.realtime.live", "--model", str(tiny_model)]
    lines, coloured = run_in_tmux([*command, "--input", str(wav), "--fast", "--no-speaker-norm"])

    assert all(len(line) <= COLUMNS for line in lines), "\n".join(lines)  # joined: a wrapped line is longer
    assert lines[0].startswith("emotion-live: ") and "hop 0.5 s" in lines[0], lines[0]
    assert lines[1].startswith("VAD ") and "input: " in lines[1], lines[1]
    headline = lines[2]
    assert "speaker S1" in headline
    assert any("probability smoothed" in line for line in lines[:5]), "the panel says what the bars show"

    # The headline and the bar marked ◀ are the same emotion with the same smoothed probability.
    marked = [line for line in lines if line.endswith(" ◀")]
    assert len(marked) == 1, "\n".join(lines)
    label, value = marked[0].split()[0], float(marked[0].split()[-2])
    words = headline.split()
    assert words[0] == label.upper() and words[1] == f"{value:.0%}", (headline, marked[0])
    colour_of = {}
    for line in coloured:
        bar = re.match(r"\s+(\w+)\s+\x1b\[([0-9;]+)m", line)
        if bar:
            colour_of[bar.group(1)] = bar.group(2)
    assert SGR.search(coloured[2]).group(1) == colour_of[label], "the headline has its bar's colour"

    # The strip: one cell per hop (silence blank, speech in the colour of the emotion then shown).
    (strip,) = [line for line in lines if "last 30 s" in line]
    cells = strip.split("▕")[1].rstrip("▏")
    assert len(cells) == STRIP_CELLS, strip
    hops = round(len(talk) / 16_000 / 0.5)
    assert cells[:2] == "  ", "the first second is silence: blank cells"
    assert "█" in cells and cells[hops + 1 :].strip() == "", strip  # nothing after the last hop
    (coloured_strip,) = [line for line in coloured if "last 30 s" in line]
    assert set(SGR.findall(coloured_strip)) - {"0", "39", ""} <= set(colour_of.values())
