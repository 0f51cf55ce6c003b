"""``emotion-serve`` under load: N WebSocket clients streaming real speech at real-time pace.

Starts the real ``emotion-serve`` (a subprocess; the bundled model unless ``--model``), then for each N runs N
clients at once in this process. Each streams its own stretch of a long RAVDESS recording (clips with 1.5 s
pauses, ``bench_live.long_recording``) in 20 ms frames on a real-time schedule; the clients start a fraction of a
hop apart, as independent callers would. Per hop: latency = the arrival of its result at the client − the moment
the client sent the frame holding the window's last sample (so network, queueing, VAD, inference, smoothing).
Per round: hop latency median/p95 (all hops, speech hops), results dropped for slow reading (the server's policy;
must be 0), the server's RSS growth per connection (peak during the round − before it, / N) and its CPU.

It stops after the first N whose p95 latency (all hops) is 300 ms or more or that dropped a result, and prints
the largest N that met both. Figures go in docs/serve.md with the command, date and CPU flags.

Usage:
    python -m benchmarks.bench_serve                         # N = 1 2 3 4 6 8 12 16, 20 s each
    python -m benchmarks.bench_serve --clients 1 2 4 --seconds 30 --model model.onnx
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf
from websockets.asyncio.client import connect

from benchmarks.bench_live import long_recording

RATE = 16_000
FRAME = 320  # 20 ms
P95_LIMIT_MS = 300.0
"""The service target: a hop's result within 300 ms of its last sample, at the 95th percentile."""


@dataclass
class ClientRun:
    latencies_ms: list[float] = field(default_factory=list)
    speech_latencies_ms: list[float] = field(default_factory=list)
    hops: int = 0
    dropped: int = 0


async def client(url: str, pcm: np.ndarray, start_at: float, hop_s: float) -> ClientRun:
    """Stream ``pcm`` (int16) at real-time pace from loop time ``start_at``; latency of every hop."""
    run = ClientRun()
    loop = asyncio.get_running_loop()
    sent: list[float] = []
    async with connect(url, max_size=None) as ws:
        await ws.send(json.dumps({"sample_rate": RATE, "hop_s": hop_s}))
        json.loads(await ws.recv())

        async def receive() -> None:
            async for message in ws:
                data = json.loads(message)
                if "end_s" in data:
                    frame = max(0, round(data["end_s"] * RATE) - 1) // FRAME
                    latency = (loop.time() - sent[min(frame, len(sent) - 1)]) * 1000.0
                    run.latencies_ms.append(latency)
                    if data["speech"]:
                        run.speech_latencies_ms.append(latency)
                elif data.get("done"):
                    run.hops, run.dropped = data["hops"], data["dropped_results"]
                    return

        receiver = asyncio.create_task(receive())
        for k in range(0, len(pcm), FRAME):
            await asyncio.sleep(max(0.0, start_at + (k / RATE) - loop.time()))
            sent.append(loop.time())
            await ws.send(pcm[k : k + FRAME].tobytes())
        await ws.send(json.dumps({"end": True}))
        await receiver
    return run


