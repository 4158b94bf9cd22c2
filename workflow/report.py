"""Report stage: Table 1 of the paper (rows = methods, columns = cohort x Acc / AUC / F1).

Each cell is the mean over the fine-tuning seeds, with the standard deviation (``mean ± SD``,
sample SD) when more than one seed ran. Any list of variants becomes rows, so baselines and
ablations are more rows of the same table. An AUC computed over only some classes (a tiny test set
without one class) is marked with a dagger and explained under the table.

A "Majority class" row (on by default) shows what always predicting a test set's most frequent
class scores: the bar a model must clear, which matters on small test sets.

Beside Table 1 the stage writes it against the paper's own numbers (``workflow/report/paper_table1.yaml``):
every row of the paper in its order, each cell "reproduced (paper)", and a long CSV with the
difference per cell.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

log = logging.getLogger(__name__)

METRICS = {"accuracy": "Acc", "auc": "AUC", "f1": "F1"}
PARTIAL_AUC_MARK = "†"
PARTIAL_AUC_NOTE = "† AUC averaged over the classes present in a test set that lacks a class."
MAJORITY = "majority"
MAJORITY_NAME = "Majority class"


def collect_metrics(metric_files: list[str | Path]) -> pd.DataFrame:
    """One row per evaluation: variant, cohort, seed, accuracy, auc, f1, auc_complete, test_class_counts
    (the true-class totals of the confusion matrix).

    Raises ValueError naming a file that lacks a field.
    """
    records = []
    for path in metric_files:
        document = json.loads(Path(path).read_text())
        absent = [key for key in ("variant", "cohort", "seed", *METRICS, "confusion_matrix") if key not in document]
        if absent:
            raise ValueError(f"{path}: evaluation metrics lack {absent}")
        auc = document["auc"]
        records.append({
            "test_class_counts": tuple(int(sum(row)) for row in document["confusion_matrix"]),
            "variant": document["variant"], "cohort": document["cohort"], "seed": int(document["seed"]),
            "accuracy": float(document["accuracy"]), "auc": math.nan if auc is None else float(auc),
            "f1": float(document["f1"]), "auc_complete": bool(document.get("auc_complete", True)),
        })
    columns = ["variant", "cohort", "seed", *METRICS, "auc_complete", "test_class_counts"]
    return pd.DataFrame.from_records(records, columns=columns)


def majority_class_scores(class_counts: tuple[int, ...]) -> dict[str, float]:
    """Acc / AUC / macro F1 of always predicting the most frequent class of a test set.

    AUC is 0.5 (one score for every subject). Macro F1 averages over the classes present, as
    ``model.metrics`` does: the majority class has precision m/n and recall 1, every other class 0.
    """
    n, top = sum(class_counts), max(class_counts)
    present = sum(1 for count in class_counts if count > 0)
    return {"accuracy": top / n, "auc": 0.5, "f1": (2 * top / (top + n)) / present}


def majority_row(records: pd.DataFrame, cohorts: list[str]) -> pd.DataFrame:
    """The "Majority class" row in ``summarise``'s layout (no SD, 0 seeds: nothing is trained).

    Raises ValueError when evaluations of one cohort disagree on the test set's class counts.
    """
    row = pd.DataFrame(index=pd.Index([MAJORITY], name="variant"))
    for cohort in cohorts:
        counts = set(records.loc[records["cohort"] == cohort, "test_class_counts"])
        if len(counts) != 1:
            raise ValueError(f"evaluations of cohort {cohort} disagree on the test set's class counts: {sorted(counts)}")
        row.loc[MAJORITY, f"{cohort}_n_seeds"] = 0
        row.loc[MAJORITY, f"{cohort}_auc_complete"] = True
        for metric, value in majority_class_scores(counts.pop()).items():
            row.loc[MAJORITY, f"{cohort}_{metric}"] = value
            row.loc[MAJORITY, f"{cohort}_{metric}_sd"] = math.nan
    return row


def summarise(records: pd.DataFrame, variants: list[str], cohorts: list[str]) -> pd.DataFrame:
    """Mean, SD and seed count per (variant, cohort, metric), in the given row and column order.

    Returns a frame indexed by variant with columns ``<cohort>_<metric>``, ``<cohort>_<metric>_sd``
    (NaN with one seed), ``<cohort>_n_seeds`` and ``<cohort>_auc_complete``.
    """
    table = pd.DataFrame(index=pd.Index(variants, name="variant"))
    for cohort in cohorts:
        for variant in variants:
            runs = records[(records["variant"] == variant) & (records["cohort"] == cohort)]
            if runs.empty:
                raise ValueError(f"no evaluation of variant {variant} on cohort {cohort}")
            table.loc[variant, f"{cohort}_n_seeds"] = len(runs)
            table.loc[variant, f"{cohort}_auc_complete"] = bool(runs["auc_complete"].all())
            for metric in METRICS:
                values = runs[metric].to_numpy(dtype=float)
                table.loc[variant, f"{cohort}_{metric}"] = float(np.nanmean(values)) if np.isfinite(values).any() else math.nan
                finite = values[np.isfinite(values)]
                table.loc[variant, f"{cohort}_{metric}_sd"] = float(np.std(finite, ddof=1)) if len(finite) > 1 else math.nan
    return table


def format_cell(mean: float, sd: float, decimals: int, plus_minus: str) -> str:
    """``0.846`` with one seed, ``0.846 ± 0.012`` with several, ``n/a`` when undefined."""
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{decimals}f}"
    return text if math.isnan(sd) else f"{text}{plus_minus}{sd:.{decimals}f}"


def formatted_cells(summary: pd.DataFrame, cohorts: list[str], decimals: int, plus_minus: str) -> pd.DataFrame:
    """The table's text cells: rows = variants, columns = (cohort, metric label)."""
    columns = pd.MultiIndex.from_tuples([(c, label) for c in cohorts for label in METRICS.values()])
    cells = pd.DataFrame(index=summary.index, columns=columns, dtype=object)
    for variant in summary.index:
        for cohort in cohorts:
            for metric, label in METRICS.items():
                text = format_cell(summary.loc[variant, f"{cohort}_{metric}"], summary.loc[variant, f"{cohort}_{metric}_sd"],
                                   decimals, plus_minus)
                if metric == "auc" and not summary.loc[variant, f"{cohort}_auc_complete"]:
                    text += PARTIAL_AUC_MARK
                cells.loc[variant, (cohort, label)] = text
    return cells


