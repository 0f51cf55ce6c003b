"""``emotion-live``: listen (microphone, a recording, or a pipe) and show the speaker's emotion every hop.

Threads: the audio source only fills a ring buffer; this (main) thread reads it, cuts sliding windows, gates
them with a VAD, runs the model on speech windows, smooths, and displays.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
import threading
import time

import numpy as np
import soxr

from emotion_monitor.realtime.analysis import SILENCE_LABEL, probs_dict
from emotion_monitor.realtime.audio import AudioError
from emotion_monitor.realtime.display import HopRecord, Summary, command_parser, make_view
from emotion_monitor.realtime.errors import ModelError, NonFiniteOutputError, run_command
from emotion_monitor.realtime.metadata import DEFAULT_HOP_S
from emotion_monitor.realtime.model import EmotionModel, ModelOptions, load_model
from emotion_monitor.realtime.outputs import LockedOutput
from emotion_monitor.realtime.providers import PROVIDER_CHOICES
from emotion_monitor.realtime.smoothing import (
    DEFAULT_ALPHA,
    DEFAULT_MARGIN,
    DEFAULT_PATIENCE_HOPS,
    Smoother,
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
    SpeakerNormalizer,
    SpeakerNormOptions,
)
from emotion_monitor.realtime.vad import load_vad
from emotion_monitor.realtime.windowing import AudioWindow, StreamWindower

READ_TIMEOUT_S = 0.25
"""Longest wait for audio before the loop checks that the source is still alive (never hang)."""
RESET_AFTER_SILENT_HOPS = 2
"""Silent hops after which the smoother forgets the last utterance (1 s at the default hop)."""

EPILOG = """\
examples:
  emotion-live                                  # default microphone, bundled model
  emotion-live --list-devices                   # which inputs exist
  emotion-live --device pulse --max-seconds 30  # a given input, stop after 30 s of audio
  emotion-live --input talk.wav --fast --jsonl out.jsonl   # replay a file, one JSON line per hop
  arecord -f S16_LE -r 16000 -c 1 | emotion-live --stdin-pcm --rate 16000
  emotion-live --speaker-baseline me-calm.wav   # judge against a calm recording of the speaker

