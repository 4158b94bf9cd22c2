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
from workflow.intake import (
    CELL_QC_COLUMNS,
    Exclusions,
    IntakeError,
    default_files,
    harmonise,
    intake_cohort,
    read_cohort,
    session_visit_code,
)
from workflow.settings import IntakeSettings

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


def read_root(root: Path, cohort: str, fmt: str, files: dict | None = None):
    """read_cohort on a cohort root of the 'real' layout: clinical/ plus bids/ (adni, aibl) or images/ (nacc)."""
    return read_cohort(root / "clinical", root / ("images" if fmt == "nacc" else "bids"), cohort, COLUMNS_YAML, fmt, files)


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
            + [{"name": "cdr_sb", "header": "CDR sum of boxes", "type": "continuous", "source": "CDRSB",
                "missing": [-4, -1], "range": [0, 18]}]}
    document["cohorts"]["MYADNI"] = mine
    path = tmp_path / "columns.yaml"
    path.write_text(yaml.safe_dump(document))
    assert [c["name"] for c in cohort_columns(path, "MYADNI")] == ["age", "sex", "education", "cdr_sb"]
    assert "CDR sum of boxes" in all_header_texts(path)


@pytest.mark.parametrize("edit, message", [
    (lambda c: c["columns"][1].pop("levels"), "columns[1] (sex): 'levels' is a required property"),
    (lambda c: c["columns"][0].update(type="number"), "columns[0] (age).type: 'number' is not one of ['continuous', "),
    (lambda c: c["columns"][4].update(transform="log"), "columns[4] (mmse).transform: 'log' is not one of ['number', "),
    (lambda c: c["columns"].append(dict(c["columns"][0])), "repeated: ['age']"),
    (lambda c: c["label"]["map"].update(AD="Alzheimer"), "label.map.AD: 'Alzheimer' is not one of ['CN', 'MCI', 'DE']"),
    (lambda c: c["columns"][0].update(levels=["young", "old"]), "columns[0] (age): 'levels' is for categorical columns"),
    (lambda c: c["columns"][0].update(colour="red"), "columns[0] (age): Additional properties are not allowed ('colour'"),
    (lambda c: c["columns"][4].update(source=["A", "B"]), "columns[4] (mmse): transform number takes exactly one source"),
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


def test_intake_and_convert_folders_per_source():
    from workflow.convert import intake_folders, intake_inputs, raw_folders, raw_inputs

    config = {"cohorts": {"A": {"source": "synthetic", "format": "adni"},
                          "B": {"source": "real", "format": "aibl", "root": "data/B"},
                          "C": {"source": "raw", "format": "nacc", "root": "data/C"},
                          "D": {"source": "synthetic_raw", "format": "aibl"}}}
    synthetic = paths.SYNTHETIC_ROOT.format(cohort="A")
    assert intake_folders(config, "A") == {"clinical": f"{synthetic}/clinical", "images": f"{synthetic}/bids"}
    assert intake_inputs(config, "A") == {"root": synthetic}
    assert intake_folders(config, "B") == intake_inputs(config, "B") == {"clinical": "data/B/clinical",
                                                                        "images": "data/B/bids"}
    assert intake_folders(config, "C") == {"clinical": "data/C/clinical", "images": paths.CONVERTED_NIFTI.format(cohort="C")}
    assert intake_inputs(config, "C")["convert_exclusions"] == paths.CONVERT_EXCLUSIONS.format(cohort="C")
    assert raw_folders(config, "C") == raw_inputs(config, "C") == {"images": "data/C/mri", "clinical": "data/C/clinical"}
    raw = paths.SYNTHETIC_RAW_ROOT.format(cohort="D")
    assert raw_folders(config, "D") == {"images": f"{raw}/images", "clinical": f"{raw}/clinical"}
    assert raw_inputs(config, "D") == {"root": raw}
    assert intake_inputs(config, "D") == {"root": raw, "images": paths.CONVERTED_BIDS.format(cohort="D"),
                                          "convert_exclusions": paths.CONVERT_EXCLUSIONS.format(cohort="D")}


# --- readers ----------------------------------------------------------------------------------------

def test_adni_reader(tmp_path):
    root = write_adni(tmp_path / "ADNI", [
        adni_row("027_S_0074", "bl", "2010-01-05", "MCI"),
        adni_row("027_S_0074", "m06", "2010-07-02", "NL to MCI", Years_bl="0.5", PTGENDER=""),
        adni_row("027_S_0074", "m12", "2011-01-10", ""),
    ], [("ADNI027S0074", "M000", "2010-01-07"), ("ADNI027S0074", "M006", "2010-07-01")])
    images, visits, exclusions, _ = read_root(root, "ADNI", "adni")
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
    images, table, exclusions, _ = read_root(root, "AIBL", "aibl")
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
    images, visits, exclusions, _ = read_root(root, "NACC", "nacc")
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
        read_root(root, "ADNI", "adni")


def test_missing_native_table_and_format_mismatch_stop_the_run(tmp_path):
    (tmp_path / "clinical").mkdir()
    with pytest.raises(IntakeError, match=r"no file \(at any depth\) has a name matching 'ADNIMERGE.*files.adnimerge"):
        read_root(tmp_path, "ADNI", "adni")
    with pytest.raises(IntakeError, match="cohorts.ADNI.format is 'adni' but config"):
        read_root(tmp_path, "ADNI", "nacc")
    with pytest.raises(IntakeError, match="the clinical folder of cohort ADNI does not exist"):
        read_root(tmp_path / "nowhere", "ADNI", "adni")


def test_bad_visit_date_still_excludes_the_visit_with_file_row_column(tmp_path):
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN"),
            adni_row("027_S_0074", "m06", "2010/13/45", "CN", MMSE="twenty")]
    root = write_adni(tmp_path / "ADNI", rows, [])
    _, visits, exclusions, cell_qc = read_root(root, "ADNI", "adni")
    assert visits["visit_code"].tolist() == ["bl"] and cell_qc.empty
    [row] = exclusions.to_dict("records")
    assert (row["subject"], row["session"], row["row"], row["column"]) == ("ADNI027S0074", "m06", 3, "EXAMDATE")
    assert row["file"].endswith("ADNIMERGE.csv")
    assert row["reason"].startswith("bad value: visit date '2010/13/45' is not a date")


def test_duplicate_conflicting_rows_are_excluded_identical_ones_kept(tmp_path):
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN"), adni_row("027_S_0074", "bl", "2010-01-05", "CN"),
            adni_row("027_S_0075", "bl", "2010-01-05", "CN"), adni_row("027_S_0075", "bl", "2010-01-05", "CN", MMSE="25")]
    root = write_adni(tmp_path / "ADNI", rows, [])
    _, visits, exclusions, _ = read_root(root, "ADNI", "adni")
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
    _, table, exclusions, _ = read_root(root, "AIBL", "aibl")
    assert table.empty
    assert exclusions["session"].tolist() == ["bl", "m18"]
    assert set(exclusions["column"]) == {"PTGENDER"}
    assert exclusions["reason"].str.contains("different PTGENDER values").all()


