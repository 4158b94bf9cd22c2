"""Tables stage: alignment, one timepoint, split, encoding and the build_table outputs."""

from __future__ import annotations

import json
import math
import random
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import run_snakemake
from test_intake import COLUMNS_YAML, adni_row, nacc_visit, write_adni, write_aibl, write_nacc
from workflow import paths
from workflow.intake import intake_cohort, read_cohort
from workflow.settings import IntakeSettings, TablesSettings
from workflow.tables import (
    MISSING_PREFIX,
    SPLITS,
    TableError,
    assign_split,
    build_table,
    column_statistics,
    decode,
    encode,
    match_visit,
)

DAY0 = date(2012, 1, 1)
FRACTIONS = {"train": 0.7, "val": 0.1, "test": 0.2}


def iso(offset: int) -> str:
    return (DAY0 + timedelta(days=offset)).isoformat()


# --- alignment (property-based) ---------------------------------------------------------------------

visit_lists = st.lists(st.tuples(st.sampled_from(["bl", "m06", "m12", "m18", "m24"]), st.integers(-900, 900)),
                       max_size=8, unique_by=lambda v: v[0])


@settings(max_examples=200, deadline=None)
@given(visits=visit_lists, image_day=st.integers(-900, 900), image_code=st.sampled_from(["", "bl", "m12", "m36"]),
       window=st.integers(0, 400))
def test_alignment_prefers_exact_code_then_closest_visit_all_within_window(visits, image_day, image_code, window):
    table = pd.DataFrame({"visit_code": [c for c, _ in visits], "visit_date": [iso(d) for _, d in visits]},
                         index=[f"v{i}" for i in range(len(visits))])
    chosen, delta, how = match_visit(image_code, iso(image_day), table, window)
    offsets = {f"v{i}": d - image_day for i, (_, d) in enumerate(visits)}
    same = [v for v, (code, _) in zip(table.index, visits) if image_code and code == image_code]
    if same and abs(offsets[same[0]]) <= window:
        assert how == "exact_visit_code" and table.loc[chosen, "visit_code"] == image_code
        assert delta == offsets[chosen]
        return
    if chosen is None:
        assert all(abs(d) > window for d in offsets.values())
        if same:  # the same-code visit was too far: the reason gives its day gap
            assert f"same visit code ({image_code}) is {abs(offsets[same[0]])} days" in how
        return
    assert how == "closest_date" and delta == offsets[chosen] and abs(delta) <= window
    for other, d in offsets.items():
        assert abs(d) > abs(delta) or (abs(d) == abs(delta) and d >= delta), "not the closest (or not the earlier on a tie)"


def test_alignment_tie_goes_to_the_earlier_visit_and_window_is_inclusive():
    table = pd.DataFrame({"visit_code": ["a", "b"], "visit_date": [iso(-10), iso(10)]})
    assert match_visit("", iso(0), table, 182)[:2] == (0, -10.0)
    assert match_visit("", iso(0), table, 10)[0] == 0
    chosen, _, how = match_visit("", iso(0), table, 9)
    assert chosen is None and how.startswith("no visit within the window: the closest labelled visit is 10 days")


def test_exact_visit_code_outside_the_window_is_not_taken_on_its_code():
    """Case 6: the window applies to a same-code visit too; the day gap of every pair is kept."""
    table = pd.DataFrame({"visit_code": ["m06", "m12"], "visit_date": [iso(-300), iso(20)]}, index=["a", "b"])
    assert match_visit("m06", iso(0), table, 182) == ("b", 20.0, "closest_date")
    assert match_visit("m06", iso(-250), table, 182) == ("a", -50.0, "exact_visit_code")
    chosen, delta, how = match_visit("m06", iso(0), table, 10)
    assert chosen is None and math.isnan(delta)
    assert how == ("no visit within the window: the closest labelled visit is 20 days from the image (window 10 days); "
                   "the labelled visit of the same visit code (m06) is 300 days from the image")
    undated = pd.DataFrame({"visit_code": ["m06"], "visit_date": [""]})
    chosen, _, how = match_visit("m06", iso(0), undated, 182)
    assert chosen is None and how.endswith("the labelled visit of the same visit code (m06) has no date")


