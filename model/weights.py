"""Loading the encoders of a pretraining checkpoint into a fine-tuning model, with clear errors.

CITab and the self-supervised baselines (MMCL, TIP, ViTa) are built twice: once with their
pretraining heads (stage "pretrain") and once with a classifier (stage "finetune"). Fine-tuning
starts from the pretrained encoders; the heads of either stage never cross over. The check that a
checkpoint fits lives here, once, for every such model.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

__all__ = ["STAGES", "LoadReport", "PretrainedEncoders", "check_stage", "load_encoder_state", "require_stage"]

# How many problems an error message lists before it summarises the rest.
SHOWN_PROBLEMS = 20
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


@dataclass
class LoadReport:
    """What loading pretrained encoders did not load.

    Attributes:
        missing: this model's keys left at their fresh init (the classifier / heads).
        unexpected: checkpoint keys skipped on purpose (pretraining heads, unused encoders).
    """

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)


def _with_dot(prefixes: Sequence[str]) -> tuple[str, ...]:
    return tuple(prefix if prefix.endswith(".") else prefix + "." for prefix in prefixes)


def load_encoder_state(
    model: nn.Module,
    state_dict: Mapping[str, torch.Tensor],
    encoder_prefixes: Sequence[str],
    known_prefixes: Sequence[str],
) -> LoadReport:
    """Load the ``encoder_prefixes`` entries of ``state_dict`` into ``model``; skip the rest.

    Args:
        model: the fine-tuning model (its own keys under ``encoder_prefixes`` must all be given).
        state_dict: a pretraining checkpoint (whole model, or its encoders only).
        encoder_prefixes: module names loaded (e.g. "image_encoder"), with or without the dot.
        known_prefixes: every module name a checkpoint of this model class may hold (encoders,
            pretraining heads, encoders the fine-tuning model does not use, the classifier); any
            other key means the checkpoint belongs to another model.

    Returns:
        LoadReport: ``missing`` = this model's keys outside the encoders, ``unexpected`` = the
        checkpoint's keys outside the encoders (skipped).

    Raises:
        RuntimeError: an encoder key absent from the checkpoint, a key of no known module, or a
            shape mismatch (another variant, width or table); the message lists them.
    """
    encoders, known = _with_dot(encoder_prefixes), _with_dot(known_prefixes)
    own = {key: value for key, value in model.state_dict().items() if key.startswith(encoders)}
    unknown = sorted(key for key in state_dict if not key.startswith(known + encoders))
    absent = sorted(key for key in own if key not in state_dict)
    mismatched = sorted(
        f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(value.shape)}"
        for key, value in own.items() if key in state_dict and state_dict[key].shape != value.shape
    )
    problems = (
        [f"missing encoder weight {key}" for key in absent]
        + [f"unknown key {key}" for key in unknown]
        + [f"shape mismatch {item}" for item in mismatched]
    )
    if problems:
        more = f"\n  ... and {len(problems) - SHOWN_PROBLEMS} more" if len(problems) > SHOWN_PROBLEMS else ""
        shown = "\n  ".join(problems[:SHOWN_PROBLEMS]) + more
        raise RuntimeError("Pretrained weights do not fit this model (same variant and sizes expected):\n  " + shown)
    model.load_state_dict({key: state_dict[key] for key in own}, strict=False)
    return LoadReport(
        missing=sorted(key for key in model.state_dict() if not key.startswith(encoders)),
        unexpected=sorted(key for key in state_dict if not key.startswith(encoders)),
    )


class PretrainedEncoders:
    """Mixin for a model whose fine-tuning stage starts from the encoders of its pretraining stage.

    The class names its submodules: ``finetune_encoders`` are loaded from the pretraining
    checkpoint (and frozen by the "frozen" strategy); ``pretrain_only_modules`` exist only in the
    pretraining stage (projection heads, or an encoder fine-tuning does not use) and are skipped.
    """

    finetune_encoders: ClassVar[tuple[str, ...]]
    pretrain_only_modules: ClassVar[tuple[str, ...]]
    CLASSIFIER: ClassVar[str] = "classifier"

    def encoder_parameters(self) -> Iterator[nn.Parameter]:
        """Parameters of the encoders fine-tuning starts from."""
        for name in self.finetune_encoders:
            yield from getattr(self, name).parameters()

    def head_parameters(self) -> Iterator[nn.Parameter]:
        """Every other parameter (the stage's heads)."""
        encoder_ids = {id(p) for p in self.encoder_parameters()}
        return (p for p in self.parameters() if id(p) not in encoder_ids)

    def freeze_encoders(self) -> None:
        """Stop gradients into the encoders (fine-tuning strategy "frozen": a linear probe)."""
        for parameter in self.encoder_parameters():
            parameter.requires_grad_(False)

    def encoder_state_dict(self) -> dict[str, torch.Tensor]:
        """State (weights and BatchNorm statistics) of the encoders fine-tuning starts from."""
        prefixes = _with_dot(self.finetune_encoders)
        return {key: value for key, value in self.state_dict().items() if key.startswith(prefixes)}

    def load_pretrained_encoders(self, state_dict: Mapping[str, torch.Tensor]) -> LoadReport:
        """Load the encoders from a pretraining checkpoint of the same variant and sizes.

        Args:
            state_dict: the whole pretraining model's state dict, or its :meth:`encoder_state_dict`.

        Returns:
            LoadReport (``missing``: this model's classifier; ``unexpected``: skipped heads).

        Raises:
            RuntimeError: a missing encoder weight, a key of another model, or a shape mismatch.
        """
        known = (*self.finetune_encoders, *self.pretrain_only_modules, self.CLASSIFIER)
        return load_encoder_state(self, state_dict, self.finetune_encoders, known)