def test_image_problems_are_excluded_with_reasons(tmp_path):
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")],
                      [("ADNI027S0074", "M000", None), ("ADNI027S0074", "M006", "2010-07-01")])
    scans = root / "bids/sub-ADNI027S0074/ses-M006/sub-ADNI027S0074_ses-M006_scans.tsv"
    scans.write_text(scans.read_text().replace("2010-07-01T10:00:00", "July 2010"))
    images, _, exclusions, _ = read_root(root, "ADNI", "adni")
    assert images.empty
    assert exclusions[["session", "column"]].values.tolist() == [["M000", "acq_time"], ["M006", "acq_time"]]
    assert exclusions["reason"].iloc[1] == "bad value: acquisition time 'July 2010' is not a date (YYYY-MM-DDTHH:MM:SS)"
    nacc = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000002", 1, (2014, 3, 2), 1)],
                      [{"NACCID": "NACC000002", "MRIYR": 2014, "MRIMO": 2, "MRIDY": 31, "NACCMRFI": "mri9ni.zip"},
                       {"NACCID": "NACC000002", "MRIYR": 2014, "MRIMO": 3, "MRIDY": 1, "NACCMRFI": "mri8ni.zip"}],
                      with_images=False)
    _, _, exclusions, _ = read_root(nacc, "NACC", "nacc")
    assert exclusions[["row", "column"]].values.tolist() == [[2, "MRIYR/MRIMO/MRIDY"], [3, "NACCMRFI"]]
    assert exclusions["reason"].iloc[1].startswith("no image:")


# --- native layouts as the data centres and Clinica ship them ------------------------------------------

def write_scans(session_dir: Path, header: list[str], rows: list[list[str]]) -> None:
    """A scans.tsv with the given columns (Clinica's adni-to-bids: filename, scan_id, mri_field)."""
    subject, session = session_dir.parent.name, session_dir.name
    lines = ["\t".join(header)] + ["\t".join(r) for r in rows]
    (session_dir / f"{subject}_{session}_scans.tsv").write_text("\n".join(lines) + "\n")


T1_PATHS_HEADER = ["Subject_ID", "VISCODE", "Visit", "Sequence", "Scan_Date", "Study_ID", "Field_Strength",
                   "Series_ID", "Image_ID", "Original", "Path"]


