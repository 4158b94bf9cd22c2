"""The report's view of the config: which table rows run, which evaluations and weights the tables
and figures read, and each table's and figure's typed settings (rules/report.smk and
rules/paper.smk build their inputs and params from these).

A row of Table 2 or 3 is a ``{variant}`` wildcard of the training rules: a registered variant, a
``finetune.scratch_variants`` name (w/o multi-modal SSL) or a ``headers.encoder_variants`` name
(CITab on another header encoder's bank). A row on an encoder whose folder is absent is not run:
the tables keep it, reading "encoder not supplied", so the DAG runs without it.
"""

from __future__ import annotations

from typing import NamedTuple

from workflow import paths
from workflow.header_encoders import encoder_supplied
from workflow.settings import (
    Figure3Settings, Figure4Settings, Figure5Settings, FigureRun, HeaderSimilarityTableSettings, ResultTableSettings,
    Uncertainty,
)
from workflow.train import configured_encoder, encoder_rows, evaluate_settings, header_bank_path

ENCODER_NOT_SUPPLIED = "encoder not supplied"


class TableIdentity(NamedTuple):
    """How a result table names itself, and whether it averages over the cohorts."""

    name: str
    caption: str
    latex_label: str
    average_column: bool = False


TABLES = {
    "table1": TableIdentity("Table 1", "Classification on the test sets (mean ± SD over fine-tuning seeds where "
                            "several ran).", "tab:table1"),
    "table2": TableIdentity("Table 2", "Ablations and alternative modules on the test sets.", "tab:table2"),
    "table3": TableIdentity("Table 3", "Number E of P-MoLin experts per tabular layer (E = 5 is CITab), per cohort "
                            "and on average.", "tab:table3", average_column=True),
}


def resolve_layer(layer: int, num_layers: int) -> int:
    """The 0-based P-MoLin layer index of ``layer`` (negative counts from the last). ValueError when out of range."""
    index = layer + num_layers if layer < 0 else layer
    if not 0 <= index < num_layers:
        raise ValueError(f"P-MoLin layer {layer} does not exist in a model with {num_layers} tabular layers")
    return index


def unavailable_rows(config: dict, variants: list[str]) -> dict[str, str]:
    """Rows of ``variants`` that cannot run -> why (their header encoder's folder is absent)."""
    rows = encoder_rows(config)
    return {variant: ENCODER_NOT_SUPPLIED for variant in variants
            if variant in rows and not encoder_supplied(config["headers"], rows[variant]["encoder"])}


def rows_that_run(config: dict, variants: list[str]) -> list[str]:
    unavailable = unavailable_rows(config, variants)
    return [variant for variant in variants if variant not in unavailable]


def evaluations(config: dict, variants: list[str], cohorts: list[str], pattern: str) -> list[str]:
    """``pattern`` (``paths.EVAL_METRICS`` or ``paths.EVAL_PREDICTIONS``) of every (row that runs,
    cohort, seed), in one fixed order, so the metrics and predictions lists line up."""
    return [pattern.format(variant=variant, cohort=cohort, seed=seed)
            for variant in rows_that_run(config, variants) for cohort in cohorts for seed in config["finetune"]["seeds"]]


def table_evaluations(config: dict, table: str, cohorts: list[str]) -> dict[str, list[str]]:
    """The evaluation files Table ``table`` ("table2" | "table3") reads: ``metrics`` and
    ``predictions`` of its rows that run, aligned."""
    variants = config["report"][table]["variants"]
    return {"metrics": evaluations(config, variants, cohorts, paths.EVAL_METRICS),
            "predictions": evaluations(config, variants, cohorts, paths.EVAL_PREDICTIONS)}


def table_encoders(config: dict) -> list[str]:
    """The header encoders Table 2 uses: the configured one, then those of the encoder rows."""
    encoders = [config["headers"]["encoder"]]
    for row in encoder_rows(config).values():
        if row["encoder"] not in encoders:
            encoders.append(row["encoder"])
    return encoders


def unavailable_encoders(config: dict) -> dict[str, str]:
    return {encoder: ENCODER_NOT_SUPPLIED for encoder in table_encoders(config)
            if not encoder_supplied(config["headers"], encoder)}


def similarity_files(config: dict) -> dict[str, str]:
    """encoder -> its similarity report, for the Table 2 encoders that are supplied."""
    missing = unavailable_encoders(config)
    return {encoder: paths.HEADER_SIMILARITY.format(encoder=encoder) for encoder in table_encoders(config)
            if encoder not in missing}


# --- figures ----------------------------------------------------------------------------------------------


