"""Rule header_similarity_table: each encoder's mean pairwise header similarity next to the paper's
(workflow.report.write_header_similarity)."""

from workflow.logs import log_to
from workflow.report import write_header_similarity
from workflow.settings import HeaderSimilarityTableSettings

with log_to(snakemake.log[0]):  # noqa: F821 - injected by Snakemake
    write_header_similarity(
        HeaderSimilarityTableSettings.from_params(snakemake.params.settings),  # noqa: F821
        snakemake.input.paper_table, snakemake.output.csv, snakemake.output.markdown,  # noqa: F821
    )
