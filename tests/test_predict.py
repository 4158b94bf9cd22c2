"""Using a trained model: the bundles of the shared tiny run (tests/conftest.py: tiny_full_run) and
predict on new subjects from a bundle alone.

The main test copies a bundle and the tiny run's test subjects (T1 files + clinical rows) out of
the run, moves the run's results/ away, predicts through the command line, and must reproduce the
evaluation stage's probabilities; one subject with a broken image, one with an unknown category
code and one without an image are reported with their reasons while the others are predicted.
The refusals that stop a request (another cohort's columns, another header encoder, a changed
bundle file) run no preprocessing. Budget: about 40 s for the main test (two tiny images through
the whole chain), a second or two for each of the others.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml

from conftest import REPO, run_snakemake, tiny_config_with

from workflow import paths
from workflow.bundle import BUNDLE_FILES, BundleError, load_bundle
from workflow.predict import PredictError, list_images, read_clinical_rows, run_predict, write_test_subject_inputs

pytestmark = pytest.mark.slow

VARIANT, COHORT, OTHER_COHORT, SEED = "citab", "ADNI", "AIBL", 2022


def bundle_dir(run: Path, cohort: str = COHORT) -> Path:
    return run / paths.BUNDLE_DIR.format(variant=VARIANT, cohort=cohort, seed=SEED)


@pytest.fixture(scope="module")
def bundle_copy(tiny_full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ADNI bundle of the tiny run, copied out of the run (tests may not change the run's files)."""
    copy = tmp_path_factory.mktemp("bundle") / "ADNI-citab"
    shutil.copytree(bundle_dir(tiny_full_run), copy)
    return copy