def write_t1_paths(bids: Path, run: str, rows: list[tuple[str, str, str, str]]) -> Path:
    """conversion_info/<run>/t1_paths.tsv with rows (PTID, VISCODE, Scan_Date, Image_ID)."""
    path = bids / "conversion_info" / run / "t1_paths.tsv"
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["\t".join(T1_PATHS_HEADER)]
    for ptid, viscode, scan_date, image_id in rows:
        lines.append("\t".join([ptid, viscode, "ADNI Screening", "MPRAGE", scan_date, "1", "3.0", "2", image_id,
                                "True", f"/raw/{ptid}/{image_id}"]))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_adni_clinica_scans_without_acq_time_take_the_t1_paths_scan_date(tmp_path):
    """Case 1: Clinica's scans.tsv has no acq_time (or a blank one with --xml_path): the date comes
    from the highest conversion_info/v<N>/t1_paths.tsv, matched on PTID + VISCODE and Image_ID."""
    sessions = [("ADNI027S0074", s, "2000-01-01") for s in ("M000", "M006", "M012", "M018", "M024")]
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")], sessions)
    bids = root / "bids" / "sub-ADNI027S0074"
    header = ["filename", "scan_id", "mri_field"]
    for session, scan_id in (("M000", "111"), ("M006", "222"), ("M018", "n/a"), ("M024", "999")):
        write_scans(bids / f"ses-{session}", header, [[f"anat/sub-ADNI027S0074_ses-{session}_T1w.nii.gz", scan_id, "3.0"]])
    # With --xml_path Clinica writes acq_time, but it may be blank.
    write_scans(bids / "ses-M012", ["filename", "scan_id", "acq_time"],
                [["anat/sub-ADNI027S0074_ses-M012_T1w.nii.gz", "333", ""]])
    # v9 is an older run (its dates must not be used); v10 is the latest (numeric, not text, order).
    write_t1_paths(root / "bids", "v9", [("027_S_0074", v, "1999-01-01", i) for v, i in
                                         (("bl", "111"), ("m06", "222"), ("m12", "333"))])
    t1_paths = write_t1_paths(root / "bids", "v10", [
        ("027_S_0074", "bl", "2010-01-07", "111"),
        ("027_S_0074", "m06", "2010-07-20", "220"),  # same visit, another image: Image_ID decides
        ("027_S_0074", "m06", "2010-07-01", "222"),
        ("027_S_0074", "m12", "2011-01-12", "I333"),
        ("027_S_0074", "m18", "2011-07-02", "444"),
        ("027_S_0074", "m18", "2011-07-30", "445"),  # two images, scans.tsv scan_id n/a: ambiguous
        ("027_S_0074", "m24", "2012-01-09", "555"),  # scan_id 999 of scans.tsv is not listed
    ])
    images, _, exclusions, _ = read_root(root, "ADNI", "adni")
    assert images[["session", "visit_code", "acq_date"]].values.tolist() == [
        ["M000", "bl", "2010-01-07"], ["M006", "m06", "2010-07-01"], ["M012", "m12", "2011-01-12"]]
    assert exclusions["session"].tolist() == ["M018", "M024"]
    assert set(exclusions["file"]) == {str(t1_paths)}
    m18, m24 = exclusions.to_dict("records")
    assert m18["reason"].startswith("no image date: scans.tsv has no acq_time, and lines 6, 7 of t1_paths.tsv")
    assert m18["row"] == "6, 7"
    assert m18["column"] == "Scan_Date"
    assert m24["reason"].startswith("no image date: scans.tsv has no acq_time") and "scan_id '999'" in m24["reason"]
    assert m24["column"] == "Image_ID"


def test_adni_without_acq_time_or_conversion_info_is_excluded_with_the_reason(tmp_path):
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")],
                      [("ADNI027S0074", "M000", "2000-01-01")])
    session = root / "bids" / "sub-ADNI027S0074" / "ses-M000"
    write_scans(session, ["filename", "scan_id", "mri_field"], [["anat/sub-ADNI027S0074_ses-M000_T1w.nii.gz", "1", "3"]])
    images, _, exclusions, _ = read_root(root, "ADNI", "adni")
    assert images.empty
    [row] = exclusions.to_dict("records")
    assert row["session"] == "M000" and "conversion_info/v<N>/t1_paths.tsv" in row["reason"]
    assert row["reason"].startswith("no image date: scans.tsv has no acq_time and there is no")


def test_adnimerge_pattern_skips_the_dictionary_and_two_releases_stop_the_run(tmp_path):
    """Case 2: ADNIMERGE_DICT_<date>.csv (LONI's data dictionary) is not the ADNIMERGE table."""
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")], [])
    clinical = root / "clinical"
    (clinical / "ADNIMERGE.csv").rename(clinical / "ADNIMERGE_05Jun2024.csv")
    write_csv(clinical / "ADNIMERGE_DICT_05Jun2024.csv", ["FLDNAME", "TEXT"], [{"FLDNAME": "DX", "TEXT": "diagnosis"}])
    _, visits, _, _ = read_root(root, "ADNI", "adni")
    assert visits["source_file"].str.endswith("ADNIMERGE_05Jun2024.csv").all() and len(visits) == 1
    (clinical / "old").mkdir()
    write_csv(clinical / "old" / "ADNIMERGE_01Jan2023.csv", ADNI_FIELDS, [])
    with pytest.raises(IntakeError, match=r"several files match .*: ADNIMERGE_05Jun2024.csv, old/ADNIMERGE_01Jan2023.csv"):
        read_root(root, "ADNI", "adni")


def aibl_visits() -> list[dict]:
    return [{"RID": "1", "VISCODE": v, "EXAMDATE": d, "DXCURREN": "1", "MMSCORE": "29", "CDGLOBAL": "0",
             "LIMMTOTAL": "14", "LDELTOTAL": "12"} for v, d in (("bl", "03/15/2008"), ("m18", "09/20/2009"),
                                                                ("m36", "03/02/2011"))]


