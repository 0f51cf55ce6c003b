"""``emotion-train``: Hydra entry point (configs from the installed ``configs`` package), the one trainer.

    emotion-train experiment=head task=evaluate              # cached-feature head: the evaluation protocol
    emotion-train experiment=head task=bundle                # ... and the shipped heads (core.experiment)
    emotion-train model=tiny train.max_epochs=1              # offline smoke run, random tiny encoder
    emotion-train model.backbone.name_or_path=/models/wav2vec2-base dataset.fold=0
    emotion-train trainer.accelerator=cpu trainer.strategy=ddp trainer.devices=2

Writes ``<output_dir>/checkpoints/best.ckpt`` (best validation macro-F1), ``last.ckpt``, logs, and
``summary.json`` (+ ``test_metrics.json`` / ``test_confusion.png`` when ``evaluate_test``).
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
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import hydra
from hydra.utils import get_method, instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from emotion_monitor.core.paths import register_resolver
from emotion_monitor.realtime.errors import one_line, print_error

if TYPE_CHECKING:  # torch/Lightning are imported when needed so `emotion-train --help/--cfg` stay fast
    import pytorch_lightning as pl

    from emotion_monitor.core.data import RavdessDataModule
    from emotion_monitor.core.lightning_module import EmotionModule, TrainSettings
    from emotion_monitor.core.model import EmotionClassifier

log = logging.getLogger("emotion-train")

DEFAULT_BACKBONE_BUILDER = "emotion_monitor.core.backbones.build_backbone"
HUB_PROBE_TIMEOUT_S = 2.0
"""How long a connection to the Hugging Face hub may take before it counts as unreachable."""


register_resolver()  # configs/config.yaml's ${emotion_data_dir:}; any code composing the config imports this module


class BackboneUnavailable(RuntimeError):
    """Pretrained encoder weights cannot be loaded (offline hub, wrong directory); one-line message."""


def to_plain(node: Any) -> Any:
    """DictConfig/ListConfig → plain dicts/lists (interpolations resolved); plain values unchanged."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


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
def _hub_offline_if_unreachable(name: Any, kind: Any) -> Iterator[None]:
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
        with _hub_offline_if_unreachable(hub_name, cfg.get("kind", "wav2vec2")):
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


def _in_hub_cache(name: str) -> bool:
    """Whether the local Hugging Face cache holds ``name``'s config (what an offline load would need first)."""
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(name, "config.json"), str)


def check_backbone_available(model_cfg: DictConfig | dict) -> None:
    """Fail at once, before torch and transformers are imported, when the backbone is a hub name, the hub is
    unreachable and the local cache does not hold it. Anything else is left to the load itself."""
    backbone = dict(to_plain(model_cfg)).get("backbone") or {}
    name, kind = backbone.get("name_or_path"), backbone.get("kind", "wav2vec2")
    if backbone.get("config") is not None or not _is_hub_id(name, kind) or _offline_or_proxied():
        return
    if not _in_hub_cache(name) and not hub_reachable():
        raise BackboneUnavailable(f"{_unavailable_message(name)} [not in the local cache]")


