"""``emotion-serve``: the real server on a free localhost port, real WebSocket clients streaming real recordings,
and the live page in headless Chromium with a fake microphone playing a recording.

The tiny model (random: its labels mean nothing) serves where only equality and the protocol matter; the bundled
default model serves the page, whose label must be the one a listener would expect.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr
from support import ANGRY_CLIP, REPO_ROOT, run_cli

from emotion_monitor.realtime import EmotionStream, StreamOptions
from emotion_monitor.realtime.audio import load_audio
from emotion_monitor.realtime.model import EmotionModel

websockets = pytest.importorskip("websockets", reason="emotion-serve's extra: pip install -e '.[serve]'")
from websockets.exceptions import ConnectionClosed  # noqa: E402
from websockets.sync.client import connect  # noqa: E402

from emotion_monitor.realtime.server import WEB_DIR, EmotionServer, ServerOptions  # noqa: E402

PLAIN = StreamOptions(hop_s=0.5, speaker_norm=False)
FRAME_SAMPLES = 320  # 20 ms at 16 kHz
CLIPS = (
    ANGRY_CLIP,
    "Actor_01/03-01-04-02-01-01-01.flac",  # sad
    "Actor_02/03-01-03-02-02-01-02.flac",  # happy
    "Actor_03/03-01-06-02-01-02-03.flac",  # fearful
)


class BackgroundServer:
    """An ``EmotionServer`` on a free localhost port, its event loop in a thread of this process."""

    def __init__(self, model: EmotionModel, **options):
        self.server = EmotionServer(model, ServerOptions(port=0, stream=PLAIN, **options))
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="test-server", daemon=True)

    def __enter__(self) -> BackgroundServer:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        self.url = f"ws://127.0.0.1:{self.server.port}/"
        self.http = f"http://127.0.0.1:{self.server.port}/"
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()

    def wait_idle(self, timeout_s: float = 10.0):
        """Stats once no connection and no stream is left (fails after ``timeout_s``)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            stats = self.server.stats()
            if stats.connections == 0 and stats.streams == 0:
                return stats
            time.sleep(0.05)
        pytest.fail(f"the server still holds connections after {timeout_s} s: {self.server.stats()}")


@pytest.fixture(scope="module")
def model(tiny_model) -> EmotionModel:
    return EmotionModel(tiny_model)


@pytest.fixture(scope="module")
def served(model):
    with BackgroundServer(model, max_connections=6) as server:
        yield server


@pytest.fixture(scope="module")
def recordings(ravdess_16k) -> list[np.ndarray]:
    """Four real utterances (four actors, four emotions) as 16 kHz int16, each with a second of pause after."""
    pause = np.zeros(16_000, np.int16)
    return [np.concatenate([sf.read(ravdess_16k / clip, dtype="int16")[0], pause]) for clip in CLIPS]


def stream_pcm(
    url: str, pcm: np.ndarray, frame_samples: int = FRAME_SAMPLES, **config
) -> tuple[dict, list, dict]:
    """Stream int16 ``pcm`` (16 kHz) as fast as the server takes it; (ready, hop messages, done). With the
    ``Origin`` a browser on the server's page sends."""
    with connect(url, origin=url.replace("ws://", "http://").rstrip("/")) as ws:
        ws.send(json.dumps({"sample_rate": 16_000, "speaker_norm": False} | config))
        ready = json.loads(ws.recv(timeout=30))
        assert ready.get("ready") is True, ready
        for k in range(0, len(pcm), frame_samples):
            ws.send(pcm[k : k + frame_samples].tobytes())
        ws.send(json.dumps({"end": True}))
        messages = [json.loads(m) for m in ws]
    assert ws.close_code == 1000, ws.close_reason
    assert messages and messages[-1].get("done") is True, messages[-1:]
    return ready, messages[:-1], messages[-1]


def reference(model: EmotionModel, pcm: np.ndarray) -> list[dict]:
    """The library's results for the same audio (``EmotionStream``, one call)."""
    stream = EmotionStream(model, PLAIN)
    return [r.to_dict() for r in stream.process(pcm.astype(np.float32) / 32768.0, 16_000) + stream.flush()]


def probs(rows: list[dict], labels) -> np.ndarray:
    return np.array([[row["probs"][label] for label in labels] for row in rows if row["probs"]])


