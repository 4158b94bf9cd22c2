"""A killed pretraining job ends its whole process tree.

torchrun starts its workers in sessions of their own, so SIGKILL of the job's process group (what a
scheduler or an impatient user does) used to leave the workers training and writing checkpoints,
and the rerun resumed from a checkpoint written after the kill. Here the job is launched as the
pretrain rule launches it (bash -> workflow.gpu_slots -> torchrun, 2 gloo processes on CPU), its
process group is SIGKILLed once the workers are in the training loop, and no process of the run may
survive. About 20-40 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from conftest import REPO, TINY_CONFIG
from test_train_helpers import ENCODER, write_training_inputs

from workflow import paths
from workflow import train

COHORTS = ["ADNI", "AIBL"]
PRETRAIN = {"epochs": 500, "batch_size": 8, "image_shape": [16, 16, 16], "checkpoint_every": 1}


def write_settings_file(path: Path) -> Path:
    """The pretrain rule's settings file for the tiny config with a long run (killed long before its end)."""
    from snakemake.utils import validate

    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    config = {"model": tiny["model"], "pretrain": {**tiny["pretrain"], **PRETRAIN}}
    validate(config["pretrain"], str(REPO / "workflow" / "schemas" / "pretrain.schema.yaml"), set_default=True)
    train.pretrain_settings(config).write(path)
    return path


def rule_command(run_dir: Path) -> str:
    """The pretrain rule's shell command (rules/train.smk), with outputs under ``run_dir``."""
    torchrun = [
        "torchrun", "--standalone", "--nnodes=1", "--nproc_per_node=2", "-m", "workflow.train", "pretrain",
        "--variant", "citab", "--cohorts", *COHORTS,
        "--tables", *(paths.TABLE.format(cohort=c) for c in COHORTS),
        "--columns", *(paths.TABLE_COLUMNS.format(cohort=c) for c in COHORTS),
        "--header-bank", paths.HEADER_BANK.format(encoder=ENCODER), "--encoder", ENCODER,
        "--settings", str(write_settings_file(run_dir.parent / "settings.json")),
        "--weights", str(run_dir / "model.safetensors"),
        "--metrics", str(run_dir / "metrics.csv"), "--gpus", "0", "--threads", "2",
    ]
    log = run_dir.parent / "pretrain.log"
    return (f"set -euo pipefail; python -m workflow.gpu_slots 0 -- {shlex.join(torchrun)} "
            f"> {shlex.quote(str(log))} 2>&1")


def processes_of(marker: str) -> dict[int, str]:
    """Live processes (not zombies) whose command line contains ``marker``: pid -> command line."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue  # ended while we looked
        if marker in command and state != "Z":
            found[int(entry.name)] = command
    return found


def is_worker(command: str) -> bool:
    return "-m workflow.train pretrain" in command and "torchrun" not in command and "gpu_slots" not in command


def test_sigkill_of_the_jobs_process_group_ends_the_torchrun_workers(tmp_path: Path) -> None:
    workdir = tmp_path / "job"
    workdir.mkdir()
    write_training_inputs(workdir)
    run_dir = workdir / "results" / "pretrain-kill-test"  # unique to this run: it marks its processes
    run_dir.mkdir(parents=True)
    marker = str(run_dir)
    python_bin = str(Path(sys.executable).parent)
    environment = {**os.environ, "PATH": f"{python_bin}{os.pathsep}{os.environ.get('PATH', '')}",
                   "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    # Snakemake runs a job's shell command with bash; here that bash leads a process group of its own.
    launcher = subprocess.Popen(["bash", "-c", rule_command(run_dir)], cwd=workdir, env=environment,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "metrics.csv").exists():  # rank 0 writes it after the first epoch of both
            assert launcher.poll() is None, (workdir.parent / "pretrain.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "the workers did not finish an epoch in 180 s"
            time.sleep(0.1)
        workers = {pid: command for pid, command in processes_of(marker).items() if is_worker(command)}
        assert len(workers) == 2, processes_of(marker)
        # The premise: torchrun's workers are in sessions of their own, out of reach of a group signal.
        assert all(os.getsid(pid) != launcher.pid for pid in workers)

        os.killpg(launcher.pid, signal.SIGKILL)
        launcher.wait(timeout=30)
        deadline = time.monotonic() + 5
        while processes_of(marker) and time.monotonic() < deadline:
            time.sleep(0.1)
        survivors = processes_of(marker)
        assert not survivors, f"processes of the killed run still alive after 5 s: {survivors}"
        # Nothing writes resume points after the kill any more.
        state = run_dir / "checkpoints" / "resume.json"
        before = json.loads(state.read_text())["epoch"] if state.exists() else None
        time.sleep(1.5)
        assert (json.loads(state.read_text())["epoch"] if state.exists() else None) == before
    finally:
        for pid in processes_of(marker):  # leave no orphan of this test behind, whatever happened
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait()
