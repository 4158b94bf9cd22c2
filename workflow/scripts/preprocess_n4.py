"""Rule preprocess_n4: N4 bias field correction of one native T1 (corrected image + bias field)."""

from workflow.logs import log_to
from workflow.preprocess import bias_correct
from workflow.settings import N4Settings

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    bias_correct(
        t1_path=snakemake.input.t1,  # noqa: F821
        corrected_path=snakemake.output.n4,  # noqa: F821
        bias_path=snakemake.output.bias,  # noqa: F821
        settings=N4Settings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
