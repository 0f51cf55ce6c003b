"""``emotion-live`` end to end: file replay, stdin, a real PulseAudio device, Ctrl-C, errors, no torch."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
from support import ANGRY_CLIP, REPO_ROOT, assert_runs_without, live_from_pulse, run_cli

from emotion_monitor.realtime.audio import SAMPLE_RATE, load_audio
from emotion_monitor.realtime.sources import MicrophoneSource, SourceError


def read_jsonl(path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def test_replayed_file_gives_the_same_windows_as_batch_segments(tiny_model, ravdess_16k, tmp_path):
    clip = ravdess_16k / ANGRY_CLIP
    live_out, seg_out = tmp_path / "live.jsonl", tmp_path / "segments.jsonl"
    live = run_cli(
        "live", "--model", str(tiny_model), "--input", str(clip), "--fast", "--jsonl", str(live_out)
    )
    assert live.returncode == 0, live.stderr
    score = run_cli(  # --hop-s 0.5: the live monitor's hop (files default to a coarser one)
        "score", "--model", str(tiny_model), str(clip), "--segments", "--hop-s", "0.5", "--out", str(seg_out)
    )
    assert score.returncode == 0, score.stderr

    hops, segments = read_jsonl(live_out), read_jsonl(seg_out)
    assert [(h["start_s"], h["end_s"]) for h in hops] == [(s["start_s"], s["end_s"]) for s in segments]
    assert [h["speech"] for h in hops] == [s["speech"] for s in segments]
    scored = [(h, s) for h, s in zip(hops, segments, strict=True) if h["speech"]]
    assert len(scored) >= 3, "the angry sentence must give several speech windows"
    for hop, seg in scored:
        live_p = np.array([hop["probs"][k] for k in seg["probs"]])
        assert np.max(np.abs(live_p - np.array(list(seg["probs"].values())))) < 1e-5
    silent = [h for h in hops if not h["speech"]]
    assert silent and all(h["label"] == "silence" and h["probs"] is None for h in silent)
    # The summary closes the run on stdout.
    assert "summary:" in live.stdout and "dropped samples: 0" in live.stdout


def test_runtime_never_imports_torch(tiny_model, ravdess_16k, tmp_path):
    assert_runs_without(
        [
            "from emotion_monitor.realtime.live import main as live",
            "from emotion_monitor.realtime.score import main as score",
            f"assert live(['--model', {str(tiny_model)!r}, '--input', {str(ravdess_16k / ANGRY_CLIP)!r}, '--fast']) == 0",
            f"assert score(['--model', {str(tiny_model)!r}, {str(ravdess_16k / ANGRY_CLIP)!r}, '--segments']) == 0",
        ],
        ("silero_vad",),
    )


def test_stdin_pcm_at_another_rate_is_resampled_and_jsonl_goes_to_stdout(tiny_model, ravdess_16k):
    audio = load_audio(ravdess_16k / ANGRY_CLIP, target_rate=48_000)
    pcm = (np.clip(audio, -1, 1) * 32767).astype("<i2").tobytes()
    cmd = [
        sys.executable,
        "-m",
        "emotion_monitor.realtime.live",
        "--model",
        str(tiny_model),
        "--stdin-pcm",
        "--rate",
        "48000",
    ]
    result = subprocess.run([*cmd, "--jsonl", "-"], input=pcm, capture_output=True, timeout=60, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr
    hops = [json.loads(line) for line in result.stdout.decode().splitlines()]  # stdout: JSON lines only
    assert abs(hops[-1]["end_s"] - len(audio) / 48_000) < 0.05  # every sample arrived, at the model's rate
    assert any(h["speech"] for h in hops)
    assert b"summary:" in result.stderr  # the human-readable view moved to stderr


def test_ctrl_c_prints_the_summary_and_exits_0(tiny_model, ravdess_16k):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "emotion_monitor.realtime.live",
            "--model",
            str(tiny_model),
            "--input",
            str(ravdess_16k / ANGRY_CLIP),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
    )
    header = proc.stdout.readline()  # printed once the model is loaded, just before the replay starts
    assert "emotion-live:" in header
    # Interrupt right after the first hop's line (about 1 s into the clip at real-time pace), not after a fixed
    # sleep: on a loaded machine the header can reach this process late.
    first_hop = proc.stdout.readline()
    assert first_hop.strip().split()[0].endswith("s"), first_hop
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "summary:" in out and "Traceback" not in err
    summary_line = next(line for line in out.splitlines() if line.startswith("summary:"))
    assert float(summary_line.split()[1]) < 3.0  # stopped early: less audio than the 3.8 s clip


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "no-such-microphone"], "no-such-microphone"),
        (["--input", "/nonexistent/talk.wav"], "no such file"),
        (["--model", "/nonexistent/model.onnx"], "model file not found"),
        (["--fast"], "--fast only applies to --input"),
    ],
)
def test_errors_are_one_line_and_exit_2(tiny_model, args, message):
    model_args = [] if "--model" in args else ["--model", str(tiny_model)]
    result = run_cli("live", *model_args, *args, timeout=30)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("emotion-live: error:") and message in lines[0], (
        result.stderr
    )


class _FakeStream:
    def __init__(self, active: bool):
        self.active = active

    def abort(self, ignore_errors=True):
        pass

    def close(self, ignore_errors=True):
        pass


def test_a_microphone_that_vanishes_or_stalls_is_an_error_not_a_hang(monkeypatch):
    source = MicrophoneSource(SAMPLE_RATE, device="fake")
    status = SimpleNamespace(input_overflow=True)
    source._callback(np.zeros((512, 1), np.float32), 512, None, status)  # the callback copies and counts
    assert source.ring.stats().device_overflows == 1 and source.ring.available() == 512
    source._stream = _FakeStream(active=True)
    source.check()  # audio arrived since the last check: fine
    source.check()  # nothing new but not stalled yet: fine
    source._stream = _FakeStream(active=False)
    with pytest.raises(SourceError, match="stopped delivering audio"):
        source.check()
    source._stream = _FakeStream(active=True)
    monkeypatch.setattr("emotion_monitor.realtime.sources.STALL_TIMEOUT_S", 0.0)
    time.sleep(0.01)
    with pytest.raises(SourceError, match="no audio for"):
        source.check()
    source.stop()


@pytest.mark.audio
def test_live_records_a_clip_played_into_pulseaudio(pulse_sink, tiny_model, ravdess_16k, tmp_path):
    clip = load_audio(ravdess_16k / ANGRY_CLIP)
    wav = tmp_path / "clip.wav"
    sf.write(wav, clip, SAMPLE_RATE)
    max_s = len(clip) / SAMPLE_RATE + 2.0
    run = live_from_pulse(
        pulse_sink, wav, tmp_path / "pulse.jsonl", "--model", str(tiny_model), "--max-seconds", f"{max_s:.1f}"
    )
    assert run.returncode == 0, run.stderr
    hops, rest = run.hops, run.stdout
    speech = [h for h in hops if h["speech"]]
    assert len(speech) >= 2, [(h["end_s"], h["speech"]) for h in hops]
    assert all(h["probs"] and abs(sum(h["probs"].values()) - 1) < 1e-4 for h in speech)
    assert not hops[0]["speech"], "the stream starts before the clip: the first hop is silence"
    assert "summary:" in rest
    # Live from a device, every hop knows how long ago its last sample arrived; a few seconds would mean the
    # monitor fell behind the microphone (the ring holds 10 s).
    assert all(h["latency_ms"] is not None and 0 <= h["latency_ms"] < 5000 for h in hops)
    print(f"pulse live path: {len(hops)} hops, {len(speech)} speech, dropped {hops[-1]['dropped_samples']}")


@pytest.mark.audio
def test_device_vanishing_mid_stream_is_one_line_and_exit_2(tiny_model, tmp_path):
    """A private PulseAudio daemon is killed while emotion-live records from it: a clear error, no hang."""
    if shutil.which("pulseaudio") is None:
        pytest.skip("PulseAudio is not installed")
    runtime = tmp_path / "run"
    socket = runtime / "pulse" / "native"
    env = dict(os.environ, XDG_RUNTIME_DIR=str(runtime), PULSE_RUNTIME_PATH=str(runtime / "pulse"))
    env.pop("PULSE_SERVER", None)
    if os.geteuid() == 0:
        env["PULSE_ALLOW_ROOT"] = "1"
    start = [
        "pulseaudio",
        "--daemonize=yes",
        "--exit-idle-time=-1",
        "--system=false",
        "-n",
        "--disallow-exit",
    ]
    start += ["--load=module-null-sink sink_name=vanishing rate=48000 channels=2"]
    start += [f"--load=module-native-protocol-unix auth-anonymous=1 socket={socket}"]
    subprocess.run(start, env=env, capture_output=True, timeout=30, check=True)
    env.update(PULSE_SERVER=f"unix:{socket}", PULSE_SOURCE="vanishing.monitor")
    cmd = [
        sys.executable,
        "-m",
        "emotion_monitor.realtime.live",
        "--model",
        str(tiny_model),
        "--device",
        "pulse",
    ]
    proc = subprocess.Popen(
        [*cmd, "--max-seconds", "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    )
    try:
        assert "emotion-live:" in proc.stdout.readline()  # recording
        time.sleep(1.0)
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)
        t0 = time.monotonic()
        _, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        subprocess.run(["pulseaudio", "--kill"], env=env, capture_output=True, timeout=30)
    assert proc.returncode == 2
    ours = [line for line in err.splitlines() if line.startswith("emotion-live")]
    assert len(ours) == 1, err
    assert "stopped delivering audio" in ours[0] or "no audio for" in ours[0], err
    assert time.monotonic() - t0 < 10


def test_no_microphone_is_one_line_and_exit_2(tiny_model, tmp_path):
    """No reachable sound server and no sound card: the default input does not exist."""
    env = dict(os.environ, PULSE_SERVER=f"unix:{tmp_path}/no-server", XDG_RUNTIME_DIR=str(tmp_path))
    listing = run_cli("live", "--list-devices", env=env, timeout=30)
    assert listing.returncode == 0, listing.stderr
    if "no audio input devices found" not in listing.stdout:
        pytest.skip("this machine has a sound card of its own")
    result = run_cli("live", "--model", str(tiny_model), "--max-seconds", "1", env=env, timeout=30)
    assert result.returncode == 2
    ours = [line for line in result.stderr.splitlines() if line.startswith("emotion-live")]
    assert ours == [
        "emotion-live: error: no default audio input device (see --list-devices, or use --input FILE / --stdin-pcm)"
    ]
    assert "summary:" not in result.stdout


@pytest.mark.audio
def test_list_devices_and_unsupported_rate(pulse_sink, tiny_model):
    env = dict(pulse_sink.env, PULSE_SOURCE=pulse_sink.monitor)
    listing = run_cli("live", "--list-devices", env=env, timeout=30)
    assert listing.returncode == 0 and " pulse " in listing.stdout
    result = run_cli("live", "--model", str(tiny_model), "--device", "pulse", "--rate", "3000000", env=env)
    assert result.returncode == 2
    (line,) = (
        result.stderr.strip().splitlines()
    )  # e.g. "... 'pulse': Invalid sample rate ... (at 3000000 Hz, mono)"
    assert line.startswith("emotion-live: error: input device 'pulse': ") and "3000000 Hz" in line
    assert re.search(r"; try --rate \d+$", line)  # the device's default rate, resampled to the model's


@pytest.mark.data
@pytest.mark.parametrize("stay_live", [True, False])
def test_falling_behind_a_live_source_skips_stale_windows_and_loses_no_audio(
    tiny_model, ravdess_16k, monkeypatch, stay_live
):
    """Analysis (slowed to 0.25 s per window) slower than the hop (0.1 s) on a real-time replay: by default only
    the newest window is analysed, skipped ones are counted, and the ring buffer never overflows."""
    import io

    from emotion_monitor.realtime.display import PlainView
    from emotion_monitor.realtime.live import Monitor
    from emotion_monitor.realtime.model import EmotionModel
    from emotion_monitor.realtime.sources import FileReplaySource
    from emotion_monitor.realtime.stream import EmotionStream, StreamOptions

    model = EmotionModel(tiny_model)
    fast_score = model.score_windows
    monkeypatch.setattr(
        model, "score_windows", lambda w, pooled=False: (time.sleep(0.25), fast_score(w, pooled))[1]
    )
    source = FileReplaySource(ravdess_16k / ANGRY_CLIP, model.sample_rate, realtime=True)
    stream = EmotionStream(model, StreamOptions(hop_s=0.1, vad="energy", speaker_norm=False))
    view = PlainView(io.StringIO(), model.labels, "test")
    monitor = Monitor(stream, view, None, source, stay_live=stay_live)
    source.start()
    try:
        monitor.run()
    finally:
        source.stop()
    analysed = sum(monitor.summary.label_hops.values())
    assert source.ring.stats().dropped == 0
    if stay_live:
        assert monitor.skipped_windows > 0 and "skipped windows" in monitor.summary.render(0, 0, 0)
    else:
        assert monitor.skipped_windows == 0 and analysed >= 30, analysed
