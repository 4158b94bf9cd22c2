"""The whole DAG on the tiny config: synthetic natives -> intake -> preprocessing -> tables ->
header bank -> pretraining -> fine-tuning -> evaluation -> Table 1, through the real Snakemake CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from conftest import TINY_CONFIG, run_snakemake

from workflow import paths

VENV_PATH = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
def test_tiny_dag_runs_from_synthetic_natives_to_table1(tiny_full_run: Path) -> None:
    """The session's tiny run (tests/conftest.py: tiny_full_run) went from natives to Table 1.

    Its wall time is printed by the fixture, not asserted: speed goals live in benchmarks/.
    """
    config = yaml.safe_load(TINY_CONFIG.read_text())
    cohorts = list(config["cohorts"])
    markdown = (tiny_full_run / paths.TABLE1.format(ext="md")).read_text().splitlines()
    assert markdown[0].startswith("| Method | " + f"{cohorts[0]} Acc")
    assert markdown[2].startswith("| CITab |")
    for ext in ("csv", "tex"):
        assert (tiny_full_run / paths.TABLE1.format(ext=ext)).stat().st_size > 0
    for cohort in cohorts:
        metrics = json.loads((tiny_full_run / paths.EVAL_METRICS.format(variant="citab", cohort=cohort, seed=2022)).read_text())
        assert metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
    # A second run has nothing left to do.
    again = run_snakemake(tiny_full_run, "--cores", "2", "-n", env=VENV_PATH)
    assert "Nothing to be done" in again.stdout
