"""The shipped model through the real audio path: what the live monitor shows for a clip is what emotion-score
says of the same clip. Clips of six emotions are played into a PulseAudio null sink with paplay, recorded from its
monitor by ``emotion-live --device pulse``, and the dominant label of each utterance is compared."""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest
import soundfile as sf
from support import REPO_ROOT, live_from_pulse

from emotion_monitor.realtime.audio import SAMPLE_RATE, load_audio

CLIPS = (
    "Actor_02/03-01-05-02-01-01-02.flac",  # angry
    "Actor_05/03-01-04-02-02-01-05.flac",  # sad
    "Actor_08/03-01-03-02-01-02-08.flac",  # happy
    "Actor_11/03-01-06-02-02-01-11.flac",  # fearful
    "Actor_14/03-01-01-01-01-01-14.flac",  # neutral
    "Actor_19/03-01-07-02-01-01-19.flac",  # disgust
)
GAP_S = 2.5


def utterances(hops: list[dict]) -> list[list[dict]]:
    """Speech hops grouped into utterances: a run of two or more silent hops separates them."""
    groups, current, silent = [], [], 0
    for hop in hops:
        if hop["speech"]:
            current.append(hop)
            silent = 0
        else:
            silent += 1
            if silent >= 2 and current:
                groups.append(current)
                current = []
    if current:
        groups.append(current)
    return groups


@pytest.mark.audio
@pytest.mark.data
def test_live_monitor_shows_what_emotion_score_says(pulse_sink, default_model, ravdess_16k, tmp_path):
    gap = np.zeros(int(GAP_S * SAMPLE_RATE), np.float32)
    parts = [gap]
    for rel in CLIPS:
        parts += [load_audio(ravdess_16k / rel), gap]
    wav = tmp_path / "six.wav"
    sf.write(wav, np.concatenate(parts), SAMPLE_RATE)

    scored = tmp_path / "score.csv"
    score = subprocess.run(
        [
            sys.executable,
            "-m",
            "emotion_monitor.realtime.score",
            *[str(ravdess_16k / c) for c in CLIPS],
            "--out",
            str(scored),
        ],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO_ROOT,
    )
    assert score.returncode == 0, score.stderr
    with scored.open() as f:
        score_labels = [row["label"] for row in csv.DictReader(f)]
    assert len(score_labels) == len(CLIPS)

    seconds = sum(len(p) for p in parts) / SAMPLE_RATE + 2.0
    # Speaker normalisation off: the monitor must show what emotion-score (plain, file by file) says.
    run = live_from_pulse(
        pulse_sink,
        wav,
        tmp_path / "live.jsonl",
        "--no-speaker-norm",
        "--max-seconds",
        f"{seconds:.1f}",
        play_timeout_s=120,
    )
    assert run.returncode == 0, run.stderr
    hops = run.hops
    groups = utterances(hops)
    assert len(groups) == len(CLIPS), [(h["end_s"], h["speech"]) for h in hops]
    live_labels = [Counter(h["label"] for h in group).most_common(1)[0][0] for group in groups]
    agree = sum(a == b for a, b in zip(live_labels, score_labels, strict=True))
    print("live:", live_labels, "score:", score_labels)
    assert agree >= len(CLIPS) - 1, f"live {live_labels} vs emotion-score {score_labels}"
