"""Report stage: the paper's result tables (rows = methods, columns = cohort x Acc / AUC / F1).

One writer, :func:`write_results_table`, makes every table: Table 1 (the methods), Table 2 (the
ablations and alternatives) and Table 3 (the number of P-MoLin experts, with an average over the
cohorts). Any list of variants becomes rows. Each cell is the mean over the fine-tuning seeds and
carries either the standard deviation over the seeds (``mean ± SD``, sample SD, when more than
one seed ran) or a 95 % bootstrap interval over test subjects (``mean [lo, hi]``), as
``report.interval`` says (:mod:`workflow.uncertainty`). Against a reference row (CITab in Tables 2
and 3) every other row gets a paired test per cell; a marker flags p < alpha and the p-values go to
a table of their own. An AUC computed over only some classes (a tiny test set without one class)
is marked with a dagger and explained under the table. A row that could not run (the alternative
header encoder when its folder is not supplied) stays in the table and says why.

A "Majority class" row (Table 1) shows what always predicting a test set's most frequent class
scores: the bar a model must clear, which matters on small test sets.

Beside each table the stage writes it against the paper's own numbers
(``workflow/report/paper_table<N>.yaml``): every row of the paper in its order, each cell
"reproduced (paper)", and a long CSV with the difference per cell.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from workflow import provenance, uncertainty
from workflow.settings import HeaderSimilarityTableSettings, ResultTableSettings, Uncertainty

log = logging.getLogger(__name__)

METRICS = {"accuracy": "Acc", "auc": "AUC", "f1": "F1"}
PARTIAL_AUC_MARK = "†"
PARTIAL_AUC_NOTE = "† AUC averaged over the classes present in a test set that lacks a class."
MAJORITY = "majority"
MAJORITY_NAME = "Majority class"
# The column group of Table 3 that averages every metric over the cohorts.
AVERAGE = "Average"
SIGNIFICANCE_MARK = "*"
UNAVAILABLE_NOTE = ("A row that did not run keeps its place and says why; \"encoder not supplied\": its header "
                    "encoder has no local folder (headers.encoders.<name>.path). Supply the folder and rerun.")


def collect_metrics(metric_files: list[str | Path]) -> pd.DataFrame:
    """One row per evaluation: variant, cohort, seed, accuracy, auc, f1, auc_complete, test_class_counts
    (the true-class totals of the confusion matrix), run_hash (``workflow.provenance``).

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
            "run_hash": str(document.get("run_hash", "")),  # absent from evaluations written before provenance
        })
    columns = ["variant", "cohort", "seed", *METRICS, "auc_complete", "test_class_counts", "run_hash"]
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


def with_cohort_average(records: pd.DataFrame, cohorts: list[str]) -> pd.DataFrame:
    """``records`` plus one pseudo-cohort ``Average`` per (variant, seed): each metric's mean over
    ``cohorts`` (NaN when a cohort lacks it), so that its mean ± SD is taken over seeds like any cell.

    Raises ValueError naming a (variant, seed) that misses a cohort.
    """
    averages = []
    for (variant, seed), runs in records[records["cohort"].isin(cohorts)].groupby(["variant", "seed"], sort=False):
        if sorted(runs["cohort"]) != sorted(cohorts):
            raise ValueError(f"variant {variant} seed {seed}: evaluations of {sorted(runs['cohort'])}, "
                             f"the average needs all of {sorted(cohorts)}")
        averages.append({"variant": variant, "cohort": AVERAGE, "seed": seed,
                         **{metric: float(runs[metric].mean()) for metric in METRICS},
                         "auc_complete": bool(runs["auc_complete"].all()), "test_class_counts": ()})
    return pd.concat([records, pd.DataFrame.from_records(averages, columns=records.columns)], ignore_index=True)


