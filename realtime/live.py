"""``emotion-live``: listen (microphone, a recording, or a pipe) and show the speaker's emotion every hop.

Threads: the audio source only fills a ring buffer; this (main) thread reads it and feeds an ``EmotionStream``
(windows, speech gate, model, speaker adaptation, smoothing: ``emotion_monitor.realtime.stream``), then shows
and writes its results.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time

from emotion_monitor.realtime.audio import AudioError
from emotion_monitor.realtime.display import LiveHop, Summary, command_parser, make_view
from emotion_monitor.realtime.errors import ModelError, run_command
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.model import ModelOptions, load_model
from emotion_monitor.realtime.outputs import LockedOutput
from emotion_monitor.realtime.providers import PROVIDER_CHOICES
from emotion_monitor.realtime.smoothing import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DEFAULT_PATIENCE_HOPS,
    SmootherOptions,
)
from emotion_monitor.realtime.sources import (
    AudioSource,
    FileReplaySource,
    MicrophoneSource,
    SourceError,
    StdinPCMSource,
    list_input_devices,
)
from emotion_monitor.realtime.speaker_norm import (
    DEFAULT_MIN_SPEECH_S,
    SPEAKER_NORM_MODES,
    SpeakerNormOptions,
)
from emotion_monitor.realtime.stream import EmotionStream, StreamOptions, StreamResult

DEFAULT_SPEAKER_TURNS = False
"""Whether ``--speaker-turns`` is on unless asked (docs/streaming.md: why, from the protocol's figures)."""
READ_TIMEOUT_S = 0.25
"""Longest wait for audio before the loop checks that the source is still alive (never hang)."""

EPILOG = """\
examples:
  emotion-live                                  # default microphone, bundled model
  emotion-live --list-devices                   # which inputs exist
  emotion-live --device pulse --max-seconds 30  # a given input, stop after 30 s of audio
  emotion-live --input talk.wav --fast --jsonl out.jsonl   # replay a file, one JSON line per hop
  arecord -f S16_LE -r 16000 -c 1 | emotion-live --stdin-pcm --rate 16000
  emotion-live --speaker-baseline me-calm.wav   # judge against a calm recording of the speaker

Windows without enough speech show as "silence". Speaker adaptation (--speaker-norm) is off by default: it helps
a speaker heard in many moods and hurts one who keeps a single mood (docs/model-card.md). Press Enter or send
SIGUSR1 when the speaker changes (S2, S3, ...); --speaker-turns detects changes from the voice with a speaker model
(built once from the speakers extra; off by default: it misses some turns and adds false ones, docs/streaming.md). A --jsonl record is the Python API's StreamResult plus
timestamp, dropped_samples, latency_ms and skipped_windows. Ctrl-C, SIGTERM or the end of the input print a
summary and exit 0; errors print one line and exit 2. Details: docs/live.md; accuracy: docs/model-card.md (in the
project's repository).
"""


def build_parser() -> argparse.ArgumentParser:
    p = command_parser(
        "emotion-live",
        "Live speech emotion monitor: shows which emotion is heard, with a confidence per emotion.",
        EPILOG,
    )
    src = p.add_argument_group("input (default: the default microphone)")
    one = src.add_mutually_exclusive_group()
    one.add_argument("--device", help="input device name or index (see --list-devices)")
    one.add_argument("--input", metavar="FILE", help="replay a recording instead of a microphone")
    one.add_argument("--stdin-pcm", action="store_true", help="read raw signed 16-bit mono PCM from stdin")
    one.add_argument("--list-devices", action="store_true", help="list audio input devices and exit")
    src.add_argument(
        "--rate", type=int, help="capture rate in Hz for --device/--stdin-pcm (default: the model's rate)"
    )
    src.add_argument("--fast", action="store_true", help="with --input: do not wait for real time")
    src.add_argument("--max-seconds", type=float, help="stop after this many seconds of audio")
    ana = p.add_argument_group("analysis")
    ana.add_argument("--model", help="exported .onnx model (default: bundled model)")
    ana.add_argument("--window-s", type=float, help="analysis window in seconds (default: the model's)")
    ana.add_argument("--hop-s", type=float, default=DEFAULT_HOP_S, help="seconds between estimates")
    ana.add_argument(
        "--vad",
        choices=("auto", "silero", "energy"),
        default="auto",
        help="speech gate: silero (auto, when installed) or a plain energy level",
    )
    ana.add_argument("--alpha", type=float, default=DEFAULT_ALPHA, help="EMA weight of the newest window")
    ana.add_argument(
        "--margin", type=float, default=DEFAULT_MARGIN, help="lead a new label needs to take over"
    )
    ana.add_argument("--patience", type=int, default=DEFAULT_PATIENCE_HOPS, help="hops the lead must last")
    speaker = ana.add_mutually_exclusive_group()
    speaker.add_argument(
        "--speaker-norm",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="normalise by the current speaker's running mean (off by default: it hurts a speaker who keeps one "
        "mood, docs/model-card.md; needs a model with a speaker head, as the bundled one; reset with Enter or "
        "SIGUSR1)",
    )
    speaker.add_argument(
        "--speaker-baseline",
        metavar="FILE",
        help="normalise by a recording of the speaker talking calmly (bundled model; 10 s or more)",
    )
    ana.add_argument(
        "--speaker-norm-mode",
        choices=SPEAKER_NORM_MODES,
        default="blend",
        help="blend: average plain and speaker-normalised estimates (safer); centred: normalised only",
    )
    ana.add_argument(
        "--speaker-min-s",
        type=float,
        default=DEFAULT_MIN_SPEECH_S,
        help="seconds of a speaker's speech before their mean is used",
    )
    ana.add_argument(
        "--speaker-turns",
        action=argparse.BooleanOptionalAction,
        default=DEFAULT_SPEAKER_TURNS,
        help="detect changes of speaker from the voice: each speaker gets an id (S1, S2, ...) and their own "
        "running mean; a returning speaker gets theirs back (docs/streaming.md has the measurements)",
    )
    run = p.add_argument_group("runtime and output")
    run.add_argument("--provider", choices=PROVIDER_CHOICES, default="auto", help="ONNX Runtime device")
    run.add_argument("--threads", type=int, help="intra-op threads (default: cores, at most 4)")
    run.add_argument("--jsonl", metavar="FILE", help="write one JSON line per hop to FILE ('-' = stdout)")
    run.add_argument(
        "--every-window",
        action="store_true",
        help="analyse every window even when that is slower than the hop (estimates then lag behind); by "
        "default a live input skips stale windows and analyses the newest",
    )
    return p


def make_source(args, model_rate: int) -> AudioSource:
    if args.input:
        return FileReplaySource(
            args.input,
            model_rate,
            realtime=not args.fast,
            on_notice=lambda line: print(f"emotion-live: {line}", file=sys.stderr),
        )
    if args.stdin_pcm:
        return StdinPCMSource(args.rate or model_rate)
    device = int(args.device) if args.device and args.device.isdigit() else args.device
    return MicrophoneSource(args.rate or model_rate, device)


class Monitor:
    """Source → ring buffer → ``EmotionStream`` → view and JSONL, for one stream. The pipeline is the stream's;
    this loop only moves audio, keeps the caller-side figures (latency, drops, skips) and shows results."""

    def __init__(self, stream: EmotionStream, view, jsonl, source: AudioSource, stay_live: bool = True):
        self.stream = stream
        # Skip stale windows when analysis falls behind a live source (``EmotionStream.process(newest_only=)``).
        self.stay_live = stay_live and source.live
        self._reset_requested = threading.Event()
        self.view = view
        self.jsonl = jsonl
        self.source = source
        self.summary = Summary(stream.spec.hop_s)
        self._failure_noted = False

    @property
    def skipped_windows(self) -> int:
        return self.stream.skipped_windows

    @property
    def failed_windows(self) -> int:
        """Speech windows without an estimate because the model returned NaN/inf for them (not in the JSONL)."""
        return self.stream.failed_windows

    def request_speaker_reset(self) -> None:
        """A new speaker from the next chunk on (safe from any thread or a signal handler)."""
        self._reset_requested.set()

    def _apply_speaker_reset(self) -> None:
        if self._reset_requested.is_set():
            self._reset_requested.clear()
            speaker = self.stream.new_speaker()
            self.view.note(f"new speaker {speaker}: speaker statistics reset")

    def show(self, results: list[StreamResult]) -> None:
        failed = self.stream.failed_windows
        for result in results:
            hop = LiveHop(
                result,
                dropped_samples=self.source.ring.stats().dropped,
                latency_ms=self._latency_ms(result),
                skipped_windows=self.stream.skipped_windows,
            )
            self.view.show(hop)
            self.summary.add(hop)
            if self.jsonl is not None:
                self.jsonl.write(hop.to_json() + "\n")
                self.jsonl.flush()
        if failed and not self._failure_noted:
            self._failure_noted = True
            self.view.note(f"{self.stream.first_failure} (counted from now on)")

    def _latency_ms(self, result: StreamResult) -> float | None:
        """Milliseconds since the window's last sample entered the ring buffer (None if no longer known)."""
        arrived = self.source.ring.arrival_time(round(result.end_s * self.source.sample_rate))
        return None if arrived is None else (time.monotonic() - arrived) * 1000.0

    def run(self, max_seconds: float | None = None) -> None:
        """Consume until end of input, ``max_seconds`` of audio, or Ctrl-C (KeyboardInterrupt propagates)."""
        ring, rate = self.source.ring, self.source.sample_rate
        limit = None if max_seconds is None else round(max_seconds * rate)
        received = 0
        while limit is None or received < limit:
            chunk = ring.read(timeout_s=READ_TIMEOUT_S)
            if chunk.size == 0:
                if ring.closed:
                    break
                self.source.check()
                continue
            if limit is not None:  # stop exactly at the limit, whatever the read sizes
                chunk = chunk[: limit - received]
            received += chunk.size
            self._apply_speaker_reset()
            self.show(self.stream.process(chunk, rate, newest_only=self.stay_live))
        self.show(self.stream.flush())


class StopRequested(KeyboardInterrupt):
    """SIGINT, SIGTERM or SIGHUP: end like Ctrl-C (summary, flushed outputs, exit 0)."""


def install_stop_signals(stack: contextlib.ExitStack) -> None:
    """SIGTERM (what a service manager sends), SIGHUP (terminal closed) and SIGINT stop the monitor like Ctrl-C.
    SIGINT is set explicitly: a program started in the background by a non-interactive shell inherits SIGINT
    ignored, and Python then installs no Ctrl-C handler, so ``kill -INT`` would not stop it."""
    if threading.current_thread() is not threading.main_thread():
        return

    def stop(signum, _frame) -> None:
        raise StopRequested(signal.Signals(signum).name)

    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            sig = getattr(signal, name)
            stack.callback(signal.signal, sig, signal.signal(sig, stop))


def install_reset_triggers(monitor: Monitor, stack: contextlib.ExitStack, use_stdin: bool) -> None:
    """SIGUSR1, and Enter on an interactive terminal, ask ``monitor`` to forget the current speaker."""
    if hasattr(signal, "SIGUSR1") and threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGUSR1, lambda *_: monitor.request_speaker_reset())
        stack.callback(signal.signal, signal.SIGUSR1, previous)
    if use_stdin and sys.stdin is not None and sys.stdin.isatty():

        def read_enter() -> None:
            for _ in sys.stdin:  # every Enter is a new speaker
                monitor.request_speaker_reset()

        threading.Thread(target=read_enter, name="speaker-reset", daemon=True).start()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.list_devices:
        return run_command("emotion-live", lambda: print(list_input_devices()) or 0, (SourceError,))
    return run_command("emotion-live", lambda: run(args), (ModelError, SourceError, AudioError, ValueError))


