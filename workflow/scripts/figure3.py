"""Rule figure3: expert activation shares (workflow.figures.figure3)."""

from workflow.figures import FigureWeights, figure3
from workflow.logs import log_to
from workflow.settings import EvaluateSettings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    params, output = snakemake.params, snakemake.output  # noqa: F821
    figure3(
        weights=FigureWeights(**params.weights), header_bank=snakemake.input.header_bank,  # noqa: F821
        encoder=params.encoder, settings=EvaluateSettings.from_params(params.settings),
        tables={cohort: tuple(files) for cohort, files in params.cohort_tables.items()},
        feature_cohort=params.feature_cohort, shared_feature=params.shared_feature, layer=int(params.layer),
        split=params.split, max_rows=int(params.max_rows), seed=int(params.seed), dpi=int(params.dpi),
        png=output.png, pdf=output.pdf, data=output.data,
    )
