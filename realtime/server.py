"""``emotion-serve``'s server: WebSocket sessions (one ``EmotionStream`` each) and the live page, on one port.

Built on ``websockets`` (its asyncio API): one dependency, no framework, plain HTTP for the static page through
``process_request``. The event loop only moves messages; every ``EmotionStream`` call (VAD, resampling, model)
runs in a thread pool sized to the cores, so a slow client never stalls another. The model (one ONNX Runtime
session, thread-safe) is shared; each connection has its own stream state.

Memory per connection is bounded both ways:

- incoming: a connection's next frame is read only after its previous one was analysed; ``websockets`` buffers
  at most ``max_queued_frames`` frames of at most ``max_frame_bytes``, then stops reading the socket, so TCP
  flow control slows a client that sends faster than its audio is analysed (backpressure, no loss);
- outgoing: at most ``max_pending_results`` hop messages wait for a client that reads slowly; beyond that the
  oldest waiting hop is dropped and counted, and every later message tells that client ``dropped_results``.

The wire format is ``emotion_monitor.realtime.wire``; docs/serve.md documents both for users.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import json
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from emotion_monitor.realtime.errors import ModelError, one_line
from emotion_monitor.realtime.model import EmotionModel
from emotion_monitor.realtime.stream import EmotionStream, StreamOptions
from emotion_monitor.realtime.wire import (
    CLOSE_INTERNAL,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    CLOSE_TRY_LATER,
    CONFIG_TIMEOUT_S,
    DEFAULT_MAX_CONNECTIONS,
    DEFAULT_MAX_PENDING_RESULTS,
    MAX_FRAME_BYTES,
    MAX_QUEUED_FRAMES,
    ProtocolError,
    SessionConfig,
    decode_pcm,
    done_message,
    error_message,
    hop_message,
    parse_command,
    parse_config,
    ready_message,
)

WEB_DIR = Path(__file__).resolve().parent / "web"
"""The live page (package data): plain HTML/JS/CSS, no build step, nothing fetched from elsewhere."""
STATIC_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css",
}
CONTENT_SECURITY_POLICY = "default-src 'self'; connect-src 'self'; img-src 'self' data:; base-uri 'none'"
"""The page may load and connect to this server only (its WebSocket is same-origin)."""
STATS_PATH = "/stats"
DROPPABLE = ("hop", "note")
"""Outbox kinds a slow reader may lose (``ready``, ``done`` and fatal errors are never dropped)."""
DONE = object()
"""The outbox's last item after ``{"end": true}``: the ``done`` message, written when it is sent."""


