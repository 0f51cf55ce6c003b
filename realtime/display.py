"""What the live monitor shows: a redrawn terminal panel on a TTY, plain lines otherwise, JSONL, a summary."""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter, deque
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from emotion_monitor.realtime.analysis import SILENCE_LABEL

if TYPE_CHECKING:  # emotion-score shares the parser helpers here without loading the live pipeline
    from emotion_monitor.realtime.stream import StreamResult

BAR_WIDTH = 30
PANEL_WIDTH = 80
"""Columns every line of the terminal panel fits in (header included)."""
STRIP_S = 30.0
"""Seconds of history in the panel's strip (one cell per hop) ..."""
STRIP_CELLS = 60
"""... but never more cells than this (a short hop shows a shorter history)."""
BARS_CAPTION = "  bars and headline: probability smoothed over the last ~1 s (EMA)"
ANSI_UP_AND_CLEAR = "\x1b[{n}F\x1b[J"  # cursor to the start of the line n lines up, clear to end of screen
ANSI_RESET = "\x1b[0m"
EMOTION_COLOURS = {
    "neutral": "37",  # white
    "calm": "36",  # cyan
    "happy": "33",  # yellow
    "sad": "34",  # blue
    "angry": "31",  # red
    "fearful": "35",  # magenta
    "disgust": "32",  # green
    "surprised": "93",  # bright yellow
}
"""SGR colour of each emotion in the panel's bars, headline and strip."""
PALETTE = ("31", "32", "33", "34", "35", "36", "37", "91", "92", "93", "94", "95", "96")


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
        """``  speaker S1: active 0.50 (31 s)`` for the views: adaptation's state, the adapted head's weight when
        active, the speaker's seconds of speech (``  speaker S1`` when speaker adaptation is off)."""
        rec = self.result
        if rec.speaker_norm is None:
            return f"  speaker {rec.speaker}"
        weight = f" {rec.speaker_norm_weight or 0.0:.2f}" if rec.speaker_norm == "active" else ""
        return f"  speaker {rec.speaker}: {rec.speaker_norm}{weight} ({rec.speaker_speech_s or 0.0:.0f} s)"


def fit(line: str, width: int = PANEL_WIDTH) -> str:
    """``line`` unchanged when it fits in ``width`` columns, else shortened in the middle with ``…``."""
    if len(line) <= width:
        return line
    keep = width - 1
    return line[: keep - keep // 3] + "…" + line[len(line) - keep // 3 :]


class PlainView:
    """One line per hop (pipes, logs, CI)."""

    def __init__(self, stream, labels: tuple[str, ...], header: list[str], hop_s: float = 0.5):
        self.stream = stream
        self.labels = labels
        self.hop_s = hop_s
        print("\n".join(self._header(header)), file=stream, flush=True)

    def _header(self, lines: list[str]) -> list[str]:
        """One line (what scripts reading the first line of a log expect)."""
        return [", ".join(lines)]

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
    """A panel redrawn in place with ANSI codes, every line within ``PANEL_WIDTH`` columns:

    - the headline: the shown (steady) emotion and its smoothed probability, and the speaker;
    - one bar per emotion with the same smoothed probabilities (the headline's bar is marked ``◀``), each in its
      emotion's colour, so the bars are the strip's legend too;
    - the strip: the last ``STRIP_CELLS`` hops (about 30 s at the default hop), one cell per hop in the colour
      of the emotion shown then, blank for silence, ``┃`` where a new speaker started;
    - time, inference time, drops and the speaker's adaptation state.
    """

    def __init__(self, stream, labels: tuple[str, ...], header: list[str], hop_s: float = 0.5):
        super().__init__(stream, labels, header, hop_s)
        self._lines_drawn = 0
        self.colours = emotion_colours(labels)
        self.cells = max(1, min(STRIP_CELLS, round(STRIP_S / hop_s)))
        self._strip: deque[tuple[str | None, bool]] = deque(maxlen=self.cells)
        self._speaker: str | None = None

    def _header(self, lines: list[str]) -> list[str]:
        """Each line within ``PANEL_WIDTH`` columns."""
        return [fit(line) for line in lines]

    def _paint(self, label: str, text: str) -> str:
        return f"\x1b[{self.colours[label]}m{text}{ANSI_RESET}"

    def show(self, hop: LiveHop) -> None:
        rec = hop.result
        changed = self._speaker is not None and rec.speaker != self._speaker
        self._speaker = rec.speaker
        self._strip.append((rec.label if rec.speech else None, changed))
        if rec.speech:
            headline = f"  {self._paint(rec.label, f'{rec.label.upper():<10}')} {rec.confidence:4.0%}"
        else:
            headline = f"  {'(silence)':<10}     "
        lines = [f"{headline}   speaker {rec.speaker}{'  (new)' if changed else ''}", BARS_CAPTION]
        shown = rec.smoothed or {}
        width = max(len(label) for label in self.labels)
        for label in self.labels:
            p = shown.get(label, 0.0)
            bar = self._paint(label, "█" * round(p * BAR_WIDTH) + " " * (BAR_WIDTH - round(p * BAR_WIDTH)))
            mark = " ◀" if rec.speech and label == rec.label else ""
            lines.append(f"  {label:<{width}} {bar} {p:4.2f}{mark}")
        ms = f"{rec.inference_ms:.0f} ms/window" if rec.inference_ms is not None else "- ms/window"
        lines += [
            "",
            f"  last {self.cells * self.hop_s:g} s ▕{self._strip_cells()}▏",
            fit(f"  t={rec.end_s:6.1f}s  {ms}  dropped {hop.dropped_samples}{hop.speaker_note()}"),
        ]
        prefix = ANSI_UP_AND_CLEAR.format(n=self._lines_drawn) if self._lines_drawn else ""
        self.stream.write(prefix + "\n".join(lines) + "\n")
        self.stream.flush()
        self._lines_drawn = len(lines)

    def _strip_cells(self) -> str:
        """One cell per hop, oldest first, padded with blanks to the strip's width."""
        cells = []
        for label, changed in self._strip:
            glyph = "┃" if changed else ("█" if label is not None else " ")
            cells.append(glyph if label is None else self._paint(label, glyph))
        return "".join(cells) + " " * (self.cells - len(cells))

    def note(self, line: str) -> None:
        """Printed below the panel, which is then drawn afresh underneath (redrawing in place would overwrite
        the note, or a line the user typed)."""
        super().note(line)
        self._lines_drawn = 0


def emotion_colours(labels: tuple[str, ...]) -> dict[str, str]:
    """An ANSI colour (SGR parameters) for each label: the usual ones for known emotions, then the rest of
    ``PALETTE`` in turn for labels of other models."""
    spare = [c for c in PALETTE if c not in EMOTION_COLOURS.values()] or list(PALETTE)
    colours = {}
    for i, label in enumerate(labels):
        colours[label] = EMOTION_COLOURS.get(label, spare[i % len(spare)])
    return colours


def make_view(stream, labels: tuple[str, ...], header: list[str], hop_s: float = 0.5) -> PlainView:
    is_tty = hasattr(stream, "isatty") and stream.isatty()
    return (TerminalView if is_tty else PlainView)(stream, labels, header, hop_s)


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
