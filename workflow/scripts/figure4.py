"""Rule figure4: t-SNE of feature tokens and P-MoLin prototypes (workflow.figures.figure4)."""

from workflow.figures import figure4
from workflow.logs import log_to
from workflow.settings import Figure4Settings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    inputs, output = snakemake.input, snakemake.output  # noqa: F821
    figure4(Figure4Settings.from_params(snakemake.params.settings), inputs.table, inputs.columns,  # noqa: F821
            output.png, output.pdf, output.data)
