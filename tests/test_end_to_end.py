"""The whole DAG on the tiny config: synthetic natives -> intake -> preprocessing -> tables ->
header bank -> pretraining -> fine-tuning -> evaluation -> Table 1, through the real Snakemake CLI."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest
import yaml
from conftest import REPO, TINY_CONFIG, markdown_lines, run_snakemake

from workflow import paths

VENV_PATH = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}


@pytest.mark.slow
def test_tiny_dag_runs_from_synthetic_natives_to_table1(tiny_full_run: Path) -> None:
    """The session's tiny run (tests/conftest.py: tiny_full_run) went from natives to Table 1.

    Its wall time is printed by the fixture, not asserted: speed goals live in benchmarks/.
    """
    config = yaml.safe_load(TINY_CONFIG.read_text())
    cohorts = list(config["cohorts"])
    markdown = markdown_lines((tiny_full_run / paths.TABLE1.format(ext="md")).read_text())
    assert markdown[0].startswith("| Method | " + f"{cohorts[0]} Acc")
    # the rows in report.variants order (a supervised baseline, then CITab), then the majority row
    assert [line.split(" |")[0] for line in markdown[2:5]] == ["| DAFT", "| CITab", "| Majority class"]
    for ext in ("csv", "tex"):
        assert (tiny_full_run / paths.TABLE1.format(ext=ext)).stat().st_size > 0
    for variant in config["report"]["variants"]:
        for cohort in cohorts:
            metrics_path = tiny_full_run / paths.EVAL_METRICS.format(variant=variant, cohort=cohort, seed=2022)
            metrics = json.loads(metrics_path.read_text())
            assert metrics["n"] > 0 and 0.0 <= metrics["accuracy"] <= 1.0
            assert metrics["selection"] == ("auc" if variant == "daft" else "acc_auc_f1")
    # The baseline trained from scratch: no pretraining of its own; CITab's once across cohorts.
    assert not (tiny_full_run / paths.PRETRAIN_DIR.format(variant="daft")).exists()
    # Table 1 beside the paper's: all ten paper rows, the eight the tiny run leaves out saying so in each cell.
    compared = markdown_lines((tiny_full_run / paths.TABLE1_VS_PAPER.format(ext="md")).read_text())
    assert len([line for line in compared if line.startswith("| ")]) == 1 + 10 + 1  # header, paper rows, majority
    assert sum(line.count("not run") for line in compared) == 8 * len(cohorts) * 3
    assert any(line.startswith("| DAFT | ") and "not run" not in line for line in compared)
    # A second run has nothing left to do.
    again = run_snakemake(tiny_full_run, "--cores", "2", "-n", env=VENV_PATH)
    assert "Nothing to be done" in again.stdout


def canonical_voxels(path: Path):
    """Voxels of a NIfTI in RAS+ voxel order, rounded: Clinica rescales int16 with a slope, and
    dcm2niix and Clinica reorder axes, so images are compared by world position, not raw arrays."""
    import nibabel as nib
    import numpy as np

    image = nib.as_closest_canonical(nib.load(path))
    return np.rint(image.get_fdata()), np.abs(np.diag(image.affine)[:3])


@pytest.mark.slow
@pytest.mark.parametrize("cohort", ["ADNI", "AIBL", "NACC"])
def test_raw_path_gives_the_images_and_labels_of_the_synthetic_natives(tiny_full_run: Path, cohort: str) -> None:
    """The tiny run reads each cohort the way a user with a real download does: the synthetic
    cohort written as LONI DICOM folders / NACC DICOM zips, converted by the real Clinica
    (adni-to-bids, aibl-to-bids) and dcm2niix. Intake of that conversion must give the same images
    (same subjects and scan dates, same voxels) and the same visits and labels as intake of the
    synthetic natives the download was made from."""
    import numpy as np
    import pandas as pd

    from workflow.intake import read_cohort

    config = yaml.safe_load(TINY_CONFIG.read_text())["cohorts"][cohort]
    assert config["source"] == "synthetic_raw"
    fmt = config["format"]
    natives = tiny_full_run / paths.SYNTHETIC_ROOT.format(cohort=cohort)
    native = read_cohort(natives / "clinical", natives / ("images" if fmt == "nacc" else "bids"), cohort,
                         REPO / "config" / "columns.yaml", fmt)
    raw_images = pd.read_csv(tiny_full_run / paths.INTAKE_IMAGES.format(cohort=cohort), sep="\t", dtype=str,
                             keep_default_na=False)
    raw_visits = pd.read_csv(tiny_full_run / paths.INTAKE_VISITS.format(cohort=cohort), sep="\t", dtype=str,
                             keep_default_na=False)
    # Clinica and dcm2niix really ran: their outputs are what intake read.
    converted = paths.CONVERTED_NIFTI if fmt == "nacc" else paths.CONVERTED_BIDS
    assert all(path.startswith(converted.format(cohort=cohort)) for path in raw_images["path"])
    if fmt != "nacc":
        assert "Clinica" in (tiny_full_run / f"results/logs/convert_clinica/{cohort}.log").read_text()

    # Same images: one per (subject, scan date), nothing lost in conversion (the tiny cohorts have
    # no scan that Clinica drops), and the same voxels on the same grid.
    by_date = native.images.set_index(["subject", "acq_date"])["path"]
    raw_by_date = raw_images.set_index(["subject", "acq_date"])["path"]
    assert sorted(raw_by_date.index) == sorted(by_date.index)
    for key, raw_path in raw_by_date.items():
        raw_voxels, raw_spacing = canonical_voxels(tiny_full_run / raw_path)
        native_voxels, native_spacing = canonical_voxels(Path(by_date[key]))
        assert raw_voxels.shape == native_voxels.shape, key
        np.testing.assert_allclose(raw_spacing, native_spacing, atol=1e-4)
        np.testing.assert_array_equal(raw_voxels, native_voxels, err_msg=str(key))

    # Same visits and labels: the clinical tables the converters needed sit beside the originals
    # and must not change what intake reads.
    key = ["subject", "visit_code"]
    native_visits = native.visits.set_index(key).sort_index()
    raw_visits = raw_visits.set_index(key).sort_index()
    assert list(raw_visits.index) == list(native_visits.index)
    assert list(raw_visits["label"]) == list(native_visits["label"].astype(str))
    assert list(raw_visits["visit_date"]) == list(native_visits["visit_date"].astype(str))
    for column in native_visits.columns[list(native_visits.columns).index("source_row") + 1:]:
        np.testing.assert_allclose(pd.to_numeric(raw_visits[column]).to_numpy(float),
                                   pd.to_numeric(native_visits[column]).to_numpy(float), equal_nan=True,
                                   err_msg=column)
