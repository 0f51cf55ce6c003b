"""Where the corpora are: the one home of the data-directory setting.

``$EMOTION_DATA_DIR`` names the folder that holds the corpora (``ravdess-16k/``, ``crema-d-16k/``, … as in
``../shared/data/README.md``); unset, it is ``../shared/data`` relative to the current directory (the clone's
root, where the README's commands run). Training configs read it through the ``${emotion_data_dir:}`` resolver, so
the YAML, the evaluation and export checks, the benchmarks and the tests all mean the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "EMOTION_DATA_DIR"
DEFAULT_DATA_DIR = "../shared/data"
RAVDESS_FOLDER = "ravdess-16k"
CREMA_D_FOLDER = "crema-d-16k"
RESOLVER = "emotion_data_dir"


def data_root() -> Path:
    """``$EMOTION_DATA_DIR``, else ``../shared/data`` (relative paths are relative to the current directory)."""
    return Path(os.environ.get(DATA_DIR_ENV) or DEFAULT_DATA_DIR).expanduser()


def ravdess_dir() -> Path:
    """The 16 kHz RAVDESS copy (``Actor_XX`` folders) below ``data_root()``."""
    return data_root() / RAVDESS_FOLDER


def register_resolver() -> None:
    """Make ``${emotion_data_dir:}`` available to OmegaConf/Hydra configs (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda: str(data_root()))
