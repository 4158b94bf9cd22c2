"""Training loops: pretraining (DDP; CITab across tables, the self-supervised baselines per cohort),
per-cohort fine-tuning, prediction. Processes and devices: :mod:`model.distributed`; weights and
resume points: :mod:`model.checkpoints`.

Design choices (see docs/interfaces.md section 6):

* One process per device; under ``torchrun`` the processes form a DDP group (nccl on GPU, gloo on
  CPU). Losses and ITM hard negatives are per process, as in the paper (docs/model.md 5.6); BatchNorm is not
  synchronised; gradients are averaged by DDP.
* The learning rate is a pure function of the epoch (docs/model.md 5.6: linear warm-up from 0, then cosine to
  0, stepped once per epoch), and every random draw of an epoch is seeded by (seed, epoch, rank) and
  by (seed, epoch, row) in the datasets. The "scheduler and RNG state" of a resume point is
  therefore its epoch number, and a resumed CPU run ends with exactly the weights of an
  uninterrupted one.
* A resume point (epoch, history, model and optimizer tensors, settings fingerprint) is written
  every ``checkpoint_every`` epochs and restored only for the same settings.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from model.checkpoints import (
    RESUME_STATE,
    RESUME_WEIGHTS,
    ResumePoint,
    load_resume_point,
    load_weights,
    save_resume_point,
    save_weights,
    state_dict_tensors,
)
from model.distributed import Distributed, autocast, seed_epoch, sum_over_processes
from model.metrics import SELECTION_RULES, classification_metrics, selection_score

log = logging.getLogger(__name__)

# --- settings -------------------------------------------------------------------------------------


@dataclass
class LoopSettings:
    """Settings shared by pretraining and fine-tuning loops.

    Attributes:
        epochs: number of epochs.
        batch_size: samples per process and step.
        lr: base learning rate (Adam).
        weight_decay: coupled L2 weight decay (Adam's ``weight_decay``).
        warmup_epochs: linear warm-up epochs before the cosine decay; ``None`` = constant LR.
        seed: base seed.
        checkpoint_every: write a resume point every this many epochs (and at the end).
        num_workers: data-loader worker processes.
        bf16: bfloat16 autocast on GPU (ignored on CPU, where runs are fp32 and deterministic).
        shuffle: shuffle the training rows each epoch.
        drop_last: drop the last incomplete training batch (kept when it would be the only one).
    """

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0
    warmup_epochs: int | None = None
    seed: int = 2022
    checkpoint_every: int = 1
    num_workers: int = 0
    bf16: bool = True
    shuffle: bool = True
    drop_last: bool = True


def learning_rate(epoch: int, base_lr: float, warmup_epochs: int | None, max_epochs: int) -> float:
    """LR of ``epoch`` (0-based): linear warm-up from 0 over ``warmup_epochs``, then cosine to 0.

    Reproduces the official per-epoch schedule (docs/model.md 5.6): lr(e) = base * e / (W - 1) for e < W and
    0.5 * base * (1 + cos(pi * (e - W) / (E - W))) afterwards, so epoch 0 runs at LR 0 when W > 1.
    ``warmup_epochs=None`` gives a constant LR (fine-tuning, docs/model.md 6.2); W <= 1 means no warm-up.
    """
    if warmup_epochs is None:
        return base_lr
    if warmup_epochs > 1 and epoch < warmup_epochs:
        return base_lr * epoch / (warmup_epochs - 1)
    start = warmup_epochs if warmup_epochs > 1 else 0
    span = max(max_epochs - start, 1)
    return 0.5 * base_lr * (1.0 + math.cos(math.pi * (epoch - start) / span))


def progress(iterable, enabled: bool, description: str):
    """A tqdm bar on an interactive console (main process only), the bare iterable otherwise."""
    return tqdm(iterable, desc=description, leave=False, disable=not (enabled and sys.stderr.isatty()))


def write_metrics_csv(path: str | Path, history: list[dict]) -> None:
    """One row per epoch; columns are the union of the history's keys, in first-seen order."""
    columns: list[str] = []
    for row in history:
        columns.extend(key for key in row if key not in columns)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=columns or ["epoch"])
        writer.writeheader()
        writer.writerows(history)


