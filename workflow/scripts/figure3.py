"""Rule figure3: expert activation shares (workflow.figures.figure3)."""

from workflow.figures import figure3
from workflow.logs import log_to
from workflow.settings import Figure3Settings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    output = snakemake.output  # noqa: F821
    figure3(Figure3Settings.from_params(snakemake.params.settings), output.png, output.pdf, output.data)  # noqa: F821
