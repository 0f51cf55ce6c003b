"""Objects of ``emotion-train``'s composed config: model, training settings, data, loggers and callbacks.

Each builder takes its config group and returns the object ``emotion_monitor.core.train.fit`` uses; every value
comes from ``configs/`` (``TrainSettings`` and the data modules have no defaults of their own).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from hydra.utils import instantiate, to_absolute_path
from omegaconf import DictConfig, OmegaConf

from emotion_monitor.core.hub import build_backbone_from_config

if TYPE_CHECKING:  # torch/Lightning are imported when needed so `emotion-train --help/--cfg` stay fast
    import pytorch_lightning as pl

    from emotion_monitor.core.data import RavdessDataModule
    from emotion_monitor.core.lightning_module import TrainSettings
    from emotion_monitor.core.model import EmotionClassifier


def to_plain(node: Any) -> Any:
    """DictConfig/ListConfig → plain dicts/lists (interpolations resolved); plain values unchanged."""
    return OmegaConf.to_container(node, resolve=True) if OmegaConf.is_config(node) else node


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


def build_trainer(cfg: DictConfig, quiet: bool = False) -> pl.Trainer:
    """``trainer`` group (+ ``debug``) → Trainer with the configured loggers and callbacks.

    quiet: no loggers, checkpoints or progress bar (the folds of an evaluation, which keep only the module).
    """
    output_dir = Path(cfg.output_dir)
    trainer_cfg = to_plain(cfg.trainer)
    trainer_cfg.update(fast_dev_run=cfg.debug.fast_dev_run, overfit_batches=cfg.debug.overfit_batches)
    if quiet:
        trainer_cfg.update(enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    return instantiate(
        trainer_cfg,
        logger=False if quiet else build_loggers(cfg) or False,
        callbacks=[] if quiet else build_callbacks(cfg, output_dir),
        default_root_dir=str(output_dir),
        _convert_="all",
    )
