"""Where the corpora are: the one home of the data-directory setting.

``$EMOTION_DATA_DIR`` names the folder that holds the corpora (``ravdess-16k/``, ``crema-d-16k/``, ``ased-16k/``,
``nemo-16k/``, as in the project's ``docs/training.md``). Unset, it is ``shared/data`` beside a source checkout
(``<checkout>/../shared/data``: the layout the project's CI and tests use), else
``$XDG_DATA_HOME/speech-emotion-monitor/data`` (``~/.local/share/…``) for an installed package: never a folder
relative to the current directory. Training configs read it through the ``${emotion_data_dir:}`` resolver, so the
YAML, the evaluation and export checks, the benchmarks and the tests all mean the same folder.
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "EMOTION_DATA_DIR"
CHECKOUT_DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
"""``shared/data`` beside the source checkout this module lives in (an editable install or a clone)."""
BUNDLE_DIR = Path(__file__).resolve().parents[1] / "export" / "bundled"
"""The shipped heads and their ``model.json`` (installed as ``emotion_monitor.export.bundled``): where
``task=bundle`` writes by default and what the model card is made from."""
RAVDESS_FOLDER = "ravdess-16k"
CREMA_D_FOLDER = "crema-d-16k"
RESOLVER = "emotion_data_dir"


def installed_data_dir() -> Path:
    """Where an installed package expects the corpora when ``$EMOTION_DATA_DIR`` is unset."""
    base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "speech-emotion-monitor" / "data"


def data_root() -> Path:
    """``$EMOTION_DATA_DIR``; else ``shared/data`` beside the source checkout when it exists; else
    ``installed_data_dir()``."""
    explicit = os.environ.get(DATA_DIR_ENV)
    if explicit:
        return Path(explicit).expanduser()
    if CHECKOUT_DATA_DIR.is_dir():
        return CHECKOUT_DATA_DIR
    return installed_data_dir()


def ravdess_dir() -> Path:
    """The 16 kHz RAVDESS copy (``Actor_XX`` folders) below ``data_root()``."""
    return data_root() / RAVDESS_FOLDER


def register_resolver() -> None:
    """Make ``${emotion_data_dir:}`` available to OmegaConf/Hydra configs (idempotent)."""
    from omegaconf import OmegaConf

    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, lambda: str(data_root()))
