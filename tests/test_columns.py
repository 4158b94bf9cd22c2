"""Column definitions (config/columns.yaml): every column says which native codes mean "missing"."""

from __future__ import annotations

import pytest
import yaml

from workflow.columns import ColumnsError, load_columns, resolve_columns_path

COLUMNS_YAML = resolve_columns_path("config/columns.yaml")

# Written out here, not imported from workflow.columns, so that the test does not follow a change
# of the code it checks: ADNI's per-form tables write -4 (not applicable / missing) and -1 (not
# done), AIBL and NACC -4 (not collected).
NATIVE_MISSING_CODES = {"adni": (-4, -1), "aibl": (-4,), "nacc": (-4,)}
# A continuous column read as the native number may leave out a code that its range makes a real
# value: ADNIMERGE's RAVLT learning and forgetting are differences of two recalls, and -1 or -4 is a
# score there. A sum or a count cannot (a -4 would hide inside a plausible total).
RANGED_TRANSFORMS = ("number", "censored")


def shipped_columns() -> list[tuple[str, str, dict]]:
    """(cohort, format, raw column entry) for every column of the shipped file, read as plain YAML."""
    document = yaml.safe_load(COLUMNS_YAML.read_text())
    return [(cohort, spec["format"], column) for cohort, spec in document["cohorts"].items()
            for column in spec["columns"]]


@pytest.mark.parametrize("cohort, fmt, column", shipped_columns(),
                         ids=lambda value: value["name"] if isinstance(value, dict) else str(value))
def test_every_shipped_column_lists_its_formats_missing_codes(cohort, fmt, column):
    """Issue A: ABETA, TAU, PTAU and FDG had no missing codes, so an ADNI -4 became a CSF value. Any
    future column without them fails here: each native missing code of the cohort's format is listed
    in `missing`, unless the column's own range makes it a real value."""
    missing = [float(code) for code in column.get("missing", [])]
    value_range = column.get("range")
    for code in NATIVE_MISSING_CODES[fmt]:
        real_value = (column["type"] == "continuous" and column.get("transform", "number") in RANGED_TRANSFORMS
                      and value_range is not None and value_range[0] <= code <= value_range[1])
        assert code in missing or real_value, f"{cohort}.{column['name']}: {code} is neither missing nor in range"
    if column.get("fallback"):
        fallback_missing = [float(code) for code in column["fallback"].get("missing", [])]
        assert all(code in fallback_missing for code in NATIVE_MISSING_CODES[fmt]), f"{cohort}.{column['name']} fallback"


def test_adni_csf_and_fdg_have_missing_codes_and_plausible_ranges():
    adni = {column["name"]: column for column in load_columns(COLUMNS_YAML)["cohorts"]["ADNI"]["columns"]}
    for name in ("csf_abeta", "csf_tau", "csf_ptau", "fdg"):
        assert {"-4", "-1"} <= set(adni[name]["missing"]), name
        low, high = adni[name]["range"]
        assert low >= 0 and high > low, name
    # The Elecsys assay limits (censored values) lie inside the ranges; a negative code does not.
    assert adni["csf_abeta"]["range"][0] <= 200 and adni["csf_abeta"]["range"][1] >= 1700
    assert adni["csf_tau"]["range"][0] <= 80 and adni["csf_tau"]["range"][1] >= 1300
    assert adni["csf_ptau"]["range"][0] <= 8 and adni["csf_ptau"]["range"][1] >= 120
    # RAVLT learning / forgetting are differences: -1 and -4 are real scores, not missing codes.
    assert adni["ravlt_learning"]["missing"] == [] and adni["ravlt_forgetting"]["missing"] == []


def write_with(tmp_path, column: dict, cohort: str = "ADNI"):
    document = yaml.safe_load(COLUMNS_YAML.read_text())
    document["cohorts"][cohort]["columns"].append(column)
    path = tmp_path / "columns.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize("column, message", [
    # no missing codes at all: the loader names the column and the codes it lacks
    ({"name": "cdr_sb", "header": "CDR sum of boxes", "type": "continuous", "source": "CDRSB", "range": [0, 18]},
     r"cohorts.ADNI.columns\[14\] \(cdr_sb\): 'missing' lacks -4, -1: adni tables write -4, -1"),
    # one of the two
    ({"name": "cdr_sb", "header": "CDR sum of boxes", "type": "continuous", "source": "CDRSB", "missing": [-4]},
     r"\(cdr_sb\): 'missing' lacks -1"),
    # a sum hides a -4 inside a plausible total: its range cannot vouch for the code
    ({"name": "total", "header": "A total", "type": "continuous", "source": ["A", "B"], "transform": "sum",
      "range": [-10, 10]}, r"\(total\): 'missing' lacks -4, -1"),
    # a categorical column lists them too
    ({"name": "hand", "header": "Handedness", "type": "categorical", "levels": ["left", "right"], "source": "HAND",
      "map": {1: "left", 2: "right"}}, r"\(hand\): 'missing' lacks -4, -1"),
    # a missing code inside the range would hide real values
    ({"name": "diff", "header": "A difference", "type": "continuous", "source": "D", "missing": [-4, -1],
      "range": [-15, 15]}, r"\(diff\): missing code -4 lies inside 'range'"),
])
def test_a_column_without_its_formats_missing_codes_is_refused(tmp_path, column, message):
    with pytest.raises(ColumnsError, match=message):
        load_columns(write_with(tmp_path, column))


def test_a_column_whose_range_makes_the_codes_real_values_needs_none(tmp_path):
    column = {"name": "diff", "header": "A difference", "type": "continuous", "source": "D", "missing": [],
              "range": [-15, 15]}
    adni = load_columns(write_with(tmp_path, column))["cohorts"]["ADNI"]["columns"]
    assert adni[-1]["missing"] == []
    nacc_column = {"name": "x", "header": "A NACC test", "type": "continuous", "source": "X", "range": [0, 30],
                   "fallback": {"source": "Y", "missing": [88]}, "missing": [88, -4]}
    with pytest.raises(ColumnsError, match=r"cohorts.NACC.columns\[21\] \(x\): fallback 'missing' lacks \['-4'\]"):
        load_columns(write_with(tmp_path, nacc_column, "NACC"))
