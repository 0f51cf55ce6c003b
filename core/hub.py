"""Backbone weights from the Hugging Face hub without the hub client's retries when it cannot be reached.

``check_backbone_available`` fails at once (before torch is imported) when a hub name is neither cached nor
reachable; ``build_backbone_from_config`` loads from the local cache only (``HF_HUB_OFFLINE=1``) when the hub
cannot be reached, and turns a failed load into ``BackboneUnavailable`` with what to do.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from hydra.utils import get_method
from omegaconf import DictConfig, OmegaConf

from emotion_monitor.realtime.errors import one_line

DEFAULT_BACKBONE_BUILDER = "emotion_monitor.core.backbones.build_backbone"
HUB_PROBE_TIMEOUT_S = 2.0
"""How long a connection to the Hugging Face hub may take before it counts as unreachable."""


class BackboneUnavailable(RuntimeError):
    """Pretrained encoder weights cannot be loaded (offline hub, wrong directory); one-line message."""


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """Whether a TCP connection to the hub (``$HF_ENDPOINT``, default huggingface.co:443) opens within ``timeout``.

    Name resolution is inside the time limit too (it runs in a daemon thread), so a machine without DNS answers
    within ``timeout`` instead of after the resolver's own retries.
    """
    url = urlsplit(os.environ.get("HF_ENDPOINT") or "https://huggingface.co")
    host = url.hostname or "huggingface.co"
    port = url.port or (80 if url.scheme == "http" else 443)
    ok: list[bool] = []

    def connect() -> None:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                ok.append(True)
        except OSError:
            pass

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(ok)


def _is_hub_id(name: Any, kind: Any) -> bool:
    """A name ``from_pretrained`` would look up on the hub: not a local path, not packaged Whisper weights."""
    if not isinstance(name, str) or not name:
        return False
    if Path(name).exists() or Path(name).is_absolute() or name.startswith((".", "~")):
        return False
    if kind == "whisper":
        from emotion_monitor.core.ct2 import PACKAGED

        return name not in PACKAGED
    return True


@contextlib.contextmanager
def hub_offline_if_unreachable(name: Any, kind: Any) -> Iterator[None]:
    """Load from the local hub cache only (``HF_HUB_OFFLINE=1``) when the hub cannot be reached.

    Without this, an offline machine spends ~30 s in the hub client's retries, printing a line for each,
    before the same error. A proxy (``HTTPS_PROXY``) is left to the hub client: a direct probe says nothing.
    """
    skip = _offline_or_proxied() or not _is_hub_id(name, kind) or hub_reachable()
    if skip:
        yield
        return
    previous = os.environ.get("HF_HUB_OFFLINE")
    os.environ["HF_HUB_OFFLINE"] = "1"
    # huggingface_hub reads the variable once, at import: set its constant too when it is already loaded.
    constants = sys.modules.get("huggingface_hub.constants")
    old_constant = getattr(constants, "HF_HUB_OFFLINE", None)
    if constants is not None:
        constants.HF_HUB_OFFLINE = True
    loggers = [logging.getLogger(n) for n in ("transformers", "huggingface_hub")]
    old_levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, old_levels, strict=True):
            lg.setLevel(level)
        if constants is not None:
            constants.HF_HUB_OFFLINE = old_constant
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


def build_backbone_from_config(backbone_cfg: dict) -> Any:
    """Call the backbone builder (``_target_``, default ``emotion_monitor.core.backbones.build_backbone``) with the rest.

    A hub/download failure becomes ``BackboneUnavailable`` telling the user to point
    ``model.backbone.name_or_path`` at a local copy. When the hub is unreachable that happens at once
    (only the local cache is tried), not after the hub client's retries.
    """
    cfg = dict(backbone_cfg)
    builder = get_method(cfg.pop("_target_", DEFAULT_BACKBONE_BUILDER))
    hub_name = cfg.get("name_or_path") if cfg.get("config") is None else None
    try:
        with hub_offline_if_unreachable(hub_name, cfg.get("kind", "wav2vec2")):
            return builder(**cfg)
    except (OSError, ValueError) as exc:
        name = cfg.get("name_or_path")
        if cfg.get("config") is not None or name is None:
            raise
        raise BackboneUnavailable(f"{_unavailable_message(name)} [{one_line(exc, with_type=True)}]") from None


def _unavailable_message(name: Any) -> str:
    """``cannot load backbone: <why and what to do>`` for ``model.backbone.name_or_path=name``."""
    if Path(str(name)).exists():
        hint = f"the local directory {name} does not hold a loadable model"
    elif Path(str(name)).is_absolute() or str(name).startswith("."):
        hint = f"the local directory {name} does not exist"
    else:
        hint = (
            f"'{name}' is neither a local directory nor reachable on the Hugging Face hub (offline?); "
            "download it where there is network and pass model.backbone.name_or_path=/local/dir"
        )
    return f"cannot load backbone: {hint}"


def in_hub_cache(name: str) -> bool:
    """Whether the local Hugging Face cache holds ``name``'s config (what an offline load would need first)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def check_backbone_available(model_cfg: DictConfig | dict) -> None:
    """Fail at once, before torch and transformers are imported, when the backbone is a hub name, the hub is
    unreachable and the local cache does not hold it. Anything else is left to the load itself."""
    plain = OmegaConf.to_container(model_cfg, resolve=True) if OmegaConf.is_config(model_cfg) else model_cfg
    backbone = dict(plain).get("backbone") or {}
    name, kind = backbone.get("name_or_path"), backbone.get("kind", "wav2vec2")
    if backbone.get("config") is not None or not _is_hub_id(name, kind) or _offline_or_proxied():
        return
    if not in_hub_cache(name) and not hub_reachable():
        raise BackboneUnavailable(f"{_unavailable_message(name)} [not in the local cache]")


def _offline_or_proxied() -> bool:
    """``HF_HUB_OFFLINE`` set, or a proxy that a direct probe cannot judge: the hub client decides."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    )
