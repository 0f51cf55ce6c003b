"""Progress bars for long work (a large folder or a long recording in ``emotion-score``, the first-run model build, feature caching).

Drawn by tqdm on stderr, and only when stderr is a terminal: piped or logged runs (and CI) get no bar, only the
lines that say something, and a bar never mixes into results on stdout or into a results file.
"""

from __future__ import annotations

import io
import os
import sys
from collections.abc import Sequence

import numpy as np
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
    the bar (on a terminal) or are simply printed (elsewhere).

    ``seconds``: each file's length; the bar then counts seconds of audio (its rate is × real time), moved
    inside a long file by ``audio``, and names the file as ``file i/n name``.
    """

    def __init__(
        self, total: int, stream=None, desc: str = "scoring", seconds: Sequence[float] | None = None
    ):
        self.stream = sys.stderr if stream is None else stream
        self.total = total
        self._starts = None
        if seconds is not None:
            self._starts = np.concatenate([[0.0], np.cumsum(seconds)])
            self.bar = progress_bar(round(self._starts[-1]), desc, self.stream, unit="s")
        else:
            self.bar = progress_bar(total, desc, self.stream)
        self.enabled = not self.bar.disable
        self._done = 0

    def update(self, done: int, name: str) -> None:
        """``done`` files finished; ``name``: the one being worked on now."""
        self._done = done
        if self.enabled:
            if self._starts is not None:
                name = f"file {min(done + 1, self.total)}/{self.total} {name}" if name else ""
            self.bar.set_postfix_str(name[-NAME_CHARS:], refresh=False)
            self._move(done if self._starts is None else self._starts[min(done, self.total)])

    def audio(self, position_s: float) -> None:
        """The current file has been read up to ``position_s`` seconds (the bar counts seconds of audio)."""
        if self.enabled and self._starts is not None and self._done < self.total:
            file_s = self._starts[self._done + 1] - self._starts[self._done]
            self._move(self._starts[self._done] + min(position_s, file_s))

    def _move(self, n: float) -> None:
        self.bar.update(int(n) - self.bar.n)

    def message(self, line: str) -> None:
        """A line that must stay visible: printed above the bar, which is redrawn below it."""
        if self.enabled:
            self.bar.write(line, file=self.stream)
        else:
            print(line, file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
