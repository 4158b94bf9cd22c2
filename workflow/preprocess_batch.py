"""The per-image preprocessing steps run over a batch of images: one process does one step for
several images (what rules preprocess_n4, preprocess_register, preprocess_skullstrip and
preprocess_model_ready run, through :mod:`workflow.preprocess_job`).

Why batches: at the demo's 2 mm grid a step's own work takes 0.1-5 s per image, and a job per
image and step paid an interpreter start with its imports (0.8-3 CPU-s) and about a CPU-second of
Snakemake's own scheduling and benchmark sampling each (``benchmarks/demo_time.py``).

A step's batch folder (``paths.PREPROCESS_BATCH``: ``results/preprocess/{cohort}/{step}/batch-{batch}``)
holds the step's files of each image, named as Clinica's CAPS names them
(``sub-<subject>_ses-<session>_...``, :func:`workflow.preprocess.image_file_names`), and
``outcomes.tsv``: one row per image of the batch with ``status`` ``done`` or ``failed``, the reason
of a failure and the path of each file the step wrote. An image whose step raises is recorded as
failed and the batch goes on; later steps carry it as failed with the first reason, and the
cohort's QC table excludes it with that reason. A batch in which every image that reached the step
fails stops the run: that is a broken setting or input, not a bad image.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

OUTCOMES_NAME = "outcomes.tsv"
OUTCOME_COLUMNS = ["subject", "session", "status", "reason"]
DONE, FAILED = "done", "failed"
# The files each step writes per image (keys of workflow.preprocess.image_file_names).
STEP_FILES = {
    "n4": ("n4", "bias"),
    "registration": ("affine", "crop"),
    "skullstrip": ("mask", "brain"),
    "model_ready": ("volume", "volume_sidecar", "qc", "mosaic"),
}


@dataclass(frozen=True)
class Outcome:
    """One image's result of one step: ``status`` done or failed, why, and the files it wrote
    (kind -> path; empty when it failed)."""

    subject: str
    session: str
    status: str
    reason: str = ""
    files: dict[str, str] = field(default_factory=dict)


def read_outcomes(folder: str | Path) -> list[Outcome]:
    """The outcomes of a step's batch folder, in the batch's order."""
    path = Path(folder) / OUTCOMES_NAME
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no outcomes table (was the batch folder written by a preprocessing step?)")
    with open(path, newline="") as stream:
        rows = list(csv.DictReader(stream, delimiter="\t"))
    missing = [c for c in OUTCOME_COLUMNS if rows and c not in rows[0]]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}")
    return [Outcome(row["subject"], row["session"], row["status"], row["reason"],
                    {kind: value for kind, value in row.items() if kind not in OUTCOME_COLUMNS and value})
            for row in rows]


def write_outcomes(folder: str | Path, step: str, outcomes: Sequence[Outcome]) -> None:
    kinds = list(STEP_FILES[step])
    with open(Path(folder) / OUTCOMES_NAME, "w", newline="") as stream:
        writer = csv.writer(stream, delimiter="\t", lineterminator="\n")
        writer.writerow(OUTCOME_COLUMNS + kinds)
        for outcome in outcomes:
            writer.writerow([outcome.subject, outcome.session, outcome.status, outcome.reason,
                             *(outcome.files.get(kind, "") for kind in kinds)])


def run_step(
    step: str, images: Sequence[Outcome], folder: str | Path, file_names: dict[str, str],
    process: Callable[[Outcome, dict[str, str]], None],
) -> list[Outcome]:
    """Run one step over a batch and write its folder's ``outcomes.tsv``.

    Args:
        step: one of ``STEP_FILES``.
        images: the batch's images in order: the previous step's outcomes (or, for the first step,
            done outcomes whose ``files`` hold the native T1 as ``t1``). Failed ones are carried.
        folder: the step's batch folder (created).
        file_names: kind -> file name pattern with ``{subject}`` and ``{session}``.
        process: called with an image's previous outcome and its output paths (kind -> path).

    Returns the outcomes written. Raises ``RuntimeError`` when every image that reached the step failed.
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    outcomes, reached, errors = [], 0, []
    for image in images:
        if image.status != DONE:
            outcomes.append(Outcome(image.subject, image.session, FAILED, image.reason))
            continue
        reached += 1
        outputs = {kind: str(folder / file_names[kind].format(subject=image.subject, session=image.session))
                   for kind in STEP_FILES[step]}
        start = time.perf_counter()
        try:
            process(image, outputs)
        except Exception as error:  # noqa: BLE001 -- one image's failure is its outcome; the batch goes on
            log.exception("%s of subject %s session %s failed", step, image.subject, image.session)
            reason = f"{step} failed: {type(error).__name__}: {error}".replace("\t", " ").replace("\n", " ")
            outcomes.append(Outcome(image.subject, image.session, FAILED, reason))
            errors.append(reason)
            continue
        log.info("%s of subject %s session %s: %.1f s", step, image.subject, image.session,
                 time.perf_counter() - start)
        outcomes.append(Outcome(image.subject, image.session, DONE, "", outputs))
    write_outcomes(folder, step, outcomes)
    if reached and len(errors) == reached:
        raise RuntimeError(f"{step}: every one of the {reached} images of {folder} failed; the first: {errors[0]}")
    return outcomes
