"""Rule preprocess_check: the verdicts (accepted or why not) of one batch of native T1s."""

from workflow.logs import log_to
from workflow.preprocess import check_batch
from workflow.settings import InputCheckSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    check_batch(
        images=snakemake.params.images,  # noqa: F821
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        settings=InputCheckSettings.from_params(snakemake.params.settings),  # noqa: F821
        batch_path=snakemake.output.verdicts,  # noqa: F821
    )
