"""Rule preprocess_check_t1: the JSON verdict (accepted or why not) of one native T1."""

from workflow.logs import log_to
from workflow.preprocess import check_t1
from workflow.settings import InputCheckSettings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    check_t1(
        t1_path=snakemake.input.t1,  # noqa: F821
        verdict_path=snakemake.output.verdict,  # noqa: F821
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        subject=snakemake.wildcards.subject,  # noqa: F821
        session=snakemake.wildcards.session,  # noqa: F821
        settings=InputCheckSettings.from_params(snakemake.params.settings),  # noqa: F821
    )
