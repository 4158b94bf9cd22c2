"""Rule intake_cohort: one cohort's native files -> images.tsv, visits.tsv, exclusions.tsv, cell_qc.tsv."""

from workflow.intake import intake_cohort
from workflow.logs import log_to
from workflow.settings import IntakeSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    intake_cohort(
        clinical_dir=snakemake.params.folders["clinical"],  # noqa: F821
        images_dir=snakemake.params.folders["images"],  # noqa: F821
        upstream_exclusions=snakemake.input.get("convert_exclusions"),  # noqa: F821
        columns_path=snakemake.input.columns,  # noqa: F821
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        settings=IntakeSettings.from_params(snakemake.params.settings),  # noqa: F821
        images_out=snakemake.output.images,  # noqa: F821
        visits_out=snakemake.output.visits,  # noqa: F821
        exclusions_out=snakemake.output.exclusions,  # noqa: F821
        cell_qc_out=snakemake.output.cell_qc,  # noqa: F821
    )
