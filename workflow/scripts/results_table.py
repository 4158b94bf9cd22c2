"""Rule results_table: Table 1 as CSV, Markdown and LaTeX (workflow.report.write_table1)."""

from workflow.logs import log_to
from workflow.report import Uncertainty, write_table1

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    write_table1(
        metric_files=list(snakemake.input.metrics),  # noqa: F821
        prediction_files=list(snakemake.input.predictions),  # noqa: F821
        settings=Uncertainty(**snakemake.params.uncertainty),  # noqa: F821
        variants=list(snakemake.params.variants),  # noqa: F821
        cohorts=list(snakemake.params.cohorts),  # noqa: F821
        method_names=dict(snakemake.params.method_names),  # noqa: F821
        decimals=int(snakemake.params.decimals),  # noqa: F821
        csv_path=snakemake.output.csv,  # noqa: F821
        markdown_path=snakemake.output.markdown,  # noqa: F821
        latex_path=snakemake.output.latex,  # noqa: F821
        with_majority_row=bool(snakemake.params.majority_row),  # noqa: F821
        paper_table=snakemake.input.paper_table,  # noqa: F821
        comparison_csv=snakemake.output.paper_csv,  # noqa: F821
        comparison_markdown_path=snakemake.output.paper_markdown,  # noqa: F821
    )
