"""workflow.check_envs: the repository's per-rule conda envs pass; broken ones are caught.

The whole-workflow checks load the real Snakefile in a subprocess (a few seconds each); the rest
checks small env files written here. Budget: about 15 s.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from workflow import check_envs

REPO = Path(__file__).resolve().parent.parent
TINY_CONFIG = REPO / "tests" / "config.tiny.yaml"
# What a copy of the workflow needs in order to load (rules, their envs and code, configs).
WORKFLOW_PARTS = ["Snakefile", "config.yaml", "config", "rules", "envs", "workflow", "model"]


def run_check(snakefile: Path) -> subprocess.CompletedProcess:
    # config/predict-demo.yaml defines the predict rule (only present with a predict section).
    configs = ["--configfile", str(TINY_CONFIG), "--configfile", str(snakefile.parent / "config" / "predict-demo.yaml")]
    return subprocess.run(
        [sys.executable, "-m", "workflow.check_envs", "--snakefile", str(snakefile), *configs],
        capture_output=True, text=True, timeout=120, cwd=snakefile.parent,
    )


def write_env(folder: Path, text: str) -> Path:
    path = folder / "env.yaml"
    path.write_text(textwrap.dedent(text))
    return path


def test_repository_envs_pass() -> None:
    result = run_check(REPO / "Snakefile")
    assert result.returncode == 0, result.stdout + result.stderr
    checked = re.search(r"check_envs: (\d+) rule\(s\), (\d+) env file\(s\)", result.stderr)
    assert checked and int(checked[1]) > 0 and int(checked[2]) > 0, result.stderr


def test_broken_envs_in_a_copy_fail(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    for part in WORKFLOW_PARTS:
        source = REPO / part
        if source.is_dir():
            shutil.copytree(source, copy / part, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            copy.mkdir(exist_ok=True)
            shutil.copy2(source, copy / part)
    # 1. a missing package: drop a distribution that some rule's code really imports from its env
    rules = check_envs.load_rules(copy / "Snakefile", [TINY_CONFIG])
    victim, dropped = None, None
    for rule in rules:
        env = yaml.safe_load(rule.env.read_text())
        imported = {
            distribution
            for top in check_envs.third_party_imports(rule.python_files, copy)
            for distribution in importlib_distributions(top)
        }
        for index, entry in enumerate(env["dependencies"]):
            if isinstance(entry, str) and check_envs.normalize(entry.split()[0].split("=")[0]) in imported:
                victim, dropped = rule, env["dependencies"].pop(index)
                rule.env.write_text(yaml.safe_dump(env))
                break
        if victim:
            break
    assert victim is not None, "no rule env lists a conda package its code imports"
    # 2. an invalid spec in another env file (or the same one when there is only one)
    other = next((rule.env for rule in rules if rule.env != victim.env), victim.env)
    env = yaml.safe_load(other.read_text())
    env["dependencies"].append("numpy=>1.26")
    other.write_text(yaml.safe_dump(env))

    # the same check as the command line, on the rules already loaded from the copy
    report = "\n".join(check_envs.check_rules(rules, copy))
    dropped_name = dropped.split()[0].split("=")[0]
    assert re.search(rf"rule {victim.rule} .*imports .*but envs/{victim.env.name} does not provide it", report), report
    assert dropped_name in report or check_envs.normalize(dropped_name) in report.lower()
    assert f"envs/{other.name}: dependencies" in report and "'numpy=>1.26': not a valid conda MatchSpec" in report


def importlib_distributions(top: str) -> set[str]:
    import importlib.metadata

    names = importlib.metadata.packages_distributions().get(top, [])
    return {alias for name in names for alias in check_envs.CONDA_FORGE_NAMES.get(check_envs.normalize(name), {check_envs.normalize(name)})}


GOOD_ENV = """\
    channels: [conda-forge, nodefaults]
    dependencies:
      - python >=3.11
      - pyyaml >=6
      - pip
      - pip:
          - packaging>=24
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (GOOD_ENV, None),
        (GOOD_ENV + "    prefix: /opt/env\n", "unknown top-level key(s) ['prefix']"),
        (GOOD_ENV.replace("[conda-forge, nodefaults]", "[defaults]"), "channel 'defaults' is not allowed"),
        (GOOD_ENV.replace("    channels: [conda-forge, nodefaults]\n", ""), "'channels' must be a non-empty list"),
        (GOOD_ENV.replace("python >=3.11", "python=>3.11"), "'python=>3.11': not a valid conda MatchSpec"),
        (GOOD_ENV.replace("packaging>=24", "torch==="), "'torch===': not a valid PEP 508 requirement"),
        (GOOD_ENV.replace("packaging>=24", "packaging >= 24 ;; x"), "not a valid PEP 508 requirement"),
        (GOOD_ENV.replace("pyyaml >=6", "pyyaml"), "'pyyaml': no version; pin it"),
        (GOOD_ENV.replace("      - pip\n", ""), "has a pip: section but no 'pip' conda dependency"),
        (GOOD_ENV.replace("python >=3.11", "python 3.9.*"), "excludes"),  # not the tested interpreter
        ("dependencies: [python >=3.11\n", "not readable YAML"),
    ],
)
def test_env_file_checks(tmp_path: Path, text: str, message: str | None) -> None:
    _, problems = check_envs.check_env_file(write_env(tmp_path, text))
    if message is None:
        assert problems == []
    else:
        assert any(message in problem for problem in problems), problems


def test_conda_forge_names_count_as_the_pypi_distribution(tmp_path: Path) -> None:
    env, problems = check_envs.check_env_file(write_env(tmp_path, GOOD_ENV.replace("pyyaml >=6", "pytorch >=2.5")))
    assert problems == []
    assert env.provides("torch") and env.provides("PyYAML") is False and env.provides("packaging")


def test_imports_are_followed_through_project_code(tmp_path: Path) -> None:
    package = tmp_path / "workflow"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text("import numpy as np\nfrom . import sibling\n")
    (package / "sibling.py").write_text("def f():\n    import scipy.ndimage\n")
    (package / "guarded.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import pandas\n"
        "try:\n    import torch\nexcept ImportError:\n    torch = None\n"
    )
    script = tmp_path / "script.py"
    script.write_text("import os, yaml\nfrom workflow.helper import thing\nfrom workflow import guarded\n")
    found = check_envs.third_party_imports([script], tmp_path)
    assert set(found) == {"yaml", "numpy", "scipy"}  # os is stdlib; pandas/torch are optional
    assert found["scipy"].file == package / "sibling.py" and found["scipy"].line == 2


def test_command_words_see_through_the_gpu_wrapper() -> None:
    shell = (
        "set -euo pipefail; OMP_NUM_THREADS=1 python -m workflow.gpu_slots {resources.gpu} -- "
        "torchrun --standalone --nproc_per_node={params.nproc} -m model.pretrain > {log} 2>&1"
    )
    assert check_envs.command_words(shell)[:3] == ["set", "python", "torchrun"]