def summarise(records: pd.DataFrame, variants: list[str], cohorts: list[str]) -> pd.DataFrame:
    """Mean, SD and seed count per (variant, cohort, metric), in the given row and column order.

    Returns a frame indexed by variant with columns ``<cohort>_<metric>``, ``<cohort>_<metric>_sd``
    (NaN with one seed), ``<cohort>_n_seeds``, ``<cohort>_auc_complete`` and, for a cohort of
    evaluations, ``<cohort>_runs``: their run hashes by seed (``python -m workflow.provenance``).
    """
    table = pd.DataFrame(index=pd.Index(variants, name="variant"))
    for cohort in cohorts:
        for variant in variants:
            runs = records[(records["variant"] == variant) & (records["cohort"] == cohort)]
            if runs.empty:
                raise ValueError(f"no evaluation of variant {variant} on cohort {cohort}")
            table.loc[variant, f"{cohort}_n_seeds"] = len(runs)
            table.loc[variant, f"{cohort}_auc_complete"] = bool(runs["auc_complete"].all())
            if cohort != AVERAGE:
                table.loc[variant, provenance.RUNS_COLUMN.format(cohort=cohort)] = provenance.RUNS_SEPARATOR.join(
                    runs.sort_values("seed")["run_hash"].fillna(""))
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


def format_interval_cell(mean: float, low: float, high: float, decimals: int) -> str:
    """``0.846 [0.801, 0.880]``; the mean alone when the interval is undefined, ``n/a`` without a mean."""
    if math.isnan(mean):
        return "n/a"
    text = f"{mean:.{decimals}f}"
    return text if math.isnan(low) or math.isnan(high) else f"{text} [{low:.{decimals}f}, {high:.{decimals}f}]"


def formatted_cells(
    summary: pd.DataFrame, cohorts: list[str], decimals: int, plus_minus: str, interval: str = "sd",
    significant: set[tuple[str, str, str]] = frozenset(),
) -> pd.DataFrame:
    """The table's text cells: rows = variants, columns = (cohort, metric label).

    ``interval`` "bootstrap95" reads ``<cohort>_<metric>_lo`` / ``_hi`` instead of the SD;
    ``significant`` holds the (variant, cohort, metric) cells that get :data:`SIGNIFICANCE_MARK`.
    """
    columns = pd.MultiIndex.from_tuples([(c, label) for c in cohorts for label in METRICS.values()])
    cells = pd.DataFrame(index=summary.index, columns=columns, dtype=object)
    for variant in summary.index:
        for cohort in cohorts:
            for metric, label in METRICS.items():
                mean = summary.loc[variant, f"{cohort}_{metric}"]
                if interval == "bootstrap95" and f"{cohort}_{metric}_lo" in summary.columns:
                    text = format_interval_cell(mean, summary.loc[variant, f"{cohort}_{metric}_lo"],
                                                summary.loc[variant, f"{cohort}_{metric}_hi"], decimals)
                else:
                    text = format_cell(mean, summary.loc[variant, f"{cohort}_{metric}_sd"], decimals, plus_minus)
                if metric == "auc" and not summary.loc[variant, f"{cohort}_auc_complete"]:
                    text += PARTIAL_AUC_MARK
                if (variant, cohort, metric) in significant:
                    text += SIGNIFICANCE_MARK
                cells.loc[variant, (cohort, label)] = text
    return cells


def _method_table(cells: pd.DataFrame, names: dict[str, str], flat_columns: bool) -> pd.DataFrame:
    """``cells`` with rows named by method; columns "<cohort> <metric>" when ``flat_columns``
    (Markdown has one header row), else the (cohort, metric) pairs."""
    table = cells.copy()
    table.index = pd.Index([names.get(variant, variant) for variant in cells.index])
    if flat_columns:
        table.columns = [f"{cohort} {label}" for cohort, label in cells.columns]
        table.index.name = "Method"
    else:  # "Method" heads the index column in the first of the two header rows (LaTeX)
        table.columns = table.columns.set_names(["Method", None])
    return table


def _markdown(table: pd.DataFrame, note: str) -> str:
    """A pipe table (pandas + tabulate), method names left-aligned and cells centred, ``note`` below."""
    text = table.to_markdown(tablefmt="pipe", colalign=["left"] + ["center"] * len(table.columns), disable_numparse=True)
    return text + ("\n\n" + note if note else "") + "\n"


def to_markdown(cells: pd.DataFrame, names: dict[str, str], cohorts: list[str], note: str) -> str:
    return _markdown(_method_table(cells, names, flat_columns=True), note)


def _latex_symbols(text: str) -> str:
    """The table's plain-text symbols as LaTeX math, once the text (cells, caption, notes) is escaped."""
    return text.replace(" ± ", r" $\pm$ ").replace(PARTIAL_AUC_MARK, r"$^\dagger$")