def test_aibl_as_clinica_010_and_the_data_centre_ship_it(tmp_path):
    """Case 3: CSVs nested in aibl_<date>/Data_extract_3.3.0/, scans.tsv filename 'anat / <file>',
    acq_time n/a dated from sub-<id>_sessions.tsv, else excluded with the reason."""
    root = write_aibl(tmp_path / "AIBL", aibl_visits(), {"1": {"PTGENDER": "2", "PTDOB": "/1938", "APGEN1": "3",
                                                               "APGEN2": "4"}},
                      [("AIBL1", s, "2000-01-01") for s in ("M000", "M018", "M036")])
    clinical = root / "clinical"
    nested = clinical / "aibl_01-Jun-2018" / "Data_extract_3.3.0"
    nested.mkdir(parents=True)
    for csv_file in clinical.glob("*.csv"):
        csv_file.rename(nested / csv_file.name)
    subject = root / "bids" / "sub-AIBL1"
    header = ["filename", "acq_time"]
    write_scans(subject / "ses-M000", header, [["anat / sub-AIBL1_ses-M000_T1w.nii.gz", "2008-03-20T00:00:00"]])
    write_scans(subject / "ses-M018", header, [["anat / sub-AIBL1_ses-M018_T1w.nii.gz", "n/a"]])
    write_scans(subject / "ses-M036", header, [["anat / sub-AIBL1_ses-M036_T1w.nii.gz", "n/a"]])
    (subject / "sub-AIBL1_sessions.tsv").write_text(
        "session_id\tdiagnosis\texamination_date\tage\nses-M000\tCN\t03/15/2008\t70\n"
        "ses-M018\tCN\t09/20/2009\t71\nses-M036\tCN\tn/a\tn/a\n")
    images, visits, exclusions, _ = read_root(root, "AIBL", "aibl")
    assert images[["session", "acq_date"]].values.tolist() == [["M000", "2008-03-20"], ["M018", "2009-09-20"]]
    assert len(visits) == 3
    [row] = exclusions.to_dict("records")
    assert (row["session"], row["row"], row["column"]) == ("M036", 4, "examination_date")
    assert row["reason"] == ("no image date: scans.tsv acq_time is 'n/a' and examination_date is 'n/a' in "
                             "sub-AIBL1_sessions.tsv")
    # A second release of one table, anywhere under the clinical folder, is an explicit error.
    (clinical / "aibl_01-Jun-2019").mkdir()
    write_csv(clinical / "aibl_01-Jun-2019" / "aibl_mmse_01-Jun-2019.csv", ["RID", "VISCODE"], [])
    with pytest.raises(IntakeError, match=r"several files match 'aibl_mmse_.*aibl_01-Jun-2018/Data_extract_3.3.0/"
                                          r"aibl_mmse_01-Jun-2018.csv, aibl_01-Jun-2019/aibl_mmse_01-Jun-2019.csv"):
        read_root(root, "AIBL", "aibl")


def test_aibl_image_date_is_the_loni_folder_date_of_clinicas_t1_paths(tmp_path):
    """Clinica's aibl-to-bids files every 'MPRAGE SAG ISO' series under ses-M000 whatever its date,
    and its scans.tsv acq_time is the MRI table's date of that session: the acquisition date is the
    LONI date folder of the image, listed in conversion_info/t1_paths.tsv. A session missing there
    keeps the scans.tsv date."""
    root = write_aibl(tmp_path / "AIBL", aibl_visits(), {"1": {"PTGENDER": "2", "PTDOB": "/1938", "APGEN1": "3",
                                                               "APGEN2": "4"}},
                      [("AIBL1", s, "2000-01-01") for s in ("M000", "M018")])
    subject = root / "bids" / "sub-AIBL1"
    header = ["filename", "acq_time"]
    write_scans(subject / "ses-M000", header, [["anat / sub-AIBL1_ses-M000_T1w.nii.gz", "2008-03-20T00:00:00"]])
    write_scans(subject / "ses-M018", header, [["anat / sub-AIBL1_ses-M018_T1w.nii.gz", "2009-09-20T00:00:00"]])
    listing = root / "bids" / "conversion_info" / "t1_paths.tsv"
    listing.parent.mkdir(parents=True)
    listing.write_text("Subjects_ID\tSession_ID\tPath_to_T1\n"
                       "1\tM00\t/data/AIBL/images/1/MPRAGE_SAG_ISO_p2/2011-06-07_09_12_44.0/I300123\n")
    images, _, exclusions, _ = read_root(root, "AIBL", "aibl")
    assert images[["session", "acq_date"]].values.tolist() == [["M000", "2011-06-07"], ["M018", "2009-09-20"]]
    assert exclusions.empty


def nacc_cohort(root: Path) -> Path:
    return write_nacc(root, [nacc_visit("NACC000001", 1, (2014, 3, 2), 1)],
                      [{"NACCID": "NACC000001", "MRIYR": 2014, "MRIMO": 4, "MRIDY": 1, "NACCMRFI": "mri1ni.zip"}])


def test_nacc_file_names_of_current_old_and_custom_releases(tmp_path):
    """Case 4: investigator_ftldlbd_nacc<NN>.csv (current) and investigator_nacc<NN>.csv (old) both
    resolve, never to the MRI table; both at once is an error naming both; a custom data request's
    names come from config files.nacc_uds / files.nacc_mri."""
    root = nacc_cohort(tmp_path / "NACC")
    clinical = root / "clinical"
    images, visits, _, _ = read_root(root, "NACC", "nacc")  # old names, as the generator writes them
    assert len(images) == 1 and visits["source_file"].str.endswith("investigator_nacc66.csv").all()
    (clinical / "investigator_nacc66.csv").rename(clinical / "investigator_ftldlbd_nacc66.csv")
    images, visits, _, _ = read_root(root, "NACC", "nacc")
    assert len(images) == 1 and visits["source_file"].str.endswith("investigator_ftldlbd_nacc66.csv").all()
    (clinical / "investigator_nacc66.csv").write_text((clinical / "investigator_ftldlbd_nacc66.csv").read_text())
    with pytest.raises(IntakeError, match=r"several files match .*: investigator_ftldlbd_nacc66.csv, "
                                          r"investigator_nacc66.csv; .*files.nacc_uds"):
        read_root(root, "NACC", "nacc")
    for old in clinical.glob("investigator_*"):
        old.rename(clinical / ("smith01022024mri.csv" if "_mri_" in old.name else f"{old.stem}.bak"))
    (clinical / "investigator_ftldlbd_nacc66.bak").rename(clinical / "smith01022024.csv")
    files = {"nacc_uds": r"smith\d{8}\.csv", "nacc_mri": r"smith\d{8}mri\.csv"}
    images, visits, _, _ = read_root(root, "NACC", "nacc", files)
    assert len(images) == 1 and visits["source_file"].str.endswith("smith01022024.csv").all()
    with pytest.raises(IntakeError, match=r"cohorts.NACC.files.nacc_uds: '\(' is not a regular expression"):
        read_root(root, "NACC", "nacc", {"nacc_uds": "("})


