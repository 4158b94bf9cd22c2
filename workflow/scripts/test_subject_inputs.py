"""Rule test_subject_inputs: a finished run's test subjects as new-subject inputs of predict."""

from workflow.logs import log_to
from workflow.predict import write_test_subject_inputs

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    write_test_subject_inputs(
        table_path=snakemake.input.table,  # noqa: F821
        stats_path=snakemake.input.stats,  # noqa: F821
        intake_images_path=snakemake.input.images,  # noqa: F821
        images_out=snakemake.output.images,  # noqa: F821
        table_out=snakemake.output.table,  # noqa: F821
    )
