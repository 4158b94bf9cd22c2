"""Rule embed_headers: header texts -> frozen text-encoder vectors (workflow.headers.embed_headers)."""

from workflow.headers import embed_headers
from workflow.logs import log_to

with log_to(snakemake.log[0]):  # noqa: F821 (injected by Snakemake)
    settings = snakemake.params.encoder  # noqa: F821
    embed_headers(
        snakemake.params.texts,  # noqa: F821
        snakemake.output.bank,  # noqa: F821
        snakemake.output.similarity,  # noqa: F821
        encoder=settings["name"],
        encoder_path=settings["path"],
        pooling=settings["pooling"],
        max_length=settings["max_length"],
        batch_size=snakemake.params.batch_size,  # noqa: F821
        cache_dir=snakemake.params.cache_dir,  # noqa: F821
        threads=snakemake.threads,  # noqa: F821
    )