# --- data loading ---------------------------------------------------------------------------------


def make_loader(
    dataset: Dataset, batch_size: int, processes: Distributed, seed: int, shuffle: bool, drop_last: bool, num_workers: int
) -> tuple[DataLoader, DistributedSampler]:
    """A loader over this process's shard; ``sampler.set_epoch`` fixes each epoch's order."""
    sampler = DistributedSampler(
        dataset, num_replicas=processes.world_size, rank=processes.rank, shuffle=shuffle, seed=seed, drop_last=False
    )
    shard = len(sampler)
    if drop_last and shard < batch_size:
        log.warning("only %d rows per process for batch size %d: keeping the incomplete batch", shard, batch_size)
        drop_last = False
    loader = DataLoader(
        dataset, batch_size=batch_size, sampler=sampler, drop_last=drop_last, num_workers=num_workers,
        persistent_workers=False, pin_memory=processes.device.type == "cuda",
    )
    return loader, sampler


def to_device(batch: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


CITAB_INPUTS = ("image", "values", "col_ids", "pad_mask")


def model_inputs(batch: dict[str, torch.Tensor], names: Sequence[str] = CITAB_INPUTS) -> tuple[torch.Tensor | None, ...]:
    """The batch entries a model's ``classify`` takes, in order (its ``input_names``).

    ``pad_mask`` is None when no cell of the batch is padded (docs/model.md 6.1).
    """
    absent = [name for name in names if name not in batch]
    if absent:
        raise KeyError(f"the model needs batch entries {absent}; the batch has {sorted(batch)}")
    inputs = []
    for name in names:
        value = batch[name]
        inputs.append(value if name != "pad_mask" or bool(value.any()) else None)
    return tuple(inputs)


def classify(model: nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Logits [B, K] of ``model`` on ``batch``, feeding it the entries its ``input_names`` list."""
    return model.classify(*model_inputs(batch, getattr(model, "input_names", CITAB_INPUTS)))


def set_epoch(loader: DataLoader, sampler: DistributedSampler, epoch: int) -> None:
    sampler.set_epoch(epoch)
    if hasattr(loader.dataset, "set_epoch"):
        loader.dataset.set_epoch(epoch)


# --- pretraining ----------------------------------------------------------------------------------


class PretrainStep(nn.Module):
    """Routes DDP's ``forward`` to the model's ``pretrain_losses`` so DDP synchronises its gradients."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs):  # noqa: D102 - see the model's pretrain_losses
        return self.model.pretrain_losses(*inputs)


def pretrain_inputs(model: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor | None, ...]:
    """The batch entries ``model.pretrain_losses`` takes, in the order of its ``pretrain_input_names``."""
    return model_inputs(batch, model.pretrain_input_names)


class LossAverages:
    """One epoch's running sums of the scalars ``pretrain_losses`` returns, to log their batch means.

    Every 0-dim tensor of the returned dict is a logged loss ("loss" first, then the model's own
    keys, e.g. CITab's itc / itm / itm_accuracy or TIP's mtr); tensors with a shape (logits,
    labels) are not. A model returns the same keys for every batch.
    """

    def __init__(self) -> None:
        self.sums: dict[str, float] = {}
        self.batches = 0

    def add(self, losses: dict[str, torch.Tensor]) -> None:
        for key, value in losses.items():
            if torch.is_tensor(value) and value.ndim == 0:
                self.sums[key] = self.sums.get(key, 0.0) + float(value.detach())
        self.batches += 1

    def means(self, processes: Distributed, prefix: str) -> dict[str, float]:
        """``{prefix + key: mean over the batches of every process}``; {} when no process had a batch."""
        keys = list(self.sums)
        if processes.enabled:
            # the all-reduce below needs the same keys in the same order on every process
            gathered: list = [None] * processes.world_size
            dist.all_gather_object(gathered, keys)
            keys = list(dict.fromkeys(key for process_keys in gathered for key in process_keys))
        keys.sort(key=lambda key: key != "loss")  # stable: "loss", then the model's order
        totals = torch.tensor([self.sums.get(key, 0.0) for key in keys] + [float(self.batches)], dtype=torch.float64)
        totals = sum_over_processes(totals, processes)
        if totals[-1] == 0:
            return {}
        return {f"{prefix}{key}": float(totals[i] / totals[-1]) for i, key in enumerate(keys)}


# --- the epoch loop both stages share -------------------------------------------------------------


def run_epochs(
    name: str,
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    loader: DataLoader,
    sampler: DistributedSampler,
    settings: LoopSettings,
    processes: Distributed,
    start: int,
    history: list[dict],
    batch_losses: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor] | None],
    epoch_row: Callable[[int, float, LossAverages], dict],
    after_epoch: Callable[[int, list[dict]], None],
) -> list[dict]:
    """Train epochs ``start`` .. ``settings.epochs - 1``; what differs between stages comes in as functions.

    Each epoch: set its learning rate (:func:`learning_rate`), seed its draws by (seed, epoch,
    rank), fix the loader's order, train ``module`` on every batch, then build the epoch's metrics
    row, time it, append it to ``history`` and let the stage write what it keeps.

    Args:
        name: the stage's name in logs and progress bars.
        module: what ``batch_losses`` runs (put in training mode each epoch; DDP-wrapped when distributed).
        batch_losses: a batch already on the device -> losses (0-dim tensors, ``"loss"`` backpropagated;
            all of them averaged for the row), or None to skip the batch.
        epoch_row: (epoch, its learning rate, the train losses' averages) -> the epoch's metrics row,
            validation included; the loop adds ``seconds``.
        after_epoch: (epoch, history) -> None: metrics file, weights, resume point.

    Returns ``history`` with one row per trained epoch appended.
    """
    for epoch in range(start, settings.epochs):
        started = time.time()
        lr = learning_rate(epoch, settings.lr, settings.warmup_epochs, settings.epochs)
        for group in optimizer.param_groups:
            group["lr"] = lr
        seed_epoch(settings.seed, epoch, processes.rank)
        set_epoch(loader, sampler, epoch)
        module.train()
        averages = LossAverages()
        for batch in progress(loader, processes.is_main, f"{name} {epoch + 1}/{settings.epochs}"):
            losses = batch_losses(to_device(batch, processes.device))
            if losses is None:
                continue
            optimizer.zero_grad(set_to_none=True)
            losses["loss"].backward()
            optimizer.step()
            averages.add(losses)
        row = epoch_row(epoch, lr, averages)
        row["seconds"] = round(time.time() - started, 3)
        history.append(row)
        log.info("%s epoch %d/%d %s", name, epoch + 1, settings.epochs,
                 {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
        after_epoch(epoch, history)
    return history


def parameter_checksum(model: nn.Module) -> float:
    """Sum of every parameter in float64: equal on every process when DDP kept them in step."""
    with torch.no_grad():
        return float(sum(parameter.detach().double().sum().cpu() for parameter in model.parameters()))


def pretrain(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset | None,
    settings: LoopSettings,
    processes: Distributed,
    run_dir: Path,
    weights_path: Path,
    metrics_path: Path,
    settings_hash: str,
    val_every: int = 1,
    snapshot_every: int | None = None,
    metadata: dict[str, str] | None = None,
) -> dict:
    """Pretrain ``model`` with its own objective; the main process writes the outputs.

    Args:
        model: the freshly built pretraining model (same seed on every process): CITab, or a
            self-supervised baseline. It needs ``pretrain_input_names`` and
            ``pretrain_losses(*inputs) -> {"loss": scalar to backpropagate, other scalars logged}``.
        train_set: items of :class:`model.data.ImageTableDataset` (CITab: mixed cohorts; a
            baseline: its own cohort).
        val_set: validation items (un-augmented), or None.
        settings: loop settings (``warmup_epochs`` set: warm-up + cosine).
        processes: from :func:`setup_processes`.
        run_dir: folder of the run; ``run_dir/checkpoints`` holds resume points and weight snapshots.
        weights_path: final weights (safetensors, whole model).
        metrics_path: per-epoch CSV.
        settings_hash: fingerprint of everything that defines the run (resume only into the same).
        val_every: validate every this many epochs (and after the last).
        snapshot_every: also keep the weights of every this many epochs (``checkpoints/epoch-XXXX``).
        metadata: extra strings stored in the weights file.

    Returns:
        Summary dict: epochs, world_size, the parameter checksum of every process, final losses.
    """
    checkpoint_dir = run_dir / "checkpoints"
    model.to(processes.device)
    optimizer = torch.optim.Adam(model.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    point = load_resume_point(checkpoint_dir, model, optimizer, settings_hash) if checkpoint_dir.exists() else None
    start, history = (point.epoch, point.history) if point else (0, [])
    if point:
        log.info("resuming pretraining after epoch %d from %s", point.epoch, checkpoint_dir)
    step_module: nn.Module = PretrainStep(model)
    if processes.enabled:
        device_ids = [processes.device.index] if processes.device.type == "cuda" else None
        # Which parameters get a gradient depends on the batch: the tabular encoder's pad token only
        # when some row of the batch is padded (a batch of one cohort, or of equally wide cohorts,
        # has none), TIP's categorical predictor only when a masked categorical cell is observed,
        # and a variant without ITC or ITM never uses that loss's head. Without
        # find_unused_parameters, one process whose batch had no padding skips that gradient's
        # all-reduce while the other waits in it: the processes fall out of step and abort (gloo)
        # or hang (nccl). The cost is one walk of the autograd graph per step.
        step_module = nn.parallel.DistributedDataParallel(step_module, device_ids=device_ids, find_unused_parameters=True)
    loader, sampler = make_loader(train_set, settings.batch_size, processes, settings.seed, settings.shuffle, True, settings.num_workers)
    if len(loader) == 0:
        raise ValueError(f"no training batch: {len(train_set)} rows for {processes.world_size} process(es) x batch {settings.batch_size}")
    val_loader = None
    if val_set is not None and len(val_set) >= 2 * processes.world_size:
        val_loader, val_sampler = make_loader(val_set, settings.batch_size, processes, settings.seed, False, True, settings.num_workers)
    def batch_losses(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor] | None:
        if batch["image"].shape[0] < 2:
            return None  # contrastive losses need a negative
        with autocast(processes.device, settings.bf16):
            return step_module(*pretrain_inputs(model, batch))

    def epoch_row(epoch: int, lr: float, train: LossAverages) -> dict:
        row = {"epoch": epoch + 1, "lr": lr, **train.means(processes, "train_")}
        if val_loader is not None and ((epoch + 1) % val_every == 0 or epoch + 1 == settings.epochs):
            row.update(_validate_pretraining(model, val_loader, val_sampler, epoch, processes, settings.bf16))
        return row

    def after_epoch(epoch: int, history: list[dict]) -> None:
        if processes.is_main:
            write_metrics_csv(metrics_path, history)
            if snapshot_every and (epoch + 1) % snapshot_every == 0:
                save_weights(checkpoint_dir / f"epoch-{epoch + 1:04d}.safetensors", state_dict_tensors(model),
                             {**(metadata or {}), "epoch": epoch + 1})
            if (epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == settings.epochs:
                save_resume_point(checkpoint_dir, model, optimizer, ResumePoint(epoch + 1, history, {}), settings_hash)
        if processes.enabled:
            dist.barrier()

    run_epochs("pretrain", step_module, optimizer, loader, sampler, settings, processes, start, history,
               batch_losses, epoch_row, after_epoch)
    checksum = parameter_checksum(model)
    checksums = [checksum]
    if processes.enabled:
        gathered: list = [None] * processes.world_size
        dist.all_gather_object(gathered, checksum)
        checksums = gathered
    summary = {"epochs": settings.epochs, "world_size": processes.world_size, "parameter_checksums": checksums,
               "ranks_agree": len(set(checksums)) == 1, "final": history[-1] if history else {}}
    if processes.is_main:
        save_weights(weights_path, state_dict_tensors(model), {**(metadata or {}), "epoch": settings.epochs,
                                                              "summary": json.dumps(summary)})
        write_metrics_csv(metrics_path, history)
        # Finished: a later run of this rule (new code) starts fresh; the epoch snapshots stay.
        for name in (RESUME_STATE, RESUME_WEIGHTS):
            (checkpoint_dir / name).unlink(missing_ok=True)
    return summary


def _validate_pretraining(model, loader, sampler, epoch, processes, bf16) -> dict:
    """Mean validation losses (un-augmented images, eval mode), averaged over processes."""
    set_epoch(loader, sampler, epoch)
    model.eval()
    averages = LossAverages()
    with torch.no_grad():
        for batch in loader:
            batch = to_device(batch, processes.device)
            if batch["image"].shape[0] < 2:
                continue
            with autocast(processes.device, bf16):
                averages.add(model.pretrain_losses(*pretrain_inputs(model, batch)))
    model.train()
    return averages.means(processes, "val_")


# --- fine-tuning and prediction -------------------------------------------------------------------


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, batch_size: int, device: torch.device, bf16: bool = False,
            num_workers: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class probabilities of every item, in dataset order.

    Returns:
        (labels int [N], probabilities float [N, K], indices int [N]).
    """
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
    labels, probabilities, indices = [], [], []
    for batch in loader:
        batch = to_device(batch, device)
        with autocast(device, bf16):
            logits = classify(model, batch)
        probabilities.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        labels.append(batch["label"].cpu().numpy())
        indices.append(batch["index"].cpu().numpy())
    return np.concatenate(labels), np.concatenate(probabilities), np.concatenate(indices)


def finetune(
    model: nn.Module,
    train_set: Dataset,
    val_set: Dataset,
    settings: LoopSettings,
    device: torch.device,
    run_dir: Path,
    best_path: Path,
    metrics_path: Path,
    settings_hash: str,
    trainable_parameters: Callable[[], Iterator[nn.Parameter]] | None = None,
    metadata: dict[str, str] | None = None,
    selection: str = "acc_auc_f1",
    class_weights: Sequence[float] | None = None,
) -> dict:
    """Fine-tune ``model`` with cross-entropy; keep the epoch with the best validation score (docs/model.md 6.4).

    Args:
        model: CITab with its classifier (encoders already loaded or fresh).
        train_set / val_set: :class:`model.data.ImageTableDataset` of one cohort.
        settings: loop settings (``warmup_epochs`` None: constant LR, docs/model.md 6.2).
        device: where to run.
        run_dir: the run folder; ``run_dir/checkpoints`` holds the resume point and the best weights so far.
        best_path: output: weights of the best epoch.
        metrics_path: output: per-epoch CSV (train loss, val metrics).
        settings_hash: fingerprint of the run.
        trainable_parameters: parameters to optimise (default: all that require grad).
        metadata: extra strings stored in the best-weights file.
        selection: how the best epoch is chosen, one of :data:`model.metrics.SELECTION_RULES`
            ("acc_auc_f1": CITab's evaluator; "auc": the baseline harness; "balanced_accuracy").
        class_weights: per-class cross-entropy weights [K] (None: unweighted).

    Returns:
        {"best_epoch", "best_score", "best_val": val metrics of the best epoch, "selection"}.
    """
    if selection not in SELECTION_RULES:
        raise ValueError(f"selection must be one of {SELECTION_RULES}, got {selection!r}")
    checkpoint_dir = run_dir / "checkpoints"
    model.to(device)
    parameters = list(trainable_parameters() if trainable_parameters else (p for p in model.parameters() if p.requires_grad))
    optimizer = torch.optim.Adam(parameters, lr=settings.lr, weight_decay=settings.weight_decay)
    point = load_resume_point(checkpoint_dir, model, optimizer, settings_hash) if checkpoint_dir.exists() else None
    start, history = (point.epoch, point.history) if point else (0, [])
    # The best weights so far live in checkpoints/best-<epoch>.safetensors; the resume point names the
    # one it counts on, so a crash between saving a new best and the next resume point is harmless.
    best = point.extra if point else {"best_epoch": 0, "best_score": 0.0, "best_val": {}, "best_file": None}
    if point:
        log.info("resuming fine-tuning after epoch %d from %s", point.epoch, checkpoint_dir)
    processes = Distributed(rank=0, world_size=1, local_rank=0, device=device)
    loader, sampler = make_loader(train_set, settings.batch_size, processes, settings.seed, settings.shuffle,
                                  settings.drop_last, settings.num_workers)
    weight = None if class_weights is None else torch.tensor(list(class_weights), dtype=torch.float32, device=device)
    loss_function = nn.CrossEntropyLoss(weight=weight)
    last_validation: dict = {}

    def batch_losses(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        with autocast(device, settings.bf16):
            logits = classify(model, batch)
        return {"loss": loss_function(logits.float(), batch["label"])}

    def epoch_row(epoch: int, lr: float, train: LossAverages) -> dict:
        labels, probabilities, _ = predict(model, val_set, settings.batch_size, device, settings.bf16, settings.num_workers)
        last_validation.update(classification_metrics(labels, probabilities))
        val = last_validation
        return {"epoch": epoch + 1, "train_loss": train.means(processes, "train_").get("train_loss", 0.0),
                "val_accuracy": val["accuracy"], "val_auc": val["auc"], "val_f1": val["f1"],
                "val_balanced_accuracy": val["balanced_accuracy"], "val_score": selection_score(val, selection)}

    def after_epoch(epoch: int, history: list[dict]) -> None:
        nonlocal best
        score = history[-1]["val_score"]
        # Strictly better than the best so far (initial best 0), as the official evaluator.
        if score > best["best_score"]:
            best = {"best_epoch": epoch + 1, "best_score": score,
                    "best_val": {k: last_validation[k] for k in ("accuracy", "auc", "f1", "balanced_accuracy", "auc_complete")},
                    "best_file": f"best-{epoch + 1:04d}.safetensors"}
            save_weights(checkpoint_dir / best["best_file"], state_dict_tensors(model), {**(metadata or {}), "epoch": epoch + 1})
        write_metrics_csv(metrics_path, history)
        if (epoch + 1) % settings.checkpoint_every == 0 or epoch + 1 == settings.epochs:
            save_resume_point(checkpoint_dir, model, optimizer, ResumePoint(epoch + 1, history, best), settings_hash)
            for stale in checkpoint_dir.glob("best-*.safetensors"):
                if stale.name != best["best_file"]:
                    stale.unlink()

    run_epochs("finetune", model, optimizer, loader, sampler, settings, processes, start, history,
               batch_losses, epoch_row, after_epoch)
    if best["best_file"] is None:
        # No epoch beat a score of 0 (possible only on a degenerate validation set): keep the last one.
        log.warning("no epoch improved on a validation score of 0: keeping the last epoch's weights")
        best = {**best, "best_epoch": settings.epochs, "best_file": "best-last.safetensors"}
        save_weights(checkpoint_dir / best["best_file"], state_dict_tensors(model), {**(metadata or {}), "epoch": settings.epochs})
    tensors, stored = load_weights(checkpoint_dir / best["best_file"], "best fine-tuned weights")
    save_weights(best_path, tensors, {**stored, "best_epoch": best["best_epoch"], "best_score": best["best_score"],
                                      "selection": selection})
    write_metrics_csv(metrics_path, history)
    shutil.rmtree(checkpoint_dir)  # finished: a later run of this rule starts fresh
    return {**best, "selection": selection}
