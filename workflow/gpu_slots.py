"""Give a local job its own GPUs: ``python -m workflow.gpu_slots <n_gpus> -- <command...>``.

Snakemake counts a ``gpu`` resource (``--resources gpu=2`` caps how many run at once) but never
says *which* GPU a job may use, so two concurrent 1-GPU jobs would both land on GPU 0. This wrapper
takes ``n_gpus`` free slots, one non-blocking ``flock`` per device on a lock file shared by every
job of the machine, exports ``CUDA_VISIBLE_DEVICES`` with the devices it got, and ``exec``s the
command. The lock file descriptors are inherited by the command, so the slots stay taken exactly
as long as the command runs and are released by the kernel when it exits (also on a crash or kill).

Where the devices come from, first match wins:

1. ``$CITAB_GPU_SLOTS``: comma-separated device ids (``"0,1"``); tests use it for fake slots.
2. ``$CUDA_VISIBLE_DEVICES`` when set: the user already restricted this run to those devices.
3. ``nvidia-smi -L`` (``GPU 0: ...`` lines).
4. ``torch.cuda.device_count()``.

It does nothing extra (runs the command unchanged) under SLURM (``$SLURM_JOB_ID`` set: SLURM
already bound the job's GPUs and set ``CUDA_VISIBLE_DEVICES``) and when ``n_gpus`` is 0. In every
case it writes one line to stderr (so to the rule's log): the job's ``CUDA_VISIBLE_DEVICES`` and why.
When no slot is free it waits (``--timeout``, default ``$CITAB_GPU_SLOTS_TIMEOUT`` or 24 h) and
says so on stderr; asking for more GPUs than exist fails at once.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SLOTS_ENV = "CITAB_GPU_SLOTS"
LOCK_DIR_ENV = "CITAB_GPU_LOCK_DIR"
TIMEOUT_ENV = "CITAB_GPU_SLOTS_TIMEOUT"
DEFAULT_TIMEOUT_S = 24 * 3600.0
# Every job of the machine must see the same lock files, whoever runs it.
DEFAULT_LOCK_DIR = Path(tempfile.gettempdir()) / "citab-gpu-slots"
EXIT_USAGE = 2
EXIT_TIMEOUT = 75  # EX_TEMPFAIL: nothing wrong with the job, the GPUs were busy


class GpuSlotError(RuntimeError):
    """The request can never be met (more GPUs than exist, a bad device list)."""


class GpuSlotTimeout(RuntimeError):
    """No set of free slots turned up before the timeout."""


@dataclass
class Lease:
    """GPU slots held by this process: the device ids and the open, locked lock files."""

    devices: list[str]
    lock_fds: list[int]

    def release(self) -> None:
        """Close the lock files (closing drops the flock)."""
        for fd in self.lock_fds:
            os.close(fd)
        self.lock_fds = []


def available_devices(environ: dict[str, str] | None = None) -> tuple[list[str], str]:
    """The GPU ids this machine offers and where that list came from (for messages).

    Args:
        environ: the environment to read (``os.environ`` by default).

    Returns:
        ``(device_ids, source)``, e.g. ``(["0", "1"], "$CITAB_GPU_SLOTS")``; no devices is ``[]``.
    """
    environ = os.environ if environ is None else environ
    for variable in (SLOTS_ENV, "CUDA_VISIBLE_DEVICES"):
        if variable in environ:
            return _split_device_list(environ[variable], variable), f"${variable}"
    nvidia_smi = shutil.which("nvidia-smi")
    if nvidia_smi:
        listing = subprocess.run([nvidia_smi, "-L"], capture_output=True, text=True, check=False)
        if listing.returncode == 0:
            return re.findall(r"^GPU (\d+):", listing.stdout, flags=re.MULTILINE), "nvidia-smi -L"
    try:
        import torch
    except ImportError:
        return [], "no $CITAB_GPU_SLOTS, no nvidia-smi, no torch"
    return [str(index) for index in range(torch.cuda.device_count())], "torch.cuda.device_count()"


def _split_device_list(text: str, variable: str) -> list[str]:
    devices = [item.strip() for item in text.split(",") if item.strip()]
    if len(set(devices)) != len(devices):
        raise GpuSlotError(f"${variable}={text!r} names a device twice")
    for device in devices:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]+", device):
            raise GpuSlotError(f"${variable}={text!r}: {device!r} is not a device id (expected e.g. 0,1)")
    return devices


def _lock_path(lock_dir: Path, device: str) -> Path:
    return lock_dir / f"gpu-{device.replace(':', '_')}.lock"


def _open_lock_dir(lock_dir: Path) -> None:
    lock_dir.mkdir(parents=True, exist_ok=True)
    try:  # shared by every user's jobs on the machine; sticky like /tmp
        os.chmod(lock_dir, 0o1777)
    except PermissionError:
        pass


def try_acquire(n_gpus: int, devices: list[str], lock_dir: Path) -> Lease | None:
    """Lock ``n_gpus`` of ``devices`` without waiting, or none of them.

    Partial sets are released at once, so two 2-GPU jobs can never each sit on one GPU forever.

    Returns:
        The lease (lock fds are inheritable, to survive ``exec``), or ``None`` if too few are free.
    """
    _open_lock_dir(lock_dir)
    lease = Lease(devices=[], lock_fds=[])
    for device in devices:
        fd = os.open(_lock_path(lock_dir, device), os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            os.close(fd)
            if error.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                continue
            raise
        os.set_inheritable(fd, True)
        lease.devices.append(device)
        lease.lock_fds.append(fd)
        if len(lease.devices) == n_gpus:
            return lease
    lease.release()
    return None


def acquire(
    n_gpus: int,
    devices: list[str],
    lock_dir: Path = DEFAULT_LOCK_DIR,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_interval_s: float = 0.5,
    source: str = "the device list",
) -> Lease:
    """Wait until ``n_gpus`` of ``devices`` are free and lock them.

    Args:
        n_gpus: how many devices the job needs (>= 1).
        devices: the machine's device ids.
        lock_dir: folder of the per-device lock files (the same for every job of the machine).
        timeout_s: give up after this many seconds (``GpuSlotTimeout``).
        poll_interval_s: how often to look again while waiting.
        source: where ``devices`` came from, for error messages.
    """
    if n_gpus > len(devices):
        raise GpuSlotError(
            f"asked for {n_gpus} GPU(s) but only {len(devices)} exist {devices} (from {source}); "
            f"lower the rule's gpu resource or set ${SLOTS_ENV}"
        )
    deadline = time.monotonic() + timeout_s
    announced = False
    while True:
        lease = try_acquire(n_gpus, devices, lock_dir)
        if lease is not None:
            if announced:
                print(f"gpu_slots: got GPU(s) {','.join(lease.devices)}", file=sys.stderr, flush=True)
            return lease
        if time.monotonic() >= deadline:
            raise GpuSlotTimeout(
                f"no {n_gpus} free GPU slot(s) among {devices} after {timeout_s:g} s "
                f"(lock files in {lock_dir} are held by other jobs)"
            )
        if not announced:
            print(
                f"gpu_slots: waiting for {n_gpus} free GPU slot(s) among {devices} "
                f"(up to {timeout_s:g} s; locks in {lock_dir})",
                file=sys.stderr, flush=True,
            )
            announced = True
        time.sleep(poll_interval_s)


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workflow.gpu_slots",
        description="Run a command on n free local GPUs (sets CUDA_VISIBLE_DEVICES); a no-op under SLURM or for 0 GPUs.",
    )
    parser.add_argument("n_gpus", type=int, help="number of GPUs the command needs (0: run unchanged)")
    parser.add_argument(
        "--timeout", type=float, default=float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT_S)),
        help=f"seconds to wait for free slots (default ${TIMEOUT_ENV} or {DEFAULT_TIMEOUT_S:g})",
    )
    parser.add_argument(
        "--lock-dir", type=Path, default=Path(os.environ.get(LOCK_DIR_ENV, DEFAULT_LOCK_DIR)),
        help=f"folder of the per-GPU lock files (default ${LOCK_DIR_ENV} or {DEFAULT_LOCK_DIR})",
    )
    # Everything after the first "--" is the command, untouched (its own options included).
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    args.command = argv[split + 1:]
    if not args.command:
        parser.error("no command given (usage: python -m workflow.gpu_slots 1 -- python train.py)")
    if args.n_gpus < 0:
        parser.error(f"n_gpus must be >= 0, got {args.n_gpus}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: lock the slots, then replace this process with the command."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    environment = dict(os.environ)
    if "SLURM_JOB_ID" in environment:
        where = f"SLURM job {environment['SLURM_JOB_ID']}: devices as SLURM bound them"
    elif args.n_gpus == 0:
        where = "no GPU requested: environment unchanged"
    else:
        try:
            devices, source = available_devices(environment)
            lease = acquire(args.n_gpus, devices, args.lock_dir, args.timeout, source=source)
        except GpuSlotError as error:
            print(f"gpu_slots: error: {error}", file=sys.stderr)
            return EXIT_USAGE
        except GpuSlotTimeout as error:
            print(f"gpu_slots: error: {error}", file=sys.stderr)
            return EXIT_TIMEOUT
        environment["CUDA_VISIBLE_DEVICES"] = ",".join(lease.devices)
        where = f"{args.n_gpus} free slot(s) of {devices} (from {source}), locked in {args.lock_dir}"
    # One line of provenance in the job's log: which devices this job ran on, and why.
    visible = environment.get("CUDA_VISIBLE_DEVICES", "<unset>")
    print(f"gpu_slots: CUDA_VISIBLE_DEVICES={visible} ({where})", file=sys.stderr, flush=True)
    try:
        os.execvpe(args.command[0], args.command, environment)
    except OSError as error:
        print(f"gpu_slots: error: cannot run {args.command[0]!r}: {error}", file=sys.stderr)
        return 127


if __name__ == "__main__":
    sys.exit(main())
