"""Rule build_table: the model-ready clinical table of one cohort and its companions."""

from workflow.logs import log_to
from workflow.settings import TablesSettings
from workflow.tables import build_table

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    build_table(
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        images_path=snakemake.input.images,  # noqa: F821
        visits_path=snakemake.input.visits,  # noqa: F821
        intake_exclusions_path=snakemake.input.intake_exclusions,  # noqa: F821
        qc_path=snakemake.input.qc,  # noqa: F821
        columns_path=snakemake.input.columns,  # noqa: F821
        split_table_path=snakemake.input.split_table or None,  # noqa: F821
        settings=TablesSettings.from_params(snakemake.params.settings),  # noqa: F821
        outputs=dict(snakemake.output.items()),  # noqa: F821
    )
