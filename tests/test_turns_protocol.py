"""The speaker-turn protocol (benchmarks/turns_protocol.py): its scoring rules by hand, and one small real run."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from support import REPO_ROOT

from benchmarks.turns_protocol import match_changes


def test_a_change_counts_once_within_three_seconds_after_the_turn():
    found, delays, false = match_changes([10.0, 20.0, 30.0], [9.5, 11.0, 12.0, 23.5, 40.0])
    assert found == 1 and delays == [1.0]  # 9.5 is before the turn, 23.5 too late, 12.0 a second detection
    assert false == 4


@pytest.mark.data
def test_protocol_runs_on_real_conversations(tiny_model, speaker_model, ravdess_16k):
    result = subprocess.run(
        [sys.executable, "benchmarks/turns_protocol.py", "--model", str(tiny_model), "--conversations", "3"],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=REPO_ROOT,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0].startswith("# 3 conversations") and "CPU flags" in lines[0]
    assert lines[1].startswith("# detector: TurnOptions(")
    assert "recall@3s" in lines[2] and "acc per-speaker" in lines[2]
    groups = {line[:24].strip(): line for line in lines[3:]}
    assert set(groups) == {"2 speakers, same sex", "2 speakers, cross sex", "3 speakers"}
    for line in groups.values():
        shares = [float(x) for x in re.findall(r"([\d.]+)%", line)]
        assert len(shares) == 4 and all(0 <= x <= 100 for x in shares), line
