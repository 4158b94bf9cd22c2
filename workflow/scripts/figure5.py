"""Rule figure5: t-SNE of fused CLS embeddings of every cohort, one panel per model
(workflow.figures.figure5)."""

from workflow.figures import FigureWeights, figure5
from workflow.logs import log_to
from workflow.settings import EvaluateSettings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    params, output = snakemake.params, snakemake.output  # noqa: F821
    figure5(
        panels={title: FigureWeights(**panel["weights"]) for title, panel in params.panels.items()},
        header_banks={title: panel["header_bank"] for title, panel in params.panels.items()},
        settings={title: EvaluateSettings.from_params(panel["settings"]) for title, panel in params.panels.items()},
        encoder=params.encoder, tables={cohort: tuple(files) for cohort, files in params.cohort_tables.items()},
        class_names=list(params.class_names), split=params.split, max_rows=int(params.max_rows),
        perplexity=float(params.perplexity), seed=int(params.seed), dpi=int(params.dpi),
        png=output.png, pdf=output.pdf, data=output.data,
    )
