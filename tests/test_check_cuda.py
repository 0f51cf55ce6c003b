"""benchmarks/check_cuda.py's dry run (CPU provider, 4 real clips, the tiny model): the GPU check runs between
GPU sessions too, so it cannot rot. Its figures are not asserted (benchmarks hold speed), its plumbing is."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from support import REPO_ROOT, data_dir

CLIPS = [f"Actor_01/03-01-0{e}-01-01-01-01.flac" for e in (1, 3, 5, 7)]


def test_check_cuda_dry_run_prints_one_json_document(tiny_model, tmp_path):
    source = data_dir() / "ravdess-16k"
    if not all((source / c).is_file() for c in CLIPS):
        pytest.skip(f"RAVDESS clips not found under {source} (set EMOTION_DATA_DIR)")
    clips = tmp_path / "clips"
    clips.mkdir()
    for c in CLIPS:
        shutil.copy(source / c, clips)
    out = tmp_path / "check.json"
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "check_cuda.py"), "--dry-run"]
    command += ["--model", str(tiny_model), "--clips", str(clips), "--out", str(out)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc == json.loads(out.read_text())
    assert doc["provider"] == "cpu" and doc["clips"] == 4 and "error" not in doc
    assert doc["runtime"]["distributions"] and "CPUExecutionProvider" in doc["runtime"]["available_providers"]
    assert doc["session"]["fp32"]["providers"] == ["CPUExecutionProvider"]
    same = doc["parity"]["fp32_cpu_vs_fp32_cpu"]  # the same model on the same provider: identical
    assert (same["clips"], same["max_abs_dprob"], same["label_agreement"]) == (4, 0.0, 1.0)
    assert set(doc["model_throughput"]) == {"fp32_cpu", "fp32"}
    assert set(doc["model_throughput"]["fp32"]) == {"1", "4"}
    assert all(r["windows_per_s"] > 0 for r in doc["model_throughput"]["fp32"].values())
    for run in doc["emotion_score"].values():
        assert run["exit"] == 0 and run["files"] == 4, run
    assert set(doc["emotion_score"]) == {"fp32_whole_files", "fp32_segments_batch_default"}
    live = doc["live"]["fp32"]
    assert live["windows"] == 5 and 0 < live["median_ms"] <= live["max_ms"]


def test_check_cuda_missing_model_is_one_line(tmp_path):
    command = [sys.executable, str(REPO_ROOT / "benchmarks" / "check_cuda.py"), "--dry-run"]
    done = subprocess.run(
        [*command, "--model", str(tmp_path / "none.onnx"), "--clips", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr == f"check_cuda: error: {tmp_path / 'none.onnx'}: not found\n"
