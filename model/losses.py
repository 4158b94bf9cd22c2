"""Pretraining losses: image-tabular contrastive (ITC) and matching with hard negatives (ITM).

docs/model.md 5.3 and 5.4: ITC on L2-normalised projections with a fixed temperature, symmetric;
ITM over B positive pairs and 2B in-batch hard negatives drawn in proportion to
softmax(similarity / temperature) (the positive excluded), 2-way cross-entropy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["HARD_NEGATIVE_MODES", "itc_loss", "itm_labels", "sample_hard_negatives"]

HARD_NEGATIVE_MODES = ("sample", "argmax")
# The official code adds this before zeroing the diagonal so every other sample stays drawable.
SAMPLING_SMOOTHING = 1e-4


def itc_loss(
    image_z: torch.Tensor, tabular_z: torch.Tensor, temperature: float = 0.1
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE between matching rows.

    Args:
        image_z: [B, P] image projections.
        tabular_z: [B, P] tabular projections; row b matches image row b.
        temperature: fixed softmax temperature.

    Returns:
        (loss scalar = mean of the image->tabular and tabular->image cross-entropies,
        logits [B, B] with rows = images, columns = tabular rows).
    """
    logits = F.normalize(image_z.float(), dim=-1) @ F.normalize(tabular_z.float(), dim=-1).t() / temperature
    targets = torch.arange(logits.shape[0], device=logits.device)
    loss = 0.5 * F.cross_entropy(logits, targets) + 0.5 * F.cross_entropy(logits.t(), targets)
    return loss, logits


def sample_hard_negatives(
    logits: torch.Tensor, mode: str = "sample", generator: torch.Generator | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick one in-batch hard negative per image and per tabular row; never the positive.

    Args:
        logits: [B, B] ITC logits (rows images, columns tabular rows); B >= 2. No gradient is used.
        mode: "sample" draws in proportion to softmax(logits) (+1e-4, positive zeroed), as the
            official code; "argmax" takes the most similar non-matching sample, as the paper says.
        generator: optional RNG for "sample".

    Returns:
        (tabular_for_image [B]: index of the tabular row paired with image b as a negative,
        image_for_tabular [B]: index of the image paired with tabular row b as a negative).
    """
    if mode not in HARD_NEGATIVE_MODES:
        raise ValueError(f"hard negative mode must be one of {HARD_NEGATIVE_MODES}, got {mode!r}")
    batch = logits.shape[0]
    if batch < 2:
        raise ValueError("ITM needs at least 2 samples per batch to draw in-batch negatives, got 1")
    logits = logits.detach().float()
    diagonal = torch.eye(batch, dtype=torch.bool, device=logits.device)
    picks = []
    for similarity in (logits, logits.t()):
        if mode == "argmax":
            picks.append(similarity.masked_fill(diagonal, float("-inf")).argmax(dim=1))
        else:
            weights = (torch.softmax(similarity, dim=1) + SAMPLING_SMOOTHING).masked_fill(diagonal, 0.0)
            picks.append(torch.multinomial(weights, 1, generator=generator).squeeze(1))
    return picks[0], picks[1]


def itm_labels(batch: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Labels [3B] for B positives followed by 2B negatives: B ones then 2B zeros (long)."""
    positives = torch.ones(batch, dtype=torch.long, device=device)
    return torch.cat([positives, torch.zeros(2 * batch, dtype=torch.long, device=device)])
