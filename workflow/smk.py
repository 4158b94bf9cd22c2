"""Small helpers used by the rule files (kept out of the .smk files so they stay rule-only)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def code_files(*modules: str) -> list[str]:
    """Source files of the given modules (``"workflow.synthesize"``, ``"model"``...).

    Rules list them as inputs, because Snakemake does not track code that a rule imports: with
    them declared, editing a stage's module reruns that stage and everything after it.
    A package name expands to every ``.py`` file inside it.
    """
    files: list[str] = []
    for module in modules:
        spec = importlib.util.find_spec(module)
        if spec is None or spec.origin is None:
            raise ValueError(f"code_files: module {module!r} not found")
        origin = Path(spec.origin)
        if origin.name == "__init__.py":
            files.extend(str(p) for p in sorted(origin.parent.rglob("*.py")))
        else:
            files.append(str(origin))
    return files


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