def to_markdown(cells: pd.DataFrame, names: dict[str, str], cohorts: list[str], note: str) -> str:
    header = ["Method", *(f"{cohort} {label}" for cohort, label in cells.columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(cells.columns)) + "|"]
    for variant, row in cells.iterrows():
        lines.append("| " + " | ".join([names.get(variant, variant), *row.tolist()]) + " |")
    return "\n".join(lines) + ("\n\n" + note if note else "") + "\n"


def to_latex(cells: pd.DataFrame, names: dict[str, str], cohorts: list[str], note: str) -> str:
    def escape(text: str) -> str:
        return (text.replace("\\", r"\textbackslash{}").replace("_", r"\_").replace("%", r"\%").replace("&", r"\&")
                .replace(" ± ", r" $\pm$ ").replace(PARTIAL_AUC_MARK, r"$^\dagger$"))

    width = len(METRICS)
    lines = [
        r"\begin{table}[t]", r"\centering",
        r"\caption{Classification on the test sets (mean $\pm$ SD over fine-tuning seeds where several ran).}",
        r"\label{tab:table1}",
        r"\begin{tabular}{l" + "c" * len(cells.columns) + "}", r"\toprule",
        "Method & " + " & ".join(rf"\multicolumn{{{width}}}{{c}}{{{escape(c)}}}" for c in cohorts) + r" \\",
        " ".join(rf"\cmidrule(lr){{{2 + i * width}-{1 + (i + 1) * width}}}" for i in range(len(cohorts))),
        " & " + " & ".join(label for _, label in cells.columns) + r" \\", r"\midrule",
    ]
    for variant, row in cells.iterrows():
        lines.append(" & ".join([escape(names.get(variant, variant)), *(escape(t) for t in row.tolist())]) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}"]
    if note:
        lines.append(r"\par\footnotesize " + escape(note))
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"


