"""Checkpoint preprocess_accepted: the images of a cohort that passed the input check."""

from workflow.logs import log_to
from workflow.preprocess import list_accepted

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    list_accepted(
        images_tsv=snakemake.input.images,  # noqa: F821
        verdict_paths=list(snakemake.input.verdicts),  # noqa: F821
        accepted_tsv=snakemake.output.accepted,  # noqa: F821
    )
