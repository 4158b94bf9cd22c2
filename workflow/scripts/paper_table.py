"""Rules table2 / table3: one result table of the paper with its paired tests and the paper's numbers
(workflow.report.write_results_table)."""

from workflow.logs import log_to
from workflow.report import write_results_table
from workflow.settings import ResultTableSettings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    inputs, output = snakemake.input, snakemake.output  # noqa: F821
    write_results_table(
        ResultTableSettings.from_params(snakemake.params.settings),  # noqa: F821
        list(inputs.metrics), output.csv, output.markdown, output.latex, prediction_files=list(inputs.predictions),
        tests_csv=output.tests_csv, tests_markdown_path=output.tests_markdown, paper_table=inputs.paper_table,
        comparison_csv=output.paper_csv, comparison_markdown_path=output.paper_markdown,
    )
