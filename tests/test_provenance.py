"""Provenance on the shared tiny run (tests/conftest.py: tiny_full_run): from a row of Table 1, the
command ``python -m workflow.provenance`` reaches the settings, the split file, the weights and the
code version of every stage behind it, and each of them is the file or value the run really used.
A second or two per test (the run is shared).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from conftest import REPO, TINY_CONFIG

from workflow import paths
from workflow.provenance import file_sha256

pytestmark = pytest.mark.slow

SEED = 2022


def provenance(run: Path, *arguments: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workflow.provenance", *arguments], cwd=run, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_a_table1_row_leads_to_its_settings_split_weights_and_code(tiny_full_run: Path) -> None:
    table1 = paths.TABLE1.format(ext="csv")
    process = provenance(tiny_full_run, table1, "citab", "--cohort", "ADNI", "--json")
    assert process.returncode == 0, process.stderr
    (chain,) = json.loads(process.stdout)  # one seed in the tiny config
    assert [record["stage"] for record in chain] == ["evaluate", "finetune", "pretrain"]
    evaluation, finetune, pretrain = chain

    # The row's run hash is the one its metrics and predictions carry.
    row = pd.read_csv(tiny_full_run / table1, dtype=str).set_index("variant").loc["citab"]
    metrics = json.loads((tiny_full_run / paths.EVAL_METRICS.format(variant="citab", cohort="ADNI", seed=SEED)).read_text())
    predictions = pd.read_csv(tiny_full_run / paths.EVAL_PREDICTIONS.format(variant="citab", cohort="ADNI", seed=SEED),
                              sep="\t", dtype=str)
    assert row["ADNI_runs"] == metrics["run_hash"] == evaluation["run_hash"]
    assert set(predictions["run_hash"]) == {evaluation["run_hash"]}

    # The settings are those of the config the run was made with.
    tiny = yaml.safe_load(TINY_CONFIG.read_text())
    assert finetune["settings"]["lr"] == tiny["finetune"]["lr"] and finetune["settings"]["epochs"] == tiny["finetune"]["epochs"]
    assert pretrain["settings"]["epochs"] == tiny["pretrain"]["epochs"] and pretrain["cohorts"] == ["ADNI", "AIBL", "NACC"]
    assert (finetune["variant"], finetune["cohort"], finetune["seed"]) == ("citab", "ADNI", SEED)

    # Every file named is the file the run holds: split, weights at each stage.
    split = finetune["inputs"]["split"]
    assert split["path"] == paths.TABLE_SPLIT.format(cohort="ADNI")
    weights = {"finetuned": finetune["outputs"]["weights"], "evaluated": evaluation["inputs"]["weights"],
               "pretrained": finetune["inputs"]["pretrained"], "pretrain output": pretrain["outputs"]["weights"]}
    assert weights["finetuned"]["path"] == weights["evaluated"]["path"] == paths.FINETUNED_WEIGHTS.format(
        variant="citab", cohort="ADNI", seed=SEED)
    assert weights["pretrained"]["path"] == weights["pretrain output"]["path"] == paths.PRETRAINED_WEIGHTS.format(
        variant="citab")
    for entry in (split, *weights.values()):
        assert file_sha256(tiny_full_run / entry["path"]) == entry["sha256"], entry
    assert evaluation["inputs"]["weights"]["run_hash"] == finetune["run_hash"]
    assert finetune["inputs"]["pretrained"]["run_hash"] == pretrain["run_hash"]

    # The code version: a commit of this checkout's history (when it is one; a kept run may predate
    # the latest commit) and the rule's code fingerprint.
    is_checkout = subprocess.run(["git", "-C", str(REPO), "rev-parse", "HEAD"], capture_output=True).returncode == 0
    for record in chain:
        commit = record["code"]["git_commit"]
        if is_checkout:
            ancestor = subprocess.run(["git", "-C", str(REPO), "merge-base", "--is-ancestor", commit, "HEAD"])
            assert ancestor.returncode == 0, commit
        else:
            assert commit is None
        assert "normalised AST: sha256" in record["code"]["code_fingerprint"]

    # The readable form says the same.
    text = provenance(tiny_full_run, table1, "citab", "--cohort", "ADNI")
    assert text.returncode == 0, text.stderr
    assert f"citab / ADNI / seed {SEED}: evaluation run {evaluation['run_hash']}" in text.stdout
    assert f"input  split: {split['path']} sha256 {split['sha256'][:16]}" in text.stdout


def test_a_baseline_row_has_no_pretraining_and_every_cohort_is_traced(tiny_full_run: Path) -> None:
    process = provenance(tiny_full_run, paths.TABLE1.format(ext="csv"), "daft", "--json")
    assert process.returncode == 0, process.stderr
    chains = json.loads(process.stdout)
    assert [chain[0]["cohort"] for chain in chains] == ["ADNI", "AIBL", "NACC"]
    assert all([record["stage"] for record in chain] == ["evaluate", "finetune"] for chain in chains)
    assert all("pretrained" not in chain[1]["inputs"] for chain in chains)


def test_rows_that_cannot_be_traced_say_why(tiny_full_run: Path, tmp_path: Path) -> None:
    table1 = paths.TABLE1.format(ext="csv")
    majority = provenance(tiny_full_run, table1, "majority")
    assert majority.returncode == 1 and "row 'majority' lists no evaluation runs" in majority.stderr
    unknown = provenance(tiny_full_run, table1, "nope")
    assert unknown.returncode == 1 and "no row 'nope'" in unknown.stderr
    # A table whose evaluation records are gone (another run's folder): the hash is named.
    elsewhere = provenance(tmp_path, str(tiny_full_run / table1), "citab", "--cohort", "ADNI")
    assert elsewhere.returncode == 1 and "has no record under results" in elsewhere.stderr
