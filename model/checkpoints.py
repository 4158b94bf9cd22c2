"""Weights and resume points as safetensors files (never pickles).

Resume points live in ``<run>/checkpoints/`` (not a Snakemake output, so that a failed or killed
job's progress survives Snakemake's clean-up of its outputs): ``resume.safetensors`` holds the model
and optimizer tensors, ``resume.json`` the epoch, history, best score and the fingerprint of the
settings that wrote it. A resume point of other settings is ignored (and logged), never reused.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file
from torch import nn

log = logging.getLogger(__name__)

RESUME_WEIGHTS = "resume.safetensors"
RESUME_STATE = "resume.json"
MODEL_PREFIX = "model."
OPTIMIZER_PREFIX = "optimizer."


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable or does not fit the model (the message names it)."""


def state_dict_tensors(module: nn.Module) -> dict[str, torch.Tensor]:
    """``module``'s state as independent contiguous CPU tensors (safetensors refuses shared storage)."""
    return {name: tensor.detach().to("cpu").contiguous().clone() for name, tensor in module.state_dict().items()}


def save_weights(path: str | Path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Write ``tensors`` to a safetensors file atomically (temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(path.name + ".partial")
    save_file(tensors, str(temporary), metadata={key: str(value) for key, value in metadata.items()})
    os.replace(temporary, path)


def load_weights(path: str | Path, what: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Read a safetensors file (tensors and metadata); never unpickles.

    Raises CheckpointError naming ``path`` and ``what`` it should be when it is missing or corrupt.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{what} '{path}' does not exist")
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = dict(handle.metadata() or {})
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(f"{what} '{path}' is not a readable safetensors file ({error}); delete it and rerun the rule that writes it") from None
    return tensors, metadata


def optimizer_tensors(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    """Split an optimizer's state into tensors (``optimizer.<param>.<key>``) and JSON scalars."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict] = {}
    for param_id, param_state in state["state"].items():
        for key, value in param_state.items():
            if torch.is_tensor(value):
                tensors[f"{OPTIMIZER_PREFIX}{param_id}.{key}"] = value.detach().to("cpu").contiguous().clone()
            else:
                scalars.setdefault(str(param_id), {})[key] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def restore_optimizer(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], layout: dict) -> None:
    """Inverse of :func:`optimizer_tensors`."""
    state: dict[int, dict] = {}
    for name, tensor in tensors.items():
        if name.startswith(OPTIMIZER_PREFIX):
            param_id, key = name[len(OPTIMIZER_PREFIX):].split(".", 1)
            state.setdefault(int(param_id), {})[key] = tensor
    for param_id, values in layout["scalars"].items():
        state.setdefault(int(param_id), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": layout["param_groups"]})


@dataclass
class ResumePoint:
    """What a resume point restores besides the tensors."""

    epoch: int  # epochs completed
    history: list[dict]
    extra: dict


def save_resume_point(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, point: ResumePoint, settings_hash: str
) -> None:
    """Write ``resume.safetensors`` then ``resume.json`` into ``directory`` (each atomically)."""
    optimizer_state, optimizer_layout = optimizer_tensors(optimizer)
    tensors = {MODEL_PREFIX + name: tensor for name, tensor in state_dict_tensors(model).items()}
    tensors.update(optimizer_state)
    save_weights(directory / RESUME_WEIGHTS, tensors, {"epoch": point.epoch, "fingerprint": settings_hash})
    document = {**asdict(point), "fingerprint": settings_hash, "optimizer": optimizer_layout}
    temporary = directory / (RESUME_STATE + ".partial")
    temporary.write_text(json.dumps(document))
    os.replace(temporary, directory / RESUME_STATE)


def load_resume_point(
    directory: Path, model: nn.Module, optimizer: torch.optim.Optimizer, settings_hash: str
) -> ResumePoint | None:
    """Restore model and optimizer from ``directory`` when it holds a resume point of these settings.

    Returns None (and logs why) when there is none or it belongs to other settings; raises
    CheckpointError when the files are corrupt or inconsistent with each other.
    """
    state_path, weights_path = directory / RESUME_STATE, directory / RESUME_WEIGHTS
    if not state_path.exists():
        return None
    try:
        document = json.loads(state_path.read_text())
    except json.JSONDecodeError as error:
        raise CheckpointError(f"resume state '{state_path}' is not valid JSON ({error}); delete {directory} to start over") from None
    if document.get("fingerprint") != settings_hash:
        log.warning("ignoring resume point %s: it was written with other settings", directory)
        return None
    tensors, metadata = load_weights(weights_path, "resume checkpoint")
    if metadata.get("epoch") != str(document["epoch"]):
        raise CheckpointError(
            f"resume checkpoint '{weights_path}' (epoch {metadata.get('epoch')}) does not match '{state_path}' "
            f"(epoch {document['epoch']}); delete {directory} to start over"
        )
    model_state = {name[len(MODEL_PREFIX):]: t for name, t in tensors.items() if name.startswith(MODEL_PREFIX)}
    try:
        model.load_state_dict(model_state)
        restore_optimizer(optimizer, tensors, document["optimizer"])
    except (RuntimeError, ValueError, KeyError) as error:
        raise CheckpointError(f"resume checkpoint '{weights_path}' does not fit this model ({error}); delete {directory}") from None
    return ResumePoint(epoch=int(document["epoch"]), history=document["history"], extra=document.get("extra", {}))
