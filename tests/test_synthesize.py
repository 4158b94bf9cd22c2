"""Tests of the synthetic cohort generator (rule synthesize_cohort, workflow/synthesize.py).

Real runs at small sizes: the tiny cohorts of the session fixture (4 mm heads), a clinical-only
sample of 600 subjects per format for the priors, and two Snakemake runs (dry and real).
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
from datetime import date, datetime
from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import ndimage

from conftest import TINY_CONFIG, run_snakemake, tiny_synthetic_cohort_settings, tiny_synthetic_settings
from workflow import synthetic_clinical as sc
from workflow.settings import SettingsError, synthetic_cohort_settings
from workflow.synthesize import synthesize_cohort
from workflow.synthetic_mri import head_model, synthesize_volume

FORMATS = {"ADNI": "adni", "AIBL": "aibl", "NACC": "nacc"}
SAMPLE_SUBJECTS = 600
SIX_MONTHS_DAYS = 183


def read_csv(path: Path, **kwargs) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False, **kwargs)


@pytest.fixture(scope="module")
def samples() -> dict[str, sc.ClinicalCohort]:
    """Clinical part only, 600 subjects per format (about a second in all)."""
    changes = {"subjects": SAMPLE_SUBJECTS, "min_subjects_per_class": 0, "mri_sessions_share": [0.75, 0.15, 0.10],
               "follow_up_years": [1.0, 6.0]}
    return {name: sc.generate_clinical(name, tiny_synthetic_cohort_settings(name, **changes)) for name in FORMATS}


def all_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


# --- determinism ----------------------------------------------------------------------------------

def test_same_seed_gives_identical_files_and_another_seed_differs(tiny_synthetic_cohorts, tmp_path):
    settings = tiny_synthetic_cohort_settings("AIBL")
    again = tmp_path / "again"
    synthesize_cohort("AIBL", again, settings)
    reference = tiny_synthetic_cohorts["AIBL"]
    files = all_files(reference)
    assert files == all_files(again)
    assert any(f.endswith("_T1w.nii.gz") for f in files)
    _, mismatch, errors = filecmp.cmpfiles(reference, again, files, shallow=False)
    assert mismatch == [] and errors == []

    other = tmp_path / "other"
    synthesize_cohort("AIBL", other, dataclasses.replace(settings, seed=settings.seed + 1))
    first = sorted((reference / "clinical").glob("aibl_mmse_*.csv"))[0]
    assert first.read_bytes() != (other / "clinical" / first.name).read_bytes()


def test_worker_processes_write_the_same_files(tiny_synthetic_cohorts, tmp_path):
    parallel = tmp_path / "parallel"
    synthesize_cohort("NACC", parallel, tiny_synthetic_cohort_settings("NACC"), threads=2)
    reference = tiny_synthetic_cohorts["NACC"]
    files = all_files(reference)
    assert files == all_files(parallel)
    assert filecmp.cmpfiles(reference, parallel, files, shallow=False)[1:] == ([], [])


def test_refuses_to_overwrite(tiny_synthetic_cohorts):
    with pytest.raises(FileExistsError, match="not empty"):
        synthesize_cohort("ADNI", tiny_synthetic_cohorts["ADNI"], tiny_synthetic_cohort_settings("ADNI"))


def test_subjects_per_cohort_mapping():
    config = {"cohorts": {"ADNI": {"format": "adni"}, "NACC": {"format": "nacc"}},
              "synthetic": {**tiny_synthetic_settings(), "subjects": {"ADNI": 30}}}
    settings = synthetic_cohort_settings(config, "ADNI")
    assert settings.subjects == 30 and settings.format == "adni"
    assert "threads" not in settings.as_params() and "mem_mb" not in settings.as_params()
    with pytest.raises(SettingsError, match="no entry for cohort 'NACC'"):
        synthetic_cohort_settings(config, "NACC")


# --- native files ---------------------------------------------------------------------------------

def test_adni_native_files(tiny_synthetic_cohorts):
    root = tiny_synthetic_cohorts["ADNI"]
    table = read_csv(root / "clinical" / "ADNIMERGE.csv")
    required = ["RID", "PTID", "VISCODE", "EXAMDATE", "DX", "AGE", "Years_bl", "PTGENDER", "PTEDUCAT", "APOE4",
                "MMSE", "ADAS11", "ADAS13", "RAVLT_immediate", "RAVLT_learning", "RAVLT_forgetting", "ABETA",
                "TAU", "PTAU", "FDG", "SITE", "COLPROT", "ORIGPROT", "DX_bl", "Month_bl", "M"]
    assert set(required) <= set(table.columns)
    assert not table.duplicated(["RID", "VISCODE"]).any()
    assert set(table["DX"]) <= {"CN", "MCI", "Dementia", ""} and (table["DX"] == "").any()
    assert set(table["PTGENDER"]) <= {"Male", "Female"}
    assert table["VISCODE"].str.fullmatch(r"bl|m\d\d+").all()
    assert table["PTID"].str.fullmatch(r"\d{3}_S_\d{4}").all()
    pd.to_datetime(table["EXAMDATE"], format="%Y-%m-%d")
    bids = root / "bids"
    assert json.loads((bids / "dataset_description.json").read_text())["DatasetType"] == "raw"
    participants = read_csv(bids / "participants.tsv", sep="\t")
    assert set(participants["participant_id"]) == {f"sub-ADNI{p.replace('_', '')}" for p in table["PTID"]}


def test_aibl_native_files(tiny_synthetic_cohorts):
    clinical = tiny_synthetic_cohorts["AIBL"] / "clinical"
    columns = {"ptdemog": ["RID", "SITEID", "VISCODE", "PTGENDER", "PTDOB"],
               "pdxconv": ["RID", "SITEID", "VISCODE", "DXCURREN"],
               "mmse": ["RID", "SITEID", "VISCODE", "EXAMDATE", "MMSCORE"],
               "cdr": ["RID", "SITEID", "VISCODE", "EXAMDATE", "CDGLOBAL"],
               "neurobat": ["RID", "SITEID", "VISCODE", "EXAMDATE", "LIMMTOTAL", "LDELTOTAL"],
               "apoeres": ["RID", "SITEID", "VISCODE", "APGEN1", "APGEN2"],
               "mrimeta": ["RID", "SITEID", "VISCODE", "EXAMDATE", "MMCONDCT"]}
    tables = {}
    for name, expected in columns.items():
        (path,) = clinical.glob(f"aibl_{name}_*.csv")
        tables[name] = read_csv(path)
        assert list(tables[name].columns) == expected, path
    assert set(tables["pdxconv"]["DXCURREN"]) <= {"1", "2", "3", "-4"} and (tables["pdxconv"]["DXCURREN"] == "-4").any()
    assert tables["ptdemog"]["PTDOB"].str.fullmatch(r"/\d{4}").all()
    assert set(tables["ptdemog"]["PTGENDER"]) <= {"1", "2"}
    for name in ("mmse", "cdr", "neurobat", "mrimeta"):
        pd.to_datetime(tables[name]["EXAMDATE"], format="%m/%d/%Y")
    assert set(tables["cdr"]["CDGLOBAL"].astype(float)) <= {0.0, 0.5, 1.0, 2.0, 3.0}


def test_nacc_native_files(tiny_synthetic_cohorts):
    root = tiny_synthetic_cohorts["NACC"]
    (uds_path,) = (root / "clinical").glob("investigator_nacc*.csv")
    (mri_path,) = (root / "clinical").glob("investigator_mri_nacc*.csv")
    uds = pd.read_csv(uds_path)
    assert list(uds.columns) == sc.NACC_UDS_COLUMNS
    assert set(uds["NACCUDSD"]) <= {1, 2, 3, 4} and (uds["NACCUDSD"] == 2).any()
    assert set(uds["FORMVER"]) <= {1, 2, 3}
    mri = pd.read_csv(mri_path)
    assert {"NACCID", "NACCMNUM", "MRIYR", "MRIMO", "MRIDY", "NACCMRFI", "MRIT1", "NACCMRIA"} <= set(mri.columns)
    assert mri["NACCMRFI"].str.fullmatch(r"mri\d+ni\.zip").all()
    for name in mri["NACCMRFI"]:
        assert (root / "images" / name.replace(".zip", ".nii.gz")).exists()
    assert set(mri["NACCID"]) <= set(uds["NACCID"])


def test_nacc_v3_visits_carry_moca_and_the_v3_tests(samples):
    uds = samples["NACC"].tables["clinical/investigator_nacc66.csv"]
    v3, v12 = uds[uds["FORMVER"] == 3], uds[uds["FORMVER"] < 3]
    assert len(v3) > 100 and len(v12) > 100
    for replaced in sc.NACC_V12_ONLY:
        assert (v3[replaced] == -4).all(), replaced
    for replacement in sc.NACC_V3_ONLY:
        assert (v12[replacement] == -4).all(), replacement
        assert (v3[replacement].between(0, 50)).mean() > 0.7, replacement
    assert v3["NACCMOCA"].between(0, 30).mean() > 0.8
    baseline = uds[uds["NACCVNUM"] == 1]
    assert (baseline["FORMVER"] == 3).mean() == pytest.approx(sc.NACC_V3_SHARE, abs=0.07)


def test_missing_codes_and_censored_strings_are_present(samples):
    uds = samples["NACC"].tables["clinical/investigator_nacc66.csv"]
    values = set(uds.drop(columns="NACCID").to_numpy().ravel().tolist())
    assert {-4, 88, 95, 96, 97, 98, 995, 996, 997, 998, 9, 99} <= values
    adni = samples["ADNI"].tables["clinical/ADNIMERGE.csv"]
    for column, (low, high) in {"ABETA": (200, 1700), "TAU": (80, 1300), "PTAU": (8, 120)}.items():
        cells = set(adni[column])
        assert f">{high}" in cells or f"<{low}" in cells, column
        numbers = pd.to_numeric(adni[column].str.lstrip("<>"), errors="coerce").dropna()
        assert numbers.between(low, high).all()
    aibl = samples["AIBL"].tables[f"clinical/aibl_neurobat_{sc.AIBL_RELEASE}.csv"]
    assert (aibl["LDELTOTAL"] == -4).any()


# --- priors ---------------------------------------------------------------------------------------

def baseline_rows(cohort: sc.ClinicalCohort) -> pd.DataFrame:
    """Baseline visits with the native values, the diagnosis and the planned dx."""
    visits = cohort.visits[cohort.visits["visit_number"] == 1].set_index("subject")
    return visits


@pytest.mark.parametrize("name", list(FORMATS))
def test_class_mix_is_exact(samples, name):
    dx = samples[name].subjects["dx_baseline"]
    expected = sc.allocate(sc.CLASS_MIX[FORMATS[name]], SAMPLE_SUBJECTS)
    assert np.bincount(dx, minlength=3).tolist() == expected.tolist()


def test_min_subjects_per_class_raises_small_classes():
    assert sc.class_counts("aibl", 12, 3).tolist() == [6, 3, 3]
    assert sc.class_counts("aibl", 1161, 0).tolist() == [848, 174, 139]
    with pytest.raises(ValueError):
        sc.class_counts("adni", 8, 3)


def _check_means(values: pd.Series, dx: pd.Series, score: sc.Score, name: str, mean_tolerance_sd: float = 0.3):
    for k in range(3):
        group = values[dx == k].dropna()
        assert len(group) > 30
        assert abs(group.mean() - score.means[k]) < mean_tolerance_sd * score.sds[k], (name, k, group.mean())
        assert 0.6 * score.sds[k] < group.std() < 1.3 * score.sds[k], (name, k, group.std())


def test_adni_means_missingness_and_latent(samples):
    cohort = samples["ADNI"]
    table = cohort.tables["clinical/ADNIMERGE.csv"]
    base = table[table["VISCODE"] == "bl"].set_index("PTID")
    dx = cohort.subjects.set_index("source_id")["dx_baseline"].reindex(base.index)
    for name in ("MMSE", "ADAS13", "RAVLT_immediate", "FDG"):
        _check_means(pd.to_numeric(base[name]), dx, sc.ADNI_SCORES[name], name)
    age = pd.to_numeric(base["AGE"])
    for k in range(3):
        assert abs(age[dx == k].mean() - sc.DEMOGRAPHICS["adni"].age_mean[k]) < 1.5
    # CSF and FDG are missing per subject, in blocks: all visits or none.
    for column, rate in (("ABETA", sc.ADNI_MISSING_SUBJECT["CSF"]), ("FDG", sc.ADNI_MISSING_SUBJECT["FDG"])):
        per_subject = (table[column] == "").groupby(table["PTID"]).agg(["all", "any"])
        assert (per_subject["all"] == per_subject["any"]).all(), column
        assert per_subject["all"].mean() == pytest.approx(rate, abs=0.07), column
    assert ((base["ABETA"] == "") == (base["TAU"] == "")).all()
    assert (base["MMSE"] == "").mean() < 0.05
    # One latent severity moves the scores together, also within a diagnosis.
    mci = base[dx == sc.MCI]
    scores = mci[["MMSE", "ADAS13"]].apply(pd.to_numeric).dropna()
    assert np.corrcoef(scores["MMSE"], scores["ADAS13"])[0, 1] < -0.25


def test_aibl_means_and_near_complete(samples):
    cohort = samples["AIBL"]
    tables = {name.split("_")[1]: t for name, t in cohort.tables.items()}
    base = {name: t[t["VISCODE"] == "bl"].set_index("RID") for name, t in tables.items() if name != "mrimeta"}
    dx = cohort.subjects.set_index("rid")["dx_baseline"].reindex(base["mmse"].index)
    _check_means(base["mmse"]["MMSCORE"].astype(float), dx, sc.AIBL_SCORES["MMSCORE"], "MMSCORE", 0.35)
    _check_means(base["neurobat"]["LIMMTOTAL"].replace(-4, np.nan), dx, sc.AIBL_SCORES["LIMMTOTAL"], "LIMMTOTAL")
    for name in ("mmse", "cdr", "apoeres", "ptdemog"):
        assert not (base[name].drop(columns=["RID", "SITEID", "VISCODE"], errors="ignore") == -4).any().any(), name
    assert (tables["neurobat"]["LDELTOTAL"] == -4).mean() < 0.03
    cdr = base["cdr"]["CDGLOBAL"]
    assert cdr[dx == sc.CN].mean() < 0.1 and cdr[dx == sc.MCI].mean() == pytest.approx(0.47, abs=0.06)
    assert cdr[dx == sc.DE].mean() == pytest.approx(0.93, abs=0.2)


def test_nacc_means_and_missingness_rising_with_severity(samples):
    cohort = samples["NACC"]
    uds = cohort.tables["clinical/investigator_nacc66.csv"]
    base = uds[uds["NACCVNUM"] == 1].set_index("NACCID")
    dx = cohort.subjects.set_index("source_id")["dx_baseline"].reindex(base.index)
    not_done = {code for codes in sc.NACC_NOT_DONE_CODES.values() for code in codes}
    not_done |= set(sc.NACC_DEFAULT_NOT_DONE) | {sc.NACC_NOT_COLLECTED}
    for name in ("ANIMALS", "TRAILA", "NACCGDS"):
        _check_means(base[name].where(~base[name].isin(not_done)), dx, sc.NACC_SCORES[name], name, 0.35)
    missing_b = base["TRAILB"].isin(not_done)
    assert missing_b[dx == sc.DE].mean() > missing_b[dx == sc.CN].mean() + 0.15
    assert missing_b[dx == sc.DE].mean() == pytest.approx(sc.NACC_MISSING["TRAILB"][2], abs=0.1)
    assert set(base["SEX"]) <= {1, 2} and (base["NACCNE4S"] == 9).mean() == pytest.approx(0.15, abs=0.05)


# --- MRI sessions and dates -----------------------------------------------------------------------

def _scan_dates(bids: Path) -> pd.DataFrame:
    rows = []
    for scans in sorted(bids.glob("sub-*/ses-*/*_scans.tsv")):
        table = read_csv(scans, sep="\t")
        assert list(table.columns) == ["filename", "acq_time"]
        assert (scans.parent / table["filename"].iloc[0]).exists()
        rows.append({"subject": scans.parent.parent.name[4:], "session": scans.parent.name[4:],
                     "acq": datetime.fromisoformat(table["acq_time"].iloc[0]).date()})
    return pd.DataFrame(rows)


def _nearest_days(acq: date, visit_dates: list[date]) -> int:
    return min((abs((acq - v).days) for v in visit_dates))


@pytest.mark.parametrize("name", ["ADNI", "AIBL"])
def test_bids_mri_dates_near_but_not_on_visits(tiny_synthetic_cohorts, name):
    root = tiny_synthetic_cohorts[name]
    if name == "ADNI":
        table = read_csv(root / "clinical" / "ADNIMERGE.csv")
        table["subject"] = "ADNI" + table["PTID"].str.replace("_", "")
        table["date"] = pd.to_datetime(table["EXAMDATE"], format="%Y-%m-%d").dt.date
    else:
        (path,) = (root / "clinical").glob("aibl_neurobat_*.csv")
        table = read_csv(path)
        table["subject"] = "AIBL" + table["RID"]
        table["date"] = pd.to_datetime(table["EXAMDATE"], format="%m/%d/%Y").dt.date
    scans = _scan_dates(root / "bids")
    assert len(scans) == len(read_csv(root / "truth" / "sessions.tsv", sep="\t"))
    off_schedule = unmatched = 0
    for row in scans.to_dict("records"):
        visits = table[table["subject"] == row["subject"]]
        days = _nearest_days(row["acq"], list(visits["date"]))
        assert days >= 1
        code = "bl" if row["session"] == "M000" else f"m{int(row['session'][1:]):02d}"
        if code in set(visits["VISCODE"]):
            visit_date = visits.loc[visits["VISCODE"] == code, "date"].iloc[0]
            assert 1 <= abs((row["acq"] - visit_date).days) <= sc.MRI_OFFSET_DAYS["adni"]
        else:
            off_schedule += 1
            unmatched += days > SIX_MONTHS_DAYS
    assert unmatched >= 1 and off_schedule - unmatched >= 1


def test_nacc_mri_dates(tiny_synthetic_cohorts):
    root = tiny_synthetic_cohorts["NACC"]
    uds = pd.read_csv(next((root / "clinical").glob("investigator_nacc*.csv")))
    mri = pd.read_csv(next((root / "clinical").glob("investigator_mri_nacc*.csv")))
    distances = []
    for row in mri.to_dict("records"):
        visits = uds[uds["NACCID"] == row["NACCID"]]
        dates = [date(y, m, d) for y, m, d in zip(visits["VISITYR"], visits["VISITMO"], visits["VISITDAY"])]
        acq = date(row["MRIYR"], row["MRIMO"], row["MRIDY"])
        distances.append(_nearest_days(acq, dates))
        assert abs(row["NACCMRDY"]) == distances[-1]
    assert min(distances) >= 1
    assert sum(d > SIX_MONTHS_DAYS for d in distances) >= 1
    assert sum(d <= SIX_MONTHS_DAYS for d in distances) >= len(distances) - 2


def test_sessions_per_subject_follow_the_configured_shares(samples):
    mris = samples["ADNI"].mris
    scheduled = mris[mris["kind"] == "scheduled"].groupby("subject").size()
    expected = sc.allocate([0.75, 0.15, 0.10], SAMPLE_SUBJECTS)
    assert np.bincount(scheduled, minlength=4)[1:].tolist() == expected.tolist()
    assert set(mris["kind"]) == {"scheduled", "unscheduled", "unmatched"}


# --- volumes --------------------------------------------------------------------------------------

def test_volumes_are_heads_with_truth(tiny_synthetic_cohorts):
    template_brain = head_model(4.0).brain
    template_centroid = head_model(4.0).affine @ np.array([*ndimage.center_of_mass(template_brain), 1.0])
    for name, root in tiny_synthetic_cohorts.items():
        sessions = read_csv(root / "truth" / "sessions.tsv", sep="\t")
        assert len(sessions) >= tiny_synthetic_settings()["subjects"]  # one scan per subject at least
        for row in sessions.to_dict("records"):
            image = nib.load(root / row["image"])
            truth = json.loads((root / row["truth"]).read_text())
            mask_img = nib.load(root / row["brain_mask"])
            data = np.asarray(image.dataobj)
            mask = np.asarray(mask_img.dataobj) > 0
            assert data.dtype == np.int16 and data.ndim == 3
            assert list(data.shape) == truth["shape"] and mask.shape == data.shape
            assert np.allclose(image.header.get_zooms(), (4.0, 4.0, 4.0))
            assert np.allclose(image.affine, truth["image_affine"], atol=1e-4)
            assert np.allclose(mask_img.affine, image.affine)
            assert (image.affine[0, 0] < 0) == (name == "NACC")
            assert truth["diagnosis"] in {"CN", "MCI", "DE"} and truth["subject"] == row["subject"]
            assert 0.5 < truth["bias_field_range"][0] <= 1.0 <= truth["bias_field_range"][1] < 2.0
            # The brain sits inside the field of view, with skull and scalp all around it.
            assert mask.sum() > 0.9 * template_brain.sum() * 0.85
            assert not (mask[0].any() or mask[-1].any() or mask[:, 0].any() or mask[:, -1].any() or mask[:, :, -1].any())
            shell = ndimage.binary_dilation(mask, iterations=5) & ~mask  # up to 20 mm outside the brain
            noise_floor = 4 * truth["noise_sigma"]
            assert (data[shell] > noise_floor).mean() > 0.6
            assert (data[~mask] > noise_floor).sum() > 0.3 * mask.sum()
            # template_to_subject maps the template brain onto this image's brain (within a voxel).
            pose = np.asarray(truth["template_to_subject"])
            centroid = image.affine @ np.array([*ndimage.center_of_mass(mask), 1.0])
            assert np.linalg.norm((pose @ template_centroid)[:3] - centroid[:3]) < 4.0


def test_atrophy_grows_with_severity():
    healthy = synthesize_volume(4.0, 0.0, np.random.default_rng(3))
    severe = synthesize_volume(4.0, 1.0, np.random.default_rng(3))
    assert healthy.truth["template_to_subject"] == severe.truth["template_to_subject"]
    mask = np.asarray(healthy.brain_mask.dataobj) > 0
    a, b = np.asarray(healthy.image.dataobj)[mask], np.asarray(severe.image.dataobj)[mask]
    threshold = 0.4 * np.median(a)
    assert (b < threshold).sum() > 1.3 * (a < threshold).sum()
    assert severe.truth["ventricle_dilation_mm"] > healthy.truth["ventricle_dilation_mm"] == 0


# --- Snakemake ------------------------------------------------------------------------------------

def test_snakemake_dry_run_plans_one_job_per_synthetic_cohort(snakemake_workdir):
    process = run_snakemake(snakemake_workdir, "-n", "results/synthetic/ADNI", "results/synthetic/NACC")
    assert "synthesize_cohort" in process.stdout
    assert "wildcards: cohort=ADNI" in process.stdout and "wildcards: cohort=NACC" in process.stdout


def test_snakemake_does_not_synthesize_a_real_cohort(snakemake_workdir, tmp_path):
    real_root = tmp_path / "real_adni"
    for folder in ("clinical", "bids"):
        (real_root / folder).mkdir(parents=True)
    # The tiny config with ADNI made real (one file: a repeated --configfile keeps only the last).
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["cohorts"]["ADNI"] = {"source": "real", "format": "adni", "root": str(real_root)}
    overlay = tmp_path / "real.yaml"
    overlay.write_text(yaml.safe_dump(config))
    process = run_snakemake(snakemake_workdir, "-n", "results/synthetic/ADNI", configfiles=(overlay,), check=False)
    assert process.returncode != 0 and "MissingRuleException" in process.stdout, process.stdout[-2000:]


def test_snakemake_generates_a_tiny_cohort(snakemake_workdir):
    run_snakemake(snakemake_workdir, "--cores", "1", "results/synthetic/NACC")
    root = snakemake_workdir / "results" / "synthetic" / "NACC"
    summary = json.loads((root / ".complete").read_text())
    tiny = tiny_synthetic_settings()
    assert summary["subjects"] == tiny["subjects"] and summary["voxel_size_mm"] == tiny["voxel_size_mm"]
    assert len(list((root / "images").glob("*.nii.gz"))) == summary["images"]
    assert (snakemake_workdir / "results" / "logs" / "synthesize_cohort" / "NACC.log").exists()
    assert (snakemake_workdir / "results" / "benchmarks" / "synthesize_cohort" / "NACC.tsv").exists()
