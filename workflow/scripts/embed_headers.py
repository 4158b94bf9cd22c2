"""Rule embed_headers: header texts -> frozen text-encoder vectors (workflow.headers.embed_headers)."""

from workflow.headers import embed_headers
from workflow.logs import log_to
from workflow.settings import HeaderEmbeddingSettings

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    embed_headers(
        snakemake.params.texts,  # noqa: F821
        snakemake.output.bank,  # noqa: F821
        snakemake.output.similarity,  # noqa: F821
        settings=HeaderEmbeddingSettings.from_params(snakemake.params.settings),  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