def _latex_text(text: str) -> str:
    """Caption or note text, escaped as pandas escapes the cells (Styler leaves them as given)."""
    return re.sub(r"[\\&%$#_{}]", lambda m: r"\textbackslash{}" if m[0] == "\\" else "\\" + m[0], text)


def to_latex(cells: pd.DataFrame, names: dict[str, str], cohorts: list[str], note: str, caption: str,
             label: str) -> str:
    """A booktabs table (pandas' Styler): one column group per cohort, the notes under the tabular."""
    styler = (_method_table(cells, names, flat_columns=False).style
              .format(escape="latex").format_index(escape="latex", axis=0).format_index(escape="latex", axis=1))
    latex = styler.to_latex(caption=_latex_text(caption), label=label, position="t", position_float="centering",
                            hrules=True, multicol_align="c", column_format="l" + "c" * len(cells.columns))
    notes = "".join(r"\par\footnotesize " + _latex_text(line) + "\n" for line in (note.split("\n\n") if note else []))
    return _latex_symbols(latex).replace("\\end{table}", notes + "\\end{table}")


def add_bootstrap_intervals(
    summary: pd.DataFrame, predictions: dict, cohorts: list[str], averaged: bool, settings: Uncertainty,
) -> pd.DataFrame:
    """``summary`` with ``<cohort>_<metric>_lo`` / ``_hi`` (95 % bootstrap over test subjects).

    The Average column resamples every cohort on its own and averages the cohorts' scores of the
    same resample index.
    """
    summary = summary.copy()
    for variant in summary.index:
        per_cohort = []
        for cohort in cohorts:
            rng = uncertainty.cell_rng(settings.bootstrap_seed, variant, cohort)
            per_cohort.append(uncertainty.bootstrap_replicates(predictions[(variant, cohort)], settings.resamples, rng))
        groups = list(zip(cohorts, per_cohort))
        if averaged:
            groups.append((AVERAGE, np.mean(np.stack(per_cohort), axis=0)))
        for cohort, replicates in groups:
            low, high = uncertainty.percentile_interval(replicates, 0.95)
            for position, metric in enumerate(METRICS):
                summary.loc[variant, f"{cohort}_{metric}_lo"] = low[position]
                summary.loc[variant, f"{cohort}_{metric}_hi"] = high[position]
    return summary


def paired_tests(predictions: dict, variants: list[str], reference: str, cohorts: list[str],
                 settings: Uncertainty) -> pd.DataFrame:
    """One row per (variant other than ``reference``, cohort, metric): the difference to the
    reference on the same test subjects and the paired permutation test's p-value."""
    records = []
    for variant in variants:
        if variant == reference:
            continue
        for cohort in cohorts:
            candidate, baseline = predictions[(variant, cohort)], predictions[(reference, cohort)]
            rng = uncertainty.cell_rng(settings.test_seed, variant, reference, cohort)
            difference, p_values = uncertainty.paired_permutation_test(candidate, baseline, settings.permutations, rng)
            for position, metric in enumerate(METRICS):
                records.append({"variant": variant, "reference": reference, "cohort": cohort, "metric": metric,
                                "difference": difference[position], "p_value": p_values[position],
                                "test": uncertainty.PAIRED_TEST_NAME, "n_subjects": len(candidate.keys),
                                "n_seeds": len(candidate.seeds)})
    return pd.DataFrame.from_records(records, columns=["variant", "reference", "cohort", "metric", "difference",
                                                       "p_value", "test", "n_subjects", "n_seeds"])


def long_table_markdown(long: pd.DataFrame, names: dict[str, str], cohorts: list[str],
                        cell: Callable[[pd.Series], str], note: str) -> str:
    """A long table (one row per variant, cohort, metric) laid out like Table 1: rows = variants in
    their order of appearance, columns = cohort x metric, each cell ``cell(row)``, ``note`` below."""
    wide = {names.get(variant, variant): {f"{cohort} {METRICS[metric]}": cell(
                rows[(rows["cohort"] == cohort) & (rows["metric"] == metric)].iloc[0])
             for cohort in cohorts for metric in METRICS}
            for variant, rows in long.groupby("variant", sort=False)}
    return _markdown(pd.DataFrame.from_dict(wide, orient="index").rename_axis("Method"), note)