def test_config_validation_fills_every_files_default_for_every_format():
    """The files settings always exist after validation, defaults filled key by key."""
    from workflow.config_checks import validate_config

    config = {"cohorts": {"A": {"source": "synthetic", "format": "adni"},
                          "B": {"source": "synthetic", "format": "aibl", "files": {}},
                          "C": {"source": "synthetic", "format": "nacc", "files": {"nacc_uds": r"smith\d{8}\.csv"}}}}
    validate_config(config)
    defaults = default_files()
    assert set(defaults) == {"adnimerge", "aibl_table", "nacc_uds", "nacc_mri"}
    for name in ("A", "B"):
        assert config["cohorts"][name]["files"] == defaults
    assert config["cohorts"]["C"]["files"] == defaults | {"nacc_uds": r"smith\d{8}\.csv"}


def test_native_tables_are_read_column_subset(tmp_path):
    """Case 5: only the needed columns are kept in memory (the full NACC UDS table has ~1,900)."""
    from workflow.intake import read_native_csv

    path = tmp_path / "wide.csv"
    write_csv(path, ["A", " B ", "C", "D"], [{"A": " 1", " B ": "x ", "C": "3", "D": "4"}])
    table = read_native_csv(path, ["B"], optional=["A", "Z"])
    assert list(table.columns) == ["B", "A", "_line"]
    assert table.values.tolist() == [["x", "1", 2]]


def test_bad_feature_cells_become_missing_and_go_to_cell_qc(tmp_path):
    """Case 7: a bad cell costs that cell, not the labelled visit; null texts are missing values."""
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN", MMSE="twenty", PTGENDER="X", ADAS11="99"),
            adni_row("027_S_0074", "m06", "2010-07-05", "CN", MMSE="NA", PTEDUCAT="NaN", APOE4="nan", FDG="N/A",
                     ADAS11="NULL", ABETA="null")]
    root = write_adni(tmp_path / "ADNI", rows, [])
    _, visits, exclusions, cell_qc = read_root(root, "ADNI", "adni")
    assert exclusions.empty
    assert visits["visit_code"].tolist() == ["bl", "m06"] and visits["label"].tolist() == ["CN", "CN"]
    for name in ("mmse", "sex", "adas11"):
        assert math.isnan(visits[name].iloc[0])
    assert visits["adas13"].iloc[0] == 11.0
    for name in ("mmse", "education", "apoe4", "fdg", "adas11", "csf_abeta"):
        assert math.isnan(visits[name].iloc[1])
    assert list(cell_qc.columns) == CELL_QC_COLUMNS
    assert cell_qc[["subject", "visit_code", "row", "column", "table_column", "value"]].values.tolist() == [
        ["ADNI027S0074", "bl", 2, "PTGENDER", "sex", "X"],
        ["ADNI027S0074", "bl", 2, "MMSE", "mmse", "twenty"],
        ["ADNI027S0074", "bl", 2, "ADAS11", "adas11", "99"]]
    assert cell_qc["file"].str.endswith("ADNIMERGE.csv").all()
    assert cell_qc["reason"].tolist() == [
        "bad value: unknown categorical code 'X' (expected one of ['Male', 'Female'] or a missing code ['-4', '-1'])",
        "bad value: 'twenty' is not a number",
        "bad value: value 99 is outside the expected range [0, 70]"]


def test_null_texts_are_missing_in_nacc_and_aibl_cells(tmp_path):
    nacc = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000001", 1, (2014, 3, 2), 1, NACCMMSE="NA", SEX="NULL",
                                                     RACE="N/A", TRAILA="NaN")], [])
    _, visits, _, cell_qc = read_root(nacc, "NACC", "nacc")
    assert cell_qc.empty and visits["label"].tolist() == ["CN"]
    assert all(math.isnan(visits[name].iloc[0]) for name in ("mmse", "sex", "race", "trail_a"))
    visits_aibl = aibl_visits()[:1]
    visits_aibl[0].update(MMSCORE="NA", CDGLOBAL="nan")
    aibl = write_aibl(tmp_path / "AIBL", visits_aibl, {"1": {"PTGENDER": "NA", "PTDOB": "NULL", "APGEN1": "N/A",
                                                             "APGEN2": "4"}}, [])
    _, table, _, cell_qc = read_root(aibl, "AIBL", "aibl")
    assert cell_qc.empty and table["label"].tolist() == ["CN"]
    assert all(math.isnan(table[name].iloc[0]) for name in ("mmse", "cdr_global", "sex", "age", "apoe4"))


