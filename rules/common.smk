# Shared set-up for every stage: the config is validated before any rule is defined, and the
# facts every rule file needs (cohort names, path patterns, fingerprint helpers) are set up once here.
import sys

from workflow import paths
from workflow import preprocess as preprocess_stage
from workflow import settings as settings_stage
from workflow import train as train_stage
from workflow.config_checks import validate_config
from workflow.convert import intake_folders, intake_inputs, raw_folders, raw_inputs
from workflow.fingerprints import code_fingerprint, data_fingerprints, with_user_folders_ancient
from workflow.header_encoders import header_embedding_settings
from workflow.smk import shell_prefix

validate_config(config)

COHORTS = list(config["cohorts"])
# The tables stage's settings: what build_table computes with, and what a bundle records.
TABLES_SETTINGS = settings_stage.tables_settings(config)
# One typed object per preprocessing step; each rule's params hold its own step's (so a change
# reruns that step on).
PREPROCESS_SETTINGS = settings_stage.preprocess_settings(config)

shell.prefix(shell_prefix(workflow.deployment_settings.deployment_method, sys.executable))


wildcard_constraints:
    cohort="|".join(COHORTS),
    subject="[A-Za-z0-9]+",
    session="[A-Za-z0-9]+",
    seed=r"\d+",


# --- input and params functions of the stage files ------------------------------------------------
# Each takes the job's wildcards (and, where named so, its resources or input); plain config values
# go through Snakemake's lookup() instead.
COHORT_FORMAT = lookup(dpath="cohorts/{cohort}/format", within=config)


def preprocess_intermediate(path):
    """A preprocessing intermediate that preprocess.keep_intermediates: false lets Snakemake delete
    once its consumers ran."""
    return path if config["preprocess"]["keep_intermediates"] else temp(path)


def synthetic_cohort_params(wildcards):
    """The synthesis settings of one cohort (its format, subject count, seed and the rest)."""
    return settings_stage.synthetic_cohort_settings(config, wildcards.cohort).as_params()


def preprocess_step_params(wildcards):
    """One per-image preprocessing step's settings (a field of PreprocessSettings) as builtins."""
    return getattr(PREPROCESS_SETTINGS, wildcards.step).as_params()


def download_inputs(wildcards):
    """A conversion job's inputs: the cohort's download folders, flagged ancient (their `data`
    fingerprint decides whether they changed)."""
    return with_user_folders_ancient(raw_inputs(config, wildcards.cohort), config, wildcards.cohort)


def download_folders(wildcards):
    return raw_folders(config, wildcards.cohort)


def intake_user_inputs(wildcards):
    """An intake job's inputs: the cohort's folders, flagged ancient as for conversion."""
    return with_user_folders_ancient(intake_inputs(config, wildcards.cohort), config, wildcards.cohort)


def intake_user_folders(wildcards):
    return intake_folders(config, wildcards.cohort)


def intake_params(wildcards):
    """How intake reads the cohort: its format, file-name patterns and subject prefix (None when
    unset: the format's default, workflow.intake.DEFAULT_SUBJECT_PREFIX)."""
    return settings_stage.intake_settings(config, wildcards.cohort).as_params()


def convert_data_fingerprints(wildcards):
    """Every file below the download's folders (workflow/fingerprints.py): edits in them rerun conversion."""
    return data_fingerprints(config, wildcards.cohort, "convert")


def intake_data_fingerprints(wildcards):
    """Every file below the user's folders: edits inside them rerun intake."""
    return data_fingerprints(config, wildcards.cohort, "intake")


def header_embedding_params(wildcards):
    """The settings of the {encoder} header vectors (its folder, stamp, pooling, batch, cache)."""
    return header_embedding_settings(config, wildcards.encoder).as_params()


def intake_images_table(wildcards):
    """The cohort's images.tsv, once intake (a checkpoint) has written it."""
    return preprocess_stage.intake_images(checkpoints, wildcards.cohort)


# Training rules (and export_bundle): a Table 1 row's
# {variant} may be a headers.encoder_variants row, i.e. another variant on another header bank.
def variant_header_bank(wildcards):
    return train_stage.header_bank_path(config, wildcards.variant)


def variant_encoder(wildcards):
    return train_stage.configured_encoder(config, wildcards.variant)


def variant_model(wildcards):
    """The registered model a row trains (an encoder row's own variant)."""
    return train_stage.resolve_variant(wildcards.variant, config)[0]


def torchrun_processes(wildcards, resources):
    """One DDP process per GPU, or the configured number of gloo processes on CPU."""
    return resources.gpu or config["pretrain"]["cpu_processes"]


# A job's settings as plain builtins: Snakemake compares params by repr and ignores other objects.
def pretrain_settings_params(wildcards):
    return train_stage.pretrain_settings(config).as_params()


def cohort_pretrain_settings_params(wildcards):
    return train_stage.cohort_pretrain_settings(config, wildcards.variant, wildcards.cohort).as_params()


def finetune_settings_params(wildcards):
    return train_stage.finetune_settings(config, wildcards.variant, wildcards.cohort).as_params()


def evaluate_settings_params(wildcards):
    return train_stage.evaluate_settings(config, wildcards.variant).as_params()


def pretrained_weights(wildcards):
    """The pretraining a fine-tuning starts from (none for the supervised rows)."""
    return train_stage.pretrained_input(wildcards.variant, config, wildcards.cohort)


def pretrained_argument(wildcards, input):
    return f"--pretrained {input.pretrained}" if input.pretrained else ""
