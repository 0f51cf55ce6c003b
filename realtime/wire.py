"""``emotion-serve``'s wire protocol: the messages a client and the server exchange, without any networking.

A client sends one JSON text message with its configuration (``{"sample_rate": 16000}``, optionally hop and
speaker-adaptation options), then binary frames of little-endian int16 mono PCM of any size, then
``{"end": true}``. The server answers ``ready``, one JSON message per hop (``EmotionStream``'s result), and
``done``. docs/serve.md documents it for client authors; ``emotion_monitor.realtime.server`` moves the messages.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, replace

import numpy as np

from emotion_monitor.realtime.speaker_norm import SPEAKER_NORM_MODES
from emotion_monitor.realtime.stream import EmotionStream, StreamOptions, StreamResult

MIN_RATE_HZ = 8_000
MAX_RATE_HZ = 192_000
"""Sample rates a client may send (the stream resamples them to the model's)."""
MIN_HOP_S = 0.1
MAX_HOP_S = 5.0
"""Hops a client may ask for: a shorter hop is more inference per second of audio, shared with everyone."""
MAX_SPEAKER_MIN_S = 600.0
MAX_FRAME_BYTES = 256 * 1024
"""Largest binary message (8 s of 16 kHz audio); a larger one closes the connection (1009)."""
MAX_QUEUED_FRAMES = 4
"""Unread messages buffered per connection before the server stops reading its socket (backpressure)."""
DEFAULT_MAX_CONNECTIONS = 16
DEFAULT_MAX_PENDING_RESULTS = 64
"""Hop messages kept for a client that reads slowly; past that the oldest is dropped and counted."""
CONFIG_TIMEOUT_S = 10.0
"""A connection that sends no configuration within this is closed."""
CONFIG_KEYS = ("sample_rate", "hop_s", "speaker_norm", "speaker_norm_mode", "speaker_min_s", "speaker_turns")
"""Every key the configuration message may hold."""
COMMANDS = ("end", "new_speaker")
"""Text messages after the configuration: ``{"end": true}``, ``{"new_speaker": true}``."""

# WebSocket close codes (RFC 6455 section 7.4.1) the server uses after a fatal error.
CLOSE_NORMAL = 1000
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013


class ProtocolError(ValueError):
    """A message the server cannot accept. ``close_code``: the connection is closed with it after the error
    message (fatal), or None: the message is ignored and the session goes on."""

    def __init__(self, message: str, close_code: int | None = CLOSE_POLICY):
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True)
class SessionConfig:
    """One connection's configuration: the rate of its PCM frames and its stream's options."""

    sample_rate: int
    options: StreamOptions