def test_build_table_keeps_the_day_gap_of_exact_code_pairs_within_the_window(tmp_path):
    rows = [adni_row("027_S_0074", "bl", "2010-01-05", "CN"), adni_row("027_S_0074", "m06", "2010-07-05", "CN"),
            adni_row("027_S_0075", "bl", "2010-01-05", "MCI")]
    # 027_S_0075's bl session was scanned 400 days after its bl visit: no visit in the window.
    root = write_adni(tmp_path / "ADNI", rows, [("ADNI027S0074", "M006", "2010-12-01"),
                                                ("ADNI027S0075", "M000", "2011-02-09")])
    out = run_stage(tmp_path, root, "ADNI", "adni", fail_every=1000, window_days=182, split_fractions={"train": 1.0, "val": 0.0, "test": 0.0})
    table, exclusions = read_tsv(out["table"]), read_tsv(out["exclusions"])
    assert table[["subject", "visit_code", "delta_days", "alignment"]].values.tolist() == [
        ["ADNI027S0074", "m06", "-149", "exact_visit_code"]]
    [row] = exclusions[exclusions["subject"] == "ADNI027S0075"].to_dict("records")
    assert row["reason"] == ("no visit within the window: the closest labelled visit is 400 days from the image "
                             "(window 182 days); the labelled visit of the same visit code (bl) is 400 days from the image")
    assert json.loads(out["summary"].read_text())["alignment"]["max_abs_delta_days"] == 149.0


# --- split -------------------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(counts=st.tuples(st.integers(0, 40), st.integers(0, 40), st.integers(0, 40)).filter(lambda c: sum(c) > 0),
       seed=st.integers(0, 2**31))
def test_split_is_subject_wise_stratified_and_seeded(counts, seed):
    subjects = pd.DataFrame([{"subject": f"S{label}{i:03d}", "label": label}
                             for label, n in zip(("CN", "MCI", "DE"), counts) for i in range(n)])
    split = assign_split(subjects.sample(frac=1, random_state=seed % 1000), FRACTIONS, seed)
    assert sorted(split["subject"]) == sorted(subjects["subject"])  # each subject exactly once
    merged = split.merge(subjects, on="subject")
    for label, n in zip(("CN", "MCI", "DE"), counts):
        for name in SPLITS:
            size = int(((merged["label"] == label) & (merged["split"] == name)).sum())
            assert abs(size - n * FRACTIONS[name]) < 1 + 1e-9
    assert split.equals(assign_split(subjects, FRACTIONS, seed))


def test_different_seeds_give_different_splits():
    subjects = pd.DataFrame({"subject": [f"S{i:03d}" for i in range(100)], "label": ["CN"] * 100})
    assert not assign_split(subjects, FRACTIONS, 1).equals(assign_split(subjects, FRACTIONS, 2))


# --- encoding ---------------------------------------------------------------------------------------

ENCODING_COLUMNS = [
    {"name": "age", "type": "continuous", "levels": None},
    {"name": "sex", "type": "categorical", "levels": {"male": 0, "female": 1}},
]


def small_table() -> pd.DataFrame:
    return pd.DataFrame({"split": ["train", "train", "train", "val", "test"],
                         "age": [60.0, 70.0, math.nan, 90.0, 100.0], "sex": [0.0, 1.0, 1.0, math.nan, 0.0]})


def test_statistics_depend_on_the_training_split_only():
    table = small_table()
    stats = column_statistics(table, ENCODING_COLUMNS, "train_split", False)
    assert stats["columns"]["age"]["mean"] == 65.0 and stats["columns"]["age"]["sd"] == 5.0
    changed = table.copy()
    changed.loc[changed["split"] == "test", "age"] = 1000.0
    changed.loc[changed["split"] == "val", "age"] = math.nan
    assert column_statistics(changed, ENCODING_COLUMNS, "train_split", False) == stats
    whole = column_statistics(table, ENCODING_COLUMNS, "whole_table", False)
    assert whole["columns"]["age"]["mean"] == 80.0
    assert column_statistics(changed, ENCODING_COLUMNS, "whole_table", False) != whole