@dataclass(frozen=True)
class ServerOptions:
    """How ``EmotionServer`` listens and what it allows each connection.

    port: 0 picks a free port (see ``EmotionServer.port``). workers: threads analysing audio (None: the cores).
    max_connections: WebSocket sessions at once; one more gets an error and is closed.
    max_pending_results: hop messages kept for a client that reads slowly (then the oldest are dropped).
    max_frame_bytes / max_queued_frames: the incoming bound (see the module docstring).
    config_timeout_s: a connection that sends no configuration within this is closed.
    stream: every session's defaults; the configuration message may override hop and speaker adaptation.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    workers: int | None = None
    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_pending_results: int = DEFAULT_MAX_PENDING_RESULTS
    max_frame_bytes: int = MAX_FRAME_BYTES
    max_queued_frames: int = MAX_QUEUED_FRAMES
    config_timeout_s: float = CONFIG_TIMEOUT_S
    stream: StreamOptions = field(default_factory=StreamOptions)


@dataclass(frozen=True)
class ServerStats:
    """connections: WebSocket connections open now; streams: sessions holding an ``EmotionStream`` now;
    finished: sessions ended (done, failed or broken off) since start; rejected: connections refused (too many)."""

    connections: int
    streams: int
    finished: int
    rejected: int

    def to_json(self) -> str:
        return json.dumps(self.__dict__)


class EmotionServer:
    """The service: ``await server.start()``, then ``server.port``; ``await server.stop()``. ``stats()`` from
    any thread."""

    def __init__(self, model: EmotionModel, options: ServerOptions | None = None):
        self.model = model
        self.options = options = options or ServerOptions()
        self.workers = options.workers or os.cpu_count() or 1
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="emotion-serve")
        self._static = _load_static(WEB_DIR)
        self._connections: set[ServerConnection] = set()
        self._sessions: set[Session] = set()
        self._finished = 0
        self._rejected = 0
        self._server = None
        if model.has_speaker_head("running"):
            model.speaker_norm_head("running")  # loaded once here, not by two sessions' threads at once

    @property
    def sessions(self) -> tuple[Session, ...]:
        """The sessions open now (each holds its ``stream``)."""
        return tuple(self._sessions)

    def stats(self) -> ServerStats:
        return ServerStats(len(self._connections), len(self._sessions), self._finished, self._rejected)

    @property
    def port(self) -> int:
        """The port listened on (the chosen one when ``options.port`` was 0)."""
        return self._server.sockets[0].getsockname()[1]

    async def start(self) -> None:
        o = self.options
        self._server = await serve(
            self._handle,
            o.host,
            o.port,
            process_request=self._process_request,
            max_size=o.max_frame_bytes,
            max_queue=o.max_queued_frames,
            server_header="emotion-serve",
        )

    async def stop(self) -> None:
        """Close every connection (code 1001), stop listening, end the worker threads."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        self._pool.shutdown(wait=True)

    async def run_in_pool(self, fn, *args):
        """``fn(*args)`` on an analysis thread, awaited without blocking the event loop."""
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    # -- HTTP: the page and the stats ----------------------------------------------------------------------------
    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """A WebSocket upgrade (any path; from a browser only from this server's page) goes on to ``_handle``;
        a plain GET gets the page, a file or stats."""
        if request.headers.get("Upgrade", "").lower() == "websocket":
            origin = request.headers.get("Origin")
            if origin is not None and urlsplit(origin).netloc != request.headers.get("Host"):
                # A page from another site (cross-site WebSocket): only this server's own page may connect.
                return connection.respond(
                    http.HTTPStatus.FORBIDDEN, f"cross-origin WebSocket from {origin}\n"
                )
            return None
        path = request.path.split("?", 1)[0]
        if path == STATS_PATH:
            return _response(http.HTTPStatus.OK, "application/json", self.stats().to_json().encode())
        found = self._static.get("/index.html" if path == "/" else path)
        if found is None:
            return connection.respond(http.HTTPStatus.NOT_FOUND, f"not found: {path}\n")
        content_type, body = found
        return _response(http.HTTPStatus.OK, content_type, body)

    # -- WebSocket sessions ----------------------------------------------------------------------------------
    async def _handle(self, ws: ServerConnection) -> None:
        if len(self._connections) >= self.options.max_connections:
            self._rejected += 1
            limit = self.options.max_connections
            await _close_with_error(
                ws, f"too many connections (at most {limit}); try again later", CLOSE_TRY_LATER
            )
            return
        self._connections.add(ws)
        session = None
        try:
            session = await self._open_session(ws)
            if session is not None:
                self._sessions.add(session)
                await session.run()
        except ConnectionClosed:
            pass  # the client went away: nothing to tell it
        finally:
            self._connections.discard(ws)
            if session is not None:
                self._sessions.discard(session)
                self._finished += 1

    async def _open_session(self, ws: ServerConnection) -> Session | None:
        """Wait for the configuration; a session for it, or None after telling the client what was wrong."""
        try:
            message = await asyncio.wait_for(ws.recv(), self.options.config_timeout_s)
        except asyncio.TimeoutError:
            wait = self.options.config_timeout_s
            await _close_with_error(
                ws, f'no configuration within {wait:g} s: send {{"sample_rate": N}} first', CLOSE_POLICY
            )
            return None
        try:
            config = parse_config(message, self.options.stream)
            stream = await self.run_in_pool(EmotionStream, self.model, config.options)
        except ProtocolError as exc:
            await _close_with_error(ws, str(exc), exc.close_code)
            return None
        except (
            ModelError,
            ValueError,
            RuntimeError,
        ) as exc:  # e.g. speaker_norm asked of a model without a head
            await _close_with_error(ws, one_line(exc), CLOSE_POLICY)
            return None
        return Session(self, ws, stream, config)


