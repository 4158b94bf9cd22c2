"""Synthetic cohorts: what a real user holds after the usual conversion step, generated.

:func:`synthesize_cohort` writes one cohort root (``docs/interfaces.md`` section 1) so that the real
intake code is exercised: the native clinical tables (:mod:`workflow.synthetic_clinical`), a T1w
head volume per MRI session (:mod:`workflow.synthetic_mri`) laid out as BIDS (``adni``, ``aibl``)
or as the NACC images folder, and, under ``truth/``, the ground truth of every volume (pose, brain
mask, diagnosis) plus ``sessions.tsv`` and ``subjects.tsv`` for QC checks and tests.

Same seed -> byte-identical clinical files and identical volumes, whatever the number of worker
processes: every session draws from its own generator seeded by (seed, cohort, subject, session).
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from workflow import synthetic_clinical as clinical
from workflow.settings import SyntheticCohortSettings
from workflow.synthetic_mri import head_model, synthesize_volume

log = logging.getLogger(__name__)

DIAGNOSIS_NAMES = ("CN", "MCI", "DE")
BIDS_VERSION = "1.8.0"
TRUTH_DIR = "truth"
DONE_MARKER = ".complete"
SESSION_TRUTH_COLUMNS = ["subject", "session", "source_id", "acq_date", "kind", "diagnosis", "severity",
                         "nearest_visit_days", "image", "truth", "brain_mask"]


def synthesize_cohort(cohort: str, out_dir: Path, settings: SyntheticCohortSettings, threads: int = 1) -> None:
    """Write the synthetic cohort ``cohort`` in its native format (``settings.format``) under ``out_dir``.

    Args:
        cohort: the cohort's name in the config (seeds its generator, names it in the truth files).
        out_dir: the cohort root to create; must not exist or be empty (nothing is overwritten).
        settings: the cohort's settings (``workflow.settings.synthetic_cohort_settings``): its
            format (``adni``, ``aibl`` or ``nacc``: file layout and priors), size, seed and the rest.
        threads: worker processes for the volumes (1 = in this process).
    """
    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise FileExistsError(f"{out_dir} exists and is not empty; remove it to regenerate cohort {cohort}")
    started = time.perf_counter()
    fmt = settings.format
    planned = clinical.generate_clinical(cohort, settings)
    for path in clinical.write_clinical(planned, out_dir):
        log.info("wrote %s", path)
    baseline = np.bincount(planned.subjects["dx_baseline"], minlength=3)
    kinds = planned.mris["kind"].value_counts().to_dict()
    log.info("cohort %s (%s): %d subjects (baseline CN/MCI/DE %s), %d visits (%d unlabelled), %d MRI sessions %s",
             cohort, fmt, len(planned.subjects), "/".join(map(str, baseline)), len(planned.visits),
             int((~planned.visits["labelled"]).sum()), len(planned.mris), kinds)
    voxel_size = float(settings.voxel_size_mm)
    jobs = [_volume_job(cohort, fmt, planned, row, out_dir, settings.seed, voxel_size)
            for row in planned.mris.to_dict("records")]
    volumes_started = time.perf_counter()
    head_model(voxel_size)  # built once here; forked workers inherit it
    model_seconds = time.perf_counter() - volumes_started
    if threads > 1 and len(jobs) > 1:
        with ProcessPoolExecutor(max_workers=threads, mp_context=multiprocessing.get_context("fork")) as pool:
            seconds = list(pool.map(write_volume, jobs, chunksize=max(1, len(jobs) // (4 * threads))))
    else:
        seconds = [write_volume(job) for job in jobs]
    if seconds:
        log.info("volumes at %.1f mm: head model %.1f s, then %.2f s per volume (mean of %d; %d workers)",
                 voxel_size, model_seconds, float(np.mean(seconds)), len(seconds), max(1, threads))
    if fmt in ("adni", "aibl"):
        write_bids_metadata(out_dir / "bids", planned)
    write_truth_tables(out_dir / TRUTH_DIR, planned)
    summary = {"cohort": cohort, "format": fmt, "seed": int(settings.seed), "subjects": len(planned.subjects),
               "visits": len(planned.visits), "images": len(planned.mris), "voxel_size_mm": voxel_size}
    (out_dir / DONE_MARKER).write_text(json.dumps(summary, indent=1) + "\n")
    log.info("cohort %s done in %.1f s", cohort, time.perf_counter() - started)


def _volume_job(cohort: str, fmt: str, planned: clinical.ClinicalCohort, row: dict, out_dir: Path, seed: int,
                voxel_size: float) -> dict:
    subject_row = planned.subjects.set_index("subject").loc[row["subject"]]
    return {"cohort": cohort, "fmt": fmt, "seed": int(seed), "voxel_size": voxel_size, "out_dir": str(out_dir),
            "subject": row["subject"], "session": row["session"], "source_id": subject_row["source_id"],
            "acq_date": row["acq_date"], "kind": row["kind"], "diagnosis": DIAGNOSIS_NAMES[int(row["dx"])],
            "severity": float(row["severity"]), "image": row["image"]}


def truth_paths(subject: str, session: str) -> tuple[str, str]:
    """Truth JSON and brain mask of a session, relative to the cohort root."""
    stem = f"{TRUTH_DIR}/sub-{subject}_ses-{session}"
    return f"{stem}_truth.json", f"{stem}_brainmask.nii.gz"


def write_volume(job: dict) -> float:
    """Generate and write one session's T1w, brain mask and truth JSON; returns the seconds taken."""
    started = time.perf_counter()
    rng = clinical.cohort_rng(job["seed"], job["cohort"], "mri", job["subject"], job["session"])
    volume = synthesize_volume(job["voxel_size"], job["severity"], rng, flip_x=job["fmt"] == "nacc")
    root = Path(job["out_dir"])
    image = root / job["image"]
    image.parent.mkdir(parents=True, exist_ok=True)
    nib.save(volume.image, image)
    truth_json, mask_path = truth_paths(job["subject"], job["session"])
    (root / TRUTH_DIR).mkdir(exist_ok=True)
    nib.save(volume.brain_mask, root / mask_path)
    truth = {"cohort": job["cohort"], "subject": job["subject"], "session": job["session"],
             "source_id": job["source_id"], "acq_date": job["acq_date"], "kind": job["kind"],
             "diagnosis": job["diagnosis"], "image": job["image"], "brain_mask": mask_path, **volume.truth}
    (root / truth_json).write_text(json.dumps(truth, indent=1) + "\n")
    return time.perf_counter() - started


