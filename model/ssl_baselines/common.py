"""Stage handling shared by the self-supervised baselines (MMCL, TIP, ViTa)."""

from __future__ import annotations

from torch import nn

__all__ = ["STAGES", "check_stage", "require_stage"]

STAGES = ("pretrain", "finetune")


def check_stage(stage: str) -> str:
    """``stage`` itself when it is "pretrain" or "finetune"; ValueError otherwise."""
    if stage not in STAGES:
        raise ValueError(f"stage must be one of {STAGES}, got {stage!r}")
    return stage


def require_stage(model: nn.Module, stage: str, method: str) -> None:
    """RuntimeError unless ``model`` was built for ``stage`` (it then lacks the heads ``method`` needs)."""
    if model.stage != stage:
        what = "the pretraining heads" if stage == "pretrain" else "the classifier"
        raise RuntimeError(f"{method}() needs a {type(model).__name__} built with stage={stage!r} (it has {what})")
