"""Rule figure4: t-SNE of feature tokens and P-MoLin prototypes (workflow.figures.figure4)."""

from workflow.figures import FigureWeights, figure4
from workflow.logs import log_to
from workflow.settings import EvaluateSettings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    params, output = snakemake.params, snakemake.output  # noqa: F821
    figure4(
        weights=FigureWeights(**params.weights), header_bank=snakemake.input.header_bank,  # noqa: F821
        encoder=params.encoder, settings=EvaluateSettings.from_params(params.settings), table=snakemake.input.table,  # noqa: F821
        columns=snakemake.input.columns, cohort=params.cohort, layer=int(params.layer),  # noqa: F821
        split=params.split, max_rows=int(params.max_rows), perplexity=float(params.perplexity),
        seed=int(params.seed), dpi=int(params.dpi), png=output.png, pdf=output.pdf, data=output.data,
    )
