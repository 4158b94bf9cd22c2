"""Rerun only what changed: after the shared tiny run, one change at a time, a dry run must plan
exactly the jobs that depend on it.

Each test changes one thing (a config overlay, an input image, a stage's module, or only comments
and docstrings), asks Snakemake for a dry run (`-n`) and reads the planned jobs (rule and
wildcards) from its output. Files that a test changes are restored byte for byte with their
mtimes, so the shared run stays up to date. Edits of a user's cohort folders: test_fingerprints.py.
Budget: about 10 s per dry run after the shared run.
"""

from __future__ import annotations

import contextlib
import gzip
import json
import os
import re
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import yaml

from conftest import REPO, TINY_CONFIG, run_snakemake, tiny_config_with

from workflow import paths
from workflow.preprocess import ACCEPTED, CHECK_BATCH, batches_of, read_accepted

pytestmark = pytest.mark.slow

JOB_HEADER = re.compile(r"^(?:local)?(?:rule|checkpoint) (\w+):$")
WILDCARDS = re.compile(r"^\s+wildcards: (.*)$")
# Rules whose jobs follow a change of the pretrained encoders, in DAG order.
TRAINING_AND_AFTER = {"pretrain", "finetune", "evaluate", "results_table", "export_bundle"}
# The rules that run per batch of images (the input check, then the four steps of each image).
PER_IMAGE_RULES = {"preprocess_check", "preprocess_n4", "preprocess_register", "preprocess_skullstrip",
                   "preprocess_model_ready"}


def planned_jobs(workdir: Path, *args: str, configfiles: tuple[Path, ...] = (TINY_CONFIG,)) -> list[tuple[str, dict]]:
    """Jobs a dry run plans: ``[(rule, {wildcard: value})]``, the ``all`` target left out."""
    process = run_snakemake(workdir, "-n", *args, configfiles=configfiles)
    jobs: list[tuple[str, dict]] = []
    for line in process.stdout.splitlines():
        header = JOB_HEADER.match(line)
        if header:
            jobs.append((header[1], {}))
            continue
        wildcards = WILDCARDS.match(line)
        if wildcards and jobs:
            jobs[-1] = (jobs[-1][0], dict(item.split("=", 1) for item in wildcards[1].split(", ")))
    return [(rule, wildcards) for rule, wildcards in jobs if rule != "all"]


def rules_of(jobs: list[tuple[str, dict]]) -> Counter:
    return Counter(rule for rule, _ in jobs)


def jobs_in_run(workdir: Path, rule: str) -> int:
    """How many jobs of ``rule`` the full run made (its benchmark files)."""
    return len(list((workdir / "results" / "benchmarks" / rule).rglob("*.tsv")))


@contextlib.contextmanager
def changed_file(path: Path, new_content: bytes) -> Iterator[None]:
    """Give ``path`` new content for the duration; then restore its bytes and mtime exactly."""
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(new_content)
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_the_full_run_is_up_to_date(tiny_full_run: Path) -> None:
    assert planned_jobs(tiny_full_run) == []


def test_finetune_hyperparameter_reruns_finetune_evaluate_and_table(tiny_full_run: Path, tmp_path: Path) -> None:
    config = yaml.safe_load(TINY_CONFIG.read_text())
    new_lr = float(config["finetune"]["lr"]) * 2
    jobs = planned_jobs(tiny_full_run, configfiles=(tiny_config_with({"finetune": {"lr": new_lr}}, tmp_path),))
    assert rules_of(jobs) == Counter({
        "finetune_settings": jobs_in_run(tiny_full_run, "finetune"),  # each job's settings file, rewritten
        "finetune": jobs_in_run(tiny_full_run, "finetune"),
        "evaluate": jobs_in_run(tiny_full_run, "evaluate"),
        "results_table": 1,
        "export_bundle": jobs_in_run(tiny_full_run, "export_bundle"),
    })


def test_a_baselines_own_setting_reruns_only_that_baseline(tiny_full_run: Path, tmp_path: Path) -> None:
    changed = tiny_config_with({"finetune": {"variant_settings": {"daft": {"epochs": 3}}}}, tmp_path)
    jobs = planned_jobs(tiny_full_run, configfiles=(changed,))
    cohorts = list(yaml.safe_load(TINY_CONFIG.read_text())["cohorts"])
    assert rules_of(jobs) == Counter({"finetune_settings": len(cohorts), "finetune": len(cohorts),
                                      "evaluate": len(cohorts), "export_bundle": len(cohorts), "results_table": 1})
    assert {wildcards["variant"] for rule, wildcards in jobs if rule != "results_table"} == {"daft"}


def test_a_skull_strip_setting_reruns_that_step_and_after_but_not_n4_or_registration(tiny_full_run: Path,
                                                                                      tmp_path: Path) -> None:
    """The per-image steps read their settings from one file per step: a changed skull-strip setting
    rewrites only skullstrip.json, and only skull stripping and what follows it are planned."""
    overlay = tiny_config_with({"preprocess": {"skullstrip": {"border_mm": 2.0}}}, tmp_path)
    jobs = planned_jobs(tiny_full_run, configfiles=(overlay,))
    counts = rules_of(jobs)
    assert [wildcards for rule, wildcards in jobs if rule == "preprocess_step_settings"] == [{"step": "skullstrip"}]
    assert counts["preprocess_skullstrip"] == counts["preprocess_model_ready"] == jobs_in_run(tiny_full_run,
                                                                                               "preprocess_skullstrip")
    assert not {"preprocess_n4", "preprocess_register", "preprocess_check", "intake_cohort"} & set(counts)