def assert_same_hops(got: list[dict], expected: list[dict], labels) -> None:
    assert [(h["start_s"], h["end_s"], h["speech"]) for h in got] == [
        (h["start_s"], h["end_s"], h["speech"]) for h in expected
    ]
    np.testing.assert_allclose(probs(got, labels), probs(expected, labels), rtol=0, atol=1e-5)


# -- results ---------------------------------------------------------------------------------------------------
def test_hops_equal_emotion_score_segments(served, model, tiny_model, recordings, tmp_path):
    pcm = np.concatenate(recordings[:2])
    wav = tmp_path / "talk.wav"
    sf.write(wav, pcm, 16_000, subtype="PCM_16")
    out = tmp_path / "segments.jsonl"
    score = run_cli(
        "score", "--model", str(tiny_model), str(wav), "--segments", "--hop-s", "0.5", "--out", str(out)
    )
    assert score.returncode == 0, score.stderr
    segments = [json.loads(line) for line in out.read_text().splitlines()]

    ready, hops, done = stream_pcm(served.url, pcm)
    assert ready["labels"] == list(model.labels) and ready["hop_s"] == 0.5 and ready["speaker_norm"] is None
    assert_same_hops(hops, segments, model.labels)
    assert sum(h["speech"] for h in hops) >= 5 and not all(h["speech"] for h in hops)
    assert all(h["probs"] is None and h["label"] == "silence" for h in hops if not h["speech"])
    assert {h["speaker"] for h in hops} == {"S1"} and {h["dropped_results"] for h in hops} == {0}
    assert done == done | {"hops": len(hops), "dropped_results": 0, "failed_windows": 0}
    assert done["received_s"] == pytest.approx(len(pcm) / 16_000, abs=1e-3)
    served.wait_idle()


def test_four_concurrent_clients_each_get_their_own_results(served, model, recordings):
    frames = (160, 320, 1_024, 4_000)  # 10 ms ... 250 ms: any frame size
    with ThreadPoolExecutor(4) as pool:
        runs = list(pool.map(lambda i: stream_pcm(served.url, recordings[i], frames[i]), range(4)))
    expected = [reference(model, pcm) for pcm in recordings]
    for (_, hops, done), own in zip(runs, expected, strict=True):
        assert_same_hops(hops, own, model.labels)
        assert done["hops"] == len(own) and done["dropped_results"] == 0
    first = probs(runs[0][1], model.labels)
    for _, hops, _ in runs[1:]:
        other = probs(hops, model.labels)
        n = min(len(first), len(other))
        assert not np.allclose(first[:n], other[:n], atol=1e-5), "two clients got the same results"
    assert served.wait_idle().finished >= 4


