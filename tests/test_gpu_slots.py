"""workflow.gpu_slots: concurrent local jobs get different GPUs, and clear errors otherwise; a
killed or ended job leaves no process of its tree behind.

Fake slots come from $CITAB_GPU_SLOTS; each test has its own lock folder. Budget: about 10 s.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from workflow import gpu_slots

REPO = Path(__file__).resolve().parent.parent

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


# --- the process tree -----------------------------------------------------------------------------
# A command that starts a process in a session of its own (as torchrun starts its workers), prints
# that pid and exits at once with status 3 (as a crashed torchrun would).
SPAWN_DETACHED_AND_EXIT = (
    "import os, subprocess, sys; "
    "worker = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'], start_new_session=True, "
    "stdout=subprocess.DEVNULL); print(worker.pid, flush=True); os._exit(3)"
)


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, ended but not yet reaped, does not count)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_until_gone(pids: list[int], seconds: float = 3.0) -> list[int]:
    """The pids still alive after up to ``seconds``."""
    deadline = time.monotonic() + seconds
    while any(alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    return [pid for pid in pids if alive(pid)]


def kill_all(pids: list[int]) -> None:
    """Clean-up: end processes this test started, by pid."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def wrapped(code: str, *args: str, environment: dict[str, str]) -> subprocess.Popen:
    """``python -m workflow.gpu_slots 0 -- python -c code args``, leading a process group of its own."""
    return subprocess.Popen([sys.executable, "-m", "workflow.gpu_slots", "0", "--", sys.executable, "-c", code, *args],
                            env=environment, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def test_what_the_command_leaves_behind_is_ended_with_it(tmp_path: Path) -> None:
    """torchrun dying at once (here: exit 3) must not leave its workers, which sit in sessions of
    their own, running: the wrapper adopts them (subreaper) and ends them."""
    job = wrapped(SPAWN_DETACHED_AND_EXIT, environment=slot_env(tmp_path))
    worker = int(job.stdout.readline())
    try:
        job.communicate(timeout=30)
        assert job.returncode == 3  # the command's exit status comes through
        assert wait_until_gone([worker]) == [], "the detached worker outlived its job"
    finally:
        kill_all([worker])


def test_sigkill_of_the_wrapper_ends_the_command(tmp_path: Path) -> None:
    job = wrapped("import os, time; print(os.getpid(), flush=True); time.sleep(60)", environment=slot_env(tmp_path))
    command = int(job.stdout.readline())  # the command runs
    try:
        job.kill()  # the wrapper alone, SIGKILL: it cannot pass anything on
        job.wait(timeout=30)
        assert wait_until_gone([command]) == [], "the command outlived its wrapper"
    finally:
        kill_all([command])
        job.communicate(timeout=30)


def test_a_signal_to_the_job_reaches_the_command_once(tmp_path: Path) -> None:
    """SIGTERM to the job's process group (what a scheduler sends) reaches the command exactly
    once, however it is delivered, so torchrun can shut its workers down in order."""
    counting = ("import signal, sys, time; got = []; "
                "signal.signal(signal.SIGTERM, lambda *_: got.append(1)); print('ready', flush=True); "
                "deadline = time.time() + 60\n"
                "while not got and time.time() < deadline: time.sleep(0.02)\n"
                "time.sleep(0.5); print('TERM', len(got), flush=True)")
    job = wrapped(counting, environment=slot_env(tmp_path))
    assert job.stdout.readline().strip() == "ready"
    os.killpg(job.pid, signal.SIGTERM)
    stdout, stderr = job.communicate(timeout=30)
    assert job.returncode == 0, stderr
    assert stdout.strip() == "TERM 1"


def test_death_by_signal_is_reported_as_a_shell_does(tmp_path: Path) -> None:
    job = wrapped("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", environment=slot_env(tmp_path))
    job.communicate(timeout=30)
    assert job.returncode == 128 + signal.SIGKILL


@pytest.mark.parametrize("mechanism", ["kernel", "watchdog"])
def test_exit_with_parent_ends_a_detached_worker(tmp_path: Path, mechanism: str) -> None:
    """A process in a session of its own (a torchrun worker) that called exit_with_parent dies with
    its parent; the watchdog thread alone (no prctl, as on other systems) also gets it."""
    disable_prctl = "gpu_slots._prctl = lambda *args: False; " if mechanism == "watchdog" else ""
    worker_code = (f"import time; from workflow import gpu_slots; {disable_prctl}"
                   "gpu_slots.exit_with_parent(poll_s=0.1); time.sleep(60)")
    parent_code = ("import subprocess, sys, time; "
                   f"worker = subprocess.Popen([sys.executable, '-c', {worker_code!r}], start_new_session=True); "
                   "print(worker.pid, flush=True); time.sleep(60)")
    python_path = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": python_path})
    worker = int(parent.stdout.readline())
    try:
        time.sleep(1.0)  # the worker has imported the module and called exit_with_parent
        assert alive(worker)
        parent.kill()
        parent.wait(timeout=30)
        assert wait_until_gone([worker]) == [], f"the worker outlived its parent ({mechanism})"
    finally:
        kill_all([worker, parent.pid])
        parent.wait(timeout=30)
