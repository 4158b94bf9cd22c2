"""Shared test helpers: where the repository is, and how tests drive the real Snakemake CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "config.tiny.yaml"


def run_snakemake(
    workdir: Path,
    *args: str,
    configfiles: tuple[Path, ...] = (TINY_CONFIG,),
    check: bool = True,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the real ``snakemake`` CLI on this repository's Snakefile in ``workdir``.

    Targets and flags go in ``args``; config files are passed with ``--configfile=`` so that they
    cannot swallow a target. Returns the finished process (stdout and stderr merged).
    """
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(workdir),
        *(f"--configfile={path}" for path in configfiles), *args,
    ]
    process = subprocess.run(
        command, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=timeout, env={**os.environ, **(env or {})},
    )
    if check and process.returncode != 0:
        raise AssertionError(f"snakemake failed ({process.returncode}): {' '.join(command)}\n{process.stdout[-8000:]}")
    return process


@pytest.fixture
def snakemake_workdir(tmp_path: Path) -> Path:
    """An empty working directory for one Snakemake run."""
    workdir = tmp_path / "run"
    workdir.mkdir()
    return workdir


# --- stage fixtures -------------------------------------------------------------------------------
# Session-wide fixtures that several stages share (for example tiny synthetic cohorts) go below,
# each with a docstring saying what it builds and how long it takes.