def test_speaker_adaptation_and_new_speaker_per_connection(served, recordings):
    pcm = recordings[0]
    with connect(served.url) as ws:
        ws.send(
            json.dumps({"sample_rate": 16_000, "speaker_norm": True, "speaker_min_s": 0.5, "hop_s": 0.25})
        )
        ready = json.loads(ws.recv(timeout=30))
        assert ready["speaker_norm"] == "running" and ready["hop_s"] == 0.25
        ws.send(pcm[: len(pcm) // 2].tobytes())
        ws.send(json.dumps({"new_speaker": True}))
        ws.send(pcm[len(pcm) // 2 :].tobytes())
        ws.send(json.dumps({"end": True}))
        hops = [json.loads(m) for m in ws][:-1]
    speakers = [h["speaker"] for h in hops]
    assert speakers[0] == "S1" and speakers[-1] == "S2" and speakers == sorted(speakers)
    assert {h["speaker_norm"] for h in hops if h["speech"]} <= {"warming", "active"}
    served.wait_idle()


# -- bad input ---------------------------------------------------------------------------------------------------
FATAL = [
    ("binary before the configuration", [b"\x00\x01" * 10], "audio before the configuration", 1008),
    ("bad JSON", ["{sample_rate: 16000"], "not valid JSON", 1008),
    ("not an object", ["[16000]"], "must be a JSON object", 1008),
    ("no rate", ['{"hop_s": 0.5}'], 'needs "sample_rate"', 1008),
    ("rate too low", ['{"sample_rate": 100}'], "sample_rate must be an integer from 8000", 1008),
    ("rate too high", ['{"sample_rate": 10000000}'], "sample_rate must be", 1008),
    ("rate as text", ['{"sample_rate": "16000"}'], "sample_rate must be", 1008),
    ("unknown option", ['{"sample_rate": 16000, "volume": 11}'], "unknown option(s) volume", 1008),
    ("hop out of range", ['{"sample_rate": 16000, "hop_s": 0}'], "hop_s must be a number from 0.1", 1008),
    (
        "odd byte count",
        ['{"sample_rate": 16000}', b"\x00\x01\x02"],
        "int16 PCM needs an even byte count",
        1007,
    ),
]


@pytest.mark.parametrize(
    "messages, error, code", [case[1:] for case in FATAL], ids=[case[0] for case in FATAL]
)
def test_a_protocol_violation_is_an_error_message_and_a_closed_connection(
    served, recordings, messages, error, code
):
    with connect(served.url) as ws:
        for message in messages:
            ws.send(message)
        replies = read_until_closed(ws)
    errors = [r for r in replies if "error" in r]
    assert len(errors) == 1 and error in errors[0]["error"] and errors[0]["fatal"] is True, replies
    assert ws.close_code == code
    assert_server_still_serves(served, recordings)


@pytest.mark.parametrize("garbage", ["not json", '{"end": false}', '{"reset": true}', "[]"])
def test_a_bad_message_mid_stream_is_reported_and_the_stream_goes_on(served, model, recordings, garbage):
    pcm = recordings[1]
    with connect(served.url) as ws:
        ws.send(json.dumps({"sample_rate": 16_000, "speaker_norm": False}))
        ws.send(pcm[:16_000].tobytes())
        ws.send(garbage)
        ws.send(pcm[16_000:].tobytes())
        ws.send(json.dumps({"end": True}))
        replies = [json.loads(m) for m in ws]
    errors = [r for r in replies if "error" in r]
    assert len(errors) == 1 and errors[0]["fatal"] is False, errors
    assert replies[-1]["done"] is True and ws.close_code == 1000
    assert_same_hops([r for r in replies if "end_s" in r], reference(model, pcm), model.labels)


def test_a_frame_over_the_size_limit_closes_only_that_connection(served, recordings):
    with connect(served.url, max_size=None) as ws:
        ws.send(json.dumps({"sample_rate": 16_000}))
        ws.recv(timeout=30)
        ws.send(b"\x00" * (served.server.options.max_frame_bytes + 2))
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=30)
    assert ws.close_code == 1009  # "message too big", from websockets itself
    assert_server_still_serves(served, recordings)


def test_a_page_from_another_site_cannot_connect(served, recordings):
    with pytest.raises(websockets.exceptions.InvalidStatus, match="403"):
        connect(served.url, origin="http://evil.example")
    _, hops, _ = stream_pcm(served.url, recordings[2][:24_000])  # with the page's own origin
    assert hops
    served.wait_idle()


def test_too_many_connections_is_an_error_and_a_freed_slot_serves_again(model, recordings):
    with BackgroundServer(model, max_connections=2) as served:
        first, second = connect(served.url), connect(served.url)
        for ws in (first, second):
            ws.send(json.dumps({"sample_rate": 16_000}))
            assert json.loads(ws.recv(timeout=30))["ready"]
        with connect(served.url) as third:
            reply = json.loads(third.recv(timeout=10))
            with pytest.raises(ConnectionClosed):
                third.recv(timeout=10)
        assert "too many connections (at most 2)" in reply["error"] and third.close_code == 1013
        assert served.server.stats().rejected == 1
        first.close()
        assert_server_still_serves(served, recordings, wait_idle=False)
        second.close()
        served.wait_idle()


def test_closing_a_client_mid_stream_frees_its_stream(served, recordings):
    ws = connect(served.url)
    ws.send(json.dumps({"sample_rate": 16_000}))
    ws.recv(timeout=30)
    ws.send(recordings[0][:48_000].tobytes())
    assert "end_s" in json.loads(ws.recv(timeout=30))
    (session,) = served.server.sessions
    stream = weakref.ref(session.stream)
    del session
    assert served.server.stats().streams == 1
    ws.socket.shutdown(socket.SHUT_RDWR)  # the client vanishes: no closing handshake, no {"end": true}
    ws.socket.close()
    stats = served.wait_idle()
    assert stats.connections == 0 and stats.streams == 0
    gc.collect()
    assert stream() is None, "the closed connection's EmotionStream is still referenced"
    ws.close()


def test_a_client_that_does_not_read_loses_the_oldest_hops_and_is_told(model, recordings):
    """The client sends 78 s of speech as fast as it can and reads nothing until it has sent {"end": true}: the
    server keeps at most 4 hops waiting (hop 0.1 s: about 760 hops), drops the oldest and says how many."""
    pcm = np.concatenate(recordings * 4)
    with BackgroundServer(model, max_pending_results=4) as served:
        sock = socket.create_connection(("127.0.0.1", served.server.port))
        sock.setsockopt(
            socket.SOL_SOCKET, socket.SO_RCVBUF, 4096
        )  # a small window: the server's writes block
        with connect(served.url, sock=sock, max_queue=4) as ws:
            ws.send(json.dumps({"sample_rate": 16_000, "hop_s": 0.1, "speaker_norm": False}))
            for k in range(0, len(pcm), 8_000):
                ws.send(pcm[k : k + 8_000].tobytes())
            ws.send(json.dumps({"end": True}))
            replies = [json.loads(m) for m in ws]
        served.wait_idle()
    hops, done = [r for r in replies if "end_s" in r], replies[-1]
    assert done["done"] is True and done["dropped_results"] > 0
    assert len(hops) + done["dropped_results"] == done["hops"]
    counts = [h["dropped_results"] for h in hops]
    assert counts == sorted(counts) and counts[-1] <= done["dropped_results"]
    ends = [h["end_s"] for h in hops]
    assert ends == sorted(ends) and ends[-1] == pytest.approx(len(pcm) / 16_000, abs=0.1), (
        "the newest are kept"
    )


def read_until_closed(ws) -> list[dict]:
    """Every message until the server closes (whatever the close code)."""
    replies = []
    with contextlib.suppress(ConnectionClosed):
        while True:
            replies.append(json.loads(ws.recv(timeout=30)))
    return replies


def assert_server_still_serves(served: BackgroundServer, recordings, wait_idle: bool = True) -> None:
    """Another client streams a recording to the end afterwards."""
    _, hops, done = stream_pcm(served.url, recordings[2][:24_000])
    assert hops and done["hops"] == len(hops)
    if wait_idle:
        served.wait_idle()


# -- the command and the page ----------------------------------------------------------------------------------
def test_emotion_serve_command_serves_the_page_and_stops_on_sigterm(tiny_model, recordings):
    proc = subprocess.Popen(
        [sys.executable, "-m", "emotion_monitor.realtime.serve", "--model", str(tiny_model), "--port", "0"],
        cwd=REPO_ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stderr.readline()
        found = re.search(r"listening on http://127\.0\.0\.1:(\d+)/", line)
        assert found, line
        base = f"127.0.0.1:{found.group(1)}"
        with urllib.request.urlopen(f"http://{base}/", timeout=10) as page:
            assert "Speech emotion monitor" in page.read().decode()
            assert "default-src 'self'" in page.headers["Content-Security-Policy"]
        with urllib.request.urlopen(f"http://{base}/pcm-worklet.js", timeout=10) as worklet:
            assert "registerProcessor" in worklet.read().decode()
        _, hops, _ = stream_pcm(f"ws://{base}/", recordings[0])
        assert any(h["speech"] for h in hops)
        with urllib.request.urlopen(f"http://{base}/stats", timeout=10) as stats:
            assert json.loads(stats.read()) == {"connections": 0, "streams": 0, "finished": 1, "rejected": 0}
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert "stopping" in proc.stderr.read()
    finally:
        proc.kill()
        proc.wait()


def test_emotion_serve_errors_are_one_line(tiny_model):
    bad = run_cli("serve", "--model", str(tiny_model), "--max-connections", "0")
    assert (
        bad.returncode == 2
        and bad.stderr.strip() == "emotion-serve: error: --max-connections must be at least 1, got 0"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        busy = run_cli("serve", "--model", str(tiny_model), "--port", str(port))
    assert busy.returncode == 2 and len(busy.stderr.strip().splitlines()) == 1
    assert busy.stderr.startswith(f"emotion-serve: error: cannot listen on 127.0.0.1:{port}: "), busy.stderr


def test_the_client_example_in_the_docs_runs(served, model, recordings, tmp_path):
    """docs/serve.md's Python client, as printed there, against the server: one line per hop, then done."""
    text = (REPO_ROOT / "docs" / "serve.md").read_text()
    example = next(b for b in re.findall(r"```python\n(.*?)```", text, re.S) if "sync.client" in b)
    wav = tmp_path / "talk.wav"
    sf.write(wav, recordings[0], 16_000, subtype="PCM_16")
    code = example.replace('"talk.wav"', repr(str(wav))).replace("ws://127.0.0.1:8765/", served.url)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert '"ready": true' in lines[0] and "'done': True" in lines[-1]
    hops = lines[1:-1]
    assert len(hops) == len(reference(model, recordings[0]))
    assert all(re.fullmatch(r" *\d+\.\d s  \w+ +\d\.\d\d", line) for line in hops), hops


def test_the_service_never_imports_torch():
    code = (
        "import sys, emotion_monitor.realtime.serve, emotion_monitor.realtime.server\n"
        "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))"
    )
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO_ROOT
    )
    assert run.returncode == 0 and run.stdout.strip() == "[]", run.stdout + run.stderr


def test_the_page_loads_nothing_from_elsewhere():
    for path in WEB_DIR.iterdir():
        assert not re.search(r"(https?:)?//[\w.-]+\.[a-z]{2,}", path.read_text()), (
            f"{path.name} names another host"
        )
    assert {p.name for p in WEB_DIR.iterdir()} >= {"index.html", "app.js", "pcm-worklet.js", "style.css"}


@pytest.fixture(scope="module")
def default_model() -> EmotionModel:
    """The bundled default model, built once into the cache (about a minute the first time on a machine)."""
    from emotion_monitor.realtime.model_store import resolve_model_path

    return EmotionModel(resolve_model_path(None))


def chromium_driver(fake_audio: Path):
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is in the dev extra")
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    if browser is None or driver_path is None:
        pytest.skip("Chromium and its driver are not installed (apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1200,620",
        "--use-fake-ui-for-media-stream",
        "--use-fake-device-for-media-stream",
        f"--use-file-for-fake-audio-capture={fake_audio}",
        "--autoplay-policy=no-user-gesture-required",
    ):
        options.add_argument(arg)
    return webdriver.Chrome(options=options, service=webdriver.ChromeService(executable_path=driver_path))


def test_live_page_in_chromium_shows_the_emotion_of_a_fake_microphone(default_model, ravdess_16k, tmp_path):
    """Chromium's fake microphone plays two angry utterances (looped); the page streams them through its
    AudioWorklet and must show ``angry``, count hops, and show a new speaker after the button."""
    from selenium.webdriver.common.by import By

    pause = np.zeros(8_000, np.float32)
    clips = [ANGRY_CLIP, "Actor_02/03-01-05-02-01-01-02.flac"]
    audio = np.concatenate([x for clip in clips for x in (load_audio(ravdess_16k / clip), pause)])
    wav = tmp_path / "mic.wav"  # at 48 kHz like a real microphone: the worklet downsamples it to 16 kHz
    sf.write(wav, soxr.resample(audio, 16_000, 48_000), 48_000, subtype="PCM_16")
    with BackgroundServer(default_model, max_connections=2) as served:
        driver = chromium_driver(wav)
        try:
            driver.get(served.http)
            driver.find_element(By.ID, "start").click()
            seen = watch_page(driver, min_hops=14, timeout_s=60)
            text = lambda element_id: driver.find_element(By.ID, element_id).text  # noqa: E731
            assert seen <= set(default_model.labels) | {"silence"}, seen
            assert "angry" in seen, f"the page showed {seen} for angry speech"
            driver.find_element(By.ID, "new-speaker").click()
            wait_for(lambda: text("speaker").startswith("S2"), 20, "the page never showed speaker S2")
            assert text("dropped") == "0"
            shot = Path(os.environ.get("EMOTION_SERVE_SCREENSHOT", tmp_path / "serve.png"))
            driver.save_screenshot(str(shot))
            assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            driver.find_element(By.ID, "start").click()  # stop: {"end": true}, then done
            wait_for(lambda: text("status").startswith("stopped"), 20, "the page never showed the end")
        finally:
            driver.quit()
        served.wait_idle()


def watch_page(driver, min_hops: int, timeout_s: float) -> set[str]:
    """Labels the page displays (``#label``) until its hop counter reaches ``min_hops``."""
    from selenium.webdriver.common.by import By

    seen: set[str] = set()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        label = driver.find_element(By.ID, "label").get_attribute("data-label")
        if label:
            seen.add(label)
        if int(driver.find_element(By.ID, "hops").text) >= min_hops and seen - {"silence"}:
            return seen
        time.sleep(0.2)
    status = driver.find_element(By.ID, "status").text
    pytest.fail(f"the page showed {driver.find_element(By.ID, 'hops').text} hops in {timeout_s} s ({status})")


def wait_for(condition, timeout_s: float, message: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.1)
    pytest.fail(message)
