"""Small helpers used by the rule files (kept out of the .smk files so they stay rule-only).

What reruns a job beyond its input files (code and data fingerprints) is in
:mod:`workflow.fingerprints`. This module stays free of project imports: :mod:`workflow.columns`
imports ``REPO_ROOT`` from it, so whatever it imported would count as code of every rule that
reads columns.
"""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def shell_prefix(deployment_methods: set, interpreter: str) -> str:
    """Shell prefix for every rule: strict bash, and this project's environment first on PATH.

    Shell rules call ``python`` and ``torchrun``. Without conda deployment they must be the ones of
    the environment that runs Snakemake (``.venv/bin/snakemake`` is often called without activating
    the venv); with ``--sdm conda`` each rule's own env provides them, so PATH is left alone.
    """
    strict = "set -euo pipefail; "
    if any(str(method).lower().endswith("conda") for method in deployment_methods):
        return strict
    return strict + f'export PATH="{Path(interpreter).parent}:$PATH"; '