Windows without enough speech show as "silence". Speaker normalisation is on by default: press Enter or send
SIGUSR1 when the speaker changes. Ctrl-C, SIGTERM or the end of the input print a summary and exit 0; errors
print one line and exit 2. Details: docs/live.md; accuracy: docs/model-card.md (in the project's repository).
"""


def running_speaker_norm(args: argparse.Namespace, model) -> bool:
    """Whether to normalise by a running speaker mean: as asked (``--[no-]speaker-norm``), else on when the model
    has a running speaker head and no calm baseline was given."""
    if args.speaker_norm is not None:
        return args.speaker_norm
    return args.speaker_baseline is None and model.has_speaker_head("running")


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
        default=None,
        help="normalise by the current speaker's running mean (default: on when the model has a speaker head, "
        "as the bundled one does; reset with Enter or SIGUSR1)",
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
    """Window → gate → model → smoother → display, for one stream."""

    def __init__(
        self,
        model: EmotionModel,
        windower: StreamWindower,
        smoother: Smoother,
        view,
        jsonl,
        source,
        normalizer: SpeakerNormalizer | None = None,
        stay_live: bool = True,
    ):
        self.model = model
        # Skip stale windows when analysis falls behind a live source (see ``_due``).
        self.stay_live = stay_live and source.live
        self.skipped_windows = 0
        self.normalizer = normalizer
        self._reset_requested = threading.Event()
        self.windower = windower
        self.smoother = smoother
        self.view = view
        self.jsonl = jsonl
        self.source = source
        self.summary = Summary(windower.spec.hop_s)
        self._silent_hops = 0
        self.failed_windows = 0
        """Speech windows without an estimate because the model returned NaN/inf for them (not in the JSONL)."""

    def request_speaker_reset(self) -> None:
        """Forget the current speaker before the next window (safe from any thread or a signal handler)."""
        self._reset_requested.set()

    def _score(self, window: AudioWindow) -> tuple[np.ndarray, float]:
        """Probabilities of a speech window (speaker-normalised when enabled) and inference milliseconds."""
        started = time.perf_counter()
        scores = self.model.score_windows([window.samples], pooled=self.normalizer is not None)
        ms = (time.perf_counter() - started) * 1000.0
        if self.normalizer is None:
            return scores.probs[0], ms
        # Each speech window brings one hop of new speech (windows overlap by window - hop).
        self.normalizer.update(
            scores.pooled, speech_s=min(self.windower.spec.hop_s, window.end_s - window.start_s)
        )
        probs = self.normalizer.apply(scores.probs, scores.pooled)[0]
        if not np.isfinite(probs).all():
            raise NonFiniteOutputError("speaker-normalised probabilities are NaN or infinite")
        return probs, ms

    def _speaker_state(self) -> tuple[str | None, float | None]:
        if self.normalizer is None:
            return None, None
        if self.normalizer.fixed:
            return "baseline", self.normalizer.speech_s
        return ("active" if self.normalizer.ready else "warming"), self.normalizer.speech_s

    def handle(self, window: AudioWindow) -> None:
        probs = smoothed = ms = None
        if self._reset_requested.is_set() and self.normalizer is not None:
            self._reset_requested.clear()
            self.normalizer.reset()
            self.smoother.reset()
            self.view.note("new speaker: speaker statistics reset")
        if window.speech:
            try:
                raw, ms = self._score(window)
            except NonFiniteOutputError as exc:  # no estimate for this window, never a NaN row
                self.failed_windows += 1
                if self.failed_windows == 1:
                    self.view.note(f"{window.start_s:.1f}-{window.end_s:.1f} s: {exc} (counted from now on)")
                return
            state = self.smoother.update(raw, weight=window.speech_s)
            probs, smoothed = probs_dict(self.model.labels, raw), probs_dict(self.model.labels, state.probs)
            label, confidence = self.model.labels[state.index], state.confidence
            self._silent_hops = 0
        else:
            label, confidence = SILENCE_LABEL, 0.0
            self._silent_hops += 1
            if self._silent_hops >= RESET_AFTER_SILENT_HOPS:
                self.smoother.reset()  # a new utterance starts fresh
        speaker_norm, speaker_speech_s = self._speaker_state()
        rec = HopRecord(
            start_s=window.start_s,
            end_s=window.end_s,
            speech=window.speech,
            label=label,
            confidence=confidence,
            probs=probs,
            smoothed=smoothed,
            inference_ms=ms,
            dropped_samples=self.source.ring.stats().dropped,
            latency_ms=self._latency_ms(window),
            skipped_windows=self.skipped_windows,
            speaker_norm=speaker_norm,
            speaker_speech_s=speaker_speech_s,
        )
        self.view.show(rec)
        self.summary.add(rec)
        if self.jsonl is not None:
            self.jsonl.write(rec.to_json() + "\n")
            self.jsonl.flush()

    def _latency_ms(self, window: AudioWindow) -> float | None:
        """Milliseconds since the window's last sample entered the ring buffer (None if no longer known)."""
        source_index = round(window.end * self.source.sample_rate / window.sample_rate)
        arrived = self.source.ring.arrival_time(source_index)
        return None if arrived is None else (time.monotonic() - arrived) * 1000.0

    def _due(self, windows: list[AudioWindow]) -> list[AudioWindow]:
        """The windows to analyse now. Several at once means the last analysis took longer than a hop; on a live
        source only the newest is analysed, so estimates stay current instead of lagging ever further behind
        (and the ring buffer is read in time, so no audio is lost). Skipped windows are counted."""
        if not self.stay_live or len(windows) <= 1:
            return windows
        self.skipped_windows += len(windows) - 1
        return windows[-1:]

    def run(self, max_seconds: float | None = None) -> None:
        """Consume until end of input, ``max_seconds`` of audio, or Ctrl-C (KeyboardInterrupt propagates)."""
        resampler = None
        if self.source.sample_rate != self.model.sample_rate:
            resampler = soxr.ResampleStream(
                self.source.sample_rate, self.model.sample_rate, 1, dtype="float32"
            )
        ring = self.source.ring
        limit = None if max_seconds is None else round(max_seconds * self.model.sample_rate)
        while limit is None or self.windower.received < limit:
            chunk = ring.read(timeout_s=READ_TIMEOUT_S)
            if chunk.size == 0:
                if ring.closed:
                    break
                self.source.check()
                continue
            if resampler is not None:
                chunk = resampler.resample_chunk(chunk)
            if limit is not None:  # stop exactly at the limit, whatever the read sizes
                chunk = chunk[: limit - self.windower.received]
            for window in self._due(self.windower.feed(chunk)):
                self.handle(window)
        if resampler is not None:  # the resampler holds back a few samples until told the stream ended
            for window in self.windower.feed(resampler.resample_chunk(np.zeros(0, np.float32), last=True)):
                self.handle(window)
        for window in self.windower.flush():
            self.handle(window)


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


def run(args) -> int:
    if args.fast and not args.input:
        raise ValueError("--fast only applies to --input")
    model = load_model(
        args.model, ModelOptions(provider=args.provider, intra_op_threads=args.threads, batch_size=1)
    )
    vad, vad_notice = load_vad(args.vad)
    if vad_notice:  # the header says why CUDA was not used, when it was not
        print(vad_notice, file=sys.stderr)
    spec = model.window_spec(args.window_s, args.hop_s)
    normalizer = None
    running = running_speaker_norm(args, model)
    if running or args.speaker_baseline:
        options = SpeakerNormOptions(args.speaker_norm_mode, args.speaker_min_s)
        normalizer = model.speaker_normalizer(options, args.speaker_baseline)
    smoother = Smoother(SmootherOptions(args.alpha, args.margin, args.patience))
    source = make_source(args, model.sample_rate)
    out = sys.stderr if args.jsonl == "-" else sys.stdout  # JSON on stdout keeps the panel off it
    header = (
        f"emotion-live: {model.path.name} on {model.device} ({model.providers[0]}"
        f"{f'; CUDA not used: {model.cuda_skipped}' if model.cuda_skipped else ''}), "
        f"window {spec.window_s:g} s, hop {spec.hop_s:g} s, VAD {vad.name}, input: {source.description}"
    )
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
        view = make_view(out, model.labels, header)
        windower = StreamWindower(spec, vad, model.speech_gate)
        monitor = Monitor(
            model, windower, smoother, view, jsonl, source, normalizer, stay_live=not args.every_window
        )
        if running:
            install_reset_triggers(monitor, stack, use_stdin=not args.stdin_pcm)
        with contextlib.suppress(
            KeyboardInterrupt
        ):  # Ctrl-C/SIGTERM/SIGHUP: the normal stop, go on to the summary
            monitor.run(args.max_seconds)
        stats = source.ring.stats()
        print(
            monitor.summary.render(monitor.windower.received_s, stats.dropped, stats.device_overflows),
            file=out,
        )
        if monitor.failed_windows:
            print(
                f"emotion-live: {monitor.failed_windows} speech window(s) without an estimate: the model "
                "returned NaN or infinite probabilities",
                file=sys.stderr,
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
