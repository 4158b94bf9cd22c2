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
