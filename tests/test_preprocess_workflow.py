"""The preprocessing rules under the real Snakemake CLI: a few small images (two good 2 mm synthetic
heads from the shared generator, a truncated file, one with a wrong gzip CRC, an all-zero image and a
head-less blob that passes the input check but fails QC). Intake is stood in for by a checkpoint of
the same name that copies an images table written here, so this stage is tested on its own (about
60-90 s on 2 quiet cores)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
from scipy import ndimage

from conftest import REPO, run_snakemake, tiny_config_with
from workflow import paths
from workflow import preprocess as pp
from workflow.preprocess_batch import DONE, read_outcomes
from workflow.synthetic_mri import synthesize_volume

COHORT = "ADNI"
# The tiny config reads ADNI as a synthetic raw download; here its images are given directly, with
# their ground truth, so the cohort is declared synthetic: ground-truth QC (pose error, Dice) applies.
SYNTHETIC_COHORT = {"cohorts": {COHORT: {"source": "synthetic"}}}
# and the native-space N4 files go once registration has read them (preprocess.keep_intermediates);
# two images per batch, so that the three accepted images make two batches, run side by side
WITHOUT_INTERMEDIATES = {**SYNTHETIC_COHORT, "preprocess": {"keep_intermediates": False, "images_per_job": 2}}


def write_inputs(workdir: Path) -> tuple[Path, dict[str, str]]:
    """Native images, truth sidecars and the images table; returns (table, expected reason words)."""
    native = workdir / "native"
    truth_dir = Path(workdir / paths.SYNTHETIC_TRUTH_DIR.format(cohort=COHORT))
    native.mkdir()
    truth_dir.mkdir(parents=True)
    rows, expected = [], {}
    for number in (1, 2):
        subject = f"S{number}"
        # 2 mm: at 4 mm some heads fall into the "head shrunk onto the brain-only template" optimum
        # (QC then excludes them, as the blob below shows), which would make this test a lottery
        volume = synthesize_volume(2.0, 0.3, np.random.default_rng(number))
        nib.save(volume.image, str(native / f"{subject}.nii.gz"))
        stem = pp.truth_files()
        key = {"cohort": COHORT, "subject": subject, "session": "M000"}
        nib.save(volume.brain_mask, str(workdir / stem["brainmask"].format(**key)))
        (workdir / stem["truth"].format(**key)).write_text(json.dumps(volume.truth))
        rows.append((subject, native / f"{subject}.nii.gz"))
    good = (native / "S1.nii.gz").read_bytes()
    (native / "truncated.nii.gz").write_bytes(good[: len(good) // 3])
    rows.append(("TRUNC", native / "truncated.nii.gz"))
    expected["TRUNC"] = "unreadable"
    # Intact voxels, wrong gzip CRC-32 trailer: nibabel reads it; the input check must not.
    crc = int.from_bytes(good[-8:-4], "little") ^ 0xFFFFFFFF
    (native / "bad_crc.nii.gz").write_bytes(good[:-8] + crc.to_bytes(4, "little") + good[-4:])
    rows.append(("BADCRC", native / "bad_crc.nii.gz"))
    expected["BADCRC"] = f"damaged gzip file {native / 'bad_crc.nii.gz'}: CRC check failed"
    affine = np.diag([4.0, 4.0, 4.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((40, 50, 50), np.int16), affine), str(native / "zeros.nii.gz"))
    rows.append(("ZEROS", native / "zeros.nii.gz"))
    expected["ZEROS"] = "constant"
    blob = ndimage.gaussian_filter(np.random.default_rng(0).random((40, 50, 50)), 6).astype(np.float32)
    nib.save(nib.Nifti1Image(blob, affine), str(native / "blob.nii.gz"))
    rows.append(("BLOB", native / "blob.nii.gz"))
    expected["BLOB"] = "QC:"
    table = pd.DataFrame([{"cohort": COHORT, "subject": s, "session": "M000", "source_id": s, "visit_code": "bl",
                           "acq_date": "2020-01-01", "path": str(p)} for s, p in rows])
    images = workdir / "given_images.tsv"
    table.to_csv(images, sep="\t", index=False)
    return images, expected


def write_snakefile(workdir: Path, images: Path) -> Path:
    """This stage's rules plus a stand-in ``intake_cohort`` checkpoint that copies ``images``."""
    snakefile = workdir / "Snakefile"
    snakefile.write_text(textwrap.dedent(f"""
        configfile: "{REPO / 'config.yaml'}"
        include: "{REPO / 'rules' / 'common.smk'}"
        include: "{REPO / 'rules' / 'preprocess.smk'}"

        checkpoint intake_cohort:
            input: "{images}"
            output: images=paths.INTAKE_IMAGES
            shell: "cp {{input}} {{output.images}}"
    """))
    return snakefile