def parse_object(text: str, what: str) -> dict:
    """A text message as a JSON object; ProtocolError (fatal) when it is not one."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(f"{what} is not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{what} must be a JSON object, got {type(data).__name__}")
    return data


def parse_config(message: str | bytes, defaults: StreamOptions) -> SessionConfig:
    """The first message → ``SessionConfig`` (``defaults``: the server's stream options, which the client may
    override per connection). ProtocolError (fatal) for anything else: audio first, bad JSON, a missing or
    out-of-range rate, an unknown key, a value of the wrong type."""
    if isinstance(message, bytes):
        raise ProtocolError('audio before the configuration: send {"sample_rate": N} first')
    data = parse_object(message, "the configuration message")
    unknown = sorted(set(data) - set(CONFIG_KEYS))
    if unknown:
        raise ProtocolError(f"unknown option(s) {', '.join(unknown)}; known: {', '.join(CONFIG_KEYS)}")
    if "sample_rate" not in data:
        raise ProtocolError('the configuration needs "sample_rate" (Hz of the PCM frames)')
    rate = data["sample_rate"]
    if not _is_int(rate) or not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise ProtocolError(
            f"sample_rate must be an integer from {MIN_RATE_HZ} to {MAX_RATE_HZ} Hz, got {rate!r}"
        )
    options = defaults
    if "hop_s" in data:
        options = replace(options, hop_s=_number(data, "hop_s", MIN_HOP_S, MAX_HOP_S))
    for key in ("speaker_norm", "speaker_turns"):
        if key in data:
            if not isinstance(data[key], bool):
                raise ProtocolError(f"{key} must be true or false, got {data[key]!r}")
            options = replace(options, **{key: data[key]})
    norm = options.speaker_norm_options
    if "speaker_norm_mode" in data:
        if data["speaker_norm_mode"] not in SPEAKER_NORM_MODES:
            raise ProtocolError(
                f"speaker_norm_mode must be one of {', '.join(SPEAKER_NORM_MODES)}, got {data['speaker_norm_mode']!r}"
            )
        norm = replace(norm, mode=data["speaker_norm_mode"])
    if "speaker_min_s" in data:
        norm = replace(norm, min_speech_s=_number(data, "speaker_min_s", 0.0, MAX_SPEAKER_MIN_S))
    return SessionConfig(int(rate), replace(options, speaker_norm_options=norm))


def parse_command(message: str) -> str:
    """A text message after the configuration → ``end`` or ``new_speaker``. ProtocolError (not fatal: the
    message is ignored) for bad JSON or anything else."""
    try:
        data = parse_object(message, "a text message")
    except ProtocolError as exc:
        raise ProtocolError(str(exc), close_code=None) from None
    commands = [key for key in COMMANDS if data.get(key) is True]
    if len(commands) != 1 or len(data) != 1:
        raise ProtocolError(
            'unknown message; after the configuration send audio frames, {"new_speaker": true} or '
            '{"end": true}',
            close_code=None,
        )
    return commands[0]


def decode_pcm(frame: bytes) -> np.ndarray:
    """A binary frame of little-endian int16 mono PCM → float32 samples in [-1, 1). ProtocolError (fatal: the
    stream would be misaligned from here on) for an odd byte count."""
    if len(frame) % 2:
        raise ProtocolError(
            f"binary frame of {len(frame)} bytes: int16 PCM needs an even byte count", CLOSE_BAD_DATA
        )
    return np.frombuffer(frame, dtype="<i2").astype(np.float32) / 32768.0


def ready_message(stream: EmotionStream, config: SessionConfig) -> str:
    """The answer to a valid configuration: what this session's stream does."""
    model = stream.model
    return json.dumps(
        dict(
            ready=True,
            model=model.path.name,
            labels=list(model.labels),
            sample_rate=config.sample_rate,
            window_s=stream.spec.window_s,
            hop_s=stream.spec.hop_s,
            vad=stream.windower.vad.name,
            speaker_norm=stream.adaptation,
            speaker=stream.speaker,
        )
    )


def hop_message(result: StreamResult, dropped_results: int) -> str:
    """One hop: ``StreamResult.to_dict()`` plus the results dropped so far for this client (slow reader)."""
    return json.dumps(result.to_dict() | {"dropped_results": dropped_results}, allow_nan=False)


def done_message(stream: EmotionStream, hops: int, dropped_results: int) -> str:
    """The last message after ``{"end": true}``: hops produced (sent + dropped) and the stream's counters."""
    return json.dumps(
        dict(
            done=True,
            hops=hops,
            dropped_results=dropped_results,
            received_s=round(stream.received_s, 3),
            failed_windows=stream.failed_windows,
        )
    )


def error_message(error: str, close_code: int | None) -> str:
    """``{"error": ..., "fatal": ...}``; fatal: the server closes the connection next."""
    return json.dumps({"error": error, "fatal": close_code is not None})


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(data: dict, key: str, low: float, high: float) -> float:
    value = data[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or not low <= value <= high:
        raise ProtocolError(f"{key} must be a number from {low:g} to {high:g}, got {value!r}")
    return float(value)
