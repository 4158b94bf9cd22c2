"""workflow.gpu_slots: concurrent local jobs get different GPUs, and clear errors otherwise.

Fake slots come from $CITAB_GPU_SLOTS; each test has its own lock folder. Budget: a few seconds.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow import gpu_slots

# A child that reports the devices it was given, then holds them for a while.
REPORT_AND_HOLD = "import os, sys, time; print(os.environ.get('CUDA_VISIBLE_DEVICES', '<unset>'), flush=True); time.sleep(float(sys.argv[1]))"


def slot_env(lock_dir: Path, slots: str | None = "0,1", **extra: str) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    environment[gpu_slots.LOCK_DIR_ENV] = str(lock_dir)
    if slots is not None:
        environment[gpu_slots.SLOTS_ENV] = slots
    environment.update(extra)
    return environment


def start(n_gpus: int, hold_s: float, environment: dict[str, str], *options: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "workflow.gpu_slots", str(n_gpus), *options, "--",
         sys.executable, "-c", REPORT_AND_HOLD, str(hold_s)],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_two_concurrent_jobs_get_different_devices(tmp_path: Path) -> None:
    environment = slot_env(tmp_path)
    first = start(1, 1.5, environment)
    second = start(1, 1.5, environment)
    outputs = [job.communicate(timeout=30) for job in (first, second)]
    assert [job.returncode for job in (first, second)] == [0, 0], outputs
    devices = sorted(stdout.strip() for stdout, _ in outputs)
    assert devices == ["0", "1"]


def test_job_waits_for_a_slot_and_gets_it_when_freed(tmp_path: Path) -> None:
    environment = slot_env(tmp_path)
    holder = start(2, 1.5, environment)
    assert holder.stdout.readline().strip() == "0,1"  # both slots are now held
    began = time.monotonic()
    waiter = start(1, 0, environment)
    stdout, stderr = waiter.communicate(timeout=30)
    holder.communicate(timeout=30)
    assert waiter.returncode == 0, stderr
    assert stdout.strip() in {"0", "1"}
    assert "waiting for 1 free GPU slot" in stderr
    assert time.monotonic() - began > 0.5  # it really waited for the holder to exit


def test_wait_times_out_with_a_clear_message(tmp_path: Path) -> None:
    environment = slot_env(tmp_path, slots="0")
    holder = start(1, 3, environment)
    assert holder.stdout.readline().strip() == "0"
    waiter = start(1, 0, environment, "--timeout", "0.6")
    _, stderr = waiter.communicate(timeout=30)
    holder.kill()
    holder.communicate()
    assert waiter.returncode == gpu_slots.EXIT_TIMEOUT
    assert "no 1 free GPU slot(s) among ['0'] after 0.6 s" in stderr


def test_more_gpus_than_exist_fails_at_once(tmp_path: Path) -> None:
    job = start(3, 0, slot_env(tmp_path))
    _, stderr = job.communicate(timeout=30)
    assert job.returncode == gpu_slots.EXIT_USAGE
    assert "asked for 3 GPU(s) but only 2 exist" in stderr


@pytest.mark.parametrize(
    ("n_gpus", "extra", "expected"),
    [
        (2, {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "1,0"}, "1,0"),  # SLURM's binding is kept
        (0, {}, "<unset>"),  # CPU job: nothing exported
    ],
)
def test_no_op_under_slurm_or_for_zero_gpus(tmp_path: Path, n_gpus: int, extra: dict, expected: str) -> None:
    job = start(n_gpus, 0, slot_env(tmp_path, slots="0", **extra))
    stdout, stderr = job.communicate(timeout=30)
    assert job.returncode == 0, stderr
    assert stdout.strip() == expected
    assert not list(tmp_path.glob("*.lock"))  # no slot was taken


def test_locks_are_released_when_the_command_fails(tmp_path: Path) -> None:
    environment = slot_env(tmp_path, slots="0")
    failing = subprocess.run(
        [sys.executable, "-m", "workflow.gpu_slots", "1", "--", sys.executable, "-c", "raise SystemExit(3)"],
        env=environment, capture_output=True, text=True, timeout=30,
    )
    assert failing.returncode == 3  # the command's own exit code comes through
    lease = gpu_slots.try_acquire(1, ["0"], tmp_path)
    assert lease is not None and lease.devices == ["0"]
    lease.release()


def test_device_list_sources() -> None:
    assert gpu_slots.available_devices({gpu_slots.SLOTS_ENV: "0, 1,3"}) == (["0", "1", "3"], "$CITAB_GPU_SLOTS")
    assert gpu_slots.available_devices({"CUDA_VISIBLE_DEVICES": "2"}) == (["2"], "$CUDA_VISIBLE_DEVICES")
    assert gpu_slots.available_devices({gpu_slots.SLOTS_ENV: ""})[0] == []
    with pytest.raises(gpu_slots.GpuSlotError, match="names a device twice"):
        gpu_slots.available_devices({gpu_slots.SLOTS_ENV: "0,0"})


def test_the_log_line_says_which_devices_and_why(tmp_path: Path) -> None:
    under_slurm = start(2, 0, slot_env(tmp_path, SLURM_JOB_ID="42", CUDA_VISIBLE_DEVICES="0,1"))
    local = start(1, 0, slot_env(tmp_path))
    slurm_err, local_err = under_slurm.communicate(timeout=30)[1], local.communicate(timeout=30)[1]
    assert "gpu_slots: CUDA_VISIBLE_DEVICES=0,1 (SLURM job 42: devices as SLURM bound them)" in slurm_err
    assert re.search(r"gpu_slots: CUDA_VISIBLE_DEVICES=[01] \(1 free slot\(s\) of \['0', '1'\]", local_err), local_err