def figure_cohort(config: dict, key: str) -> str:
    """``report.figures.<key>`` (a cohort; null = the first cohort), checked against the cohorts."""
    cohorts = list(config["cohorts"])
    cohort = config["report"]["figures"][key] or cohorts[0]
    if cohort not in cohorts:
        raise ValueError(f"report.figures.{key} is {cohort!r}, not one of the cohorts {cohorts}")
    return cohort


def figure_run(config: dict, variant: str) -> FigureRun:
    """The fine-tuned run of ``variant`` the figures show (``report.figures``: weights_cohort, weights_seed)."""
    figures = config["report"]["figures"]
    seed = figures["weights_seed"] if figures["weights_seed"] is not None else config["finetune"]["seeds"][0]
    cohort = figure_cohort(config, "weights_cohort")
    return FigureRun(weights=paths.FINETUNED_WEIGHTS.format(variant=variant, cohort=cohort, seed=seed),
                     variant=variant, cohort=cohort, seed=seed, header_bank=header_bank_path(config, variant),
                     evaluate=evaluate_settings(config, variant))


def figure_layer(config: dict) -> int:
    """The 0-based P-MoLin layer of Figures 3 and 4."""
    return resolve_layer(config["report"]["figures"]["layer"], config["model"]["num_layers"])


def figure_encoder(config: dict) -> str:
    """The header encoder of the figures' models (their variants run on the configured bank)."""
    return configured_encoder(config, config["report"]["figures"]["variant"])


def cohort_tables(config: dict) -> dict[str, tuple[str, str]]:
    """What the figures read of each cohort, in the config's order: cohort -> (table.tsv, columns.yaml)."""
    return {cohort: (paths.TABLE.format(cohort=cohort), paths.TABLE_COLUMNS.format(cohort=cohort))
            for cohort in config["cohorts"]}


def figure3_settings(config: dict) -> Figure3Settings:
    figures = config["report"]["figures"]
    return Figure3Settings(
        run=figure_run(config, figures["variant"]), encoder=figure_encoder(config), cohort_tables=cohort_tables(config),
        feature_cohort=figure_cohort(config, "feature_cohort"), shared_feature=figures["shared_feature"],
        layer=figure_layer(config), split=figures["split"], max_rows=figures["max_rows"], seed=figures["seed"],
        dpi=figures["dpi"])


def figure4_settings(config: dict) -> Figure4Settings:
    figures = config["report"]["figures"]
    return Figure4Settings(
        run=figure_run(config, figures["variant"]), encoder=figure_encoder(config),
        cohort=figure_cohort(config, "feature_cohort"), layer=figure_layer(config), split=figures["split"],
        max_rows=figures["max_rows"], perplexity=figures["perplexity"], seed=figures["seed"], dpi=figures["dpi"])


def figure5_settings(config: dict) -> Figure5Settings:
    """Figure 5's panels: CITab and the w/o header embedding row, titled by their display names."""
    figures, names = config["report"]["figures"], config["report"]["method_names"]
    runs = [figure_run(config, figures[key]) for key in ("variant", "no_header_variant")]
    return Figure5Settings(
        panels={names.get(run.variant, run.variant): run for run in runs}, encoder=figure_encoder(config),
        cohort_tables=cohort_tables(config), class_names=tuple(config["finetune"]["class_names"]),
        split=figures["split"], max_rows=figures["max_rows"], perplexity=figures["perplexity"], seed=figures["seed"],
        dpi=figures["dpi"])


# --- tables -----------------------------------------------------------------------------------------------


def result_table_settings(config: dict, table: str) -> ResultTableSettings:
    """The settings of result table ``table`` ("table1", "table2" or "table3").

    Table 1 lists ``report.variants`` with the majority row; Tables 2 and 3 list their own rows,
    keep those that cannot run (with the reason) and test every row against their reference.
    """
    report = config["report"]
    identity = TABLES[table]
    common = dict(table_name=identity.name, caption=identity.caption, latex_label=identity.latex_label,
                  cohorts=tuple(config["cohorts"]), decimals=report["decimals"],
                  uncertainty=Uncertainty.from_config(report), average_column=identity.average_column)
    if table == "table1":
        return ResultTableSettings(variants=tuple(report["variants"]), method_names=dict(report["method_names"]),
                                   majority_row=report["majority_row"], **common)
    section = report[table]
    return ResultTableSettings(
        variants=tuple(section["variants"]), method_names={**report["method_names"], **section.get("method_names", {})},
        unavailable=unavailable_rows(config, section["variants"]), reference=section["reference"], **common)


def header_similarity_table_settings(config: dict) -> HeaderSimilarityTableSettings:
    return HeaderSimilarityTableSettings(encoders=tuple(table_encoders(config)), similarity_files=similarity_files(config),
                                         unavailable=unavailable_encoders(config), decimals=config["report"]["decimals"])