def tests_markdown(tests: pd.DataFrame, names: dict[str, str], cohorts: list[str], decimals: int, note: str) -> str:
    """p-values laid out like the table: rows = variants, cells "difference (p = ...)"."""
    def cell(row: pd.Series) -> str:
        return "n/a" if math.isnan(row["difference"]) else f"{row['difference']:+.{decimals}f} (p = {row['p_value']:.3g})"

    return long_table_markdown(tests, names, cohorts, cell, note)


def write_results_table(
    settings: ResultTableSettings, metric_files: list[str], csv_path: str, markdown_path: str, latex_path: str, *,
    prediction_files: list[str] | None = None, tests_csv: str | None = None, tests_markdown_path: str | None = None,
    paper_table: str | None = None, comparison_csv: str | None = None, comparison_markdown_path: str | None = None,
) -> pd.DataFrame:
    """Build a result table from evaluation files and write it as CSV, Markdown and LaTeX.

    Args:
        settings: the table's rows, columns, names, cell format, extra rows and columns, and tests.
        metric_files: ``paths.EVAL_METRICS`` files of every (variant, cohort, seed) that ran.
        csv_path: numeric table (means, SDs or interval bounds, seed counts; one row per variant).
        markdown_path / latex_path: the formatted table.
        prediction_files: ``paths.EVAL_PREDICTIONS`` aligned with ``metric_files``; needed for a
            bootstrap interval and for the paired tests.
        tests_csv / tests_markdown_path: with ``settings.reference``, the differences and p-values.
        paper_table: the paper's numbers (``workflow/report/paper_table<N>.yaml``); with it,
            ``comparison_csv`` and ``comparison_markdown_path`` get the table next to the paper's.

    Returns:
        The numeric summary (as written to the CSV).
    """
    table_name, reference, decimals = settings.table_name, settings.reference, settings.decimals
    variants, cohorts = list(settings.variants), list(settings.cohorts)
    with_majority_row, average_column = settings.majority_row, settings.average_column
    unavailable = dict(settings.unavailable)
    method_names = dict(settings.method_names)
    spread = settings.uncertainty  # interval kind, bootstrap and paired-test settings
    ran = [variant for variant in variants if variant not in unavailable]
    records = collect_metrics(metric_files)
    columns = [*cohorts, AVERAGE] if average_column else list(cohorts)
    if average_column:
        records = with_cohort_average(records, cohorts)
    summary = summarise(records, ran, columns)
    needs_predictions = spread.interval == "bootstrap95" or reference is not None
    predictions = {}
    if needs_predictions:
        if not prediction_files:
            raise ValueError(f"{table_name}: a bootstrap interval or a paired test needs the predictions files")
        predictions = uncertainty.read_predictions(metric_files, prediction_files)
    if spread.interval == "bootstrap95":
        summary = add_bootstrap_intervals(summary, predictions, cohorts, average_column, spread)
    notes = []
    significant: set[tuple[str, str, str]] = set()
    if reference is not None:
        if reference not in ran:
            raise ValueError(f"{table_name}: the reference row {reference!r} is not among the rows that ran {ran}")
        tests = paired_tests(predictions, ran, reference, cohorts, spread)
        significant = {(r.variant, r.cohort, r.metric) for r in tests.itertuples() if r.p_value < spread.alpha}
        test_note = uncertainty.PAIRED_TEST_NOTE.format(
            marker=SIGNIFICANCE_MARK, alpha=spread.alpha, reference=method_names.get(reference, reference),
            permutations=spread.permutations, seed=spread.test_seed,
            tests_file=Path(tests_markdown_path).name if tests_markdown_path else "the tests table")
        notes.append(test_note)
        tests.insert(1, "method", [method_names.get(v, v) for v in tests["variant"]])
        if tests_csv:
            tests.to_csv(tests_csv, index=False, float_format=f"%.{decimals + 3}f")
        if tests_markdown_path:
            Path(tests_markdown_path).write_text(tests_markdown(
                tests, method_names, cohorts, decimals,
                f"Each cell: {table_name} row minus {method_names.get(reference, reference)} (seed-averaged) and "
                "the two-sided p-value of a "
                + uncertainty.PAIRED_TEST_METHOD.format(permutations=spread.permutations, seed=spread.test_seed)
                + "."))
    if with_majority_row:
        summary = pd.concat([summary, majority_row(records[records["cohort"] != AVERAGE], cohorts)])
        method_names.setdefault(MAJORITY, MAJORITY_NAME)
    cells = formatted_cells(summary, columns, decimals, " ± ", spread.interval, significant)
    order = [v for v in variants] + ([MAJORITY] if with_majority_row else [])
    cells = cells.reindex(order)
    for variant, reason in unavailable.items():
        cells.loc[variant] = reason
    if not all(summary[f"{c}_auc_complete"].all() for c in columns):
        notes.insert(0, PARTIAL_AUC_NOTE)
    if spread.interval == "bootstrap95":
        notes.insert(0, uncertainty.BOOTSTRAP_NOTE.format(resamples=spread.resamples, seed=spread.bootstrap_seed))
    if average_column:
        notes.append(f"{AVERAGE}: each metric's mean over {', '.join(cohorts)} (per seed, then over seeds).")
    if unavailable:
        notes.append(UNAVAILABLE_NOTE)
    note = "\n\n".join(notes)
    numeric = summary.copy()
    for column in columns:
        numeric[f"{column}_n_seeds"] = numeric[f"{column}_n_seeds"].astype(int)
        numeric[f"{column}_auc_complete"] = numeric[f"{column}_auc_complete"].astype(bool)
    numeric = numeric.reindex([v for v in order if v in numeric.index or v in unavailable])
    for column in columns:  # a row that could not run: no seeds
        numeric[f"{column}_n_seeds"] = numeric[f"{column}_n_seeds"].fillna(0).astype(int)
    numeric.insert(0, "method", [method_names.get(v, v) for v in numeric.index])
    numeric.insert(1, "status", ["" if v not in unavailable else unavailable[v] for v in numeric.index])
    numeric.index.name = "variant"
    for path in (csv_path, markdown_path, latex_path):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    numeric.reset_index().to_csv(csv_path, index=False, float_format=f"%.{decimals + 3}f")
    Path(markdown_path).write_text(to_markdown(cells, method_names, columns, note))
    Path(latex_path).write_text(to_latex(cells, method_names, columns, note, settings.caption, settings.latex_label))
    log.info("%s (%d row(s) x %d cohort(s), %d evaluation(s)):\n%s", table_name, len(variants), len(cohorts),
             len(records), Path(markdown_path).read_text())
    if paper_table:
        write_paper_comparison(summary, paper_table, columns, method_names, decimals, comparison_csv,
                               comparison_markdown_path, table_name, unavailable)
        log.info("%s against the paper:\n%s", table_name, Path(comparison_markdown_path).read_text())
    return numeric


