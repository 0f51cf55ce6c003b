"""Which files ``emotion-score`` scores: the paths named on the command line, folders expanded (sorted, each file
once however it is spelled), and one line per path or folder entry that cannot be scored."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from emotion_monitor.realtime.audio import AUDIO_SUFFIXES, AudioError, check_audio_path
from emotion_monitor.realtime.outputs import output_key

NOTICE = "notice: "
"""Marks a line of ``find_audio_files`` that informs (a folder link not followed) rather than fails."""


@dataclass
class FoundFiles:
    """What ``find_audio_files`` found: ``files`` to score; ``problems``, one line per entry inside a folder
    that cannot be scored (a broken or looping link, a FIFO, a device, an unreadable sub-folder) or is skipped
    with a notice; ``missing``, one line per PATH on the command line that does not exist (a usage error)."""

    files: list[Path]
    problems: list[str]
    missing: list[str]

    def failures(self) -> list[str]:
        """The lines that are failures (not notices), missing paths first."""
        return self.missing + [line for line in self.problems if f": {NOTICE}" not in line]

    def lines(self) -> list[str]:
        return self.missing + self.problems


def find_audio_files(paths: list[str] | tuple[str, ...], recursive: bool) -> FoundFiles:
    """Files to score (folders expanded, sorted; each file once however often it is named), with a line per
    path that does not exist and per folder entry that cannot be scored. Named files are always tried."""
    files, problems, missing = [], [], []
    seen: set[str] = set()

    def add(path: Path) -> None:
        key = output_key(path)
        if key not in seen:
            seen.add(key)
            files.append(path)

    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found, found_problems = _scan_folder(path, recursive)
            for f in found:
                add(f)
            problems += found_problems
        elif path.exists() or path.is_symlink():
            add(path)
        else:
            missing.append(f"{path}: no such file or folder")
    return FoundFiles(files, problems, missing)


def _scan_folder(folder: Path, recursive: bool) -> tuple[list[Path], list[str]]:
    """Audio files in ``folder`` (sorted) and one line per entry that is skipped for a reason worth telling."""
    found, problems = [], []

    def unreadable(exc: OSError) -> None:
        problems.append(f"{exc.filename}: cannot read folder ({exc.strerror or exc})")

    for root, dirs, names in os.walk(folder, onerror=unreadable):
        if not recursive:
            dirs.clear()
        for name in dirs:
            if os.path.islink(os.path.join(root, name)):
                problems.append(f"{Path(root, name)}: {NOTICE}link to a folder, not followed")
        for name in names:
            entry = Path(root, name)
            if entry.suffix.lower() not in AUDIO_SUFFIXES:
                continue
            try:
                found.append(check_audio_path(entry))
            except AudioError as exc:
                problems.append(str(exc))
    return sorted(found), sorted(problems)
