"""Intake stage: column definitions and the native-format readers, on small native files."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd
import pytest
import yaml

from workflow import paths
from workflow.columns import (
    ColumnsError,
    all_header_texts,
    cohort_columns,
    load_columns,
    normalise_code,
    resolve_columns_path,
)
from workflow.intake import IntakeError, cohort_root, harmonise, read_cohort, session_visit_code

COLUMNS_YAML = resolve_columns_path("config/columns.yaml")

# --- builders of small native cohorts (docs/interfaces.md section 1); test_tables.py uses them too --

ADNI_FIELDS = ["RID", "PTID", "VISCODE", "SITE", "COLPROT", "ORIGPROT", "EXAMDATE", "DX_bl", "DX", "AGE", "Years_bl",
               "PTGENDER", "PTEDUCAT", "APOE4", "MMSE", "ADAS11", "ADAS13", "RAVLT_immediate", "RAVLT_learning",
               "RAVLT_forgetting", "ABETA", "TAU", "PTAU", "FDG", "Month_bl", "M"]


def write_csv(path: Path, fields: list[str], rows: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as stream:
        writer = csv.DictWriter(stream, fieldnames=fields)
        writer.writeheader()
        for row in rows:
            writer.writerow({field: row.get(field, "") for field in fields})


def write_bids_session(root: Path, subject: str, session: str, acq_date: str | None) -> None:
    """An (empty) T1w file and its scans.tsv; ``acq_date=None`` writes no scans.tsv."""
    session_dir = root / "bids" / f"sub-{subject}" / f"ses-{session}"
    (session_dir / "anat").mkdir(parents=True, exist_ok=True)
    name = f"sub-{subject}_ses-{session}_T1w.nii.gz"
    (session_dir / "anat" / name).write_bytes(b"")
    if acq_date is not None:
        (session_dir / f"sub-{subject}_ses-{session}_scans.tsv").write_text(
            f"filename\tacq_time\nanat/{name}\t{acq_date}T10:00:00\n")


def adni_row(ptid: str, viscode: str, examdate: str, dx: str, **values) -> dict:
    row = {"RID": ptid[-4:].lstrip("0"), "PTID": ptid, "VISCODE": viscode, "EXAMDATE": examdate, "DX": dx,
           "AGE": "70.5", "Years_bl": "0", "PTGENDER": "Female", "PTEDUCAT": "16", "APOE4": "1", "MMSE": "28",
           "ADAS11": "7", "ADAS13": "11", "RAVLT_immediate": "40", "RAVLT_learning": "5", "RAVLT_forgetting": "4",
           "ABETA": "900", "TAU": "250", "PTAU": "22", "FDG": "6.4"}
    row.update(values)
    return row


def write_adni(root: Path, rows: list[dict], sessions: list[tuple[str, str, str | None]]) -> Path:
    write_csv(root / "clinical" / "ADNIMERGE.csv", ADNI_FIELDS, rows)
    (root / "bids").mkdir(parents=True, exist_ok=True)
    for subject, session, acq in sessions:
        write_bids_session(root, subject, session, acq)
    return root


def write_aibl(root: Path, visits: list[dict], participants: dict[str, dict], sessions: list[tuple[str, str, str | None]]) -> Path:
    """``visits``: dicts with RID, VISCODE, EXAMDATE, DXCURREN, MMSCORE, CDGLOBAL, LIMMTOTAL, LDELTOTAL.
    ``participants``: RID -> {PTGENDER, PTDOB, APGEN1, APGEN2}."""
    clinical = root / "clinical"
    key = ["RID", "SITEID", "VISCODE"]
    write_csv(clinical / "aibl_ptdemog_01-Jun-2018.csv", key + ["PTGENDER", "PTDOB"],
              [{"RID": rid, "VISCODE": "bl", **p} for rid, p in participants.items()])
    write_csv(clinical / "aibl_apoeres_01-Jun-2018.csv", key + ["APGEN1", "APGEN2"],
              [{"RID": rid, "VISCODE": "bl", **p} for rid, p in participants.items()])
    write_csv(clinical / "aibl_pdxconv_01-Jun-2018.csv", key + ["DXCURREN"], visits)
    write_csv(clinical / "aibl_mmse_01-Jun-2018.csv", key + ["EXAMDATE", "MMSCORE"], visits)
    write_csv(clinical / "aibl_cdr_01-Jun-2018.csv", key + ["EXAMDATE", "CDGLOBAL"], visits)
    write_csv(clinical / "aibl_neurobat_01-Jun-2018.csv", key + ["EXAMDATE", "LIMMTOTAL", "LDELTOTAL"], visits)
    write_csv(clinical / "aibl_mrimeta_01-Jun-2018.csv", key + ["EXAMDATE", "MMCONDCT"], visits)
    (root / "bids").mkdir(parents=True, exist_ok=True)
    for subject, session, acq in sessions:
        write_bids_session(root, subject, session, acq)
    return root


NACC_FIELDS = ["NACCID", "NACCVNUM", "VISITYR", "VISITMO", "VISITDAY", "FORMVER", "NACCUDSD", "NACCAGE", "SEX", "EDUC",
               "RACE", "HISPANIC", "NACCNE4S", "NACCMMSE", "NACCMOCA", "CDRGLOB", "CDRSUM", "NACCGDS", "LOGIMEM",
               "MEMUNITS", "DIGIF", "DIGIFLEN", "DIGIB", "DIGIBLEN", "ANIMALS", "BOSTON", "TRAILA", "TRAILB",
               "CRAFTURS", "CRAFTDRE", "DIGFORCT", "DIGFORSL", "DIGBACCT", "DIGBACLS", "MINTTOTS"]


def nacc_visit(naccid: str, vnum: int, ymd: tuple[int, int, int], udsd: int, v3: bool = False, **values) -> dict:
    row = {"NACCID": naccid, "NACCVNUM": vnum, "VISITYR": ymd[0], "VISITMO": ymd[1], "VISITDAY": ymd[2],
           "FORMVER": 3 if v3 else 2, "NACCUDSD": udsd, "NACCAGE": 72, "SEX": 2, "EDUC": 16, "RACE": 1, "HISPANIC": 0,
           "NACCNE4S": 1, "CDRGLOB": 0.5, "CDRSUM": 1.5, "NACCGDS": 2, "ANIMALS": 18, "TRAILA": 35, "TRAILB": 95}
    v12 = {"NACCMMSE": 27, "NACCMOCA": -4, "LOGIMEM": 12, "MEMUNITS": 10, "DIGIF": 8, "DIGIFLEN": 6, "DIGIB": 6,
           "DIGIBLEN": 4, "BOSTON": 26}
    new = {"CRAFTURS": 20, "CRAFTDRE": 18, "DIGFORCT": 7, "DIGFORSL": 6, "DIGBACCT": 6, "DIGBACLS": 5,
           "MINTTOTS": 28, "NACCMOCA": 24}
    if v3:
        row.update({k: -4 for k in v12} | new | {"NACCMMSE": -4})
    else:
        row.update(v12 | {k: -4 for k in new if k != "NACCMOCA"})
    row.update(values)
    return row


def write_nacc(root: Path, visits: list[dict], mris: list[dict], with_images: bool = True) -> Path:
    """``mris``: dicts with NACCID, MRIYR, MRIMO, MRIDY, NACCMRFI (and MRIT1, default 1)."""
    write_csv(root / "clinical" / "investigator_nacc66.csv", NACC_FIELDS, visits)
    mri_rows = [{"MRIT1": 1, "NACCMNUM": i + 1, **m} for i, m in enumerate(mris)]
    write_csv(root / "clinical" / "investigator_mri_nacc66.csv",
              ["NACCID", "NACCMNUM", "MRIYR", "MRIMO", "MRIDY", "NACCMRFI", "MRIT1", "NACCMRIA"], mri_rows)
    (root / "images").mkdir(parents=True, exist_ok=True)
    if with_images:
        for m in mris:
            (root / "images" / (m["NACCMRFI"].removesuffix(".zip") + ".nii.gz")).write_bytes(b"")
    return root


# --- column definitions -----------------------------------------------------------------------------

PAPER_HEADERS = {
    "ADNI": ["Age", "Sex", "Years of education", "Number of APOE e4 alleles",
             "Mini-Mental State Examination total score", "ADAS-Cog 11-item total score",
             "ADAS-Cog 13-item total score", "RAVLT immediate recall, sum of trials 1 to 5",
             "RAVLT learning, trial 5 minus trial 1", "RAVLT forgetting, trial 5 minus delayed recall",
             "CSF amyloid beta 1-42", "CSF total tau", "CSF phosphorylated tau 181",
             "FDG-PET average SUVR of angular, temporal and posterior cingulate"],
    "AIBL": ["Age", "Sex", "Number of APOE e4 alleles", "Mini-Mental State Examination total score",
             "Clinical Dementia Rating global score", "Logical Memory immediate recall", "Logical Memory delayed recall"],
    "NACC": ["Age", "Sex", "Years of education", "Race", "Hispanic or Latino ethnicity", "Number of APOE e4 alleles",
             "Mini-Mental State Examination total score", "Montreal Cognitive Assessment total score",
             "Clinical Dementia Rating global score", "Clinical Dementia Rating sum of boxes",
             "Geriatric Depression Scale total score", "Logical Memory immediate recall",
             "Logical Memory delayed recall", "Digit span forward trials correct", "Digit span forward length",
             "Digit span backward trials correct", "Digit span backward length", "Animal naming verbal fluency",
             "Boston Naming Test score", "Trail Making Test part A time in seconds",
             "Trail Making Test part B time in seconds"],
}


def test_shipped_columns_reproduce_the_14_7_21_design():
    for cohort, headers in PAPER_HEADERS.items():
        assert [c["header"] for c in cohort_columns(COLUMNS_YAML, cohort)] == headers
    assert [len(h) for h in PAPER_HEADERS.values()] == [14, 7, 21]
    texts = all_header_texts(COLUMNS_YAML)
    assert len(texts) == len(set(texts)) == len({h for hs in PAPER_HEADERS.values() for h in hs})
    assert texts[:14] == PAPER_HEADERS["ADNI"]


def test_adding_a_cohort_or_column_is_a_yaml_edit(tmp_path):
    document = yaml.safe_load(COLUMNS_YAML.read_text())
    mine = {"format": "adni", "label": document["cohorts"]["ADNI"]["label"],
            "columns": document["cohorts"]["ADNI"]["columns"][:3]
            + [{"name": "cdr_sb", "header": "CDR sum of boxes", "type": "continuous", "source": "CDRSB"}]}
    document["cohorts"]["MYADNI"] = mine
    path = tmp_path / "columns.yaml"
    path.write_text(yaml.safe_dump(document))
    assert [c["name"] for c in cohort_columns(path, "MYADNI")] == ["age", "sex", "education", "cdr_sb"]
    assert "CDR sum of boxes" in all_header_texts(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["columns"][1].pop("levels"), "needs 'levels'"),
    (lambda c: c["columns"][0].update(type="number"), "'type' must be one of"),
    (lambda c: c["columns"][4].update(transform="log"), "'transform' must be one of"),
    (lambda c: c["columns"].append(dict(c["columns"][0])), "repeated: ['age']"),
    (lambda c: c["label"]["map"].update(AD="Alzheimer"), "classes must be CN, MCI or DE"),
])
def test_malformed_column_definitions_name_cohort_and_column(tmp_path, edit, message):
    document = yaml.safe_load(COLUMNS_YAML.read_text())
    edit(document["cohorts"]["ADNI"])
    path = tmp_path / "columns.yaml"
    path.write_text(yaml.safe_dump(document))
    with pytest.raises(ColumnsError, match="cohorts.ADNI") as error:
        load_columns(path)
    assert message in str(error.value)


def test_unknown_cohort_is_a_clear_error():
    with pytest.raises(ColumnsError, match="no entry for cohort 'OASIS'"):
        cohort_columns(COLUMNS_YAML, "OASIS")


def test_transforms_and_crosswalks():
    crosswalks = load_columns(COLUMNS_YAML)["crosswalks"]
    adni = {c["name"]: c for c in cohort_columns(COLUMNS_YAML, "ADNI")}
    nacc = {c["name"]: c for c in cohort_columns(COLUMNS_YAML, "NACC")}
    aibl = {c["name"]: c for c in cohort_columns(COLUMNS_YAML, "AIBL")}
    assert harmonise(adni["age"], {"AGE": "70.5", "Years_bl": "2.5"}, None, crosswalks) == 73.0
    assert harmonise(adni["sex"], {"PTGENDER": "Female"}, None, crosswalks) == 1.0
    assert harmonise(adni["csf_abeta"], {"ABETA": ">1700"}, None, crosswalks) == 1700.0
    assert harmonise(adni["csf_ptau"], {"PTAU": "<8"}, None, crosswalks) == 8.0
    assert math.isnan(harmonise(adni["fdg"], {"FDG": ""}, None, crosswalks))
    assert harmonise(aibl["apoe4"], {"APGEN1": "3", "APGEN2": "4"}, None, crosswalks) == 1.0
    assert harmonise(aibl["apoe4"], {"APGEN1": "4", "APGEN2": "4"}, None, crosswalks) == 2.0
    assert math.isnan(harmonise(aibl["apoe4"], {"APGEN1": "-4", "APGEN2": "4"}, None, crosswalks))
    assert harmonise(aibl["age"], {"PTDOB": "/1940"}, pd.Timestamp("2010-05-01").date(), crosswalks) == 70.0
    # UDS v3: MoCA 24 -> MMSE 28, CRAFT delayed 18 -> LM delayed 16, MINT 28 -> Boston 26.
    assert harmonise(nacc["mmse"], {"NACCMMSE": "-4", "NACCMOCA": "24"}, None, crosswalks) == 28.0
    assert harmonise(nacc["mmse"], {"NACCMMSE": "25", "NACCMOCA": "24"}, None, crosswalks) == 25.0
    assert harmonise(nacc["lm_delayed"], {"MEMUNITS": "-4", "CRAFTDRE": "18"}, None, crosswalks) == 16.0
    assert harmonise(nacc["boston"], {"BOSTON": "-4", "MINTTOTS": "28"}, None, crosswalks) == 26.0
    assert math.isnan(harmonise(nacc["trail_b"], {"TRAILB": "996"}, None, crosswalks))
    assert harmonise(nacc["hispanic"], {"HISPANIC": "1"}, None, crosswalks) == 1.0
    assert normalise_code("1.0") == normalise_code(1) == "1"
    assert session_visit_code("M000") == "bl" and session_visit_code("M018") == "m18"


def test_cohort_root_synthetic_and_real():
    config = {"cohorts": {"A": {"source": "synthetic", "format": "adni"},
                          "B": {"source": "real", "format": "aibl", "root": "data/B"}}}
    assert cohort_root(config, "A") == paths.SYNTHETIC_ROOT.format(cohort="A")
    assert cohort_root(config, "B") == "data/B"


# --- readers ----------------------------------------------------------------------------------------

def test_adni_reader(tmp_path):
    root = write_adni(tmp_path / "ADNI", [
        adni_row("027_S_0074", "bl", "2010-01-05", "MCI"),
        adni_row("027_S_0074", "m06", "2010-07-02", "NL to MCI", Years_bl="0.5", PTGENDER=""),
        adni_row("027_S_0074", "m12", "2011-01-10", ""),
    ], [("ADNI027S0074", "M000", "2010-01-07"), ("ADNI027S0074", "M006", "2010-07-01")])
    images, visits, exclusions = read_cohort(root, "ADNI", COLUMNS_YAML, "adni")
    assert list(images["visit_code"]) == ["bl", "m06"]
    assert set(images["source_id"]) == {"027_S_0074"}
    assert list(visits["label"]) == ["MCI", "MCI", ""]
    assert visits["age"].tolist() == [70.5, 71.0, 70.5]
    assert math.isnan(visits["sex"].iloc[1])  # filled per subject later, in the tables stage
    assert exclusions["reason"].str.startswith("no label").sum() == 1
    row = exclusions.iloc[0]
    assert (row["subject"], row["session"], row["row"], row["column"]) == ("ADNI027S0074", "m12", 4, "DX")


def test_aibl_reader_joins_the_csv_set(tmp_path):
    visits = [{"RID": "1", "VISCODE": "bl", "EXAMDATE": "03/15/2008", "DXCURREN": "1", "MMSCORE": "29",
               "CDGLOBAL": "0", "LIMMTOTAL": "14", "LDELTOTAL": "12"},
              {"RID": "1", "VISCODE": "m18", "EXAMDATE": "09/20/2009", "DXCURREN": "2", "MMSCORE": "27",
               "CDGLOBAL": "0.5", "LIMMTOTAL": "-4", "LDELTOTAL": "9"}]
    root = write_aibl(tmp_path / "AIBL", visits, {"1": {"PTGENDER": "2", "PTDOB": "/1938", "APGEN1": "3", "APGEN2": "4"}},
                      [("AIBL1", "M000", "2008-03-20"), ("AIBL1", "M018", "2009-09-21")])
    images, table, exclusions = read_cohort(root, "AIBL", COLUMNS_YAML, "aibl")
    assert exclusions.empty
    assert list(images["visit_code"]) == ["bl", "m18"]
    assert table[["subject", "visit_code", "visit_date", "label"]].values.tolist() == [
        ["AIBL1", "bl", "2008-03-15", "CN"], ["AIBL1", "m18", "2009-09-20", "MCI"]]
    assert table["age"].tolist() == [70.0, 71.0]
    assert table["sex"].tolist() == [1.0, 1.0] and table["apoe4"].tolist() == [1.0, 1.0]
    assert math.isnan(table["lm_immediate"].iloc[1])


def test_nacc_reader_pairs_mri_table_and_images(tmp_path):
    root = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000001", 1, (2014, 3, 2), 1),
                                          nacc_visit("NACC000001", 2, (2016, 3, 9), 3, v3=True)],
                      [{"NACCID": "NACC000001", "MRIYR": 2014, "MRIMO": 4, "MRIDY": 1, "NACCMRFI": "mri1ni.zip"},
                       {"NACCID": "NACC000001", "MRIYR": 2016, "MRIMO": 2, "MRIDY": 1, "NACCMRFI": "mri2ni.zip",
                        "MRIT1": 0}])
    images, visits, exclusions = read_cohort(root, "NACC", COLUMNS_YAML, "nacc")
    assert images[["subject", "session", "visit_code"]].values.tolist() == [["NACC000001", "D20140401", ""]]
    assert images["path"].iloc[0].endswith("images/mri1ni.nii.gz")
    assert visits["label"].tolist() == ["CN", "MCI"]
    assert visits["mmse"].tolist() == [27.0, 28.0]  # v3 visit: MoCA 24 through the crosswalk
    assert exclusions["reason"].tolist() == ["no image: MRIT1='0' (no T1 in this MRI session)"]


# --- bad input: each case names file, row (subject and visit) and column ------------------------------

def test_missing_required_column_stops_the_run(tmp_path):
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")], [])
    table = pd.read_csv(root / "clinical" / "ADNIMERGE.csv").drop(columns=["MMSE"])
    table.to_csv(root / "clinical" / "ADNIMERGE.csv", index=False)
    with pytest.raises(IntakeError, match=r"ADNIMERGE.csv: required column\(s\) \['MMSE'\] not found"):
        read_cohort(root, "ADNI", COLUMNS_YAML, "adni")


def test_missing_native_table_and_format_mismatch_stop_the_run(tmp_path):
    with pytest.raises(IntakeError, match=r"no file matches 'clinical/ADNIMERGE\*\.csv'"):
        read_cohort(tmp_path, "ADNI", COLUMNS_YAML, "adni")
    with pytest.raises(IntakeError, match="cohorts.ADNI.format is 'adni' but config"):
        read_cohort(tmp_path, "ADNI", COLUMNS_YAML, "nacc")


@pytest.mark.parametrize("values, column, reason", [
    ({"MMSE": "twenty"}, "MMSE", "bad value: 'twenty' is not a number"),
    ({"PTGENDER": "X"}, "PTGENDER", "bad value: unknown categorical code 'X'"),
    ({"MMSE": "31"}, "MMSE", "bad value: value 31 is outside the expected range [0, 30]"),
    ({"EXAMDATE": "2010/13/45"}, "EXAMDATE", "bad value: visit date '2010/13/45' is not a date"),
])
def test_data_errors_exclude_the_visit_with_file_row_column(tmp_path, values, column, reason):
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN"), adni_row("027_S_0074", "m06", "2010-07-05", "CN", **values)]
    root = write_adni(tmp_path / "ADNI", rows, [])
    _, visits, exclusions = read_cohort(root, "ADNI", COLUMNS_YAML, "adni")
    assert visits["visit_code"].tolist() == ["bl"]
    [row] = exclusions.to_dict("records")
    assert (row["subject"], row["session"], row["row"], row["column"]) == ("ADNI027S0074", "m06", 3, column)
    assert row["file"].endswith("ADNIMERGE.csv") and row["reason"].startswith(reason)


def test_duplicate_conflicting_rows_are_excluded_identical_ones_kept(tmp_path):
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN"), adni_row("027_S_0074", "bl", "2010-01-05", "CN"),
            adni_row("027_S_0075", "bl", "2010-01-05", "CN"), adni_row("027_S_0075", "bl", "2010-01-05", "CN", MMSE="25")]
    root = write_adni(tmp_path / "ADNI", rows, [])
    _, visits, exclusions = read_cohort(root, "ADNI", COLUMNS_YAML, "adni")
    assert visits["subject"].tolist() == ["ADNI027S0074"]
    [row] = exclusions.to_dict("records")
    assert (row["subject"], row["session"], row["column"]) == ("ADNI027S0075", "bl", "MMSE")
    assert row["reason"].startswith("duplicate conflicting rows: lines 4, 5 of ADNIMERGE.csv")


def test_aibl_participant_conflict_excludes_every_visit_of_the_subject(tmp_path):
    visits = [{"RID": "7", "VISCODE": v, "EXAMDATE": d, "DXCURREN": "1", "MMSCORE": "29", "CDGLOBAL": "0",
               "LIMMTOTAL": "14", "LDELTOTAL": "12"} for v, d in (("bl", "03/15/2008"), ("m18", "09/15/2009"))]
    root = write_aibl(tmp_path / "AIBL", visits, {"7": {"PTGENDER": "2", "PTDOB": "/1938", "APGEN1": "3", "APGEN2": "4"}}, [])
    demog = root / "clinical" / "aibl_ptdemog_01-Jun-2018.csv"
    demog.write_text(demog.read_text() + "7,,m18,1,/1938\n")
    _, table, exclusions = read_cohort(root, "AIBL", COLUMNS_YAML, "aibl")
    assert table.empty
    assert exclusions["session"].tolist() == ["bl", "m18"]
    assert set(exclusions["column"]) == {"PTGENDER"}
    assert exclusions["reason"].str.contains("different PTGENDER values").all()


def test_image_problems_are_excluded_with_reasons(tmp_path):
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")],
                      [("ADNI027S0074", "M000", None), ("ADNI027S0074", "M006", "2010-07-01")])
    scans = root / "bids/sub-ADNI027S0074/ses-M006/sub-ADNI027S0074_ses-M006_scans.tsv"
    scans.write_text(scans.read_text().replace("2010-07-01T10:00:00", "July 2010"))
    images, _, exclusions = read_cohort(root, "ADNI", COLUMNS_YAML, "adni")
    assert images.empty
    assert exclusions[["session", "column"]].values.tolist() == [["M000", "acq_time"], ["M006", "acq_time"]]
    assert exclusions["reason"].iloc[1] == "bad value: acquisition time 'July 2010' is not a date (YYYY-MM-DDTHH:MM:SS)"
    nacc = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000002", 1, (2014, 3, 2), 1)],
                      [{"NACCID": "NACC000002", "MRIYR": 2014, "MRIMO": 2, "MRIDY": 31, "NACCMRFI": "mri9ni.zip"},
                       {"NACCID": "NACC000002", "MRIYR": 2014, "MRIMO": 3, "MRIDY": 1, "NACCMRFI": "mri8ni.zip"}],
                      with_images=False)
    _, _, exclusions = read_cohort(nacc, "NACC", COLUMNS_YAML, "nacc")
    assert exclusions[["row", "column"]].values.tolist() == [[2, "MRIYR/MRIMO/MRIDY"], [3, "NACCMRFI"]]
    assert exclusions["reason"].iloc[1].startswith("no image:")
