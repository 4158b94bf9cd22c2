"""Rule preprocess_cohort_qc: the cohort's qc.tsv (one row per image) and exclusions.tsv."""

from workflow.logs import log_to
from workflow.preprocess_qc import cohort_qc
from workflow.settings import QcThresholds

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    cohort_qc(
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        images_tsv=snakemake.input.images,  # noqa: F821
        verdict_paths=list(snakemake.input.verdicts),  # noqa: F821
        model_ready_folders=list(snakemake.input.model_ready),  # noqa: F821
        thresholds=QcThresholds.from_params(snakemake.params.settings),  # noqa: F821
        qc_tsv=snakemake.output.qc,  # noqa: F821
        exclusions_tsv=snakemake.output.exclusions,  # noqa: F821
    )
