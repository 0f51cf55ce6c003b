"""``emotion-score``'s results: the row schema (one row per file, or per window with ``--segments``) and the
writer that puts rows into a CSV or JSONL file or a table on stdout.

A file's rows are appended in one write when the file is done, so an interrupted run leaves whole files behind
and ``--resume`` (keyed by each file's resolved path) never takes a half-written file for a finished one.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

from emotion_monitor.realtime.analysis import SILENCE_LABEL, Prediction, Segment
from emotion_monitor.realtime.outputs import LockedOutput, csv_header, output_key, read_done_paths

TABLE_NUMBER_CHARS = 8
"""Width of the table's number columns (``3600.000`` s, ``0.123456``)."""
FILE_COLUMNS = ("path", "label", "confidence")
"""The columns of a per-file row before the probabilities (one per label)."""
SEGMENT_COLUMNS = ("path", "start_s", "end_s", "speech", "label")
"""The columns of a ``--segments`` row before the probabilities (one per label)."""


def output_format(out: str | None) -> str:
    """``table`` (stdout), ``csv`` or ``jsonl`` from ``--out``'s name; ValueError (one line) for another."""
    if out is None:
        return "table"
    suffix = Path(out).suffix.lower()
    if suffix not in (".csv", ".jsonl"):
        raise ValueError(f"--out {out}: use a .csv or .jsonl file name")
    return suffix[1:]


def prediction_row(p: Prediction) -> dict:
    """A file's row: label, confidence, probabilities (and, in JSONL, the seconds and windows scored)."""
    return {
        "label": p.label,
        "confidence": round(p.confidence, 6),
        "probs": p.probs,
        "duration_s": round(p.duration_s, 3),
        "windows": p.windows,
    }


def segment_row(s: Segment) -> dict:
    """A ``--segments`` window's row; ``probs`` None for a silence window (it carries no emotion)."""
    return {
        "start_s": round(s.start_s, 3),
        "end_s": round(s.end_s, 3),
        "speech": s.speech,
        "label": s.label,
        "probs": s.probs,
    }


class ResultWriter:
    """Rows to CSV, JSONL or a stdout table; flushed after every file.

    The table's header is printed with the first row (nothing on stdout when nothing is scored), and its
    columns are padded to a fixed width: the path column to the longest of ``paths`` (the files to be scored),
    so rows line up as they stream. A silence window (``--segments``) has empty probability fields in CSV, null
    ``probs`` in JSONL and blanks in the table.
    """

    def __init__(
        self,
        out: str | None,
        labels: tuple[str, ...],
        segments: bool,
        resume: bool,
        paths: Sequence[Path] = (),
    ):
        self.labels = labels
        self.segments = segments
        self.format = output_format(out)
        self.done: set[str] = set()
        self._header_due = self.format == "table"
        self._widths = self._table_widths(paths) if self.format == "table" else []
        if out is None:
            self.stream = sys.stdout
            if hasattr(self.stream, "reconfigure"):  # file names that are not UTF-8 print as their raw bytes
                self.stream.reconfigure(errors="surrogateescape")
        else:
            # Locked for the whole run (released in close()); each file's rows are appended in one write.
            self.stream = LockedOutput(out, append=resume)
            if resume:
                self._check_columns(out)
                self.done = read_done_paths(self.stream, self.format)
            if self.stream.size == 0 and self.format == "csv":
                self.stream.write(_csv_line(self.columns()))

    def _check_columns(self, out: str) -> None:
        """ValueError (one line) when a CSV being resumed holds other columns than this run would append."""
        header = csv_header(self.stream) if self.format == "csv" and self.stream.size else self.columns()
        if header != self.columns():
            self.stream.close()
            first = next(
                (
                    f"{a!r} where this run writes {b!r}"
                    for a, b in zip(header, self.columns(), strict=False)
                    if a != b
                ),
                f"{len(header)} columns where this run writes {len(self.columns())}",
            )
            raise ValueError(
                f"--out {out}: its columns differ ({first}); resume with the same model and --segments "
                "setting, or choose another --out"
            )

    def row_path(self, path: Path) -> str:
        """What a file's rows name it by: its resolved absolute path in a results file (``--resume``'s key),
        as given on the command line in the stdout table."""
        return str(path) if self.format == "table" else output_key(path)

    def is_done(self, path: Path) -> bool:
        return output_key(path) in self.done

    def columns(self) -> list[str]:
        return list(SEGMENT_COLUMNS if self.segments else FILE_COLUMNS) + list(self.labels)

    def write_file(self, path: str, rows: Iterable[dict]) -> None:
        """All of one file's rows (formatted as they come), appended in one write."""
        text = "".join(self._format(path, row) for row in rows)
        if self._header_due:
            text = self._table_line(self.columns()) + text
            self._header_due = False
        self.stream.write(text)  # one append: whole lines
        self.stream.flush()

    def _format(self, path: str, row: dict) -> str:
        if self.format == "jsonl":
            return json.dumps({"path": path, **row}, allow_nan=False) + "\n"
        values = [path] + [row[c] for c in self.columns()[1 : -len(self.labels)]]
        probs = row["probs"]  # None: a silence window, which carries no emotion
        values += [f"{probs[label]:.6f}" if probs is not None else "" for label in self.labels]
        if self.format == "table":
            return self._table_line([f"{v:.3f}" if isinstance(v, float) else str(v) for v in values])
        return _csv_line(values)

    def _table_widths(self, paths) -> list[int]:
        """Column widths of the table: the header's, the path's and the label's longest, numbers' fixed."""
        widths = [len(c) for c in self.columns()]
        widths[0] = max([widths[0]] + [len(self.row_path(Path(p))) for p in paths])
        label = self.columns().index("label")
        widths[label] = max([widths[label], len(SILENCE_LABEL)] + [len(x) for x in self.labels])
        return [
            max(w, TABLE_NUMBER_CHARS) if _is_number_column(c, self.labels) else w
            for c, w in zip(self.columns(), widths, strict=True)
        ]

    def _table_line(self, values: list[str]) -> str:
        """Text left-aligned (path, label, speech), numbers right-aligned, two spaces between columns."""
        cells = [
            v.rjust(w) if _is_number_column(c, self.labels) else v.ljust(w)
            for c, v, w in zip(self.columns(), values, self._widths, strict=True)
        ]
        return "  ".join(cells).rstrip() + "\n"

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


def _is_number_column(name: str, labels: tuple[str, ...]) -> bool:
    return name in ("start_s", "end_s", "confidence") or name in labels


class _CsvLine:
    """A minimal file object capturing one csv.writer row as text."""

    text = ""

    def write(self, s: str) -> None:
        self.text += s


def _csv_line(values: list) -> str:
    line = _CsvLine()
    csv.writer(line).writerow(values)
    return line.text
