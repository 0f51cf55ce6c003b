"""``emotion-serve``: the monitor as a local streaming service (WebSocket) with a live page in the browser.

Thin: arguments → ``ServerOptions`` → ``EmotionServer`` (``emotion_monitor.realtime.server``), run until Ctrl-C
or SIGTERM. The protocol is in docs/serve.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import sys

from emotion_monitor.realtime.display import command_parser
from emotion_monitor.realtime.errors import ModelError, run_command
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.model import ModelOptions, load_model
from emotion_monitor.realtime.providers import PROVIDER_CHOICES
from emotion_monitor.realtime.stream import StreamOptions
from emotion_monitor.realtime.wire import DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PENDING_RESULTS

PROG = "emotion-serve"
EPILOG = """\
examples:
  emotion-serve                         # http://127.0.0.1:8765/ : the live page (microphone in the browser)
  emotion-serve --port 0                # any free port (printed)
  emotion-serve --max-connections 4 --model my-model.onnx

Clients connect a WebSocket to the same address, send {"sample_rate": 16000}, then binary frames of int16
little-endian mono PCM, then {"end": true}; they get one JSON message per hop (docs/serve.md).
The page needs a secure context for the microphone: open it as http://127.0.0.1 or http://localhost (another
machine needs HTTPS in front). Ctrl-C or SIGTERM stop the server (exit 0).
"""


class ServeError(RuntimeError):
    """The server cannot start (library missing, address in use); one line for the user."""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(PROG, "Speech emotion as a local streaming service with a live web page.", EPILOG)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    p.add_argument("--port", type=int, default=8765, help="port (0: any free port)")
    p.add_argument("--model", help="exported .onnx model (default: bundled model)")
    p.add_argument(
        "--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS, help="WebSocket sessions at once"
    )
    p.add_argument("--workers", type=int, help="analysis threads shared by all sessions (default: the cores)")
    p.add_argument("--threads", type=int, help="intra-op threads per inference (default: cores, at most 4)")
    p.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    p.add_argument(
        "--hop-s",
        type=float,
        default=DEFAULT_HOP_S,
        help="seconds between estimates (a client may ask for another)",
    )
    p.add_argument("--vad", choices=("auto", "silero", "energy"), default="auto", help="speech gate")
    p.add_argument(
        "--speaker-norm",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="default speaker adaptation (clients may override; off by default: it hurts a speaker who keeps one "
        "mood, docs/model-card.md)",
    )
    p.add_argument(
        "--max-pending-results",
        type=int,
        default=DEFAULT_MAX_PENDING_RESULTS,
        help="hop messages kept for a slow reader before the oldest are dropped",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_command(PROG, lambda: run(args), (ModelError, ServeError, ValueError))


def run(args: argparse.Namespace) -> int:
    try:
        from emotion_monitor.realtime.server import EmotionServer, ServerOptions
    except ImportError as exc:
        raise ServeError(
            f"{exc}: emotion-serve needs its extra: pip install 'speech-emotion-monitor[serve]'"
        ) from None
    for name in ("max_connections", "max_pending_results", "workers", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1, got {value}")
    model = load_model(
        args.model, ModelOptions(provider=args.provider, intra_op_threads=args.threads, batch_size=1)
    )
    if model.provider_notice:
        print(model.provider_notice, file=sys.stderr)
    options = ServerOptions(
        host=args.host,
        port=args.port,
        workers=args.workers,
        max_connections=args.max_connections,
        max_pending_results=args.max_pending_results,
        stream=StreamOptions(hop_s=args.hop_s, vad=args.vad, speaker_norm=args.speaker_norm),
    )
    return asyncio.run(serve_until_stopped(EmotionServer(model, options)))


async def serve_until_stopped(server) -> int:
    """Start ``server``, print where it listens, run until SIGINT/SIGTERM/SIGHUP, stop it; 0."""
    try:
        await server.start()
    except OSError as exc:  # address in use, no such interface, port not allowed
        raise ServeError(
            f"cannot listen on {server.options.host}:{server.options.port}: {exc.strerror or exc}"
        ) from None
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        with contextlib.suppress(AttributeError, NotImplementedError, ValueError):
            loop.add_signal_handler(getattr(signal, name), stop.set)
    host = server.options.host
    shown = f"[{host}]" if ":" in host else host
    print(
        f"{PROG}: listening on http://{shown}:{server.port}/ (live page; WebSocket on the same address), "
        f"model {server.model.path.name}, {server.workers} analysis thread(s), "
        f"at most {server.options.max_connections} connections",
        file=sys.stderr,
        flush=True,
    )
    await stop.wait()
    print(f"{PROG}: stopping ({server.stats().connections} connection(s) open)", file=sys.stderr, flush=True)
    await server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
