"""Result files that two processes cannot tear, and what ``--resume`` finds in them.

``LockedOutput`` holds an exclusive ``flock`` on the file for the whole run: a second run writing the same file
fails at once with one line naming the run that holds it (exit 2), instead of both appending and interleaving.
Every append is one ``write`` of whole lines (``O_APPEND``), so a killed run leaves at most a torn last line,
which the next ``--resume`` cuts off (under the lock) before appending.

Rows are keyed by the scored file's resolved absolute path (``output_key``): ``--resume`` therefore counts a file
as done however it is spelled (relative, absolute, through a link, from another folder).
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
from pathlib import Path

ENCODING = "utf-8"
ERRORS = "surrogateescape"
"""File names that are not valid UTF-8 (bytes on Linux) round-trip through the output unchanged."""


class OutputLockedError(ValueError):
    """Another run holds the output file; ``str()`` is one line naming it."""


def output_key(path: str | Path) -> str:
    """The resolved absolute path of a scored file: the ``path`` of its rows and what ``--resume`` matches."""
    path = Path(path)
    try:
        return str(path.resolve(strict=False))
    except (OSError, RuntimeError):  # a link loop: the absolute spelling is the best there is
        return os.path.abspath(path)


def _lock_holder(fd: int) -> str:
    """``pid N: command line`` of the process holding a lock on ``fd``'s file (Linux ``/proc/locks``)."""
    inode = os.fstat(fd).st_ino
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError:
        return "another run"
    for line in lines:
        fields = line.split()
        if "->" in fields or len(fields) < 6:  # "->" marks a waiter, not a holder
            continue
        pid, dev_inode = fields[4], fields[5]
        if dev_inode.rsplit(":", 1)[-1] == str(inode) and pid.isdigit() and int(pid) != os.getpid():
            try:
                raw = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                return f"pid {pid}"
            command = " ".join(
                Path(a).name if i == 0 else a
                for i, a in enumerate(raw.decode(errors="replace").split("\0"))
                if a
            )
            return f"pid {pid}: {command}" if command else f"pid {pid}"
    return "another run"


class LockedOutput:
    """An output file opened for appending whole lines under an exclusive lock held until ``close()``.

    ``append=False`` empties the file once the lock is held (never before: a locked-out run must not
    truncate the other's results). Raises OutputLockedError when another process holds the lock.
    """

    def __init__(self, path: str | Path, append: bool, option: str = "--out"):
        self.path = Path(path)
        try:
            self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o666)
        except OSError as exc:
            raise ValueError(
                f"{option} {self.path}: cannot open for writing ({exc.strerror or exc})"
            ) from None
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _lock_holder(self.fd)
            os.close(self.fd)
            raise OutputLockedError(
                f"{option} {self.path} is being written by another run ({holder}); wait for it to end or "
                f"choose another {option}"
            ) from None
        except OSError:  # a file system without locks (some network mounts): go on without one
            pass
        if not append:
            os.ftruncate(self.fd, 0)

    @property
    def size(self) -> int:
        return os.fstat(self.fd).st_size

    def read_text(self) -> str:
        """The whole file; a torn last line (a run killed mid-write) is cut off the file first."""
        data = b""
        size = self.size
        while len(data) < size:
            chunk = os.pread(self.fd, size - len(data), len(data))
            if not chunk:
                break
            data += chunk
        if data and not data.endswith(b"\n"):
            data = data[: data.rfind(b"\n") + 1]
            os.ftruncate(self.fd, len(data))
        return data.decode(ENCODING, ERRORS)

    def write(self, text: str) -> None:
        """Append ``text`` (whole lines) with one ``write`` where the OS allows, finishing partial writes."""
        view = memoryview(text.encode(ENCODING, ERRORS))
        while view:
            view = view[os.write(self.fd, view) :]

    def flush(self) -> None:
        """Writes go straight to the file (no buffer): present for file-like use (``emotion-live --jsonl``)."""

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)  # releases the lock
            self.fd = -1

    def __enter__(self) -> LockedOutput:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def csv_header(out: LockedOutput) -> list[str]:
    """The column names of a CSV output (its first record), or [] when it is empty."""
    head = os.pread(out.fd, 1 << 16, 0).decode(ENCODING, ERRORS)
    try:
        return next(csv.reader(io.StringIO(head, newline="")), [])
    except csv.Error:
        return []


def read_done_paths(out: LockedOutput | str | Path, fmt: str) -> set[str]:
    """``output_key`` of every file with a row in ``out`` (CSV or JSONL), read with the real parsers.

    Rows written by older versions with relative paths are taken relative to the current folder. Lines that
    do not parse (a row torn by an unlocked writer of an older version) are not counted as done.
    """
    if isinstance(out, LockedOutput):
        text = out.read_text()
    else:
        text = Path(out).read_bytes().decode(ENCODING, ERRORS)
    paths: list[str] = []
    if fmt == "jsonl":
        for line in text.split("\n"):  # JSON escapes every control character: only \n ends a record
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and isinstance(record.get("path"), str):
                paths.append(record["path"])
    else:
        reader = csv.DictReader(io.StringIO(text, newline=""))  # newline="": quoted \r stays inside its field
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error:  # a malformed row: not done, go on with the next
                continue
            paths.append(row.get("path") or "")
    return {output_key(p) for p in paths if p}
