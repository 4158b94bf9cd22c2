"""Rule header_similarity_table: each encoder's mean pairwise header similarity next to the paper's
(workflow.report.write_header_similarity)."""

from workflow.logs import log_to
from workflow.report import write_header_similarity

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    params = snakemake.params  # noqa: F821
    write_header_similarity(
        similarity_files=dict(params.similarity_files), encoders=list(params.encoders),
        unavailable=dict(params.unavailable), paper_path=snakemake.input.paper_table,  # noqa: F821
        decimals=int(params.decimals), csv_path=snakemake.output.csv,  # noqa: F821
        markdown_path=snakemake.output.markdown,  # noqa: F821
    )
