"""A per-image step over a batch (workflow/preprocess_batch.py): a failing image is recorded with its
reason and the batch goes on, later steps carry it, the cohort's QC excludes it with that reason,
and a batch where every image fails stops the run. The steps here are plain Python; the real ones
run in test_preprocess_workflow.py and the tiny DAG."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
from conftest import QC_THRESHOLDS

from workflow import preprocess as pp
from workflow import preprocess_qc as qc
from workflow.preprocess_batch import DONE, FAILED, Outcome, read_outcomes, run_step, write_outcomes

NAMES = pp.image_file_names(2.0)


def native_images(tmp_path: Path, subjects: list[str]) -> list[Outcome]:
    images = []
    for subject in subjects:
        t1 = tmp_path / f"{subject}.nii.gz"
        t1.write_text(subject)
        images.append(Outcome(subject, "M000", DONE, files={"t1": str(t1)}))
    return images


def fake_n4(image: Outcome, out: dict[str, str]) -> None:
    if image.subject == "BROKEN":
        raise ValueError("N4 diverged")
    for kind in ("n4", "bias"):
        Path(out[kind]).write_text(kind)


def test_a_failing_image_is_recorded_and_the_batch_goes_on(tmp_path: Path) -> None:
    folder = tmp_path / "n4" / "batch-0000"
    written = run_step("n4", native_images(tmp_path, ["S1", "BROKEN", "S2"]), folder, NAMES, fake_n4)
    assert [(o.subject, o.status) for o in written] == [("S1", DONE), ("BROKEN", FAILED), ("S2", DONE)]
    assert read_outcomes(folder) == written
    broken = written[1]
    assert broken.reason == "n4 failed: ValueError: N4 diverged" and broken.files == {}
    for outcome in (written[0], written[2]):
        assert set(outcome.files) == {"n4", "bias"}
        assert Path(outcome.files["n4"]).name == NAMES["n4"].format(subject=outcome.subject, session="M000")
        assert Path(outcome.files["n4"]).parent == folder and Path(outcome.files["bias"]).is_file()

    # the next step sees the failure as carried, with the first reason, and never runs it
    seen = []

    def register(image: Outcome, out: dict[str, str]) -> None:
        seen.append(image.subject)
        for kind in ("affine", "crop"):
            Path(out[kind]).write_text(Path(image.files["n4"]).read_text())

    registered = run_step("registration", read_outcomes(folder), tmp_path / "registration" / "batch-0000", NAMES,
                          register)
    assert seen == ["S1", "S2"]
    assert registered[1] == Outcome("BROKEN", "M000", FAILED, "n4 failed: ValueError: N4 diverged")


def test_a_batch_where_every_image_fails_stops_the_run(tmp_path: Path) -> None:
    def broken(image: Outcome, out: dict[str, str]) -> None:
        raise FileNotFoundError("template missing")

    with pytest.raises(RuntimeError, match="every one of the 2 images .* template missing"):
        run_step("registration", native_images(tmp_path, ["S1", "S2"]), tmp_path / "out", NAMES, broken)
    # the outcomes are still written, so the log and the folder say which image failed how
    assert [o.status for o in read_outcomes(tmp_path / "out")] == [FAILED, FAILED]


def test_cohort_qc_excludes_an_image_a_step_failed_with_that_steps_reason(tmp_path: Path) -> None:
    images_tsv, verdicts = tmp_path / "images.tsv", tmp_path / "checks.json"
    subjects = ["S1", "BROKEN"]
    pd.DataFrame([{"cohort": "C", "subject": s, "session": "M000", "source_id": s, "visit_code": "bl",
                   "acq_date": "2020-01-01", "path": f"/data/{s}.nii.gz"} for s in subjects]).to_csv(
        images_tsv, sep="\t", index=False)
    verdicts.write_text(pd.DataFrame([{"cohort": "C", "subject": s, "session": "M000", "file": f"/data/{s}.nii.gz",
                                       "passed": True, "reason": ""} for s in subjects]).to_json(orient="records"))
    metrics = {"subject": "S1", "session": "M000", "volume": "v.npy", "ncc_template": 0.8, "brain_volume_ml": 1200.0,
               "pose_error_mm": None, "pose_error_max_mm": None, "dice_truth": None}
    qc_json = tmp_path / "S1_qc.json"
    qc_json.write_text(pd.Series(metrics).to_json())
    folder = tmp_path / "model_ready" / "batch-0000"
    folder.mkdir(parents=True)
    write_outcomes(folder, "model_ready", [
        Outcome("S1", "M000", DONE, files={"qc": str(qc_json)}),
        Outcome("BROKEN", "M000", FAILED, "registration failed: RuntimeError: no affine"),
    ])
    table = qc.cohort_qc("C", images_tsv, [str(verdicts)], [str(folder)], QC_THRESHOLDS, tmp_path / "qc.tsv",
                         tmp_path / "exclusions.tsv")
    assert list(table["passed"]) == ["true", "false"]
    assert table.loc[1, "reason"] == "preprocessing: registration failed: RuntimeError: no affine"
    exclusions = pd.read_csv(tmp_path / "exclusions.tsv", sep="\t", dtype=str, keep_default_na=False)
    assert list(exclusions["subject"]) == ["BROKEN"] and exclusions.loc[0, "file"] == "/data/BROKEN.nii.gz"


def test_n4_outputs_are_gzipped_only_when_kept() -> None:
    """N4Settings.compressed follows preprocess.keep_intermediates: kept N4 files are gzipped (disk),
    temporary ones are not (about 0.5 s of gzip per image at 2 mm for files read once)."""
    kept, temporary = pp.image_file_names(2.0), pp.image_file_names(2.0, compressed_n4=False)
    assert kept["n4"].endswith("_desc-N4_T1w.nii.gz") and kept["bias"].endswith("_desc-N4_biasfield.nii.gz")
    assert temporary["n4"] == kept["n4"][:-3] and temporary["bias"] == kept["bias"][:-3]
    assert {k: v for k, v in temporary.items() if k not in ("n4", "bias")} == \
        {k: v for k, v in kept.items() if k not in ("n4", "bias")}
