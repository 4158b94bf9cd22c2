"""Time and memory of building the DAG at the paper's size (about 6,700 T1 volumes), as a dry run.

Nothing is preprocessed: the script writes a working directory that looks like a run whose intake
has finished on ``--images`` images (split over the three cohorts as in the paper's data), with empty
files standing in for the native T1s, and times ``snakemake -n`` in two states:

* ``intake done``: Snakemake plans the input checks (one job per batch of
  ``preprocess.check.images_per_job`` images; the per-image chain waits behind the
  ``preprocess_accepted`` checkpoint);
* ``input check done``: every image passed the check, so Snakemake plans the whole per-image chain
  (N4, registration, skull strip, model-ready volume with QC; one job per step and batch of
  ``preprocess.images_per_job`` images) and everything after it.

For each it prints the wall time, the peak memory of the Snakemake process, and the number of jobs
planned, with and without ``--quiet`` (which leaves out the per-job listing of a dry run). (On
SLURM, profiles/slurm groups each batch's chain into one submission; tests/test_slurm.py checks that
on a real SLURM.)

    .venv/bin/python benchmarks/dag_scale.py                       # 6,700 images
    .venv/bin/python benchmarks/dag_scale.py --images 600 --workdir /tmp/dag
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from workflow import paths  # noqa: E402 (after the path set-up)
from workflow.intake import IMAGE_COLUMNS, VISIT_KEY_COLUMNS  # noqa: E402
from workflow.preprocess import ACCEPTED, CHECK_BATCH, check_batches  # noqa: E402

# Share of the images per cohort: roughly the paper's cohorts (ADNI and NACC large, AIBL small).
COHORT_SHARES = {"ADNI": 0.40, "AIBL": 0.17, "NACC": 0.43}
INTAKE_TABLES = [paths.INTAKE_IMAGES, paths.INTAKE_VISITS, paths.INTAKE_EXCLUSIONS, paths.INTAKE_CELL_QC]
# The schema's default (preprocess.check.images_per_job), which the overlay leaves as it is.
IMAGES_PER_CHECK_JOB = yaml.safe_load((REPO / "workflow/schemas/preprocess.schema.yaml").read_text())[
    "properties"]["check"]["properties"]["images_per_job"]["default"]
PLANNED = re.compile(r"^total\s+(\d+)\s*$", re.MULTILINE)


def cohort_sizes(images: int) -> dict[str, int]:
    """Images per cohort, summing to ``images``."""
    sizes = {cohort: int(images * share) for cohort, share in COHORT_SHARES.items()}
    sizes["ADNI"] += images - sum(sizes.values())
    return sizes


def write_intake_state(workdir: Path, images: int, voxel_size_mm: float) -> Path:
    """Write cohorts whose intake has run (``images.tsv`` of every image, empty T1 files); return the
    config overlay that points the pipeline at them."""
    cohorts = {}
    for cohort, count in cohort_sizes(images).items():
        fmt = cohort.lower()
        root = workdir / "data" / cohort
        (root / "clinical").mkdir(parents=True, exist_ok=True)
        image_dir = root / ("images" if fmt == "nacc" else "bids")
        image_dir.mkdir(parents=True, exist_ok=True)
        rows = []
        for index in range(count):
            subject, session = f"{cohort}{index:05d}", "M000"
            t1 = image_dir / f"sub-{subject}_ses-{session}_T1w.nii.gz"
            t1.touch()
            rows.append({"cohort": cohort, "subject": subject, "session": session, "source_id": str(index),
                         "visit_code": "bl", "acq_date": "2010-01-01", "path": str(t1)})
        for pattern in INTAKE_TABLES:
            Path(pattern.format(cohort=cohort)).parent.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(rows, columns=IMAGE_COLUMNS).to_csv(paths.INTAKE_IMAGES.format(cohort=cohort), sep="\t", index=False)
        pd.DataFrame(columns=VISIT_KEY_COLUMNS).to_csv(paths.INTAKE_VISITS.format(cohort=cohort), sep="\t", index=False)
        for pattern in (paths.INTAKE_EXCLUSIONS, paths.INTAKE_CELL_QC):
            Path(pattern.format(cohort=cohort)).write_text("subject\treason\n")
        cohorts[cohort] = {"source": "real", "format": fmt, "root": str(root)}
    overlay = workdir / "scale.yaml"
    overlay.write_text(yaml.safe_dump({
        "cohorts": cohorts, "headers": {"encoder": "minilm"},
        "preprocess": {"voxel_size_mm": voxel_size_mm}}))
    return overlay


def write_check_state(workdir: Path, images_per_job: int) -> None:
    """Every image passed the input check: each batch's verdicts and each cohort's ``accepted.tsv`` exist."""
    for cohort in COHORT_SHARES:
        images_tsv = paths.INTAKE_IMAGES.format(cohort=cohort)
        for batch, keys in check_batches(images_tsv, images_per_job).items():
            verdicts = Path(CHECK_BATCH.format(cohort=cohort, batch=batch))
            verdicts.parent.mkdir(parents=True, exist_ok=True)
            verdicts.write_text(json.dumps([{"subject": s, "session": t, "passed": True} for s, t in keys]) + "\n")
        table = pd.read_csv(images_tsv, sep="\t", dtype=str)
        table[["subject", "session"]].to_csv(ACCEPTED.format(cohort=cohort), sep="\t", index=False)


# Runs one command and prints its peak RSS (KiB), so that each dry run's peak is its own.
PEAK_RSS = ("import resource, subprocess, sys; status = subprocess.run(sys.argv[1:]).returncode; "
            "print('peak_rss_kib', resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr); "
            "sys.exit(status)")


def dry_run(workdir: Path, overlay: Path, extra: list[str]) -> tuple[float, float, int]:
    """Run ``snakemake -n`` in ``workdir``: (wall seconds, peak RSS MiB, jobs planned)."""
    command = [sys.executable, "-c", PEAK_RSS, sys.executable, "-m", "snakemake", "-n", "--cores", "2",
               "-s", str(REPO / "Snakefile"), "-d", str(workdir), "--configfile", str(overlay), *extra]
    started = time.perf_counter()
    result = subprocess.run(command, capture_output=True, text=True, cwd=workdir)
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"snakemake -n failed ({result.returncode}):\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak_kib = int(re.findall(r"peak_rss_kib (\d+)", result.stderr)[-1])
    planned = PLANNED.findall(result.stdout)
    return wall, peak_kib / 1024, int(planned[-1]) if planned else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=6700, help="images in all (default 6700)")
    parser.add_argument("--voxel-size-mm", type=float, default=1.0, help="working grid (default 1.0)")
    parser.add_argument("--workdir", type=Path, help="where to write the fake run (default: a temporary folder)")
    args = parser.parse_args()

    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="citab-dag-"))
    workdir.mkdir(parents=True, exist_ok=True)
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    print(f"{time.strftime('%Y-%m-%d')}  {platform.node()}  nproc={len(os.sched_getaffinity(0))}  {cpu}")
    print(f"images: {args.images} ({cohort_sizes(args.images)}), {args.voxel_size_mm:g} mm grid, workdir {workdir}")

    os.chdir(workdir)
    overlay = write_intake_state(workdir, args.images, args.voxel_size_mm)
    for state in ("intake done", "input check done"):
        if state == "input check done":
            write_check_state(workdir, IMAGES_PER_CHECK_JOB)
        wall, peak, jobs = dry_run(workdir, overlay, [])
        print(f"{state + ':':18} snakemake -n          {wall:6.1f} s, peak {peak:6.0f} MiB, {jobs} jobs planned")
        wall, peak, _ = dry_run(workdir, overlay, ["--quiet"])  # --quiet prints no job count
        print(f"{state + ':':18} snakemake -n --quiet  {wall:6.1f} s, peak {peak:6.0f} MiB")
    if args.workdir is None:
        shutil.rmtree(workdir)


if __name__ == "__main__":
    main()
