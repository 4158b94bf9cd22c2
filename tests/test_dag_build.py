"""What every ``snakemake`` call pays before any job runs: imports and input functions.

Planning the DAG happens on every call (dry runs, each SLURM job's own Snakemake, each test here), so
it must not import the deep-learning and imaging libraries (torch alone is seconds), and an input
function called once per image must not reread a table that lists every image (that grows with the
square of the image count; ``benchmarks/dag_scale.py`` times the paper's size).
"""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from conftest import REPO, run_snakemake
from workflow import preprocess
from workflow.intake import IMAGE_COLUMNS

HEAVY_LIBRARIES = ("torch", "transformers", "ants", "deepbet", "surfa", "nibabel", "scipy", "sklearn", "matplotlib",
                   "nilearn", "safetensors")
IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*(\S+)\s*$", re.MULTILINE)


def test_planning_the_dag_imports_no_deep_learning_or_imaging_library(snakemake_workdir: Path) -> None:
    process = run_snakemake(snakemake_workdir, "-n", configfiles=(REPO / "config" / "demo.yaml",),
                            env={"PYTHONPROFILEIMPORTTIME": "1"})
    assert "This was a dry-run" in process.stdout
    imported = {name.split(".")[0] for name in IMPORTED.findall(process.stdout)}
    assert "snakemake" in imported and "workflow" in imported, "no import-time lines: the check would pass vacuously"
    assert not imported & set(HEAVY_LIBRARIES), sorted(imported & set(HEAVY_LIBRARIES))


def write_images(path: Path, rows: list[tuple[str, str, str]]) -> None:
    table = pd.DataFrame([{"cohort": "ADNI", "subject": s, "session": t, "source_id": "1", "visit_code": "bl",
                           "acq_date": "2010-01-01", "path": p} for s, t, p in rows], columns=IMAGE_COLUMNS)
    table.to_csv(path, sep="\t", index=False)


def test_native_t1_lookups_read_images_tsv_once_per_version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reads = []
    real_read = preprocess.read_images_table
    monkeypatch.setattr(preprocess, "read_images_table", lambda path: reads.append(path) or real_read(path))
    images = tmp_path / "images.tsv"
    rows = [(f"S{index:03d}", "M000", f"/data/S{index:03d}.nii.gz") for index in range(200)]
    write_images(images, rows)

    for subject, session, path in rows:
        assert preprocess.native_t1_path(images, subject, session) == path
    assert preprocess.image_keys(images) == [(s, t) for s, t, _ in rows]
    assert len(reads) == 1

    # intake rewrites the table: the next lookup sees the new version
    write_images(images, [("S000", "M000", "/elsewhere/S000.nii.gz")])
    assert preprocess.native_t1_path(images, "S000", "M000") == "/elsewhere/S000.nii.gz"
    with pytest.raises(ValueError, match=r"images.tsv: no image for subject 'S001' session 'M000'"):
        preprocess.native_t1_path(images, "S001", "M000")
    assert len(reads) == 2


def test_input_checks_are_cut_into_batches_in_intake_order(tmp_path: Path) -> None:
    images = tmp_path / "images.tsv"
    rows = [(f"S{index:03d}", "M000", f"/data/S{index:03d}.nii.gz") for index in range(120)]
    write_images(images, rows)
    batches = preprocess.check_batches(images, 50)
    assert list(batches) == ["0000", "0001", "0002"] and [len(keys) for keys in batches.values()] == [50, 50, 20]
    assert [key for keys in batches.values() for key in keys] == [(s, t) for s, t, _ in rows]
    # an image appended to the table joins the last batch; the others keep theirs
    write_images(images, rows + [("S120", "M000", "/data/S120.nii.gz")])
    grown = preprocess.check_batches(images, 50)
    assert grown["0000"] == batches["0000"] and grown["0001"] == batches["0001"]
    assert grown["0002"] == batches["0002"] + [("S120", "M000")]
