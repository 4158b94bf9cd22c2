"""The ``paper`` target's view of the config: which table rows run, which evaluations and weights
the tables and figures read (rules/paper.smk builds its inputs and params from these).

A row of Table 2 or 3 is a ``{variant}`` wildcard of the training rules: a registered variant, a
``finetune.scratch_variants`` name (w/o multi-modal SSL) or a ``headers.encoder_variants`` name
(CITab on another header encoder's bank). A row on an encoder whose folder is absent is not run:
the tables keep it, reading "encoder not supplied", so the DAG runs without it.
"""

from __future__ import annotations

from dataclasses import dataclass

from workflow import paths
from workflow.header_encoders import encoder_supplied
from workflow.train import configured_encoder, encoder_rows

ENCODER_NOT_SUPPLIED = "encoder not supplied"


@dataclass(frozen=True)
class FigureWeights:
    """The fine-tuned run a figure shows: its weights file and what produced it."""

    path: str
    variant: str
    cohort: str
    seed: int

    def describe(self) -> str:
        return f"{self.variant} fine-tuned on {self.cohort} (seed {self.seed}): {self.path}"


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


def figure_weights(config: dict, variant: str) -> FigureWeights:
    """The fine-tuned run of ``variant`` the figures show (``report.figures``: weights_cohort, weights_seed)."""
    figures = config["report"]["figures"]
    seed = figures["weights_seed"] if figures["weights_seed"] is not None else config["finetune"]["seeds"][0]
    cohort = figure_cohort(config, "weights_cohort")
    return FigureWeights(paths.FINETUNED_WEIGHTS.format(variant=variant, cohort=cohort, seed=seed), variant, cohort, seed)


def figure_layer(config: dict) -> int:
    """The 0-based P-MoLin layer of Figures 3 and 4."""
    return resolve_layer(config["report"]["figures"]["layer"], config["model"]["num_layers"])


def figure_encoder(config: dict) -> str:
    """The header encoder of the figures' models (their variants run on the configured bank)."""
    return configured_encoder(config, config["report"]["figures"]["variant"])