def test_encoding_masks_missing_cells_and_decodes_back():
    table = small_table()
    for zscore_categorical in (False, True):
        stats = column_statistics(table, ENCODING_COLUMNS, "train_split", zscore_categorical)
        encoded = encode(table, stats)
        assert list(encoded.columns) == ["age", "sex", MISSING_PREFIX + "age", MISSING_PREFIX + "sex"]
        assert encoded.loc[2, "age"] == 0.0 and encoded.loc[2, MISSING_PREFIX + "age"] == 1
        assert encoded.loc[0, "age"] == -1.0
        if not zscore_categorical:
            assert encoded["sex"].tolist() == [0.0, 1.0, 1.0, 0.0, 0.0]
        for index, row in encoded.iterrows():
            decoded = decode(row, stats)
            for name in ("age", "sex"):
                original = table.loc[index, name]
                assert decoded[name] is None if math.isnan(original) else decoded[name] == pytest.approx(original)


# --- build_table on small native cohorts -------------------------------------------------------------

def make_adni(root: Path, n_subjects: int, seed: int) -> Path:
    """An ADNI cohort: per subject 2-4 visits 6 months apart, each with an image a few days off;
    some visits unlabelled, one subject without any label, one image far from every visit."""
    rng = random.Random(seed)
    rows, sessions = [], []
    for i in range(n_subjects):
        ptid = f"{100 + i % 900:03d}_S_{1000 + i:04d}"
        subject = "ADNI" + ptid.replace("_", "")
        dx = rng.choice(["CN", "CN", "MCI", "MCI", "Dementia"])
        start = DAY0 + timedelta(days=rng.randint(0, 2000))
        for k in range(rng.randint(2, 4)):
            visit_day = start + timedelta(days=182 * k)
            code = "bl" if k == 0 else f"m{6 * k:02d}"
            label = "" if (i == 0 or rng.random() < 0.1) else dx
            rows.append(adni_row(ptid, code, visit_day.isoformat(), label, Years_bl=str(round(k / 2, 2)),
                                 MMSE=str(rng.randint(18, 30)), ABETA=rng.choice(["", "<200", ">1700", "950.5"])))
            scan_day = visit_day + timedelta(days=rng.randint(-20, 20))
            # Unscheduled session labels match no VISCODE: aligned by date.
            session = f"M{6 * k:03d}" if rng.random() < 0.8 else f"M{6 * k + 1:03d}"
            sessions.append((subject, session, scan_day.isoformat()))
    sessions.append(("ADNI" + rows[-1]["PTID"].replace("_", ""), "M240", (DAY0 + timedelta(days=9000)).isoformat()))
    return write_adni(root, rows, sessions)


def fake_qc(images_path: Path, qc_path: Path, fail_every: int = 7) -> pd.DataFrame:
    """A preprocessing QC table (docs/interfaces.md section 3) in which every n-th image failed."""
    images = pd.read_csv(images_path, sep="\t", dtype=str, keep_default_na=False)
    passed = [i % fail_every != 3 for i in range(len(images))]
    qc = pd.DataFrame({
        "cohort": images["cohort"], "subject": images["subject"], "session": images["session"],
        "passed": ["true" if p else "false" for p in passed],
        "reason": ["" if p else "brain mask volume out of range" for p in passed],
        "volume": [paths.MODEL_READY_VOLUME.format(cohort=c, subject=s, session=t) if p else ""
                   for c, s, t, p in zip(images["cohort"], images["subject"], images["session"], passed)],
    })
    qc_path.parent.mkdir(parents=True, exist_ok=True)
    qc.to_csv(qc_path, sep="\t", index=False)
    return qc


def run_stage(tmp_path: Path, root: Path, cohort: str, fmt: str, fail_every: int = 7, **overrides) -> dict[str, Path]:
    """Intake + fake QC (every ``fail_every``-th image failed) + build_table in ``tmp_path``;
    returns the output paths."""
    out = {key: tmp_path / cohort / key for key in ("images.tsv", "visits.tsv", "intake_exclusions.tsv", "qc.tsv")}
    intake_cohort(str(root / "clinical"), str(root / ("images" if fmt == "nacc" else "bids")), None, str(COLUMNS_YAML),
                  cohort, IntakeSettings(format=fmt, files=None, subject_prefix=None), str(out["images.tsv"]),
                  str(out["visits.tsv"]), str(out["intake_exclusions.tsv"]), str(tmp_path / cohort / "cell_qc.tsv"))
    fake_qc(out["images.tsv"], out["qc.tsv"], fail_every)
    outputs = {key: tmp_path / cohort / "tables" / name for key, name in (
        ("table", "table.tsv"), ("columns", "columns.yaml"), ("stats", "stats.json"), ("split", "split.tsv"),
        ("exclusions", "exclusions.tsv"), ("summary", "summary.json"), ("summary_md", "summary.md"))}
    options = dict(window_days=182, exact_visit_code=True, timepoint="first", seed=2022,
                   split_fractions=FRACTIONS, stats_scope="train_split", zscore_categorical=False)
    split_table_path = overrides.pop("split_table_path", None)
    options.update(overrides)
    build_table(cohort, str(out["images.tsv"]), str(out["visits.tsv"]), str(out["intake_exclusions.tsv"]),
                str(out["qc.tsv"]), str(COLUMNS_YAML), split_table_path, TablesSettings(**options),
                outputs={k: str(v) for k, v in outputs.items()})
    return {**out, **outputs}


