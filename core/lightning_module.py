"""A thin LightningModule around the plain ``EmotionClassifier``: loss, mixup, LR tiers, metrics.

Checkpoint contract (``emotion_monitor.core.checkpoint`` and ``emotion-export`` rely on it): the classifier is ``self.model``
(state-dict keys start with ``model.``) and the hyper-parameters are plain Python containers only
(``model_spec``, ``labels``, ``sample_rate``, ``window_s``, ``preprocessing``, ``train``, ``metrics``,
``split``) so checkpoints load with ``torch.load(..., weights_only=True)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
import torch.nn.functional as F
from torch import nn

from emotion_monitor.core.losses import FocalLoss
from emotion_monitor.core.metrics import METRIC_NAMES, metrics_from_confusion
from emotion_monitor.core.model import EmotionClassifier, build_classifier

LR_TIERS = ("lower", "upper", "head")
"""lower: backbone below layer ``freeze_layers`` (+ its input projection); upper: the remaining backbone
layers; head: layer weights + feature extractor + output layer."""


@dataclass
class TrainSettings:
    """Optimisation settings (``train`` config group + ``model.freeze_layers``), stored in checkpoints.

    No field has a default: ``configs/train/train.yaml`` is their one home (``core.builders.train_settings``
    builds this from the composed config; checkpoints store every field).

    lr: learning rate of the head tier; the backbone tiers use ``lr * lr_scales[tier]``. A scale of 0
        hard-freezes that tier (``requires_grad=False``, left out of the optimiser).
    weight_decay: AdamW decoupled decay, not applied to biases and normalisation parameters.
    t0_epochs / t_mult / eta_min: CosineAnnealingWarmRestarts period (epochs, stepped per batch), period
        multiplier and floor learning rate.
    gamma / label_smoothing / class_weights: focal loss; class_weights ``[C]`` or None.
    mixup_alpha / mixup_prob: Beta(alpha, alpha) mixing applied to a batch with probability mixup_prob.
    mixup_clean_forward: when a batch is mixed, training metrics come from a second, no-grad forward of the
        un-mixed batch in eval mode; when False, mixed batches are left out of the training metrics.
    """

    lr: float
    weight_decay: float
    betas: tuple[float, float]
    lr_scales: dict
    freeze_layers: int
    t0_epochs: float
    t_mult: int
    eta_min: float
    gamma: float
    label_smoothing: float
    class_weights: list | None
    mixup_alpha: float
    mixup_prob: float
    mixup_clean_forward: bool

    @classmethod
    def from_dict(cls, data: dict | None) -> TrainSettings:
        data = dict(data or {})
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        missing = set(cls.__dataclass_fields__) - set(data)
        if missing:
            raise ValueError(
                f"training settings lack {sorted(missing)} (build them with core.builders.train_settings)"
            )
        data["betas"] = tuple(data["betas"])
        return cls(**data)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["betas"] = list(self.betas)
        return data


def _no_decay_ids(model: nn.Module) -> set[int]:
    """Parameters that must not be weight-decayed: biases, normalisation scales/shifts, 1-D vectors."""
    norms = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._BatchNorm)
    ids = {id(p) for p in model.parameters() if p.ndim <= 1}
    for module in model.modules():
        if isinstance(module, norms):
            ids.update(id(p) for p in module.parameters(recurse=False))
    return ids


def parameter_tiers(model: EmotionClassifier, freeze_layers: int) -> dict[str, list[nn.Parameter]]:
    """Split every parameter (trainable or not) into the ``LR_TIERS``."""
    layers = model.backbone.transformer_layers()
    upper = {id(p) for layer in layers[min(freeze_layers, len(layers)) :] for p in layer.parameters()}
    backbone = {id(p) for p in model.backbone.parameters()}
    tiers: dict[str, list[nn.Parameter]] = {tier: [] for tier in LR_TIERS}
    for p in model.parameters():
        tier = "head" if id(p) not in backbone else "upper" if id(p) in upper else "lower"
        tiers[tier].append(p)
    return tiers


def freeze_zero_lr_tiers(model: EmotionClassifier, settings: TrainSettings) -> None:
    """``requires_grad=False`` for tiers whose learning-rate scale is 0 (saves their gradients' memory)."""
    for tier, params in parameter_tiers(model, settings.freeze_layers).items():
        if settings.lr_scales.get(tier, 1.0) == 0:
            for p in params:
                p.requires_grad_(False)


def prepare_for_training(model: EmotionClassifier, settings: TrainSettings) -> None:
    """Freeze what must not train and switch off what breaks training of this architecture.

    - tiers with learning-rate scale 0 (``freeze_zero_lr_tiers``);
    - ``layer_logits`` under ``layer_pooling="last"``: unused, and an unused trainable parameter makes DDP fail;
    - wav2vec2-family LayerDrop (0.1 in wav2vec2-base's config): a skipped layer yields no hidden state, so
      the per-layer weighting would see fewer layers than it has weights for (and DDP would see unused
      parameters). transformers reads ``config.layerdrop`` at every forward, so setting it here suffices.
    """
    freeze_zero_lr_tiers(model, settings)
    if model.layer_pooling in ("last", "concat"):
        model.layer_logits.requires_grad_(False)
    for module in model.modules():
        config = getattr(module, "config", None)
        if config is not None and getattr(config, "layerdrop", 0.0):
            config.layerdrop = 0.0


def parameter_groups(model: EmotionClassifier, settings: TrainSettings) -> list[dict[str, Any]]:
    """AdamW groups: one per (tier, decay/no-decay), each named ``"<tier>/decay"`` or ``"<tier>/no_decay"``.

    Frozen parameters (the wav2vec2 CNN feature encoder, zero-scale tiers) are left out; empty groups too.
    """
    no_decay = _no_decay_ids(model)
    groups = []
    for tier, params in parameter_tiers(model, settings.freeze_layers).items():
        scale = settings.lr_scales.get(tier, 1.0)
        trainable = [p for p in params if p.requires_grad]
        if scale == 0 or not trainable:
            continue
        for decay in (True, False):
            chosen = [p for p in trainable if (id(p) not in no_decay) == decay]
            if chosen:
                groups.append(
                    {
                        "name": f"{tier}/{'decay' if decay else 'no_decay'}",
                        "params": chosen,
                        "lr": settings.lr * scale,
                        "weight_decay": settings.weight_decay if decay else 0.0,
                    }
                )
    return groups


def mix_batch(
    x: torch.Tensor, y: torch.Tensor, num_classes: int, alpha: float, generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor, float, torch.Tensor]:
    """Mixup: inputs ``x [B, ...]`` (waveforms or pooled features), labels ``y [B]`` → mixed inputs, mixed one-hot
    targets ``[B, C]``, lambda, and the permutation each row was mixed with."""
    lam = float(torch.distributions.Beta(alpha, alpha).sample())
    perm = torch.randperm(x.shape[0], generator=generator).to(x.device)
    onehot = F.one_hot(y.long(), num_classes).to(x.dtype)
    return lam * x + (1 - lam) * x[perm], lam * onehot + (1 - lam) * onehot[perm], lam, perm


class EmotionModule(pl.LightningModule):
    """Trains an ``EmotionClassifier`` held as ``self.model``.

    model_spec: ``EmotionClassifier.spec()``; used to rebuild the classifier (random weights, no download)
        when ``model`` is not given, e.g. by ``load_from_checkpoint``.
    labels: class names in output order. sample_rate: Hz. window_s: crop length in seconds.
    preprocessing: ``PreprocessOptions.to_dict()``. train: ``TrainSettings.to_dict()``.
    metrics: best validation metrics so far (filled during training). split: actors per split, seeds.
    model: an already built classifier (pretrained backbone) to train; not stored in hparams.
    """

    def __init__(
        self,
        model_spec: dict,
        labels: list[str],
        sample_rate: int = 16_000,
        window_s: float = 3.0,
        preprocessing: dict | None = None,
        train: dict | None = None,
        metrics: dict | None = None,
        split: dict | None = None,
        model: EmotionClassifier | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(ignore=["model"])
        self.model = model if model is not None else build_classifier(model_spec, pretrained=False)
        self.settings = TrainSettings.from_dict(train)
        self.num_classes = len(labels)
        if self.model.num_classes != self.num_classes:
            raise ValueError(f"model has {self.model.num_classes} outputs but {self.num_classes} labels")
        prepare_for_training(self.model, self.settings)
        self.loss_fn = FocalLoss(
            self.settings.gamma, self.settings.class_weights, self.settings.label_smoothing
        )
        self._confusion = {
            stage: torch.zeros(self.num_classes, self.num_classes, dtype=torch.long)
            for stage in ("train", "val")
        }

    def forward(self, input_values: torch.Tensor) -> torch.Tensor:
        return self.model(input_values)

    # ---- steps ---------------------------------------------------------------------------------------
    def mixup_step(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        allowed: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One training forward: ``(loss, logits for metrics)``.

        x: waveforms ``[B, S]`` or pooled features ``[B, L+1, H]`` (cached-feature training). allowed ``[B, C]``
        and weight ``[B]``: see ``FocalLoss``. Without mixup the metric logits are the training forward's own.
        With mixup the loss uses the mixed batch (a mixed row may use the classes of both its sources) and the
        metric logits come from the clean batch (``clean_logits``) or are None (batch not counted in the
        training metrics) when ``mixup_clean_forward`` is off. Metrics never see mixed predictions.
        """
        s = self.settings
        if s.mixup_alpha <= 0 or s.mixup_prob <= 0 or float(torch.rand(())) >= s.mixup_prob:
            logits = self._logits(x)
            return self.loss_fn(logits, y, allowed, weight), self._masked(logits.detach(), allowed)
        x_mix, q_mix, lam, perm = mix_batch(x, y, self.num_classes, s.mixup_alpha)
        allowed_mix = None if allowed is None else allowed | allowed[perm]
        weight_mix = None if weight is None else lam * weight + (1 - lam) * weight[perm]
        loss = self.loss_fn(self._logits(x_mix), q_mix, allowed_mix, weight_mix)
        return loss, (self._masked(self.clean_logits(x), allowed) if s.mixup_clean_forward else None)

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Waveforms ``[B, S]`` through the whole model; pooled features ``[B, L+1, H]`` through the head only."""
        return self.model.classify_pooled(x) if x.dim() == 3 else self.model(x)

    @staticmethod
    def _masked(logits: torch.Tensor, allowed: torch.Tensor | None) -> torch.Tensor:
        return logits if allowed is None else logits.masked_fill(~allowed, float("-inf"))

    @torch.no_grad()
    def clean_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Eval-mode, no-grad logits of un-mixed inputs (no dropout, BatchNorm running stats untouched)."""
        # Restore each submodule's own mode afterwards: a backbone may keep frozen parts in eval mode.
        modes = {module: module.training for module in self.model.modules()}
        self.model.eval()
        try:
            return self._logits(x)
        finally:
            for module, training in modes.items():
                module.training = training

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        x = batch["pooled"] if "pooled" in batch else batch["input_values"]
        y = batch["label"]
        loss, logits = self.mixup_step(x, y, batch.get("allowed"), batch.get("weight"))
        if logits is not None:
            self._accumulate("train", logits, y)
        self.log(
            "train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=len(y), sync_dist=True
        )
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        x, y = batch["input_values"], batch["label"]
        logits = self.model(x)
        self.log("val/loss", self.loss_fn(logits, y), on_epoch=True, batch_size=len(y), sync_dist=True)
        self._accumulate("val", logits, y)

    def _accumulate(self, stage: str, logits: torch.Tensor, y: torch.Tensor) -> None:
        pred = logits.argmax(dim=-1).cpu()
        flat = y.long().cpu() * self.num_classes + pred
        self._confusion[stage] += torch.bincount(flat, minlength=self.num_classes**2).view(
            self.num_classes, self.num_classes
        )

    def epoch_metrics(self, stage: str) -> tuple[dict[str, float], np.ndarray]:
        """Metrics of the epoch from the confusion matrix summed over all processes; resets it."""
        cm = self._confusion[stage].to(self.device)
        if self._trainer is not None and self._trainer.world_size > 1:
            cm = self.trainer.strategy.reduce(cm, reduce_op="sum")
        self._confusion[stage] = torch.zeros_like(self._confusion[stage])
        result = metrics_from_confusion(cm.cpu().numpy())
        result["num_samples"] = int(cm.sum())
        return result, cm.cpu().numpy()

    def on_train_epoch_end(self) -> None:
        result, _ = self.epoch_metrics("train")
        if result["num_samples"]:
            self.log_dict({f"train/{k}": result[k] for k in METRIC_NAMES})

    def on_validation_epoch_end(self) -> None:
        result, cm = self.epoch_metrics("val")
        if self.trainer.sanity_checking or not result["num_samples"]:
            return
        self.log_dict({f"val/{k}": result[k] for k in METRIC_NAMES}, prog_bar=True)
        # Stored in hparams so each saved checkpoint carries the validation figures of its own epoch.
        self.hparams["metrics"] = {
            **{f"val/{k}": result[k] for k in METRIC_NAMES},
            "val/confusion_matrix": cm.tolist(),
            "val/num_samples": result["num_samples"],
            "epoch": int(self.current_epoch),
        }

    # ---- optimisation --------------------------------------------------------------------------------
    def configure_optimizers(self):
        s = self.settings
        optimizer = torch.optim.AdamW(parameter_groups(self.model, s), lr=s.lr, betas=s.betas)
        steps_per_epoch = self._steps_per_epoch()
        scheduler = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            optimizer, T_0=max(1, round(s.t0_epochs * steps_per_epoch)), T_mult=s.t_mult, eta_min=s.eta_min
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def _steps_per_epoch(self) -> int:
        trainer = self._trainer
        if trainer is None or not trainer.max_epochs or trainer.max_epochs < 1:
            return 1
        try:
            return max(1, int(trainer.estimated_stepping_batches) // trainer.max_epochs)
        except (RuntimeError, ValueError, TypeError):
            return 1
