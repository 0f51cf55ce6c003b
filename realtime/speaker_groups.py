"""``emotion-score --speaker-norm``/``--speaker-baseline``: which files are one speaker, and each file's window
probabilities judged against that speaker's own average voice (``SpeakerNormaliser``)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from emotion_monitor.realtime.audio import AudioError
from emotion_monitor.realtime.speaker_norm import SpeakerNormaliser, SpeakerNormOptions

if TYPE_CHECKING:
    from emotion_monitor.realtime.model import EmotionModel

SPEAKER_KEYS = ("folder", "file", "map")
"""What makes a speaker for ``--speaker-norm``: a folder, a file, or an entry of the ``--speakers`` CSV."""


def read_speaker_map(path: str) -> dict[Path, str]:
    """``--speakers`` CSV (columns ``path,speaker``) → {resolved file path: speaker}; paths are taken relative
    to the CSV's folder unless absolute. ValueError (one line) when the file or its columns are wrong."""
    csv_path = Path(path)
    if not csv_path.is_file():
        raise ValueError(f"--speakers {path}: no such file")
    with open(csv_path, encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or not {"path", "speaker"} <= set(reader.fieldnames):
            raise ValueError(f"--speakers {path}: needs a header with columns path,speaker")
        return {
            (csv_path.parent / row["path"]).resolve(): row["speaker"]
            for row in reader
            if row.get("path") and row.get("speaker")
        }


def speaker_groups(
    files: list[Path], speaker_norm: str | None, speakers_csv: str | None = None, baseline: bool = False
) -> list[tuple[str | None, list[Path]]]:
    """Files grouped by speaker (``speaker_norm``: one of ``SPEAKER_KEYS`` or None), in order of first
    appearance; ``(None, [file])`` = scored without normalisation (no --speaker-norm, or a file missing from
    ``speakers_csv``). ``baseline``: every file alone against one fixed calm baseline."""
    if baseline:
        return [("baseline", [f]) for f in files]  # one fixed baseline: each file can be written at once
    if not speaker_norm:
        return [(None, [f]) for f in files]
    mapping = read_speaker_map(speakers_csv) if speaker_norm == "map" else {}
    groups: dict[str | None, list[Path]] = {}
    alone = []
    for f in files:
        if speaker_norm == "folder":
            key = str(f.parent)
        elif speaker_norm == "file":
            key = str(f)
        else:
            key = mapping.get(f.resolve())
            if key is None:
                alone.append(f)
                continue
        groups.setdefault(key, []).append(f)
    return list(groups.items()) + [(None, [f]) for f in alone]


def make_normaliser(
    model: EmotionModel, speaker_norm: str | None, baseline: str | None, options: SpeakerNormOptions
) -> SpeakerNormaliser | None:
    """The speaker normaliser asked for (running mean when ``speaker_norm``, calm ``baseline``), or None."""
    if not (speaker_norm or baseline):
        return None
    try:
        return model.speaker_normaliser(options, baseline)
    except AudioError as exc:  # the whole run depends on the baseline: an error, not one failed file
        raise ValueError(f"--speaker-baseline: {exc}") from None


def normalise_group(
    normaliser: SpeakerNormaliser, windows: list[tuple[np.ndarray, np.ndarray, np.ndarray, float]]
) -> list[np.ndarray]:
    """Each file's window probabilities normalised with the mean of the whole group's speech windows
    (unchanged when the group has too little speech: ``normaliser.ready`` is then False).

    ``windows``: per file (probs ``[W, classes]``, pooled ``[W, L+1, H]``, speech ``[W]`` bool, speech seconds).
    """
    normaliser.reset()
    for probs, pooled, speech, speech_s in windows:
        normaliser.update(pooled[speech], speech_s, probs[speech])
    out = []
    for probs, pooled, speech, _ in windows:
        probs = probs.copy()
        if speech.any():
            probs[speech] = normaliser.apply(probs[speech], pooled[speech])
        out.append(probs)
    return out