def read_tsv(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)


def test_build_table_invariants(tmp_path):
    root = make_adni(tmp_path / "native", 60, seed=3)
    out = run_stage(tmp_path, root, "ADNI", "adni")
    table, images = read_tsv(out["table"]), read_tsv(out["images.tsv"])
    exclusions, split = read_tsv(out["exclusions"]), read_tsv(out["split"])
    # exactly one row per subject, and each subject in one split
    assert table["subject"].is_unique and split["subject"].is_unique
    assert sorted(split["subject"]) == sorted(table["subject"])
    # every image is in the table or in the exclusions with a reason
    used = set(zip(table["subject"], table["session"]))
    excluded = set(zip(exclusions["subject"], exclusions["session"]))
    assert all(key in used or key in excluded for key in zip(images["subject"], images["session"]))
    assert (exclusions["reason"] != "").all()
    # every native visit is in visits.tsv or in the intake exclusions
    visits = read_tsv(out["visits.tsv"])
    native = pd.read_csv(root / "clinical" / "ADNIMERGE.csv", dtype=str, keep_default_na=False)
    from_native = exclusions["file"].str.endswith("ADNIMERGE.csv") & (exclusions["stage"] == "intake")
    assert len(native) == len(visits) + (from_native & ~exclusions["reason"].str.startswith("no label")).sum()
    # failed preprocessing QC is named with the preprocessing reason
    failed = exclusions[exclusions["reason"].str.startswith("image failed preprocessing QC")]
    assert len(failed) and failed["reason"].str.endswith("brain mask volume out of range").all()
    assert failed["file"].str.endswith("qc.tsv").all()
    reasons = set(exclusions["reason"].str.split(":").str[0])
    assert {"no label", "another timepoint kept", "image failed preprocessing QC"} <= reasons
    assert "no visit within the window" in reasons
    # the chosen pair: first image of the subject, within the window, label from the visit
    assert (table["delta_days"].astype(float).abs() <= 182).all()
    assert set(table["alignment"]) == {"exact_visit_code", "closest_date"}
    assert table["label"].tolist() == [str({"CN": 0, "MCI": 1, "DE": 2}[n]) for n in table["label_name"]]
    # split proportions within one subject of 7:1:2 per class
    for name, group in table.groupby("label_name"):
        for part in SPLITS:
            assert abs((group["split"] == part).sum() - len(group) * FRACTIONS[part]) < 1 + 1e-9
    # companions
    columns = yaml.safe_load(out["columns"].read_text())
    assert [c["name"] for c in columns["columns"]][:3] == ["age", "sex", "education"]
    assert columns["columns"][1]["levels"] == {"male": 0, "female": 1}
    stats = json.loads(out["stats"].read_text())
    assert stats["scope"] == "train_split" and stats["rows"] == (table["split"] == "train").sum()
    summary = json.loads(out["summary"].read_text())
    assert summary["subjects"] == len(table) and sum(summary["totals"].values()) == len(table)
    assert "## Subjects per split and class" in out["summary_md"].read_text()
    # decode gives back the harmonised values of the chosen visit
    row = table.iloc[0]
    chosen = visits[(visits["subject"] == row["subject"]) & (visits["visit_code"] == row["visit_code"])].iloc[0]
    decoded = decode({k: float(v) for k, v in row.items() if k in stats["columns"] or k.startswith(MISSING_PREFIX)}, stats)
    assert decoded["mmse"] == pytest.approx(float(chosen["mmse"]))
    assert list(table.columns[-28:-14]) == [c["name"] for c in columns["columns"]]


