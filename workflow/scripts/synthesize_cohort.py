"""Rule synthesize_cohort: write one synthetic cohort root (clinical tables, T1w volumes, truth)."""

from pathlib import Path

from workflow.logs import log_to
from workflow.settings import SyntheticCohortSettings
from workflow.synthesize import synthesize_cohort

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    synthesize_cohort(
        cohort=snakemake.wildcards.cohort,  # noqa: F821
        out_dir=Path(snakemake.output.root),  # noqa: F821
        settings=SyntheticCohortSettings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
