# Header stage: every column header text -> frozen text-encoder vectors (workflow/headers.py).
from workflow.header_encoders import header_texts


rule embed_headers:
    """Embed all header texts of all cohorts once with the {encoder} text encoder (cached)."""
    output:
        bank=paths.HEADER_BANK,
        similarity=paths.HEADER_SIMILARITY,
    params:
        code=code_fingerprint("workflow/scripts/embed_headers.py"),
        texts=header_texts(config),
        settings=header_embedding_params,
    log:
        "results/logs/embed_headers/{encoder}.log",
    benchmark:
        "results/benchmarks/embed_headers/{encoder}.tsv"
    threads: 2
    resources:
        mem_mb=4000,
    conda:
        "../envs/headers.yaml"
    script:
        "../workflow/scripts/embed_headers.py"