def stream_options(args: argparse.Namespace) -> StreamOptions:
    """The command line's analysis options as ``StreamOptions``."""
    return StreamOptions(
        window_s=args.window_s,
        hop_s=args.hop_s,
        vad=args.vad,
        smoothing=SmootherOptions(args.alpha, args.margin, args.patience),
        speaker_norm=args.speaker_norm,
        speaker_norm_options=SpeakerNormOptions(args.speaker_norm_mode, args.speaker_min_s),
        speaker_turns=args.speaker_turns,
    )


def run(args) -> int:
    if args.fast and not args.input:
        raise ValueError("--fast only applies to --input")
    model = load_model(
        args.model, ModelOptions(provider=args.provider, intra_op_threads=args.threads, batch_size=1)
    )
    options = stream_options(args)
    baseline = None
    if args.speaker_baseline:
        baseline = model.speaker_baseline(args.speaker_baseline, options.speaker_norm_options)
    stream = EmotionStream(model, options, baseline=baseline)
    if stream.vad_notice:  # the header says why CUDA was not used, when it was not
        print(stream.vad_notice, file=sys.stderr)
    source = make_source(args, model.sample_rate)
    out = sys.stderr if args.jsonl == "-" else sys.stdout  # JSON on stdout keeps the panel off it
    spec = stream.spec
    cuda = f" ({model.providers[0]}; CUDA not used: {model.cuda_skipped})" if model.cuda_skipped else ""
    header = [
        f"emotion-live: {model.path.name} on {model.device}{cuda}, window {spec.window_s:g} s, hop {spec.hop_s:g} s",
        f"VAD {stream.windower.vad.name}, input: {source.description}",
    ]
    with contextlib.ExitStack() as stack:
        jsonl = None
        if args.jsonl == "-":
            jsonl = sys.stdout
        elif args.jsonl:  # locked: a second monitor writing the same file stops at once (exit 2)
            jsonl = LockedOutput(args.jsonl, append=False, option="--jsonl")
            stack.callback(jsonl.close)
        install_stop_signals(stack)
        source.start()  # first: a missing or unusable device fails before anything is shown
        stack.callback(source.stop)
        view = make_view(out, model.labels, header, spec.hop_s)
        monitor = Monitor(stream, view, jsonl, source, stay_live=not args.every_window)
        # Enter / SIGUSR1 start a new speaker (a new id; with adaptation, a fresh mean) whether or not it adapts.
        install_reset_triggers(monitor, stack, use_stdin=not args.stdin_pcm)
        with contextlib.suppress(
            KeyboardInterrupt
        ):  # Ctrl-C/SIGTERM/SIGHUP: the normal stop, go on to the summary
            monitor.run(args.max_seconds)
        stats = source.ring.stats()
        print(monitor.summary.render(stream.received_s, stats.dropped, stats.device_overflows), file=out)
        if monitor.failed_windows:
            print(
                f"emotion-live: {monitor.failed_windows} speech window(s) without an estimate: the model "
                "returned NaN or infinite probabilities",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