def _acq_time(subject: str, session: str, acq_date: str) -> str:
    """A scan time of day (08:00-17:59) fixed by subject and session, for scans.tsv."""
    minutes = clinical.stable_hash(f"{subject}/{session}") % 600
    return f"{acq_date}T{8 + minutes // 60:02d}:{minutes % 60:02d}:00"


def write_bids_metadata(bids: Path, planned: clinical.ClinicalCohort) -> None:
    """dataset_description.json, participants.tsv and one scans.tsv per session."""
    bids.mkdir(parents=True, exist_ok=True)
    description = {"Name": f"Synthetic {planned.cohort} ({planned.fmt} layout)", "BIDSVersion": BIDS_VERSION,
                   "DatasetType": "raw", "GeneratedBy": [{"Name": "citab-pipeline synthesize_cohort"}]}
    (bids / "dataset_description.json").write_text(json.dumps(description, indent=1) + "\n")
    subjects = planned.subjects
    participants = pd.DataFrame({
        "participant_id": "sub-" + subjects["subject"],
        "alternative_id_1": subjects["source_id"],
        "sex": np.where(subjects["male"], "M", "F"),
    }).sort_values("participant_id")
    participants.to_csv(bids / "participants.tsv", sep="\t", index=False, lineterminator="\n")
    for row in planned.mris.to_dict("records"):
        subject, session = row["subject"], row["session"]
        scans = pd.DataFrame({"filename": [f"anat/sub-{subject}_ses-{session}_T1w.nii.gz"],
                              "acq_time": [_acq_time(subject, session, row["acq_date"])]})
        path = bids / f"sub-{subject}" / f"ses-{session}" / f"sub-{subject}_ses-{session}_scans.tsv"
        path.parent.mkdir(parents=True, exist_ok=True)
        scans.to_csv(path, sep="\t", index=False, lineterminator="\n")


def write_truth_tables(truth: Path, planned: clinical.ClinicalCohort) -> None:
    """``truth/sessions.tsv`` (one row per MRI session) and ``truth/subjects.tsv`` (disease course)."""
    truth.mkdir(parents=True, exist_ok=True)
    mris = planned.mris
    source = planned.subjects.set_index("subject")["source_id"]
    paths = [truth_paths(s, t) for s, t in zip(mris["subject"], mris["session"])]
    sessions = pd.DataFrame({
        "subject": mris["subject"], "session": mris["session"], "source_id": mris["subject"].map(source),
        "acq_date": mris["acq_date"], "kind": mris["kind"],
        "diagnosis": [DIAGNOSIS_NAMES[int(d)] for d in mris["dx"]], "severity": mris["severity"].round(6),
        "nearest_visit_days": mris["nearest_visit_days"], "image": mris["image"],
        "truth": [p[0] for p in paths], "brain_mask": [p[1] for p in paths],
    }, columns=SESSION_TRUTH_COLUMNS)
    sessions.to_csv(truth / "sessions.tsv", sep="\t", index=False, lineterminator="\n")
    subjects = planned.subjects
    table = pd.DataFrame({
        "subject": subjects["subject"], "source_id": subjects["source_id"],
        "diagnosis_baseline": [DIAGNOSIS_NAMES[int(d)] for d in subjects["dx_baseline"]],
        "latent_severity": subjects["latent"].round(6), "baseline_date": subjects["baseline_date"],
        "mci_after_days": [_days_or_empty(d) for d in subjects["mci_after_days"]],
        "de_after_days": [_days_or_empty(d) for d in subjects["de_after_days"]],
    })
    table.to_csv(truth / "subjects.tsv", sep="\t", index=False, lineterminator="\n")


def _days_or_empty(days: float) -> str:
    return "" if not np.isfinite(days) else str(int(round(days)))