def test_same_seed_same_table_and_timepoint_choices(tmp_path):
    root = make_adni(tmp_path / "native", 30, seed=5)
    first = run_stage(tmp_path / "a", root, "ADNI", "adni")
    again = run_stage(tmp_path / "b", root, "ADNI", "adni")
    assert first["split"].read_text() == again["split"].read_text()
    last = read_tsv(run_stage(tmp_path / "c", root, "ADNI", "adni", timepoint="last")["table"])
    chosen_first = read_tsv(first["table"]).set_index("subject")["visit_date"]
    assert (last.set_index("subject")["visit_date"] >= chosen_first.reindex(last["subject"])).all()
    random_a = read_tsv(run_stage(tmp_path / "d", root, "ADNI", "adni", timepoint="random")["table"])
    random_b = read_tsv(run_stage(tmp_path / "e", root, "ADNI", "adni", timepoint="random")["table"])
    assert random_a.equals(random_b)


def test_user_split_table_is_honoured(tmp_path):
    root = make_adni(tmp_path / "native", 20, seed=7)
    first = run_stage(tmp_path / "a", root, "ADNI", "adni")
    split = read_tsv(first["split"])
    split["split"] = ["test" if i % 2 else "train" for i in range(len(split))]
    dropped = split["subject"].iloc[0]
    user = tmp_path / "my_split.tsv"
    split.iloc[1:].to_csv(user, sep="\t", index=False)
    out = run_stage(tmp_path / "b", root, "ADNI", "adni", split_table_path=str(user))
    table = read_tsv(out["table"]).set_index("subject")
    assert dropped not in table.index
    assert (table["split"] == split.set_index("subject")["split"].reindex(table.index)).all()
    exclusions = read_tsv(out["exclusions"])
    assert exclusions.loc[exclusions["subject"] == dropped, "reason"].str.startswith("not in the split table").any()
    split.loc[3, "split"] = "holdout"
    split.to_csv(user, sep="\t", index=False)
    with pytest.raises(TableError, match=r"my_split.tsv: line 5 \(subject .*\), column split: 'holdout'"):
        run_stage(tmp_path / "c", root, "ADNI", "adni", split_table_path=str(user))


def test_aibl_and_nacc_tables(tmp_path):
    visits = [{"RID": str(r), "VISCODE": v, "EXAMDATE": (DAY0 + timedelta(days=540 * k + r)).strftime("%m/%d/%Y"),
               "DXCURREN": str(1 + r % 3), "MMSCORE": "28", "CDGLOBAL": "0.5", "LIMMTOTAL": "10", "LDELTOTAL": "-4"}
              for r in range(1, 11) for k, v in enumerate(("bl", "m18"))]
    people = {str(r): {"PTGENDER": str(1 + r % 2), "PTDOB": "/1940", "APGEN1": "3", "APGEN2": "4"} for r in range(1, 11)}
    sessions = [(f"AIBL{r}", s, (DAY0 + timedelta(days=540 * k + r + 3)).isoformat())
                for r in range(1, 11) for k, s in enumerate(("M000", "M018"))]
    aibl = read_tsv(run_stage(tmp_path, write_aibl(tmp_path / "AIBL", visits, people, sessions), "AIBL", "aibl", fail_every=1000)["table"])
    assert aibl["subject"].is_unique and (aibl["visit_code"] == "bl").all()
    assert (aibl[MISSING_PREFIX + "lm_delayed"] == "1").all() and (aibl["lm_delayed"] == "0").all()
    uds = [nacc_visit(f"NACC{n:06d}", k + 1, (2013 + k, 5, 1), [1, 3, 4, 2][n % 4], v3=k == 1) for n in range(12) for k in range(2)]
    mris = [{"NACCID": f"NACC{n:06d}", "MRIYR": 2013 + k, "MRIMO": 6, "MRIDY": 1, "NACCMRFI": f"mri{n}{k}ni.zip"}
            for n in range(12) for k in range(2)]
    out = run_stage(tmp_path, write_nacc(tmp_path / "NACC", uds, mris), "NACC", "nacc", fail_every=1000)
    nacc, exclusions = read_tsv(out["table"]), read_tsv(out["exclusions"])
    assert nacc["subject"].is_unique and (nacc["alignment"] == "closest_date").all()
    assert (nacc["delta_days"] == "-31").all()
    # NACCUDSD 2 (impaired, not MCI) has no class: those subjects only appear in the exclusions
    impaired = {f"NACC{n:06d}" for n in range(12) if n % 4 == 3}
    assert impaired.isdisjoint(nacc["subject"]) and impaired <= set(exclusions["subject"])