def test_intake_cohort_writes_cell_qc_and_carries_the_convert_exclusions(tmp_path):
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN", MMSE="twenty")],
                      [("ADNI027S0074", "M000", "2010-01-07")])
    upstream = tmp_path / "convert_exclusions.tsv"
    pd.DataFrame([{"stage": "convert", "cohort": "ADNI", "subject": "ADNI027S0075", "session": "M000",
                   "file": "/raw/027_S_0075", "row": "", "column": "", "reason": "conversion failed: dcm2niix"}],
                 columns=paths.EXCLUSION_COLUMNS).to_csv(upstream, sep="\t", index=False)
    out = {name: tmp_path / "out" / f"{name}.tsv" for name in ("images", "visits", "exclusions", "cell_qc")}
    settings = IntakeSettings(format="adni", files=None, subject_prefix=None)
    intake_cohort(str(root / "clinical"), str(root / "bids"), str(upstream), str(COLUMNS_YAML), "ADNI", settings,
                  *(str(out[name]) for name in ("images", "visits", "exclusions", "cell_qc")))
    read = {"sep": "\t", "dtype": str, "keep_default_na": False}
    cell_qc = pd.read_csv(out["cell_qc"], **read)
    assert list(cell_qc.columns) == CELL_QC_COLUMNS and cell_qc["value"].tolist() == ["twenty"]
    exclusions = pd.read_csv(out["exclusions"], **read)
    assert exclusions["stage"].tolist() == ["convert"] and exclusions["reason"].tolist() == ["conversion failed: dcm2niix"]
    assert len(pd.read_csv(out["images"], **read)) == 1 and len(pd.read_csv(out["visits"], **read)) == 1
    pd.DataFrame({"subject": ["x"]}).to_csv(upstream, sep="\t", index=False)
    with pytest.raises(IntakeError, match=r"convert_exclusions.tsv: columns \['subject'\]; expected exactly"):
        intake_cohort(str(root / "clinical"), str(root / "bids"), str(upstream), str(COLUMNS_YAML), "ADNI", settings,
                      *(str(out[name]) for name in ("images", "visits", "exclusions", "cell_qc")))


# --- missing codes, subject ids and prefixes, file reading, BIDS labels (a user's issue) -------------

def test_adni_per_form_missing_codes_and_the_sas_dot_are_missing(tmp_path):
    """Issue A: -4 / -1 (ADNI per-form codes) and '.' (SAS) are missing values, not CSF or FDG numbers;
    a CSF or FDG value outside its plausible range is a bad cell; RAVLT learning and forgetting keep
    -1 and -4 (differences of two recalls: real scores)."""
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN", ABETA="-4", TAU="-1", PTAU=".", FDG="-4", MMSE=".",
                     ADAS13="-1", RAVLT_learning="-1", RAVLT_forgetting="-4"),
            adni_row("027_S_0074", "m06", "2010-07-05", "CN", ABETA="-4.0", TAU="99999", FDG="0.2")]
    root = write_adni(tmp_path / "ADNI", rows, [])
    _, visits, exclusions, cell_qc = read_root(root, "ADNI", "adni")
    assert exclusions.empty
    first, second = visits.to_dict("records")
    for name in ("csf_abeta", "csf_tau", "csf_ptau", "fdg", "mmse", "adas13"):
        assert math.isnan(first[name]), name
    assert (first["ravlt_learning"], first["ravlt_forgetting"]) == (-1.0, -4.0)
    assert all(math.isnan(second[name]) for name in ("csf_abeta", "csf_tau", "fdg"))
    assert cell_qc[["row", "column", "value"]].values.tolist() == [[3, "TAU", "99999"], [3, "FDG", "0.2"]]
    assert cell_qc["reason"].str.contains("outside the expected range").all()


def test_the_sas_dot_is_missing_in_nacc_and_aibl_cells(tmp_path):
    nacc = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000001", 1, (2014, 3, 2), 1, NACCMMSE=".", SEX=".",
                                                     TRAILB=".")], [])
    _, visits, _, cell_qc = read_root(nacc, "NACC", "nacc")
    assert cell_qc.empty and all(math.isnan(visits[name].iloc[0]) for name in ("mmse", "sex", "trail_b"))
    visits_aibl = aibl_visits()[:1]
    visits_aibl[0].update(MMSCORE=".", LIMMTOTAL="-4")
    aibl = write_aibl(tmp_path / "AIBL", visits_aibl, {"1": {"PTGENDER": ".", "PTDOB": "/1938", "APGEN1": "3",
                                                             "APGEN2": "4"}}, [])
    _, table, _, cell_qc = read_root(aibl, "AIBL", "aibl")
    assert cell_qc.empty and all(math.isnan(table[name].iloc[0]) for name in ("mmse", "sex", "lm_immediate"))


def test_two_native_ids_giving_one_subject_label_stop_intake(tmp_path):
    """Issue B: PTIDs 005_S_5735 and 005S5735 both give ADNI005S5735; their visits would be merged
    into one participant. The error names both ids with their files and lines."""
    rows = [adni_row("005_S_5735", "bl", "2012-01-05", "CN"), adni_row("005S5735", "m06", "2012-07-05", "MCI")]
    root = write_adni(tmp_path / "ADNI", rows, [])
    with pytest.raises(IntakeError) as error:
        read_root(root, "ADNI", "adni")
    merge = root / "clinical" / "ADNIMERGE.csv"
    assert str(error.value).startswith(
        f"{merge}: line 3, column PTID: subject id '005S5735' and subject id '005_S_5735' ({merge}, line 2) both "
        f"become subject label 'ADNI005S5735'")
    # NACC: an MRI-table id that differs from the visit table's only by punctuation is a collision too.
    nacc = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000001", 1, (2014, 3, 2), 1)],
                      [{"NACCID": "NACC-000001", "MRIYR": 2014, "MRIMO": 4, "MRIDY": 1, "NACCMRFI": "mri1ni.zip"}])
    with pytest.raises(IntakeError, match=r"investigator_mri_nacc66.csv: line 2, column NACCID: subject id "
                                          r"'NACC-000001' and subject id 'NACC000001' \(.*investigator_nacc66.csv, "
                                          r"line 2\) both become subject label 'NACC000001'"):
        read_root(nacc, "NACC", "nacc")