def test_preprocess_rules_run_and_exclude_bad_images(snakemake_workdir: Path) -> None:
    images, expected = write_inputs(snakemake_workdir)
    snakefile = write_snakefile(snakemake_workdir, images)
    target = paths.PREPROCESS_QC.format(cohort=COHORT)
    config = tiny_config_with(WITHOUT_INTERMEDIATES, snakemake_workdir)
    process = run_snakemake(snakemake_workdir, "--snakefile", str(snakefile), "--cores", "2", target, timeout=600,
                            configfiles=(config,))
    assert "preprocess_n4" in process.stdout

    qc = pd.read_csv(snakemake_workdir / target, sep="\t", dtype=str, keep_default_na=False)
    assert sorted(qc["subject"]) == sorted(["S1", "S2", *expected])
    passed = qc[qc["passed"] == "true"]
    assert sorted(passed["subject"]) == ["S1", "S2"], qc.to_string()
    for _, row in passed.iterrows():
        volume = np.load(snakemake_workdir / row["volume"])
        assert volume.shape == (24, 28, 24)  # pretrain.image_shape of tests/config.tiny.yaml
        assert float(row["pose_error_mm"]) < 4.0 and float(row["dice_truth"]) > 0.85, row.to_dict()
        mosaic = Path(row["volume"]).parent / pp.image_file_names(2.0)["mosaic"].format(subject=row["subject"],
                                                                                     session="M000")
        assert (snakemake_workdir / mosaic).is_file()

    exclusions = pd.read_csv(snakemake_workdir / paths.PREPROCESS_EXCLUSIONS.format(cohort=COHORT), sep="\t",
                             dtype=str, keep_default_na=False)
    assert sorted(exclusions["subject"]) == sorted(expected)
    for subject, word in expected.items():
        assert word in exclusions.loc[exclusions["subject"] == subject, "reason"].item()
    # rejected inputs never reached N4; the accepted ones' N4 batch (outputs and bias fields) was
    # deleted after registration read it, and the registered crops stay
    folder = {(step, batch): snakemake_workdir / paths.PREPROCESS_BATCH.format(cohort=COHORT, step=step, batch=batch)
              for step in ("n4", "registration") for batch in ("0000", "0001")}
    assert not any(folder[("n4", batch)].exists() for batch in ("0000", "0001"))
    registered = [o for batch in ("0000", "0001") for o in read_outcomes(folder[("registration", batch)])]
    assert [(o.subject, o.status) for o in registered] == [("S1", DONE), ("S2", DONE), ("BLOB", DONE)]
    for outcome in registered:
        assert (snakemake_workdir / outcome.files["crop"]).is_file()

    # a second run has nothing to do (deleted intermediates are not missing outputs)
    again = run_snakemake(snakemake_workdir, "--snakefile", str(snakefile), "--cores", "2", target, "-n",
                          configfiles=(config,))
    assert "Nothing to be done" in again.stdout, again.stdout[-3000:]
