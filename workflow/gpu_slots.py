"""Give a local job its own GPUs: ``python -m workflow.gpu_slots <n_gpus> -- <command...>``.

Snakemake counts a ``gpu`` resource (``--resources gpu=2`` caps how many run at once) but never
says *which* GPU a job may use, so two concurrent 1-GPU jobs would both land on GPU 0. This wrapper
takes ``n_gpus`` free slots, one non-blocking ``flock`` per device on a lock file shared by every
job of the machine, exports ``CUDA_VISIBLE_DEVICES`` with the devices it got, and runs the
command. The lock file descriptors are held by the wrapper and inherited by the command, so the
slots stay taken exactly as long as the job runs and are released by the kernel when it ends
(also on a crash or kill).

Where the devices come from, first match wins:

1. ``$CITAB_GPU_SLOTS``: comma-separated device ids (``"0,1"``); tests use it for fake slots.
2. ``$CUDA_VISIBLE_DEVICES`` when set: the user already restricted this run to those devices.
3. ``nvidia-smi -L`` (``GPU 0: ...`` lines).
4. ``torch.cuda.device_count()``.

It takes no slots (runs the command with its environment unchanged) under SLURM (``$SLURM_JOB_ID`` set: SLURM
already bound the job's GPUs and set ``CUDA_VISIBLE_DEVICES``) and when ``n_gpus`` is 0. In every
case it writes one line to stderr (so to the rule's log): the job's ``CUDA_VISIBLE_DEVICES`` and why.
When no slot is free it waits (``--timeout``, default ``$CITAB_GPU_SLOTS_TIMEOUT`` or 24 h) and
says so on stderr; asking for more GPUs than exist fails at once.

A killed job ends its whole process tree. ``torchrun`` starts each worker in a session of its own,
so a signal to the job's process group never reaches the workers. ``torchrun`` passes SIGTERM and
SIGINT on, but when it dies by SIGKILL (``kill -9 -<pgid>``, the last step of a scheduler's time
limit, the OOM killer) the workers would keep training and writing checkpoints that a rerun then
resumes from. So the wrapper does not ``exec`` the command but runs it as a supervised child
(:func:`run_supervised`):

* the child, in a process group of its own, gets SIGKILL from the kernel when the wrapper dies
  (``PR_SET_PDEATHSIG``), also when the wrapper itself is SIGKILLed (being a background group, it
  cannot read from a terminal: rules redirect everything to their log);
* SIGTERM, SIGINT, SIGHUP and SIGQUIT sent to the wrapper (alone or with its group) are passed to
  the child's process group once, so ``torchrun`` shuts its workers down as it does on a signal
  (a scheduler that signals every process of the job, as SLURM does at a time limit, reaches the
  child a second time: harmless, the workers get the signal from it directly too);
* the wrapper is a child subreaper (``PR_SET_CHILD_SUBREAPER``): processes orphaned below it are
  re-parented to it instead of init, and whatever is left of the tree when the child exits is
  SIGKILLed;
* training workers call :func:`exit_with_parent` at start-up (``workflow.train``), so they die the
  moment ``torchrun`` does, also when the wrapper died with it (a watchdog thread stands in for
  the kernel's signal where there is no ``prctl``).

The exit status is the child's (128 + N when it died of signal N).
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
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
EXIT_CANNOT_RUN = 127  # as a shell says for a command it cannot run
# Linux prctl(2) options (linux/prctl.h).
PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGQUIT)
PARENT_POLL_S = 1.0  # the watchdog's period (the kernel's parent-death signal is immediate)


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


# --- the process tree ------------------------------------------------------------------------------
def _prctl(option: int, value: int) -> bool:
    """Call Linux ``prctl(option, value)``; False where there is no prctl (other systems) or it fails."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def exit_with_parent(watchdog: bool = True, poll_s: float = PARENT_POLL_S) -> int:
    """End this process (SIGKILL) as soon as its parent process dies; returns the parent's pid.

    Two mechanisms, because each has a gap: the kernel's parent-death signal (Linux
    ``PR_SET_PDEATHSIG``, immediate, but only for a death after this call) and a daemon thread
    that polls ``os.getppid()`` (any platform, every ``poll_s`` seconds). A parent that died before
    the call is seen when this process already belongs to init; one re-parented to the job's
    wrapper (a subreaper) is ended by the wrapper when its own child exits. SIGKILL, not SIGTERM:
    nothing a worker could still do is wanted once its launcher is gone (checkpoints are written
    atomically, so none is left half-written).

    Call it first thing in a process whose parent owns its lifetime (a torchrun worker). The
    parent-death signal fires when the parent *thread* that started this process exits; torchrun
    starts its workers from its main thread, so that is the parent's death.
    """
    parent = os.getppid()
    _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    if parent == 1 or os.getppid() != parent:  # orphaned before (or while) the kernel was asked to watch
        os.kill(os.getpid(), signal.SIGKILL)
    if watchdog:
        def watch() -> None:
            while os.getppid() == parent:
                time.sleep(poll_s)
            print(f"{sys.argv[0]}: parent process {parent} is gone; stopping (pid {os.getpid()})", file=sys.stderr,
                  flush=True)
            os.kill(os.getpid(), signal.SIGKILL)

        threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
    return parent


