"""Rules table2 / table3: one result table of the paper with its paired tests and the paper's numbers
(workflow.report.write_results_table)."""

from workflow.logs import log_to
from workflow.report import Uncertainty, write_results_table

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    params, output = snakemake.params, snakemake.output  # noqa: F821
    write_results_table(
        metric_files=list(snakemake.input.metrics),  # noqa: F821
        prediction_files=list(snakemake.input.predictions),  # noqa: F821
        variants=list(params.variants), cohorts=list(params.cohorts), method_names=dict(params.method_names),
        decimals=int(params.decimals), csv_path=output.csv, markdown_path=output.markdown, latex_path=output.latex,
        table_name=params.table_name, caption=params.caption, latex_label=params.latex_label,
        average_column=bool(params.average_column), unavailable=dict(params.unavailable),
        settings=Uncertainty(**params.uncertainty), reference=params.reference,
        tests_csv=output.tests_csv, tests_markdown_path=output.tests_markdown,
        paper_table=snakemake.input.paper_table,  # noqa: F821
        comparison_csv=output.paper_csv, comparison_markdown_path=output.paper_markdown,
    )