@pytest.fixture(scope="module")
def test_subjects(tiny_full_run: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The tiny run's ADNI test subjects as new-subject inputs, outside the run: a folder of their T1s
    (sub-<subject>_ses-<session>_T1w.nii.gz) and a CSV of their harmonised clinical rows."""
    folder = tmp_path_factory.mktemp("new_subjects")
    images_tsv, table_csv = folder / "images.tsv", folder / "table.csv"
    write_test_subject_inputs(str(tiny_full_run / paths.TABLE.format(cohort=COHORT)),
                              str(tiny_full_run / paths.TABLE_STATS.format(cohort=COHORT)),
                              str(tiny_full_run / paths.INTAKE_IMAGES.format(cohort=COHORT)), str(images_tsv), str(table_csv))
    images = folder / "images"
    images.mkdir()
    listed = pd.read_csv(images_tsv, sep="\t", dtype=str)
    for row in listed.to_dict("records"):
        # intake's image paths are relative to the run's working directory
        shutil.copyfile(tiny_full_run / row["path"], images / f"sub-{row['subject']}_ses-{row['session']}_T1w.nii.gz")
    return {"images": images, "table": table_csv, "subjects": list(listed["subject"]),
            "expected": pd.read_csv(tiny_full_run / paths.EVAL_PREDICTIONS.format(variant=VARIANT, cohort=COHORT, seed=SEED),
                                    sep="\t", dtype={"subject": str, "session": str})}


def test_every_evaluation_has_a_bundle_of_safetensors_json_yaml_and_nifti_only(tiny_full_run: Path) -> None:
    for cohort in ("ADNI", "AIBL", "NACC"):
        bundle = load_bundle(bundle_dir(tiny_full_run, cohort))  # every file present, sha256 as recorded
        manifest = bundle.manifest
        assert (manifest["variant"], manifest["cohort"], manifest["seed"]) == (VARIANT, cohort, SEED)
        assert manifest["class_names"] == ["CN", "MCI", "DE"] and manifest["encoder"]["name"] == "minilm"
        preprocess = manifest["preprocess"]
        assert preprocess["registration"]["voxel_size_mm"] == 2.0 and preprocess["model_ready"]["shape"] == [24, 28, 24]
        assert manifest["metrics"]["test"] == json.loads(
            (tiny_full_run / paths.EVAL_METRICS.format(variant=VARIANT, cohort=cohort, seed=SEED)).read_text())
        assert {"accuracy", "auc", "f1"} <= set(manifest["metrics"]["validation"])
        assert len(manifest["settings_hash"]) == 16
        files = sorted(p.relative_to(bundle.folder).as_posix() for p in bundle.folder.rglob("*") if p.is_file())
        assert files == sorted(BUNDLE_FILES.values())
        # No pickle: tensors are safetensors, the rest JSON / YAML / gzipped NIfTI.
        assert all(name.endswith((".safetensors", ".json", ".yaml", ".nii.gz")) for name in files), files
        assert [c["name"] for c in bundle.columns()] == list(bundle.stats()["columns"])


def test_predict_from_the_bundle_alone_reproduces_the_evaluation(tiny_full_run: Path, bundle_copy: Path,
                                                                  test_subjects: dict, tmp_path: Path) -> None:
    """Predict through the command line, with the run's results/ moved away; a broken image, an
    unknown category code and a row without image are reported while the others are predicted."""
    images, table = tmp_path / "images", tmp_path / "table.csv"
    shutil.copytree(test_subjects["images"], images)
    rows = pd.read_csv(test_subjects["table"], dtype=str, keep_default_na=False)
    good = rows.iloc[0]
    # BADIMG: a constant (all-zero) image fails the input check; BADCODE: sex 7 is no level code;
    # NOIMG: a row without an image.
    constant = nib.load(next(images.iterdir()))
    nib.save(nib.Nifti1Image(np.zeros(constant.shape, np.int16), constant.affine), images / "sub-BADIMG_T1w.nii.gz")
    shutil.copyfile(next(images.iterdir()), images / "sub-BADCODE_T1w.nii.gz")
    extra = pd.DataFrame([{**good, "subject": "BADIMG", "session": ""}, {**good, "subject": "BADCODE", "session": "", "sex": "7"},
                          {**good, "subject": "NOIMG", "session": ""}])
    pd.concat([rows, extra]).to_csv(table, index=False)
    arguments = ["--bundle", str(bundle_copy), "--images", str(images), "--table", str(table),
                 "--out", str(tmp_path / "out"), "--encoder", "minilm"]
    moved = tiny_full_run / "results.moved-away-by-test_predict"
    os.rename(tiny_full_run / paths.RESULTS, moved)
    try:
        process = subprocess.run([sys.executable, "-m", "workflow.predict", *arguments], cwd=tmp_path,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600,
                                 env={**os.environ, "PYTHONPATH": str(REPO)})
    finally:
        os.rename(moved, tiny_full_run / paths.RESULTS)
    assert process.returncode == 0, process.stdout[-6000:]
    predictions = pd.read_csv(paths.PREDICTIONS.format(output=tmp_path / "out"), sep="\t",
                              dtype={"subject": str}).set_index("subject")

    # One process preprocesses every image here, while the run gave each step its own job: with a
    # seeded registration and the run's one thread, every step repeats and so do the probabilities.
    subjects = test_subjects["subjects"]
    expected = test_subjects["expected"].set_index("subject").loc[subjects]
    probabilities = [f"prob_{name}" for name in ("CN", "MCI", "DE")]
    assert sorted(predictions.index) == sorted(subjects), process.stdout[-6000:]
    np.testing.assert_allclose(predictions.loc[subjects, probabilities].to_numpy(),
                               expected[probabilities].to_numpy(), atol=1e-5)
    assert list(predictions.loc[subjects, "prediction_name"]) == list(expected["prediction_name"])

    qc = pd.read_csv(paths.PREDICT_QC.format(output=tmp_path / "out"), sep="\t", dtype=str, keep_default_na=False)
    by_subject = qc.set_index("subject")
    for subject in subjects:
        assert by_subject.at[subject, "predicted"] == "true" and by_subject.at[subject, "reason"] == ""
        assert float(by_subject.at[subject, "ncc_template"]) > 0.4 and float(by_subject.at[subject, "brain_volume_ml"]) > 0
    assert by_subject.at["BADIMG", "predicted"] == "false"
    assert by_subject.at["BADIMG", "reason"].startswith("input check: constant image")
    line = len(rows) + 3  # header, the good rows, BADIMG, then BADCODE
    assert f"{table} row {line}, column sex: unknown category code '7'" in by_subject.at["BADCODE", "reason"]
    assert by_subject.at["NOIMG", "reason"].startswith("no image")
    missing = [name for name in by_subject.at[subjects[0], "columns_missing"].split(",") if name]
    assert missing == [name for name in list(rows.columns)[3:] if rows.iloc[0][name] == ""]


def test_snakemake_predict_target_plans_the_test_subject_inputs_and_the_prediction(tiny_full_run: Path,
                                                                                     tmp_path: Path) -> None:
    settings = yaml.safe_load((REPO / "config" / "predict-demo.yaml").read_text())["predict"]
    overlay = tiny_config_with({"predict": {**settings, "output": str(tmp_path / "out")}}, tmp_path)
    process = run_snakemake(tiny_full_run, "predict", "-n", configfiles=(overlay,))
    planned = set(re.findall(r"^(?:local)?rule (\w+):$", process.stdout, flags=re.MULTILINE))
    # test_subject_inputs is not part of the default target: planned unless an earlier predict made its files
    assert "predict" in planned and planned <= {"test_subject_inputs", "predict"}, process.stdout[-4000:]


def test_columns_of_another_cohort_are_refused_naming_them(tiny_full_run: Path, bundle_copy: Path, tmp_path: Path) -> None:
    other = load_bundle(bundle_dir(tiny_full_run, OTHER_COHORT))
    names = [c["name"] for c in other.columns()]
    table = tmp_path / "aibl.csv"
    pd.DataFrame([{"subject": "X1", **{name: "" for name in names}}]).to_csv(table, index=False)
    with pytest.raises(PredictError) as refused:
        read_clinical_rows(table, load_bundle(bundle_copy))
    message = str(refused.value)
    assert str(table) in message and "cohort ADNI" in message and "cdr_global" in message and "education" in message


def test_native_columns_are_harmonised_as_intake_did(tiny_full_run: Path, bundle_copy: Path, test_subjects: dict,
                                                    tmp_path: Path) -> None:
    """The test subjects' ADNIMERGE rows (the native file and line their visits came from) give
    the harmonised values of the run's table."""
    bundle = load_bundle(bundle_copy)
    visits = pd.read_csv(tiny_full_run / paths.INTAKE_VISITS.format(cohort=COHORT), sep="\t", dtype=str, keep_default_na=False)
    table = pd.read_csv(tiny_full_run / paths.TABLE.format(cohort=COHORT), sep="\t", dtype=str, keep_default_na=False)
    native_rows = []
    for subject in test_subjects["subjects"]:
        visit_code = table.set_index("subject").at[subject, "visit_code"]
        visit = visits[(visits["subject"] == subject) & (visits["visit_code"] == visit_code)].iloc[0]
        native = pd.read_csv(tiny_full_run / visit["source_file"], dtype=str, keep_default_na=False)
        native_rows.append({"subject": subject, **native.iloc[int(visit["source_row"]) - 2].to_dict()})
    csv = tmp_path / "native.csv"
    pd.DataFrame(native_rows).to_csv(csv, index=False)
    harmonised = pd.read_csv(test_subjects["table"], dtype={"subject": str}).set_index("subject")
    for row in read_clinical_rows(csv, bundle):
        assert row.problem == ""
        for name, value in row.values.items():
            if not np.isnan(value):  # static columns may have been filled from another visit
                assert value == pytest.approx(harmonised.at[row.subject, name], abs=1e-6), name


def test_a_bundle_of_another_header_encoder_is_refused(bundle_copy: Path, test_subjects: dict, tmp_path: Path) -> None:
    with pytest.raises(PredictError, match=r"built with header encoder 'minilm'.*configured encoder is 'bert-base-uncased'"):
        run_predict(bundle_copy, test_subjects["images"], test_subjects["table"], tmp_path / "out", encoder="bert-base-uncased")


def test_a_changed_bundle_file_is_refused(bundle_copy: Path, tmp_path: Path) -> None:
    changed = tmp_path / "bundle"
    shutil.copytree(bundle_copy, changed)
    stats = changed / BUNDLE_FILES["stats"]
    stats.write_text(stats.read_text().replace('"mean"', '"mean" ', 1))
    with pytest.raises(BundleError, match="stats.json: changed since the bundle was written"):
        load_bundle(changed)


def test_image_folder_names_give_subjects_and_sessions(tmp_path: Path) -> None:
    for name in ("sub-A1_ses-M000_T1w.nii.gz", "sub-B2_T1w.nii", "C3.nii.gz", "notes.txt"):
        (tmp_path / name).write_bytes(b"")
    listed = list_images(tmp_path)
    assert sorted(listed[["subject", "session"]].values.tolist()) == [["A1", "M000"], ["B2", "new"], ["C3", "new"]]
    (tmp_path / "bad name.nii.gz").write_bytes(b"")
    with pytest.raises(PredictError, match="cannot tell the subject"):
        list_images(tmp_path)