def write_table1(
    metric_files: list[str], variants: list[str], cohorts: list[str], method_names: dict[str, str],
    decimals: int, csv_path: str, markdown_path: str, latex_path: str, with_majority_row: bool = True,
    paper_table: str | None = None, comparison_csv: str | None = None, comparison_markdown_path: str | None = None,
) -> pd.DataFrame:
    """Build Table 1 from evaluation metrics files and write it as CSV, Markdown and LaTeX.

    Args:
        metric_files: ``paths.EVAL_METRICS`` files of every (variant, cohort, seed).
        variants: table rows, in order; cohorts: column groups, in order.
        method_names: display name per variant (the variant name where absent).
        decimals: digits after the decimal point.
        csv_path: numeric table (means, SDs, seed counts; one row per variant).
        markdown_path / latex_path: the formatted table.
        paper_table: the paper's numbers (``workflow/report/paper_table1.yaml``); with it,
            ``comparison_csv`` and ``comparison_markdown_path`` get Table 1 next to the paper's.

    Returns:
        The numeric summary (as written to the CSV).
    """
    records = collect_metrics(metric_files)
    summary = summarise(records, variants, cohorts)
    method_names = dict(method_names)
    if with_majority_row:
        summary = pd.concat([summary, majority_row(records, cohorts)])
        method_names.setdefault(MAJORITY, MAJORITY_NAME)
    cells = formatted_cells(summary, cohorts, decimals, " ± ")
    partial = not all(summary[f"{c}_auc_complete"].all() for c in cohorts)
    note = PARTIAL_AUC_NOTE if partial else ""
    numeric = summary.copy()
    for cohort in cohorts:
        numeric[f"{cohort}_n_seeds"] = numeric[f"{cohort}_n_seeds"].astype(int)
        numeric[f"{cohort}_auc_complete"] = numeric[f"{cohort}_auc_complete"].astype(bool)
    numeric.insert(0, "method", [method_names.get(v, v) for v in summary.index])
    for path in (csv_path, markdown_path, latex_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    numeric.reset_index().to_csv(csv_path, index=False, float_format=f"%.{decimals + 3}f")
    Path(markdown_path).write_text(to_markdown(cells, method_names, cohorts, note))
    Path(latex_path).write_text(to_latex(cells, method_names, cohorts, note))
    log.info("Table 1 (%d method(s) x %d cohort(s), %d evaluation(s)):\n%s", len(variants), len(cohorts),
             len(records), Path(markdown_path).read_text())
    if paper_table:
        write_paper_comparison(summary, paper_table, cohorts, method_names, decimals, comparison_csv,
                               comparison_markdown_path)
        log.info("Table 1 against the paper:\n%s", Path(comparison_markdown_path).read_text())
    return numeric


def read_paper_table(path: str | Path) -> dict:
    """The paper's Table 1 (``{"metrics": [...], "rows": {variant: {cohort: [values]}}}``), checked."""
    document = yaml.safe_load(Path(path).read_text())
    metrics = document.get("metrics") if isinstance(document, dict) else None
    if metrics != list(METRICS):
        raise ValueError(f"{path}: 'metrics' must be {list(METRICS)}, got {metrics!r}")
    for variant, row in document["rows"].items():
        for cohort, values in row.items():
            if cohort != "inputs" and (not isinstance(values, list) or len(values) != len(METRICS)):
                raise ValueError(f"{path}: rows.{variant}.{cohort} must list {len(METRICS)} numbers, got {values!r}")
    return document


def compare_with_paper(summary: pd.DataFrame, paper: dict, cohorts: list[str]) -> pd.DataFrame:
    """One row per (paper row or reproduced variant, cohort, metric): paper value, reproduced mean
    and SD, seed count and reproduced - paper. Paper rows come first in the paper's order; variants
    the paper lacks (ablations, a majority row) follow. Unrun rows and cohorts the paper lacks are NaN."""
    order = list(paper["rows"]) + [v for v in summary.index if v not in paper["rows"]]
    records = []
    for variant in order:
        paper_row = paper["rows"].get(variant, {})
        for cohort in cohorts:
            for position, metric in enumerate(METRICS):
                reported = paper_row.get(cohort, [math.nan] * len(METRICS))[position]
                ran = variant in summary.index
                mean = summary.loc[variant, f"{cohort}_{metric}"] if ran else math.nan
                sd = summary.loc[variant, f"{cohort}_{metric}_sd"] if ran else math.nan
                seeds = int(summary.loc[variant, f"{cohort}_n_seeds"]) if ran else 0
                records.append({"variant": variant, "cohort": cohort, "metric": metric, "paper": float(reported),
                                "reproduced": float(mean), "reproduced_sd": float(sd), "n_seeds": seeds,
                                "difference": float(mean - reported)})
    return pd.DataFrame.from_records(records)


def comparison_markdown(comparison: pd.DataFrame, names: dict[str, str], cohorts: list[str], decimals: int) -> str:
    """Cells "reproduced (paper)"; "not run" where the pipeline has no result, "–" where the paper has none."""
    header = ["Method", *(f"{cohort} {label}" for cohort in cohorts for label in METRICS.values())]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * (len(header) - 1)) + "|"]
    for variant, rows in comparison.groupby("variant", sort=False):
        cells = []
        for cohort in cohorts:
            for metric in METRICS:
                row = rows[(rows["cohort"] == cohort) & (rows["metric"] == metric)].iloc[0]
                mine = "not run" if row["n_seeds"] == 0 else format_cell(row["reproduced"], row["reproduced_sd"], decimals, " ± ")
                theirs = "–" if math.isnan(row["paper"]) else f"{row['paper']:.{decimals}f}"
                cells.append(f"{mine} ({theirs})")
        lines.append("| " + " | ".join([names.get(variant, variant), *cells]) + " |")
    note = ("Each cell: reproduced here (the paper's Table 1). Reproduced cells are means over fine-tuning seeds "
            "(± SD where several ran) on this run's cohorts and splits, which need not be the paper's.")
    return "\n".join(lines) + "\n\n" + note + "\n"


def write_paper_comparison(
    summary: pd.DataFrame, paper_path: str, cohorts: list[str], method_names: dict[str, str], decimals: int,
    csv_path: str, markdown_path: str,
) -> pd.DataFrame:
    """Write Table 1 next to the paper's numbers (long CSV + Markdown); returns the long table."""
    comparison = compare_with_paper(summary, read_paper_table(paper_path), cohorts)
    comparison.insert(1, "method", [method_names.get(v, v) for v in comparison["variant"]])
    comparison.to_csv(csv_path, index=False, float_format=f"%.{decimals + 3}f")
    Path(markdown_path).write_text(comparison_markdown(comparison, method_names, cohorts, decimals))
    return comparison
