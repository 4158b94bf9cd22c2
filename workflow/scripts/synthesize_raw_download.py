"""Rule synthesize_raw_download: a synthetic cohort -> the raw download a data centre would ship."""

from pathlib import Path

from workflow.logs import log_to
from workflow.raw_download import write_raw_download

with log_to(snakemake.log[0]):  # noqa: F821 (snakemake is injected by the script directive)
    write_raw_download(
        Path(snakemake.input.natives),  # noqa: F821
        snakemake.params.fmt,  # noqa: F821
        Path(snakemake.output.root),  # noqa: F821
    )
