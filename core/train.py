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

import logging
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import hydra
from omegaconf import DictConfig

from emotion_monitor.core.builders import (
    build_datamodule,
    build_model,
    build_trainer,
    train_settings,
)
from emotion_monitor.core.hub import BackboneUnavailable, check_backbone_available
from emotion_monitor.core.paths import register_resolver
from emotion_monitor.realtime.errors import print_error

if TYPE_CHECKING:  # torch/Lightning are imported when needed so `emotion-train --help/--cfg` stay fast
    import pytorch_lightning as pl

    from emotion_monitor.core.data import RavdessDataModule
    from emotion_monitor.core.lightning_module import EmotionModule

log = logging.getLogger("emotion-train")

register_resolver()  # configs/config.yaml's ${emotion_data_dir:}; any code composing the config imports this module


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
    trainer = build_trainer(cfg, quiet)
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