def read_paper_table(path: str | Path) -> dict:
    """A table of the paper (``{"metrics": [...], "rows": {variant: {cohort: [values]}}}``), checked.

    A row's ``inputs`` entry (Table 1's I / T / S attributes) is not a cohort; other top-level keys
    (Table 2's ``header_similarity``) are left to their readers."""
    document = yaml.safe_load(Path(path).read_text())
    metrics = document.get("metrics") if isinstance(document, dict) else None
    if metrics != list(METRICS):
        raise ValueError(f"{path}: 'metrics' must be {list(METRICS)}, got {metrics!r}")
    for variant, row in document["rows"].items():
        for cohort, values in row.items():
            if cohort != "inputs" and (not isinstance(values, list) or len(values) != len(METRICS)):
                raise ValueError(f"{path}: rows.{variant}.{cohort} must list {len(METRICS)} numbers, got {values!r}")
    return document


def compare_with_paper(summary: pd.DataFrame, paper: dict, cohorts: list[str],
                       unavailable: dict[str, str] | None = None) -> pd.DataFrame:
    """One row per (paper row or reproduced variant, cohort, metric): paper value, reproduced mean
    and SD, seed count (0 for the majority row, which is computed, not trained), whether the row ran,
    and reproduced - paper. Paper rows come first in the paper's order; variants the paper lacks
    (ablations, a majority row) follow. Unrun rows and cohorts the paper lacks are NaN."""
    unavailable = unavailable or {}
    order = list(paper["rows"]) + [v for v in [*summary.index, *unavailable] if v not in paper["rows"]]
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
                                "reproduced": float(mean), "reproduced_sd": float(sd), "n_seeds": seeds, "ran": ran,
                                "difference": float(mean - reported), "status": unavailable.get(variant, "")})
    return pd.DataFrame.from_records(records)