def test_header_text_reruns_header_bank_and_after_but_no_preprocessing(tiny_full_run: Path, tmp_path: Path) -> None:
    columns = yaml.safe_load((REPO / "config" / "columns.yaml").read_text())
    cohort = next(iter(columns["cohorts"]))
    first_column = columns["cohorts"][cohort]["columns"][0]
    first_column["header"] = first_column["header"] + " (reworded)"
    edited = tmp_path / "columns.yaml"
    edited.write_text(yaml.safe_dump(columns, sort_keys=False))
    jobs = planned_jobs(tiny_full_run, configfiles=(tiny_config_with({"tables": {"columns": str(edited)}}, tmp_path),))
    planned = set(rules_of(jobs))
    assert "embed_headers" in planned and TRAINING_AND_AFTER <= planned, planned
    # No image is preprocessed again. The column file is also an input of intake (column sources)
    # and of the tables, so the cohort-level table steps may rerun; nothing else may.
    assert not [job for job in jobs if job[0] in PER_IMAGE_RULES], jobs
    cohort_tables = {"intake_cohort", "preprocess_accepted", "preprocess_cohort_qc", "build_table"}
    assert planned <= {"embed_headers"} | TRAINING_AND_AFTER | cohort_tables, planned


def test_one_input_image_reruns_only_its_batchs_preprocessing(tiny_full_run: Path) -> None:
    # The images intake listed (the tiny cohorts' converted T1s: Clinica's BIDS, dcm2niix's NIfTI).
    cohort = next(iter(yaml.safe_load(TINY_CONFIG.read_text())["cohorts"]))
    listed = (tiny_full_run / paths.INTAKE_IMAGES.format(cohort=cohort)).read_text().splitlines()
    header, first = listed[0].split("\t"), dict(zip(listed[0].split("\t"), listed[1].split("\t")))
    assert len(listed) > 2 and "path" in header, "the tiny run has fewer than two images"
    image = tiny_full_run / first["path"]
    loaded = nib.load(image)
    brighter = nib.Nifti1Image(np.asanyarray(loaded.dataobj) * 1.01, loaded.affine, loaded.header)
    # gzip with a fixed mtime: the only difference is the voxel values
    new_content = gzip.compress(brighter.to_bytes(), mtime=0)
    with changed_file(image, new_content):
        jobs = planned_jobs(tiny_full_run)
    # the image's input-check batch and its preprocessing batch, each step once, and no other batch
    config = yaml.safe_load(TINY_CONFIG.read_text())["preprocess"]
    accepted = read_accepted(tiny_full_run / ACCEPTED.format(cohort=cohort))
    batches = batches_of(accepted, config["images_per_job"])
    assert len(batches) > 1, "the tiny cohort has one preprocessing batch: nothing would show the scope"
    batch = next(label for label, keys in batches.items() if (first["subject"], first["session"]) in keys)
    check_batch = next(path.stem.removeprefix("batch-") for path in sorted(
        tiny_full_run.glob(CHECK_BATCH.format(cohort=cohort, batch="*")))
        if {(first["subject"], first["session"])} <= {(v["subject"], v["session"]) for v in json.loads(path.read_text())})
    per_image = sorted((rule, wildcards["cohort"], wildcards["batch"]) for rule, wildcards in jobs
                       if rule in PER_IMAGE_RULES)
    assert per_image == sorted([("preprocess_check", cohort, check_batch)] + [
        (rule, cohort, batch) for rule in PER_IMAGE_RULES - {"preprocess_check"}]), per_image
    assert TRAINING_AND_AFTER <= set(rules_of(jobs))


def test_stage_code_change_reruns_that_stage_and_after(tiny_full_run: Path) -> None:
    module = REPO / "workflow" / "headers.py"
    # A new module-level name: a code change (the `code` param hashes the module's AST) that cannot
    # change behaviour for anyone else importing the module during the few seconds of the dry run.
    with changed_file(module, module.read_bytes() + b"\n_RERUN_SCOPE_TEST = 1\n"):
        jobs = planned_jobs(tiny_full_run)
    assert set(rules_of(jobs)) == {"embed_headers"} | TRAINING_AND_AFTER


def test_comment_and_docstring_edits_rerun_nothing(tiny_full_run: Path) -> None:
    # workflow/tables.py is code of build_table; workflow/paths.py of nearly every rule.
    tables, paths = REPO / "workflow" / "tables.py", REPO / "workflow" / "paths.py"
    text = paths.read_text()
    docstring_end = text.index('"""', 3)
    reworded = text[:docstring_end] + "Reworded for the rerun-scope test.\n" + text[docstring_end:]
    with changed_file(tables, tables.read_bytes() + b"\n# rerun-scope test: a comment\n"), \
            changed_file(paths, reworded.encode()):
        assert planned_jobs(tiny_full_run) == []