def test_cohort_without_usable_rows_stops_the_run(tmp_path):
    root = write_adni(tmp_path / "ADNI", [adni_row("027_S_0074", "bl", "2010-01-05", "")],
                      [("ADNI027S0074", "M000", "2010-01-07")])
    with pytest.raises(TableError, match=r"cohort ADNI: no usable rows .*'no label': 1"):
        run_stage(tmp_path, root, "ADNI", "adni")


def test_qc_table_without_required_columns_stops_the_run(tmp_path):
    root = make_adni(tmp_path / "native", 3, seed=1)
    out = run_stage(tmp_path, root, "ADNI", "adni")
    pd.read_csv(out["qc.tsv"], sep="\t").drop(columns=["volume"]).to_csv(out["qc.tsv"], sep="\t", index=False)
    with pytest.raises(TableError, match=r"qc.tsv: required column\(s\) \['volume'\] not found"):
        build_table("ADNI", str(out["images.tsv"]), str(out["visits.tsv"]), str(out["intake_exclusions.tsv"]),
                    str(out["qc.tsv"]), str(COLUMNS_YAML), None, TablesSettings(182, True, "first", 1, FRACTIONS, "train_split",
                    False), {k: str(out[k]) for k in ("table", "columns", "stats", "split", "exclusions", "summary", "summary_md")})


def test_empty_split_and_qc_tables_stop_with_the_file_named(tmp_path):
    """Issue D: the tables stage reads through the same guarded reader: a 0-byte split table or QC
    table is a TableError naming the file and what was expected, not a pandas traceback."""
    from workflow.tables import read_split_table

    empty = tmp_path / "my_split.tsv"
    empty.write_bytes(b"")
    with pytest.raises(TableError, match=rf"^{empty}: empty file \(0 bytes\); expected a split table \(TSV\) with "
                                         rf"columns subject, split$"):
        read_split_table(str(empty))
    root = make_adni(tmp_path / "native", 3, seed=1)
    out = run_stage(tmp_path, root, "ADNI", "adni")
    out["qc.tsv"].write_bytes(b"")
    with pytest.raises(TableError, match=rf"^{out['qc.tsv']}: empty file \(0 bytes\); expected the preprocessing QC"):
        build_table("ADNI", str(out["images.tsv"]), str(out["visits.tsv"]), str(out["intake_exclusions.tsv"]),
                    str(out["qc.tsv"]), str(COLUMNS_YAML), None, TablesSettings(182, True, "first", 1, FRACTIONS, "train_split",
                    False), {k: str(out[k]) for k in ("table", "columns", "stats", "split", "exclusions", "summary", "summary_md")})


# --- the rules, through the real Snakemake CLI --------------------------------------------------------