def comparison_markdown(comparison: pd.DataFrame, names: dict[str, str], cohorts: list[str], decimals: int,
                        table_name: str = "Table 1") -> str:
    """Cells "reproduced (paper)"; "not run" where the pipeline has no result (or why a row could not
    run), "–" where the paper has none."""
    def cell(row: pd.Series) -> str:
        mine = (row["status"] or "not run") if not row["ran"] else format_cell(
            row["reproduced"], row["reproduced_sd"], decimals, " ± ")
        theirs = "–" if math.isnan(row["paper"]) else f"{row['paper']:.{decimals}f}"
        return f"{mine} ({theirs})"

    note = (f"Each cell: reproduced here (the paper's {table_name}). Reproduced cells are means over fine-tuning seeds "
            "(± SD where several ran) on this run's cohorts and splits, which need not be the paper's.")
    return long_table_markdown(comparison, names, cohorts, cell, note)


def write_paper_comparison(
    summary: pd.DataFrame, paper_path: str, cohorts: list[str], method_names: dict[str, str], decimals: int,
    csv_path: str, markdown_path: str, table_name: str = "Table 1", unavailable: dict[str, str] | None = None,
) -> pd.DataFrame:
    """Write a table next to the paper's numbers (long CSV + Markdown); returns the long table."""
    comparison = compare_with_paper(summary, read_paper_table(paper_path), cohorts, unavailable)
    comparison.insert(1, "method", [method_names.get(v, v) for v in comparison["variant"]])
    comparison.to_csv(csv_path, index=False, float_format=f"%.{decimals + 3}f")
    Path(markdown_path).write_text(comparison_markdown(comparison, method_names, cohorts, decimals, table_name))
    return comparison


def paper_header_similarity(paper_path: str | Path) -> dict[str, float]:
    """The paper's mean pairwise similarity of the header vectors per encoder (``header_similarity``
    of ``workflow/report/paper_table2.yaml``)."""
    document = yaml.safe_load(Path(paper_path).read_text())
    return {str(name): float(value) for name, value in (document.get("header_similarity") or {}).items()}


def write_header_similarity(
    settings: HeaderSimilarityTableSettings, paper_path: str, csv_path: str, markdown_path: str,
) -> pd.DataFrame:
    """The mean pairwise cosine similarity of each encoder's header vectors next to the paper's.

    Args:
        settings: the encoders in order, their similarity reports, and why others have none.
        paper_path: ``workflow/report/paper_table2.yaml``.
    """
    encoders, similarity_files, unavailable = list(settings.encoders), settings.similarity_files, settings.unavailable
    decimals = settings.decimals
    paper = paper_header_similarity(paper_path)
    records = []
    for encoder in [*encoders, *(name for name in paper if name not in encoders)]:
        report = json.loads(Path(similarity_files[encoder]).read_text()) if encoder in similarity_files else {}
        status = "" if report else unavailable.get(encoder, "not used by this configuration")
        records.append({"encoder": encoder, "reproduced": report.get("mean_pairwise_cosine", math.nan),
                        "paper": paper.get(encoder, math.nan), "n_headers": report.get("n_headers", 0),
                        "dim": report.get("dim", 0), "status": status})
    table = pd.DataFrame.from_records(records)
    Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(csv_path, index=False, float_format=f"%.{decimals + 3}f")
    shown = pd.DataFrame({
        "Header encoder": table["encoder"],
        "Mean pairwise cosine, reproduced": [row.status or f"{row.reproduced:.{decimals}f}" for row in table.itertuples()],
        "Paper": ["–" if math.isnan(value) else f"{value:.{decimals}f}" for value in table["paper"]],
        "Header texts": [count or "–" for count in table["n_headers"]],
    }).set_index("Header encoder")
    note = ("Mean cosine similarity over all pairs of distinct header vectors of the bank (every column header of "
            "every cohort once). The paper reports it for BERT and BioBERT to explain why the more homogeneous "
            "BioBERT vectors separate columns less well (Table 2, alternative header encoder).")
    Path(markdown_path).write_text(_markdown(shown, note))
    log.info("header similarity:\n%s", Path(markdown_path).read_text())
    return table