class Session:
    """One connection's stream: reads frames and commands in order, analyses them on the pool, and sends the
    results through a bounded outbox (oldest hop dropped when full)."""

    def __init__(
        self, server: EmotionServer, ws: ServerConnection, stream: EmotionStream, config: SessionConfig
    ):
        self.server = server
        self.ws = ws
        self.stream = stream
        self.config = config
        self.max_pending = server.options.max_pending_results
        self.hops = 0
        self.dropped_results = 0
        self._outbox: deque[tuple[str, object]] = deque()  # (kind, payload): hop | note | message | last
        self._wake = asyncio.Event()

    async def run(self) -> None:
        sender = asyncio.create_task(self._send_loop())
        self._post("message", ready_message(self.stream, self.config))
        close_code = CLOSE_NORMAL
        try:
            close_code = await self._receive_loop()
            if not sender.done():
                await sender
        finally:
            sender.cancel()
        await self.ws.close(close_code)

    async def _receive_loop(self) -> int:
        """Read until ``{"end": true}`` (→ CLOSE_NORMAL after ``done``) or a fatal error (→ its close code)."""
        run = self.server.run_in_pool
        try:
            async for message in self.ws:
                if isinstance(message, bytes):
                    self._post_hops(
                        await run(self.stream.process, decode_pcm(message), self.config.sample_rate)
                    )
                    continue
                try:
                    command = parse_command(message)
                except ProtocolError as exc:  # not fatal: tell the client, keep the stream
                    self._post("note", error_message(str(exc), None))
                    continue
                if command == "new_speaker":
                    self.stream.new_speaker()  # between two frames: no analysis runs on this stream now
                    continue
                self._post_hops(await run(self.stream.flush))
                self._post("last", DONE)
                return CLOSE_NORMAL
        except ProtocolError as exc:
            self._post("last", error_message(str(exc), exc.close_code))
            return exc.close_code
        except (ModelError, ValueError) as exc:
            self._post("last", error_message(f"analysis failed: {one_line(exc)}", CLOSE_INTERNAL))
            return CLOSE_INTERNAL
        self._post("last", None)  # the client closed without {"end": true}: nothing more to send
        return CLOSE_NORMAL

    def _post_hops(self, results) -> None:
        for result in results:
            self.hops += 1
            self._post("hop", result)

    def _post(self, kind: str, payload) -> None:
        """Queue a message. ``hop`` and ``note`` (a non-fatal error) are bounded together: past
        ``max_pending`` the oldest of them is dropped (a dropped hop is counted for the client)."""
        if kind in DROPPABLE and sum(k in DROPPABLE for k, _ in self._outbox) >= self.max_pending:
            oldest = next(i for i, (k, _) in enumerate(self._outbox) if k in DROPPABLE)
            if self._outbox[oldest][0] == "hop":
                self.dropped_results += 1
            del self._outbox[oldest]
        self._outbox.append((kind, payload))
        self._wake.set()

    async def _send_loop(self) -> None:
        """Send the outbox in order; ``last`` (``done``, a fatal error, or nothing) or a closed connection ends
        the loop."""
        with contextlib.suppress(ConnectionClosed):
            while True:
                while not self._outbox:
                    self._wake.clear()
                    await self._wake.wait()
                kind, payload = self._outbox.popleft()
                if kind == "hop":
                    payload = hop_message(payload, self.dropped_results)
                elif kind == "last":
                    if payload is DONE:  # written now: the dropped count is final
                        payload = done_message(self.stream, self.hops, self.dropped_results)
                    if payload is not None:
                        await self.ws.send(payload)
                    return
                await self.ws.send(payload)


async def _close_with_error(ws: ServerConnection, error: str, close_code: int) -> None:
    with contextlib.suppress(ConnectionClosed):
        await ws.send(error_message(error, close_code))
        await ws.close(close_code, error[:120])


def _response(status: http.HTTPStatus, content_type: str, body: bytes) -> Response:
    headers = Headers(
        [
            ("Content-Type", content_type),
            ("Content-Length", str(len(body))),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
            ("Cache-Control", "no-cache"),
            ("X-Content-Type-Options", "nosniff"),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _load_static(folder: Path) -> dict[str, tuple[str, bytes]]:
    """``/name`` → (content type, bytes) for the page's files, read once."""
    files = {}
    for path in sorted(folder.iterdir()):
        if path.suffix in STATIC_TYPES:
            files[f"/{path.name}"] = (STATIC_TYPES[path.suffix], path.read_bytes())
    if "/index.html" not in files:
        print(f"emotion-serve: warning: the live page is missing from {folder}", file=sys.stderr)
    return files
