"""Table 1: paper layout, mean ± SD over seeds, any list of variants, partial AUCs marked, the
majority-class reference row."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from conftest import markdown_lines
from workflow import paths
from workflow.paper import TABLES
from workflow.report import format_cell, write_results_table
from workflow.settings import ResultTableSettings

COHORTS = ["ADNI", "AIBL"]


def table1_settings(variants: list[str], names: dict[str, str], majority: bool = True) -> ResultTableSettings:
    identity = TABLES["table1"]
    return ResultTableSettings(table_name=identity.name, caption=identity.caption, latex_label=identity.latex_label,
                               variants=tuple(variants), cohorts=tuple(COHORTS), method_names=names, decimals=3,
                               majority_row=majority)


# True-class counts of a test set: CN 1, MCI 4, DE 1 (the demo's ADNI test split).
CONFUSION = [[1, 0, 0], [1, 3, 0], [0, 0, 1]]


def write_metrics(root: Path, variant: str, cohort: str, seed: int, accuracy: float, auc: float | None, f1: float,
                  auc_complete: bool = True, confusion: list[list[int]] = CONFUSION) -> str:
    path = root / paths.EVAL_METRICS.format(variant=variant, cohort=cohort, seed=seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"variant": variant, "cohort": cohort, "seed": seed, "accuracy": accuracy, "auc": auc,
                                "f1": f1, "auc_complete": auc_complete, "confusion_matrix": confusion}))
    return str(path)


def build(tmp_path: Path, files: list[str], variants: list[str], majority: bool = True) -> tuple[pd.DataFrame, str, str]:
    outputs = {ext: str(tmp_path / paths.TABLE1.format(ext=ext)) for ext in ("csv", "md", "tex")}
    numeric = write_results_table(table1_settings(variants, {"citab": "CITab"}, majority), files, outputs["csv"],
                                  outputs["md"], outputs["tex"])
    return numeric, Path(outputs["md"]).read_text(), Path(outputs["tex"]).read_text()


def test_mean_and_sd_over_seeds_in_the_paper_layout(tmp_path: Path) -> None:
    files = []
    for seed, accuracy in zip((1, 2, 3), (0.80, 0.84, 0.88)):
        files.append(write_metrics(tmp_path, "citab", "ADNI", seed, accuracy, 0.9, 0.8))
        files.append(write_metrics(tmp_path, "citab", "AIBL", seed, 0.7, 0.85, 0.6))
        files.append(write_metrics(tmp_path, "citab_no_header", "ADNI", seed, 0.6, 0.8, 0.5))
        files.append(write_metrics(tmp_path, "citab_no_header", "AIBL", seed, 0.6, 0.8, 0.5))
    numeric, markdown, latex = build(tmp_path, files, ["citab", "citab_no_header"])
    lines = markdown_lines(markdown)
    assert lines[0] == "| Method | ADNI Acc | ADNI AUC | ADNI F1 | AIBL Acc | AIBL AUC | AIBL F1 |"
    assert lines[2] == "| CITab | 0.840 ± 0.040 | 0.900 ± 0.000 | 0.800 ± 0.000 | 0.700 ± 0.000 | 0.850 ± 0.000 | 0.600 ± 0.000 |"
    assert lines[3].startswith("| citab_no_header | 0.600 ± 0.000 |")
    assert numeric.loc["citab", "ADNI_accuracy"] == pytest.approx(0.84)
    assert numeric.loc["citab", "ADNI_accuracy_sd"] == pytest.approx(0.04)  # sample SD (ddof = 1)
    assert numeric.loc["citab", "ADNI_n_seeds"] == 3
    assert r"\multicolumn{3}{c}{ADNI}" in latex and r"0.840 $\pm$ 0.040" in latex and r"citab\_no\_header" in latex
    csv = pd.read_csv(tmp_path / paths.TABLE1.format(ext="csv"))
    assert list(csv["variant"]) == ["citab", "citab_no_header", "majority"]


def test_majority_row_scores_always_predicting_the_most_frequent_class(tmp_path: Path) -> None:
    files = [
        write_metrics(tmp_path, "citab", "ADNI", 1, 1.0, 1.0, 1.0),
        write_metrics(tmp_path, "citab", "AIBL", 1, 0.5, 0.7, 0.4, confusion=[[2, 0, 0], [1, 0, 0], [0, 0, 0]]),
    ]
    numeric, markdown, latex = build(tmp_path, files, ["citab"])
    # ADNI: 4 of 6 are MCI -> Acc 4/6; F1 of MCI 2*(4/6)/(4/6 + 1) = 0.8, CN and DE 0 -> macro 0.8 / 3.
    assert markdown_lines(markdown)[3] == "| Majority class | 0.667 | 0.500 | 0.267 | 0.667 | 0.500 | 0.400 |"
    assert numeric.loc["majority", "ADNI_n_seeds"] == 0 and numeric.loc["majority", "method"] == "Majority class"
    assert "Majority class & 0.667" in latex
    _, without, _ = build(tmp_path, files, ["citab"], majority=False)
    assert "Majority" not in without


def test_evaluations_on_different_test_sets_are_named(tmp_path: Path) -> None:
    files = [
        write_metrics(tmp_path, "citab", "ADNI", 1, 1.0, 1.0, 1.0),
        write_metrics(tmp_path, "citab", "ADNI", 2, 1.0, 1.0, 1.0, confusion=[[2, 0, 0], [0, 3, 0], [0, 0, 1]]),
        write_metrics(tmp_path, "citab", "AIBL", 1, 1.0, 1.0, 1.0),
    ]
    with pytest.raises(ValueError, match="cohort ADNI disagree on the test set's class counts"):
        build(tmp_path, files, ["citab"])


def test_single_seed_has_no_sd_and_partial_auc_is_marked(tmp_path: Path) -> None:
    files = [
        write_metrics(tmp_path, "citab", "ADNI", 1, 0.5, 0.75, 0.4, auc_complete=False),
        write_metrics(tmp_path, "citab", "AIBL", 1, 1.0, None, 1.0, auc_complete=False),
    ]
    _, markdown, latex = build(tmp_path, files, ["citab"])
    assert "| CITab | 0.500 | 0.750† | 0.400 | 1.000 | n/a† | 1.000 |" in markdown_lines(markdown)
    assert "† AUC averaged over the classes present" in markdown and r"$^\dagger$" in latex


def test_a_missing_evaluation_is_named(tmp_path: Path) -> None:
    files = [write_metrics(tmp_path, "citab", "ADNI", 1, 0.5, 0.75, 0.4)]
    with pytest.raises(ValueError, match="no evaluation of variant citab on cohort AIBL"):
        build(tmp_path, files, ["citab"])


def test_cells_format() -> None:
    assert format_cell(0.84567, float("nan"), 3, " ± ") == "0.846"
    assert format_cell(float("nan"), float("nan"), 3, " ± ") == "n/a"
    assert format_cell(0.5, 0.01234, 2, " ± ") == "0.50 ± 0.01"


def test_table1_next_to_the_paper_keeps_the_paper_order_and_every_cell(tmp_path: Path) -> None:
    from workflow.report import read_paper_table
    from workflow.smk import REPO_ROOT

    paper_path = REPO_ROOT / paths.PAPER_TABLE1
    paper = read_paper_table(paper_path)
    assert list(paper["rows"]) == ["resnet50", "transformer", "concat", "daft", "cross_attention", "hyperfusion",
                                   "mmcl", "tip", "vita", "citab"]
    files = [write_metrics(tmp_path, variant, cohort, 1, accuracy, 0.9, 0.7)
             for variant, accuracy in (("citab", 0.85), ("daft", 0.80), ("citab_no_header", 0.6)) for cohort in COHORTS]
    outputs = {ext: str(tmp_path / paths.TABLE1.format(ext=ext)) for ext in ("csv", "md", "tex")}
    compared = {ext: str(tmp_path / paths.TABLE1_VS_PAPER.format(ext=ext)) for ext in ("csv", "md")}
    write_results_table(table1_settings(["daft", "citab", "citab_no_header"], {"citab": "CITab", "daft": "DAFT"}),
                        files, outputs["csv"], outputs["md"], outputs["tex"], paper_table=str(paper_path),
                        comparison_csv=compared["csv"], comparison_markdown_path=compared["md"])
    long = pd.read_csv(compared["csv"])
    # Ten paper rows in the paper's order, then what the paper lacks (an ablation, the majority row).
    assert list(dict.fromkeys(long["variant"])) == [*paper["rows"], "citab_no_header", "majority"]
    cell = long[(long["variant"] == "citab") & (long["cohort"] == "AIBL") & (long["metric"] == "accuracy")].iloc[0]
    assert cell["paper"] == pytest.approx(0.817) and cell["reproduced"] == pytest.approx(0.85)
    assert cell["difference"] == pytest.approx(0.85 - 0.817)
    unrun = long[long["variant"] == "tip"]
    assert (unrun["n_seeds"] == 0).all() and unrun["reproduced"].isna().all() and unrun["paper"].notna().all()
    assert not unrun["ran"].any() and long[long["variant"] == "majority"]["ran"].all()
    lines = markdown_lines(Path(compared["md"]).read_text())
    assert lines[0] == "| Method | ADNI Acc | ADNI AUC | ADNI F1 | AIBL Acc | AIBL AUC | AIBL F1 |"
    assert lines[5].startswith("| DAFT | 0.800 (0.811) | 0.900 (0.937) | 0.700 (0.809) | 0.800 (0.785) |")
    assert lines[9] == "| tip | " + " | ".join(f"not run ({v:.3f})" for c in COHORTS for v in paper["rows"]["tip"][c]) + " |"
    assert lines[12].startswith("| citab_no_header | 0.600 (–) |")
    assert lines[13].startswith("| Majority class | 0.") and "not run" not in lines[13]