def _child_pids(parent: int) -> list[int]:
    """Pids whose parent is ``parent`` (from /proc; empty where there is no /proc)."""
    children = []
    for entry in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = entry.read_text().rsplit(")", 1)[1].split()  # the name in (...) may hold spaces
        except (OSError, IndexError):
            continue  # exited while we looked
        if int(fields[1]) == parent:
            children.append(int(entry.parent.name))
    return children


def _end_leftovers(timeout_s: float = 10.0) -> None:
    """SIGKILL and reap every process still below this one (orphans it adopted as subreaper).

    Rounds of kill-then-reap, without blocking: killing a process makes its own children orphans
    that this process adopts next. Gives up after ``timeout_s`` (a process stuck in the kernel).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for pid in _child_pids(os.getpid()):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:  # no children left
            return
        time.sleep(0.02)


def run_supervised(command: list[str], environment: dict[str, str], pass_fds: tuple[int, ...] = ()) -> int:
    """Run ``command`` as a child that cannot outlive this process; returns its exit status.

    See the module docstring: the child runs in its own process group with a parent-death SIGKILL,
    signals to this process are passed to that group once, this process adopts orphans below it
    and kills whatever is left when the child exits.

    Args:
        command: the command line (``command[0]`` looked up on the environment's PATH).
        environment: the child's environment.
        pass_fds: file descriptors the child keeps (the GPU lock files).

    Returns:
        The child's exit code; 128 + N when signal N ended it; 127 when it cannot be started.
    """
    supervisor = os.getpid()
    _prctl(PR_SET_CHILD_SUBREAPER, 1)

    def start_child() -> None:  # runs in the child between fork and exec
        _prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != supervisor:  # the wrapper died before the kernel was asked to watch
            os._exit(EXIT_CANNOT_RUN)

    try:
        child = subprocess.Popen(command, env=environment, pass_fds=pass_fds, process_group=0,
                                 preexec_fn=start_child)
    except OSError as error:
        print(f"gpu_slots: error: cannot run {command[0]!r}: {error}", file=sys.stderr)
        return EXIT_CANNOT_RUN

    def forward(number: int, _frame) -> None:
        try:
            os.killpg(child.pid, number)
        except ProcessLookupError:
            pass

    previous = {number: signal.signal(number, forward) for number in FORWARDED_SIGNALS}
    try:
        while True:  # reap adopted orphans as they end, until the child itself ends
            pid, status = os.waitpid(-1, 0)
            if pid == child.pid:
                break
    finally:
        for number, handler in previous.items():
            signal.signal(number, handler)
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    _end_leftovers()
    return child.returncode if child.returncode >= 0 else 128 - child.returncode


def _parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m workflow.gpu_slots",
        description="Run a command on n free local GPUs (sets CUDA_VISIBLE_DEVICES; takes no slots under SLURM "
                    "or for 0 GPUs). A killed job ends its whole process tree.",
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
    """Command-line entry: lock the slots, then run the command under :func:`run_supervised`."""
    args = _parse_args(sys.argv[1:] if argv is None else argv)
    environment = dict(os.environ)
    lock_fds: tuple[int, ...] = ()
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
        # The child holds the locks too: the slots stay taken while any part of the job runs.
        lock_fds = tuple(lease.lock_fds)
    # One line of provenance in the job's log: which devices this job ran on, and why.
    visible = environment.get("CUDA_VISIBLE_DEVICES", "<unset>")
    print(f"gpu_slots: CUDA_VISIBLE_DEVICES={visible} ({where})", file=sys.stderr, flush=True)
    return run_supervised(args.command, environment, lock_fds)


if __name__ == "__main__":
    sys.exit(main())
