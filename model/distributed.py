"""Processes and devices of a training job: one process per device, a DDP group under torchrun
(nccl on GPU, gloo on CPU), per-epoch seeding and mixed precision."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist


class DeviceError(RuntimeError):
    """The requested devices are not available."""


@dataclass
class Distributed:
    """This process's place in the (possibly single-process) group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def resolve_device(gpus: int, where: str) -> torch.device:
    """``cuda`` when ``gpus`` > 0 (failing clearly without a GPU), else ``cpu``.

    ``where`` names the setting that asked for GPUs, for the error message.
    """
    if gpus > 0:
        if not torch.cuda.is_available():
            raise DeviceError(
                f"{where} asks for {gpus} GPU(s), but torch sees no GPU on this machine "
                f"(torch {torch.__version__}, CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES')!r}). "
                f"Set {where}: 0 to run on CPU, or install a CUDA build of torch."
            )
        return torch.device("cuda")
    return torch.device("cpu")


def setup_processes(gpus: int, where: str, threads: int) -> Distributed:
    """Join the torchrun group when launched by torchrun, pick the device, set CPU determinism.

    Args:
        gpus: GPUs requested for the job (0 = CPU).
        where: the config key of that request (for errors).
        threads: CPU threads per process.
    """
    device = resolve_device(gpus, where)
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise DeviceError(f"process {local_rank} has no GPU: only {torch.cuda.device_count()} visible")
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(max(1, threads))
        use_deterministic_algorithms()
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def use_deterministic_algorithms() -> None:
    """Turn on torch's deterministic algorithms, as ``torch.use_deterministic_algorithms(True)`` does
    for eager code. That public call also sets the flag in TorchInductor's config, and importing it
    loads the compiler stack (dynamo, sympy): about 1.2 CPU-s per training or evaluation process,
    for a compiler this project never calls. Falls back to the public call where the private setter
    is missing."""
    setter = getattr(torch._C, "_set_deterministic_algorithms", None)
    if setter is None:
        torch.use_deterministic_algorithms(True)
    else:
        setter(True, warn_only=False)


def teardown_processes(processes: Distributed) -> None:
    """Leave the process group (when one was joined)."""
    if processes.enabled and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def seed_epoch(seed: int, epoch: int, rank: int) -> None:
    """Seed torch's generators for one epoch of one process (model-side draws: ITM negatives)."""
    torch.manual_seed(int(np.random.default_rng([seed, epoch, rank]).integers(2**62)))


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on GPU when enabled; a no-op on CPU."""
    if device.type == "cuda" and bf16:
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sum_over_processes(sums: torch.Tensor, processes: Distributed) -> torch.Tensor:
    """``sums`` summed over every process of the group (unchanged in a single process), on CPU."""
    if processes.enabled:
        sums = sums.to(processes.device)
        dist.all_reduce(sums)
    return sums.cpu()
