"""Shared test helpers: where the repository is, how tests drive the real Snakemake CLI, and the
seeded classification cases the metrics tests share."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from workflow.settings import QcThresholds

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "config.tiny.yaml"
# Lenient image-QC thresholds for the preprocessing tests' synthetic heads.
QC_THRESHOLDS = QcThresholds(min_ncc=0.4, brain_volume_ml=(700, 2500), max_pose_error_mm=4.0, min_dice=0.8)


def classification_case(case: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels int [40] and class probabilities float [40, 3] of a seeded metrics test case: "all
    classes", "ties" (probabilities rounded to 0.1), "a class missing" (no label 2), "a class never
    predicted" (class 1 never the argmax) or "tiny" (3 rows)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, size=40)
    probabilities = rng.dirichlet(np.ones(3), size=40)
    if case == "ties":
        probabilities = np.round(probabilities, 1)
    if case == "a class missing":
        labels = np.where(labels == 2, 0, labels)
    if case == "a class never predicted":
        probabilities[:, 1] = 0.0
    if case == "tiny":
        labels, probabilities = labels[:3], probabilities[:3]
    return labels, probabilities


def markdown_lines(text: str) -> list[str]:
    """The lines of a Markdown file with each table row's cell padding removed ("| a | b |"), so
    tests can compare rows whatever the column widths; the header separator becomes "|---|:---:|"
    (no spaces), so that it is not counted as a row."""
    lines = []
    for line in text.splitlines():
        if not line.startswith("|"):
            lines.append(line)
            continue
        cells = [cell.strip() for cell in line.strip()[1:-1].split("|")]
        separator = all(cell and set(cell) <= set(":-") for cell in cells)
        lines.append("|" + "|".join(cells) + "|" if separator else "| " + " | ".join(cells) + " |")
    return lines


def run_snakemake(
    workdir: Path,
    *args: str,
    configfiles: tuple[Path, ...] = (TINY_CONFIG,),
    check: bool = True,
    timeout: int = 600,
    env: dict[str, str] | None = None,
) -> subprocess.CompletedProcess:
    """Run the real ``snakemake`` CLI on this repository's Snakefile in ``workdir``.

    Targets and flags go in ``args``. The config files go last, after one ``--configfile`` (a
    repeated ``--configfile`` keeps only the last one, and the option's value list would swallow a
    target placed after it). Returns the finished process (stdout and stderr merged).
    """
    command = [
        sys.executable, "-m", "snakemake", "--snakefile", str(REPO / "Snakefile"), "-d", str(workdir),
        *args, *(["--configfile", *map(str, configfiles)] if configfiles else []),
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


# Rules call `python`, `torchrun` by name: put this interpreter's bin folder (the project venv)
# first on PATH, also for SLURM jobs, which inherit the submitting environment (sbatch --export=ALL).
VENV_ON_PATH = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


def tiny_config_with(changes: dict, folder: Path) -> Path:
    """tests/config.tiny.yaml with ``changes`` merged in (nested keys), written to ``folder``.

    One merged file, because run_snakemake passes each config file as its own ``--configfile=``
    and Snakemake keeps only the last of those.
    """
    import yaml

    def merge(base: dict, update: dict) -> dict:
        merged = dict(base)
        for key, value in update.items():
            merged[key] = merge(base[key], value) if isinstance(value, dict) and isinstance(base.get(key), dict) else value
        return merged

    path = folder / "config.tiny.changed.yaml"
    path.write_text(yaml.safe_dump(merge(yaml.safe_load(TINY_CONFIG.read_text()), changes), sort_keys=False))
    return path


@pytest.fixture(scope="session")
def tiny_full_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Working directory of ONE complete local run of the tiny DAG (tests/config.tiny.yaml), shared
    by the whole session: the end-to-end, rerun, report and SLURM tests read it instead of each
    running the DAG again (a few minutes on 2 cores). Tests must not change its files; a test that
    must (the rerun tests) restores them exactly, mtimes included.
    $CITAB_TINY_RUN names a folder to use instead (kept between sessions while iterating on these
    tests); the run there is brought up to date first, so it is still a complete, current run.
    """
    kept = os.environ.get("CITAB_TINY_RUN")
    workdir = Path(kept) if kept else tmp_path_factory.mktemp("tiny_full_run")
    workdir.mkdir(parents=True, exist_ok=True)
    started = time.time()
    run_snakemake(workdir, "--cores", "2", env=VENV_ON_PATH, timeout=1800)
    print(f"\ntiny_full_run: the tiny DAG took {time.time() - started:.0f} s in {workdir}")
    return workdir


def tiny_synthetic_settings() -> dict:
    """The ``synthetic:`` section of tests/config.tiny.yaml with the schema's defaults filled in."""
    import yaml
    from snakemake.utils import validate

    from workflow.config_checks import section_schema

    settings = dict(yaml.safe_load(TINY_CONFIG.read_text()).get("synthetic") or {})
    validate(settings, str(section_schema("synthetic")), set_default=True)
    return settings


def tiny_synthetic_cohort_settings(cohort: str, **changes):
    """The ``SyntheticCohortSettings`` of ``cohort`` (a cohort of tests/config.tiny.yaml, format
    and all) at the tiny synthetic settings, with ``changes`` to the ``synthetic:`` section."""
    import yaml

    from workflow.settings import synthetic_cohort_settings

    cohorts = yaml.safe_load(TINY_CONFIG.read_text())["cohorts"]
    return synthetic_cohort_settings({"cohorts": cohorts, "synthetic": {**tiny_synthetic_settings(), **changes}}, cohort)


@pytest.fixture(scope="session")
def tiny_synthetic_cohorts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The cohorts of tests/config.tiny.yaml (ADNI, AIBL, NACC) generated at the tiny settings
    (12 subjects, at least 3 per class, 4 mm heads) into one temporary folder, once per session;
    returns {cohort name: cohort root} (layout: docs/interfaces.md section 1). About 5-10 s on one
    core. Tests must not change these files.
    """
    import yaml

    from workflow.synthesize import synthesize_cohort

    cohorts = yaml.safe_load(TINY_CONFIG.read_text())["cohorts"]
    base = tmp_path_factory.mktemp("synthetic")
    roots = {}
    for name in cohorts:
        roots[name] = base / name
        synthesize_cohort(name, roots[name], tiny_synthetic_cohort_settings(name))
    return roots
