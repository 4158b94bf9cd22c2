"""Rule figure5: t-SNE of fused CLS embeddings of every cohort, one panel per model
(workflow.figures.figure5)."""

from workflow.figures import figure5
from workflow.logs import log_to
from workflow.settings import Figure5Settings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    output = snakemake.output  # noqa: F821
    figure5(Figure5Settings.from_params(snakemake.params.settings), output.png, output.pdf, output.data)  # noqa: F821
