"""What the live monitor shows: a redrawn terminal panel on a TTY, plain lines otherwise, JSONL, a summary."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timezone

from emotion_monitor.realtime.analysis import SILENCE_LABEL
from emotion_monitor.realtime.stream import StreamResult

BAR_WIDTH = 30
ANSI_UP_AND_CLEAR = "\x1b[{n}F\x1b[J"  # cursor to the start of the line n lines up, clear to end of screen


def command_parser(prog: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """The argument parser of a command, with ``HelpFormatter``."""
    return argparse.ArgumentParser(
        prog=prog, description=description, epilog=epilog, formatter_class=HelpFormatter
    )


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """``--help`` for both commands: the epilog keeps its layout; real defaults are shown, None/False are not."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS):
            return text
        return text + " (default: %(default)s)"


@dataclass(frozen=True)
class LiveHop:
    """One hop of the live monitor: the stream's ``result`` and what only the caller knows (its clock, buffer).

    dropped_samples: audio lost so far (ring overwrites).
    latency_ms: from the arrival of the window's last sample in the ring buffer to this estimate being ready
        (queueing + VAD + inference + smoothing); None when unknown.
    skipped_windows: windows skipped so far because analysis fell behind a live source.
    """

    result: StreamResult
    dropped_samples: int = 0
    latency_ms: float | None = None
    skipped_windows: int = 0

    def to_json(self) -> str:
        """The ``--jsonl`` record: a wall-clock timestamp, the ``StreamResult`` as it serialises itself, then the
        caller-side fields."""
        data = {"timestamp": datetime.now(timezone.utc).isoformat(timespec="milliseconds")}
        data.update(self.result.to_dict())
        data.update(
            dropped_samples=self.dropped_samples,
            latency_ms=None if self.latency_ms is None else round(self.latency_ms, 2),
            skipped_windows=self.skipped_windows,
        )
        return json.dumps(data, allow_nan=False)  # strict JSON: a NaN is an error here, never written

    def speaker_note(self) -> str:
        """``  speaker: active (31 s)`` for the views; empty when speaker normalisation is off."""
        if self.result.speaker_norm is None:
            return ""
        return f"  speaker: {self.result.speaker_norm} ({self.result.speaker_speech_s or 0.0:.0f} s)"


class PlainView:
    """One line per hop (pipes, logs, CI)."""

    def __init__(self, stream, labels: tuple[str, ...], header: str):
        self.stream = stream
        self.labels = labels
        print(header, file=stream, flush=True)

    def show(self, hop: LiveHop) -> None:
        rec = hop.result
        ms = f"{rec.inference_ms:6.1f} ms" if rec.inference_ms is not None else "     - ms"
        conf = f"{rec.confidence:4.2f}" if rec.speech else "  - "
        print(
            f"{rec.end_s:7.1f}s  {rec.label:<10} {conf}  {ms}  dropped {hop.dropped_samples}{hop.speaker_note()}",
            file=self.stream,
            flush=True,
        )

    def note(self, line: str) -> None:
        """A one-off message between hops (e.g. a speaker reset)."""
        print(line, file=self.stream, flush=True)

    def close(self) -> None:
        pass


class TerminalView(PlainView):
    """A panel redrawn in place with ANSI codes: label, confidence, one bar per emotion, timing, drops."""

    def __init__(self, stream, labels: tuple[str, ...], header: str):
        super().__init__(stream, labels, header)
        self._lines_drawn = 0

    def show(self, hop: LiveHop) -> None:
        rec = hop.result
        lines = [f"  {rec.label.upper():<12} {rec.confidence:5.0%}" if rec.speech else "  (silence)", ""]
        shown = rec.smoothed or {}
        width = max(len(label) for label in self.labels)
        for label in self.labels:
            p = shown.get(label, 0.0)
            bar = "█" * round(p * BAR_WIDTH)
            lines.append(f"  {label:<{width}} {bar:<{BAR_WIDTH}} {p:4.2f}")
        ms = f"{rec.inference_ms:.1f} ms/window" if rec.inference_ms is not None else "- ms/window"
        lines += [
            "",
            f"  t={rec.end_s:6.1f}s   {ms}   dropped samples: {hop.dropped_samples}{hop.speaker_note()}",
        ]
        prefix = ANSI_UP_AND_CLEAR.format(n=self._lines_drawn) if self._lines_drawn else ""
        self.stream.write(prefix + "\n".join(lines) + "\n")
        self.stream.flush()
        self._lines_drawn = len(lines)

    def note(self, line: str) -> None:
        """Printed below the panel, which is then drawn afresh underneath (redrawing in place would overwrite
        the note, or a line the user typed)."""
        super().note(line)
        self._lines_drawn = 0


def make_view(stream, labels: tuple[str, ...], header: str) -> PlainView:
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return (TerminalView if is_tty else PlainView)(stream, labels, header)


class Summary:
    """Running totals for the end-of-run summary; each hop stands for ``hop_s`` of time."""

    def __init__(self, hop_s: float):
        self.hop_s = hop_s
        self.label_hops: Counter[str] = Counter()
        self.inference_ms: list[float] = []
        self.latency_ms: list[float] = []
        self.speaker: tuple[str, float] | None = None  # last (speaker_norm state, seconds of speech)
        self.skipped_windows = 0
        self.started = time.monotonic()

    def add(self, hop: LiveHop) -> None:
        rec = hop.result
        self.label_hops[rec.label] += 1
        if rec.inference_ms is not None:
            self.inference_ms.append(rec.inference_ms)
        if hop.latency_ms is not None:
            self.latency_ms.append(hop.latency_ms)
        if rec.speaker_norm is not None:
            self.speaker = (rec.speaker_norm, rec.speaker_speech_s or 0.0)
        self.skipped_windows = hop.skipped_windows

    def render(self, audio_s: float, dropped_samples: int, device_overflows: int) -> str:
        hops = sum(self.label_hops.values())
        lines = [
            f"summary: {audio_s:.1f} s of audio in {time.monotonic() - self.started:.1f} s, {hops} windows",
        ]
        for label, count in self.label_hops.most_common():
            lines.append(f"  {label:<10} {count / hops:6.1%}  ({count * self.hop_s:.1f} s)")
        if self.inference_ms:
            mean = sum(self.inference_ms) / len(self.inference_ms)
            lines.append(
                f"  inference: mean {mean:.1f} ms per window over {len(self.inference_ms)} speech windows"
            )
        else:
            lines.append(f"  inference: no speech windows scored (all {SILENCE_LABEL})")
        if self.latency_ms:
            ordered = sorted(self.latency_ms)
            p50, p95 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
            lines.append(f"  latency (last sample in → estimate): median {p50:.1f} ms, p95 {p95:.1f} ms")
        if self.skipped_windows:
            lines.append(
                f"  skipped windows: {self.skipped_windows} (analysis slower than the hop; the newest was analysed)"
            )
        if self.speaker is not None:
            state, speech_s = self.speaker
            lines.append(
                f"  speaker normalisation: {state} at the end ({speech_s:.0f} s of the speaker's speech)"
            )
        lines.append(f"  dropped samples: {dropped_samples}  (driver overflows: {device_overflows})")
        return "\n".join(lines)