def test_unsafe_subject_ids_are_excluded_with_file_line_and_column(tmp_path):
    """Issue B: ids that could become a path or hide a typo ('../x', spaces, a null text) are not
    rewritten: their rows are excluded, naming file, line and column."""
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN"), adni_row("../x", "bl", "2010-01-05", "CN"),
            adni_row("027 S 0075", "bl", "2010-01-05", "CN"), adni_row("NA", "bl", "2010-01-05", "CN")]
    root = write_adni(tmp_path / "ADNI", rows, [("ADNI027S0074", "M000", "2010-01-07")])
    images, visits, exclusions, _ = read_root(root, "ADNI", "adni")
    assert visits["subject"].tolist() == ["ADNI027S0074"] and len(images) == 1
    assert exclusions[["subject", "session", "row", "column"]].values.tolist() == [
        ["../x", "bl", 3, "PTID"], ["027 S 0075", "bl", 4, "PTID"], ["NA", "bl", 5, "PTID"]]
    assert exclusions["file"].str.endswith("ADNIMERGE.csv").all()
    assert exclusions["reason"].tolist() == [
        "bad subject id: the subject id '../x' has characters outside letters, digits, '_' and '-' (['.', '/']); "
        "it is not rewritten (two ids could become one participant, or a path)",
        "bad subject id: the subject id '027 S 0075' has characters outside letters, digits, '_' and '-' ([' ']); "
        "it is not rewritten (two ids could become one participant, or a path)",
        "bad subject id: the subject id is empty or a null text ('NA')"]
    nacc = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000001", 1, (2014, 3, 2), 1)],
                      [{"NACCID": "NACC000001", "MRIYR": 2014, "MRIMO": 4, "MRIDY": 1, "NACCMRFI": "mri1ni.zip"},
                       {"NACCID": "NACC/2", "MRIYR": 2014, "MRIMO": 5, "MRIDY": 1, "NACCMRFI": "mri2ni.zip"}])
    images, _, exclusions, _ = read_root(nacc, "NACC", "nacc")
    assert images["subject"].tolist() == ["NACC000001"]
    assert exclusions[["subject", "row", "column"]].values.tolist() == [["NACC/2", 3, "NACCID"]]
    assert exclusions["file"].iloc[0].endswith("investigator_mri_nacc66.csv")


def oasis_columns(tmp_path: Path) -> Path:
    """The shipped column definitions plus OASIS, a fourth cohort in the ADNI format."""
    document = yaml.safe_load(COLUMNS_YAML.read_text())
    document["cohorts"]["OASIS"] = document["cohorts"]["ADNI"]
    path = tmp_path / "columns.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def oasis_root(root: Path) -> Path:
    """OASIS in the ADNI layout: PTID OAS30001, BIDS folders sub-OAS30001 (no ADNI prefix); the
    M006 session has no acq_time and is dated by Clinica's t1_paths.tsv, listed by PTID."""
    root = write_adni(root, [adni_row("OAS30001", "bl", "2010-01-05", "CN"), adni_row("OAS30001", "m06", "2010-07-05", "MCI")],
                      [("OAS30001", "M000", "2010-01-07")])
    session = root / "bids" / "sub-OAS30001" / "ses-M006"
    (session / "anat").mkdir(parents=True)
    (session / "anat" / "sub-OAS30001_ses-M006_T1w.nii.gz").write_bytes(b"")
    write_scans(session, ["filename", "scan_id", "mri_field"], [["anat/sub-OAS30001_ses-M006_T1w.nii.gz", "5", "3"]])
    write_t1_paths(root / "bids", "v0", [("OAS30001", "m06", "2010-07-01", "5")])
    return root


def test_a_fourth_adni_format_cohort_takes_its_subject_prefix_from_config(tmp_path):
    """Issue C: the subject prefix (ADNI, AIBL) is config, not code. With the format's default
    ('ADNI') no image of sub-OAS30001 would meet a visit: intake stops, saying which setting joins
    them. With subject_prefix '' every image is paired with its visit."""
    from workflow.tables import align

    root, columns = oasis_root(tmp_path / "OASIS"), oasis_columns(tmp_path)
    with pytest.raises(IntakeError, match=r"cohort OASIS: none of the 1 subjects with images \(e.g. \['OAS30001'\]\) "
                                          r"has a row in the clinical tables, whose ids give the labels "
                                          r"\['ADNIOAS30001'\] \(prefix 'ADNI', the format's default, plus the PTID .*"
                                          r"Set cohorts.OASIS.subject_prefix in config"):
        read_cohort(root / "clinical", root / "bids", "OASIS", columns, "adni")
    images, visits, exclusions, _ = read_cohort(root / "clinical", root / "bids", "OASIS", columns, "adni", None, "")
    assert exclusions.empty and set(visits["subject"]) == {"OAS30001"}
    assert images[["subject", "session", "source_id", "visit_code", "acq_date"]].values.tolist() == [
        ["OAS30001", "M000", "OAS30001", "bl", "2010-01-07"], ["OAS30001", "M006", "OAS30001", "m06", "2010-07-01"]]
    pairs = align(images.assign(volume="v.npy"), visits, 182, True, "visits.tsv", Exclusions("tables", "OASIS"))
    assert pairs[["session", "visit_code", "alignment"]].values.tolist() == [
        ["M000", "bl", "exact_visit_code"], ["M006", "m06", "exact_visit_code"]]
    with pytest.raises(IntakeError, match=r"config cohorts.OASIS.subject_prefix: 'OA-S'; expected letters and digits"):
        read_cohort(root / "clinical", root / "bids", "OASIS", columns, "adni", None, "OA-S")


