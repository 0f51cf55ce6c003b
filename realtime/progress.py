"""Progress bars for long work (a large folder in ``emotion-score``, the first-run model build, feature caching).

Drawn by tqdm on stderr, and only when stderr is a terminal: piped or logged runs (and CI) get no bar, only the
lines that say something, and a bar never mixes into results on stdout or into a results file.
"""

from __future__ import annotations

import io
import os
import sys

from tqdm import tqdm

NAME_CHARS = 40
"""The end of a file name shown after the bar."""
DEFAULT_SIZE = (80, 24)
"""Columns and lines assumed for a terminal that reports no size."""
UNKNOWN_TOTAL_FORMAT = "{desc}: {elapsed}{postfix}"
"""Work of unknown length: the elapsed time and the current step (a count or a rate would say nothing)."""


def is_terminal(stream) -> bool:
    """Whether ``stream`` is an interactive terminal (False for pipes, files, closed or fake streams)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):
        return False


def _size(stream) -> dict:
    """Follow the terminal's size; a terminal that reports none (0 x 0: a pseudo-terminal nobody sized) gets a
    fixed ``DEFAULT_SIZE``, where tqdm would draw nothing."""
    try:
        size = os.get_terminal_size(stream.fileno())
    except (AttributeError, ValueError, OSError, io.UnsupportedOperation):
        size = os.terminal_size((0, 0))
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": DEFAULT_SIZE[0], "nrows": DEFAULT_SIZE[1]}


def progress_bar(total: int | None, desc: str, stream=None, unit: str = "file") -> tqdm:
    """A tqdm bar on ``stream`` (default stderr), disabled unless that stream is a terminal. ``total`` None:
    a counter with the elapsed time, for work of unknown length."""
    stream = sys.stderr if stream is None else stream
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=stream,
        disable=not is_terminal(stream),
        leave=False,
        **_size(stream),
        bar_format=None if total is not None else UNKNOWN_TOTAL_FORMAT,
    )


class Progress:
    """Files done out of ``total`` with the current file's name, and one-line messages that stay visible above
    the bar (on a terminal) or are simply printed (elsewhere)."""

    def __init__(self, total: int, stream=None, desc: str = "scoring"):
        self.stream = sys.stderr if stream is None else stream
        self.bar = progress_bar(total, desc, self.stream)
        self.enabled = not self.bar.disable

    def update(self, done: int, name: str) -> None:
        """``done`` files finished; ``name``: the one being worked on now."""
        if self.enabled:
            self.bar.set_postfix_str(name[-NAME_CHARS:], refresh=False)
            self.bar.update(done - self.bar.n)

    def message(self, line: str) -> None:
        """A line that must stay visible: printed above the bar, which is redrawn below it."""
        if self.enabled:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