def _offline_or_proxied() -> bool:
    """``HF_HUB_OFFLINE`` set, or a proxy that a direct probe cannot judge: the hub client decides."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on") or any(
        os.environ.get(v) for v in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")
    )


def build_model(model_cfg: DictConfig | dict, num_classes: int) -> tuple[EmotionClassifier, int]:
    """``model`` config group → (classifier, freeze_layers). The backbone goes through ``build_backbone``."""
    cfg = dict(to_plain(model_cfg))
    freeze_layers = int(cfg.pop("freeze_layers", 0) or 0)
    backbone = build_backbone_from_config(cfg.pop("backbone"))
    cfg.setdefault("_target_", "emotion_monitor.core.model.EmotionClassifier")
    model = instantiate(cfg, backbone=backbone, num_classes=num_classes, _convert_="all")
    return model, freeze_layers


def train_settings(
    train_cfg: DictConfig | dict, freeze_layers: int, train_labels: list[int], num_classes: int
) -> TrainSettings:
    """``train`` config group → TrainSettings; ``loss.class_weights: auto`` is computed from the training split."""
    from emotion_monitor.core.lightning_module import TrainSettings
    from emotion_monitor.core.losses import class_weights_from_labels

    cfg = to_plain(train_cfg)
    weights = cfg["loss"].get("class_weights", "auto")
    if weights == "auto":
        weights = class_weights_from_labels(train_labels, num_classes)
    elif weights is not None and len(weights) != num_classes:
        raise ValueError(f"train.loss.class_weights has {len(weights)} entries, expected {num_classes}")
    opt, sched, mix = cfg["optimizer"], cfg["scheduler"], cfg["mixup"]
    return TrainSettings(
        lr=float(opt["lr"]),
        weight_decay=float(opt["weight_decay"]),
        betas=tuple(opt["betas"]),
        lr_scales={k: float(v) for k, v in opt["lr_scales"].items()},
        freeze_layers=freeze_layers,
        t0_epochs=float(sched["t0_epochs"]),
        t_mult=int(sched["t_mult"]),
        eta_min=float(sched["eta_min"]),
        gamma=float(cfg["loss"]["gamma"]),
        label_smoothing=float(cfg["loss"]["label_smoothing"]),
        class_weights=None if weights is None else [float(w) for w in weights],
        mixup_alpha=float(mix["alpha"]),
        mixup_prob=float(mix["prob"]),
        mixup_clean_forward=bool(mix["clean_forward"]),
    )


def build_loggers(cfg: DictConfig) -> list:
    """Instantiate the loggers named by ``cfg.logger`` (a name or a list of names from ``cfg.loggers``)."""
    names = cfg.logger
    names = [] if names in (None, "", "none", False) else [names] if isinstance(names, str) else list(names)
    unknown = [n for n in names if n not in cfg.loggers]
    if unknown:
        raise ValueError(f"unknown logger {unknown}; choose from {list(cfg.loggers)}")
    return [instantiate(cfg.loggers[name]) for name in names]


def build_callbacks(cfg: DictConfig, output_dir: Path) -> list[pl.Callback]:
    from pytorch_lightning.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint

    best = ModelCheckpoint(
        dirpath=output_dir / "checkpoints",
        filename="best",
        monitor=cfg.checkpoint.monitor,
        mode=cfg.checkpoint.mode,
        save_top_k=1,
        auto_insert_metric_name=False,
        enable_version_counter=False,
    )
    callbacks: list[pl.Callback] = [best]  # first, so trainer.checkpoint_callback is the best-model one
    if cfg.checkpoint.save_last:
        # A separate unmonitored callback: Lightning 2.6's save_last only re-saves when top-k improved,
        # so its last.ckpt would be the best epoch, not the last one.
        callbacks.append(
            ModelCheckpoint(
                dirpath=output_dir / "checkpoints",
                filename="last",
                save_top_k=1,
                auto_insert_metric_name=False,
                enable_version_counter=False,
            )
        )
    if cfg.logger:
        callbacks.append(LearningRateMonitor(logging_interval="epoch"))
    patience = cfg.train.get("early_stopping_patience")
    if patience:
        callbacks.append(
            EarlyStopping(monitor=cfg.checkpoint.monitor, mode=cfg.checkpoint.mode, patience=patience)
        )
    return callbacks


def build_datamodule(cfg: DictConfig) -> RavdessDataModule:
    """``dataset`` group → datamodule with ``root`` made absolute against the launch directory."""
    from emotion_monitor.core.data import DataError

    data_cfg = to_plain(cfg.dataset)
    if "root" in data_cfg:
        data_cfg["root"] = to_absolute_path(str(data_cfg["root"]))
    for corpus in (data_cfg.get("corpora") or {}).values():
        if corpus.get("root") is None:
            raise DataError(
                f"corpus of kind {corpus.get('kind')} has no root (for corpora=manifest: manifest=FILE)"
            )
        corpus["root"] = to_absolute_path(str(corpus["root"]))
    return instantiate(data_cfg, _convert_="all")


def fit(cfg: DictConfig, quiet: bool = False) -> tuple[pl.Trainer, EmotionModule, RavdessDataModule]:
    """Build everything from ``cfg`` and train; returns the trainer, the trained module and the data.

    quiet: no loggers, checkpoints or progress bar (the folds of an evaluation, which keep only the module).
    """
    import pytorch_lightning as pl
    import torch

    from emotion_monitor.core.lightning_module import EmotionModule
    from emotion_monitor.realtime.audio import SAMPLE_RATE

    if cfg.num_threads:
        torch.set_num_threads(int(cfg.num_threads))
    pl.seed_everything(cfg.seed, workers=True)
    output_dir = Path(cfg.output_dir)
    datamodule = build_datamodule(cfg)
    # The backbone first: a missing download should fail before minutes of audio decoding.
    model, freeze_layers = build_model(cfg.model, len(datamodule.labels))
    datamodule.setup("fit")
    settings = train_settings(cfg.train, freeze_layers, datamodule.train_labels(), len(datamodule.labels))
    module = EmotionModule(
        model_spec=model.spec(),
        labels=datamodule.labels,
        sample_rate=SAMPLE_RATE,
        window_s=datamodule.window_s,
        preprocessing=datamodule.preprocessing.to_dict(),
        train=settings.to_dict(),
        metrics={},
        split=datamodule.split_info(),
        model=model,
    )
    trainer_cfg = to_plain(cfg.trainer)
    trainer_cfg.update(fast_dev_run=cfg.debug.fast_dev_run, overfit_batches=cfg.debug.overfit_batches)
    if quiet:
        trainer_cfg.update(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer = instantiate(
        trainer_cfg,
        logger=False if quiet else build_loggers(cfg) or False,
        callbacks=[] if quiet else build_callbacks(cfg, output_dir),
        default_root_dir=str(output_dir),
        _convert_="all",
    )
    trainer.fit(module, datamodule=datamodule)
    return trainer, module, datamodule


def run(cfg: DictConfig) -> dict[str, Any]:
    """Train once as configured; returns the run summary (also written to ``summary.json``)."""
    trainer, module, datamodule = fit(cfg)
    return finish(cfg, trainer, module, datamodule, Path(cfg.output_dir))


def finish(
    cfg: DictConfig,
    trainer: pl.Trainer,
    module: EmotionModule,
    datamodule: RavdessDataModule,
    output_dir: Path,
) -> dict[str, Any]:
    """Rank 0: evaluate the best checkpoint on the test actors and write ``summary.json``."""
    import torch

    from emotion_monitor.core.metrics import save_json

    checkpoint = trainer.checkpoint_callback
    best = Path(checkpoint.best_model_path) if checkpoint is not None and checkpoint.best_model_path else None
    summary: dict[str, Any] = {
        "output_dir": str(output_dir),
        "best_checkpoint": str(best) if best else None,
        "best_val": module.hparams.get("metrics") if best is None else None,
        "split": datamodule.split_info(),
        "world_size": trainer.world_size,
        "num_nodes": trainer.num_nodes,
    }
    if not trainer.is_global_zero:
        return summary
    if best is not None:
        from emotion_monitor.core.evaluate import evaluate_checkpoint, record_test_metrics

        summary["best_val"] = torch.load(best, weights_only=True)["hyper_parameters"].get("metrics")
        if cfg.evaluate_test and datamodule.datasets["test"].labels:
            report = evaluate_checkpoint(
                best, datamodule=datamodule, split="test", out_dir=output_dir, name="test"
            )
            record_test_metrics(best, report)
            summary["test"] = {
                k: report[k] for k in ("accuracy", "macro_f1", "weighted_f1", "uar", "num_samples")
            }
    save_json(summary, output_dir / "summary.json")
    log.info("summary: %s", {k: summary.get(k) for k in ("best_checkpoint", "best_val", "test")})
    return summary


@hydra.main(version_base="1.3", config_path="pkg://emotion_monitor.configs", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    try:
        if cfg.task == "fit":
            check_backbone_available(cfg.model)
    except BackboneUnavailable as exc:
        print(f"emotion-train: error: {exc}", file=sys.stderr)
        sys.exit(2)
    from emotion_monitor.core.checkpoint import CheckpointError
    from emotion_monitor.core.data import DataError

    try:
        if cfg.task == "fit":
            run(cfg)
        elif cfg.task in ("evaluate", "bundle"):
            from emotion_monitor.core.experiment import bundle, evaluate

            (evaluate if cfg.task == "evaluate" else bundle)(cfg)
        else:
            raise DataError(f"task must be fit, evaluate or bundle, got {cfg.task!r}")
    except (BackboneUnavailable, DataError, CheckpointError) as exc:
        # Expected user-facing failures: one line, no traceback, non-zero exit.
        sys.exit(print_error("emotion-train", exc))


def main() -> None:
    """Console-script entry point (``emotion-train``)."""
    _hydra_main()


if __name__ == "__main__":
    main()