def rss_mb(pid: int) -> float:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1)) / 1024


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def round_of(
    url: str, audio: np.ndarray, n: int, seconds: float, hop_s: float, pid: int, idle_rss: float | None = None
) -> dict:
    """N clients at once, each on its own stretch of the recording; the round's figures. Memory per connection:
    (the round's peak RSS − ``idle_rss``, the server's RSS after the warm-up with no connection) / N."""
    length = int(seconds * RATE)
    loop = asyncio.get_running_loop()
    start = loop.time() + 0.5
    before_cpu, t0 = cpu_s(pid), time.monotonic()
    idle_rss = rss_mb(pid) if idle_rss is None else idle_rss
    peak = [rss_mb(pid)]

    async def watch() -> None:
        while True:
            peak.append(rss_mb(pid))
            await asyncio.sleep(0.25)

    watcher = asyncio.create_task(watch())
    stretches = [np.roll(audio, -i * 7 * RATE)[:length] for i in range(n)]
    runs = await asyncio.gather(*(client(url, stretches[i], start + i * hop_s / n, hop_s) for i in range(n)))
    watcher.cancel()
    wall = time.monotonic() - t0
    every = np.array([x for r in runs for x in r.latencies_ms])
    speech = np.array([x for r in runs for x in r.speech_latencies_ms])
    return dict(
        clients=n,
        hops=sum(r.hops for r in runs),
        p50_ms=float(np.percentile(every, 50)),
        p95_ms=float(np.percentile(every, 95)),
        speech_p50_ms=float(np.percentile(speech, 50)) if speech.size else float("nan"),
        speech_p95_ms=float(np.percentile(speech, 95)) if speech.size else float("nan"),
        dropped=sum(r.dropped for r in runs),
        rss_per_connection_mb=(max(peak) - idle_rss) / n,
        server_rss_mb=max(peak),
        server_cores=(cpu_s(pid) - before_cpu) / wall,
    )


def start_server(args) -> tuple[subprocess.Popen, int]:
    command = [
        sys.executable,
        "-m",
        "emotion_monitor.realtime.serve",
        "--port",
        "0",
        "--max-connections",
        "64",
    ]
    command += ["--model", args.model] if args.model else []
    command += args.serve_args.split()
    proc = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    line = proc.stderr.readline()
    found = re.search(r"listening on http://[^:]+:(\d+)/", line)
    if not found:
        proc.kill()
        raise SystemExit(f"emotion-serve did not start: {line}{proc.stderr.read()}")
    print(line.strip(), file=sys.stderr)
    return proc, int(found.group(1))


async def main_async(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "speech.wav"
        long_recording(wav, minutes=max(2.0, (args.seconds + 7 * max(args.clients)) / 60))
        audio = (sf.read(wav, dtype="int16")[0]).astype(np.int16)
    proc, port = start_server(args)
    url = f"ws://127.0.0.1:{port}/"
    try:
        await round_of(url, audio, 1, 3.0, args.hop_s, proc.pid)  # warm-up: first inferences, allocator
        await asyncio.sleep(1.0)
        idle_rss = rss_mb(proc.pid)
        print(f"server RSS after warm-up, no connection: {idle_rss:.0f} MB")
        print(f"load average at start: {os.getloadavg()[0]:.1f} ({os.cpu_count()} cores)")
        print(
            f"{'N':>3} {'hops':>5} {'p50 ms':>7} {'p95 ms':>7} {'speech p50':>10} {'speech p95':>10} "
            f"{'dropped':>7} {'MB/conn':>7} {'RSS MB':>7} {'cores':>5}"
        )
        best = 0
        for n in args.clients:
            r = await round_of(url, audio, n, args.seconds, args.hop_s, proc.pid, idle_rss)
            print(
                f"{n:>3} {r['hops']:>5} {r['p50_ms']:>7.0f} {r['p95_ms']:>7.0f} {r['speech_p50_ms']:>10.0f} "
                f"{r['speech_p95_ms']:>10.0f} {r['dropped']:>7} {r['rss_per_connection_mb']:>7.1f} "
                f"{r['server_rss_mb']:>7.0f} {r['server_cores']:>5.2f}",
                flush=True,
            )
            if r["p95_ms"] >= P95_LIMIT_MS or r["dropped"]:
                break
            best = n
        print(f"largest N with p95 < {P95_LIMIT_MS:.0f} ms and no dropped results: {best}")
    finally:
        proc.terminate()
        proc.wait(30)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 2, 3, 4, 6, 8, 12, 16])
    p.add_argument("--seconds", type=float, default=20.0, help="audio each client streams per round")
    p.add_argument("--hop-s", type=float, default=0.5)
    p.add_argument("--model", help="exported .onnx model (default: bundled model)")
    p.add_argument("--serve-args", default="", help="more emotion-serve arguments, e.g. '--workers 1'")
    asyncio.run(main_async(p.parse_args()))


if __name__ == "__main__":
    main()
