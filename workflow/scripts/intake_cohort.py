"""Rule intake_cohort: one cohort's native files -> images.tsv, visits.tsv, exclusions.tsv."""

from workflow.intake import intake_cohort
from workflow.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    intake_cohort(
        root=snakemake.input.root,  # noqa: F821
        columns_path=snakemake.input.columns,  # noqa: F821
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        fmt=snakemake.params.fmt,  # noqa: F821
        images_out=snakemake.output.images,  # noqa: F821
        visits_out=snakemake.output.visits,  # noqa: F821
        exclusions_out=snakemake.output.exclusions,  # noqa: F821
    )