def test_snakemake_builds_tables_and_reruns_on_setting_change(snakemake_workdir, tmp_path):
    """Real cohorts built here with empty image files, so the real preprocessing rules cannot run on
    them: QC tables are written into the work dir instead and ``--allowed-rules`` keeps Snakemake
    from regenerating them (test_table_invariants_on_the_tiny_synthetic_run covers the real chain)."""
    workdir = snakemake_workdir
    roots = {"ADNI": make_adni(tmp_path / "ADNI", 15, seed=2)}
    roots["AIBL"] = write_aibl(tmp_path / "AIBL", [{"RID": "1", "VISCODE": "bl", "EXAMDATE": "03/15/2008", "DXCURREN": "1",
                                                   "MMSCORE": "29", "CDGLOBAL": "0", "LIMMTOTAL": "14", "LDELTOTAL": "12"}],
                               {"1": {"PTGENDER": "2", "PTDOB": "/1938", "APGEN1": "3", "APGEN2": "4"}},
                               [("AIBL1", "M000", "2008-03-20")])
    roots["NACC"] = write_nacc(tmp_path / "NACC", [nacc_visit("NACC000001", 1, (2014, 3, 2), 1)],
                               [{"NACCID": "NACC000001", "MRIYR": 2014, "MRIMO": 4, "MRIDY": 1, "NACCMRFI": "mri1ni.zip"}])
    config = tmp_path / "real.yaml"
    config.write_text(yaml.safe_dump({"cohorts": {c: {"source": "real", "format": c.lower(), "root": str(r)}
                                                  for c, r in roots.items()}}))
    # The QC tables list the images that intake will find (read here in-process, quickly).
    for cohort, root in roots.items():
        images = read_cohort(root / "clinical", root / ("images" if cohort == "NACC" else "bids"), cohort, COLUMNS_YAML,
                             cohort.lower()).images
        images_path = tmp_path / f"{cohort}_images.tsv"
        images.to_csv(images_path, sep="\t", index=False)
        fake_qc(images_path, workdir / paths.PREPROCESS_QC.format(cohort=cohort), fail_every=1000)
    tables = [paths.TABLE.format(cohort=c) for c in roots]
    only_tables = ("--allowed-rules", "intake_cohort", "build_table")
    run_snakemake(workdir, *tables, "--cores", "1", *only_tables, configfiles=(config,))
    assert (workdir / "results/logs/build_table/ADNI.log").exists()
    assert (workdir / "results/benchmarks/intake_cohort/NACC.tsv").exists()
    assert len(read_tsv(workdir / paths.TABLE.format(cohort="AIBL"))) == 1
    assert read_tsv(workdir / paths.INTAKE_IMAGES.format(cohort="ADNI")).equals(read_tsv(tmp_path / "ADNI_images.tsv"))
    # a changed setting reruns build_table, not intake
    narrow = tmp_path / "narrow.yaml"
    narrow.write_text(config.read_text() + "tables: {window_days: 90}\n")
    dry = run_snakemake(workdir, *tables, "--cores", "1", "-n", *only_tables, configfiles=(narrow,))
    jobs = dry.stdout.split("Job stats")[-1]
    assert "build_table" in jobs and "intake_cohort" not in jobs


# --- end to end on the tiny synthetic cohorts, with the real preprocessing stage ----------------------

@pytest.mark.slow
def test_table_invariants_on_the_tiny_synthetic_run(tiny_full_run):
    """Every image and every native visit of each synthetic cohort is in the table or excluded with a
    reason; one row per subject; the 14 / 7 / 21 columns; volumes come from the QC table."""
    workdir = tiny_full_run
    widths = {"ADNI": 14, "AIBL": 7, "NACC": 21}
    for cohort, width in widths.items():
        table = read_tsv(workdir / paths.TABLE.format(cohort=cohort))
        exclusions = read_tsv(workdir / paths.TABLE_EXCLUSIONS.format(cohort=cohort))
        images = read_tsv(workdir / paths.INTAKE_IMAGES.format(cohort=cohort))
        visits = read_tsv(workdir / paths.INTAKE_VISITS.format(cohort=cohort))
        qc = read_tsv(workdir / paths.PREPROCESS_QC.format(cohort=cohort)).set_index(["subject", "session"])
        assert table["subject"].is_unique and len(table) > 0
        assert sum(c.startswith(MISSING_PREFIX) for c in table.columns) == width
        used = set(zip(table["subject"], table["session"]))
        excluded = set(zip(exclusions["subject"], exclusions["session"]))
        assert all(key in used or key in excluded for key in zip(images["subject"], images["session"]))
        assert (exclusions["reason"] != "").all()
        for row in table.to_dict("records"):
            assert qc.loc[(row["subject"], row["session"]), "passed"] == "true"
            assert row["volume"] == qc.loc[(row["subject"], row["session"]), "volume"]
        failed = qc[qc["passed"] != "true"].index
        reasons = exclusions.set_index(["subject", "session"])["reason"]
        assert all(reasons.loc[[key]].str.startswith("image failed preprocessing QC").any() for key in failed)
        native_file = {"ADNI": "clinical/ADNIMERGE*.csv", "NACC": "clinical/investigator_nacc*.csv"}.get(cohort)
        if native_file:  # one native row per visit: each is in visits.tsv or excluded at intake
            [native] = (workdir / paths.SYNTHETIC_ROOT.format(cohort=cohort)).glob(native_file)
            from_native = exclusions["file"].map(lambda f: Path(f).name) == native.name
            dropped = (exclusions["stage"] == "intake") & from_native & ~exclusions["reason"].str.startswith("no label")
            assert len(pd.read_csv(native)) == len(visits) + dropped.sum()