def test_subject_prefix_is_an_optional_config_key_of_letters_and_digits():
    from snakemake.exceptions import WorkflowError

    from workflow.config_checks import validate_config

    config = {"cohorts": {"A": {"source": "synthetic", "format": "adni", "subject_prefix": ""},
                          "B": {"source": "synthetic", "format": "aibl", "subject_prefix": "OAS"},
                          "C": {"source": "synthetic", "format": "nacc"}}}
    validate_config(config)
    assert "subject_prefix" not in config["cohorts"]["C"]  # unset: intake takes the format's default
    config["cohorts"]["A"]["subject_prefix"] = "../"
    with pytest.raises(WorkflowError, match="subject_prefix"):
        validate_config(config)


def test_the_intake_rule_passes_the_subject_prefix(snakemake_workdir, tmp_path):
    """The rule hands config cohorts.<name>.subject_prefix to intake (through the real CLI)."""
    from conftest import REPO, run_snakemake

    root, columns = oasis_root(tmp_path / "OASIS"), oasis_columns(tmp_path)
    overlay = tmp_path / "oasis.yaml"
    overlay.write_text(yaml.safe_dump({
        "cohorts": {"OASIS": {"source": "real", "format": "adni", "root": str(root), "subject_prefix": ""}},
        "tables": {"columns": str(columns)}}))
    target = paths.INTAKE_IMAGES.format(cohort="OASIS")
    run_snakemake(snakemake_workdir, target, "--cores", "1", "--allowed-rules", "intake_cohort",
                  configfiles=(REPO / "config" / "demo.yaml", overlay))
    images = pd.read_csv(snakemake_workdir / target, sep="\t", dtype=str)
    assert images["subject"].tolist() == ["OAS30001", "OAS30001"]


def test_empty_blank_latin1_and_bom_native_files(tmp_path, caplog):
    """Issue D: every native read goes through one guarded reader: a 0-byte or blank file is an
    IntakeError naming it and what was expected; a Latin-1 byte is read as Latin-1 (logged); a
    UTF-8 byte-order mark is dropped."""
    from workflow.intake import read_native_csv

    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN", SITE="Genève")],
                      [("ADNI027S0074", "M000", "2010-01-07")])
    merge = root / "clinical" / "ADNIMERGE.csv"
    text = merge.read_text(encoding="utf-8")
    merge.write_bytes(b"")
    with pytest.raises(IntakeError, match=rf"^{merge}: empty file \(0 bytes\); expected a header line with the "
                                          rf"column\(s\) \['PTID', 'VISCODE', 'EXAMDATE', 'AGE', "):
        read_root(root, "ADNI", "adni")
    merge.write_text("\n\n")
    with pytest.raises(IntakeError, match=rf"^{merge}: no header line \(the file holds only blank lines\); expected"):
        read_root(root, "ADNI", "adni")
    merge.write_bytes(text.encode("latin-1"))
    with caplog.at_level("INFO", logger="workflow.intake"):
        _, visits, _, _ = read_root(root, "ADNI", "adni")
    assert visits["subject"].tolist() == ["ADNI027S0074"]
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [f"{merge}: not valid UTF-8; read as latin-1 (check accented text in the file)"]
    t1_paths = tmp_path / "t1_paths.tsv"
    t1_paths.write_bytes("\ufeffSubject_ID\tScan_Date\n027_S_0074\t2010-01-07\n".encode("utf-8"))
    assert read_native_csv(t1_paths, ["Subject_ID"], sep="\t").values.tolist() == [["027_S_0074", 2]]
    scans = root / "bids" / "sub-ADNI027S0074" / "ses-M000" / "sub-ADNI027S0074_ses-M000_scans.tsv"
    scans.write_bytes(b"")
    merge.write_text(text)
    with pytest.raises(IntakeError, match=rf"^{scans}: empty file \(0 bytes\); expected a header line with the "
                                          rf"column\(s\) \['filename'\]"):
        read_root(root, "ADNI", "adni")


def test_bids_folders_with_bad_labels_are_excluded_naming_the_folder(tmp_path):
    """Issue D: a sub-/ses- label with characters other than letters and digits would only fail
    later (a Snakemake MissingInputException); intake excludes the session and names the folder."""
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "CN")],
                      [("ADNI027S0074", "M000", "2010-01-07"), ("ADNI027S0074", "M 006", "2010-07-01"),
                       ("ADNI027S0074_b", "M000", "2010-01-07")])
    images, _, exclusions, _ = read_root(root, "ADNI", "adni")
    assert images[["subject", "session"]].values.tolist() == [["ADNI027S0074", "M000"]]
    bids = root / "bids"
    assert exclusions[["subject", "session", "file", "column"]].values.tolist() == [
        ["ADNI027S0074", "M 006", str(bids / "sub-ADNI027S0074" / "ses-M 006"), "path"],
        ["ADNI027S0074_b", "M000", str(bids / "sub-ADNI027S0074_b" / "ses-M000"), "path"]]
    assert exclusions["reason"].tolist() == [
        f"bad BIDS label: folder 'ses-M 006' ({bids / 'sub-ADNI027S0074' / 'ses-M 006'}): a BIDS ses- label has only "
        f"letters and digits (got 'M 006'); rename the folder and the files in it",
        f"bad BIDS label: folder 'sub-ADNI027S0074_b' ({bids / 'sub-ADNI027S0074_b'}): a BIDS sub- label has only "
        f"letters and digits (got 'ADNI027S0074_b'); rename the folder and the files in it"]
