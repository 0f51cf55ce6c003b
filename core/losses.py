"""Training loss: focal loss with class weights and label smoothing, accepting hard or soft (mixup) targets."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn


def soft_targets(
    target: torch.Tensor, num_classes: int, label_smoothing: float = 0.0, allowed: torch.Tensor | None = None
) -> torch.Tensor:
    """Hard labels ``[B]`` (int) or a distribution ``[B, C]`` → smoothed distribution ``[B, C]``.

    Smoothing mixes in the uniform distribution: ``(1 - eps) * q + eps / C`` (what ``F.cross_entropy`` does);
    with ``allowed`` ``[B, C]`` (bool) the uniform part covers only each sample's allowed classes.
    """
    if target.dim() == 1:
        target = F.one_hot(target.long(), num_classes).to(torch.float32)
    target = target.to(torch.float32)
    if label_smoothing > 0:
        if allowed is None:
            uniform = torch.full_like(target, 1.0 / num_classes)
        else:
            uniform = allowed.to(target) / allowed.sum(dim=-1, keepdim=True).clamp(min=1).to(target)
        target = (1.0 - label_smoothing) * target + label_smoothing * uniform
    return target


class FocalLoss(nn.Module):
    """Multi-class focal loss (Lin et al. 2017) over a target distribution.

    Per sample: ``-sum_c w_c q_c (1 - p_c)^gamma log p_c`` with ``p = softmax(logits)``, ``q`` the (smoothed)
    target and ``w`` the class weights. The batch mean is normalised by ``sum_i sum_c w_c q_ic``, so with
    ``gamma=0`` it equals ``F.cross_entropy(logits, y, weight=w, label_smoothing=eps)`` for hard labels
    without smoothing, and the plain smoothed cross-entropy without weights.

    gamma: focusing exponent; 0 turns it into cross-entropy. Down-weights examples already classified well.
    class_weights: ``[C]`` or None (all ones). Counters class imbalance (RAVDESS neutral is half as frequent).
    label_smoothing: eps in [0, 1).
    """

    def __init__(
        self, gamma: float = 1.0, class_weights: Sequence[float] | None = None, label_smoothing: float = 0.0
    ):
        super().__init__()
        if gamma < 0:
            raise ValueError(f"focal gamma must be >= 0, got {gamma}")
        if not 0.0 <= label_smoothing < 1.0:
            raise ValueError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.gamma = float(gamma)
        self.label_smoothing = float(label_smoothing)
        weights = None if class_weights is None else torch.as_tensor(list(class_weights), dtype=torch.float32)
        # A buffer so the weights follow .to(device) and are part of the module's state.
        self.register_buffer("class_weights", weights, persistent=False)

    def forward(
        self,
        logits: torch.Tensor,
        target: torch.Tensor,
        allowed: torch.Tensor | None = None,
        sample_weight: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """logits ``[B, C]``; target ``[B]`` class indices or ``[B, C]`` probabilities → scalar loss.

        allowed: ``[B, C]`` bool, the classes a sample's corpus can hold; the others are left out of its softmax
        (a CREMA-D clip, which has no "calm" class, is no evidence against calm). sample_weight: ``[B]``.
        """
        num_classes = logits.shape[-1]
        q = soft_targets(target, num_classes, self.label_smoothing, allowed).to(logits.device)
        logits = logits.float()
        if allowed is not None:
            logits = logits.masked_fill(~allowed.to(logits.device), -1e4)
        log_p = F.log_softmax(logits, dim=-1)
        focus = (1.0 - log_p.exp()).clamp(min=0.0).pow(self.gamma) if self.gamma > 0 else 1.0
        w = self.class_weights if self.class_weights is not None else torch.ones_like(log_p[0])
        wq = w * q
        if sample_weight is not None:
            wq = wq * sample_weight.to(wq)[:, None]
        per_class = -(wq * focus * log_p)
        normaliser = wq.sum().clamp(min=1e-12)
        return per_class.sum() / normaliser


def class_weights_from_labels(labels: Sequence[int], num_classes: int) -> list[float]:
    """Inverse-frequency weights ``N / (C * n_c)`` (mean 1 over samples); classes absent from labels get 0.

    Computed on the training split only, so validation/test composition never leaks into training.
    """
    counts = torch.bincount(torch.as_tensor(list(labels), dtype=torch.long), minlength=num_classes).double()
    total = counts.sum()
    weights = torch.where(counts > 0, total / (num_classes * counts.clamp(min=1)), torch.zeros_like(counts))
    return [float(w) for w in weights]
