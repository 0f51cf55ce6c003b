"""The one-line error convention of every command: a failure the user sees is one line on stderr,
``<command>: error: <what>: <problem>``, and the exit status says what kind it was.

Shared by the runtime (``emotion-live``, ``emotion-score``), the exporter and the training commands.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

EXIT_ERROR = 2
"""Exit status for a user-facing error that stops a command (bad input or arguments, device, model)."""
MAX_LINE_CHARS = 300
"""A library's message is cut here: the line names the problem, it does not dump data."""


def one_line(exc: BaseException, with_type: bool = False) -> str:
    """The first line of ``exc``'s message (library errors often span many lines), or the exception's type name
    when it has no message; ``with_type``: always prefixed ``Type: `` (for errors whose type says what failed)."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0][:MAX_LINE_CHARS]
    return f"{type(exc).__name__}: {first}" if with_type else first


def print_error(prog: str, exc: BaseException | str, status: int = EXIT_ERROR) -> int:
    """Print ``prog: error: exc`` on stderr; returns ``status`` (the command's exit status)."""
    print(f"{prog}: error: {exc}", file=sys.stderr)
    return status


def run_command(prog: str, action: Callable[[], int], errors: tuple[type[BaseException], ...]) -> int:
    """Run a command's body: expected ``errors`` become one ``prog: error: ...`` line and exit status 2."""
    try:
        return action()
    except errors as exc:
        return print_error(prog, exc)
    except BrokenPipeError:  # e.g. piped into ``head``: stop quietly, as command-line tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_ERROR


class ModelError(RuntimeError):
    """The model cannot be found, built, loaded or run; ``str()`` is one line for the user."""


class ModelMismatchError(ModelError):
    """The model's inputs/outputs do not fit the runtime or its own labels: every input would fail the same
    way, so a batch stops at once (exit 2) instead of failing file after file."""


class NonFiniteOutputError(ModelError):
    """The model returned NaN or infinite probabilities for some windows: no estimate for them, never a row."""
