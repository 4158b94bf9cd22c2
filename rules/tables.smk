# rules for the tables stage (see workflow/tables.py)
from workflow.columns import resolve_columns_path


rule build_table:
    """Align images with labelled visits, keep one per subject, split, encode, summarise."""
    input:
        images=paths.INTAKE_IMAGES,
        visits=paths.INTAKE_VISITS,
        intake_exclusions=paths.INTAKE_EXCLUSIONS,
        qc=paths.PREPROCESS_QC,
        columns=str(resolve_columns_path(config["tables"]["columns"])),
        split_table=lookup(dpath="tables/split_tables/{cohort}", within=config, default=[]),
    output:
        table=paths.TABLE,
        columns=paths.TABLE_COLUMNS,
        stats=paths.TABLE_STATS,
        split=paths.TABLE_SPLIT,
        exclusions=paths.TABLE_EXCLUSIONS,
        summary=paths.TABLE_SUMMARY,
        summary_md=report(
            paths.TABLE_SUMMARY_MD, caption="../workflow/report/table_summary.rst", category="Clinical tables", subcategory="{cohort}"
        ),
    params:
        code=code_fingerprint("workflow/scripts/build_table.py"),
        settings=TABLES_SETTINGS.as_params(),
    log:
        "results/logs/build_table/{cohort}.log",
    benchmark:
        "results/benchmarks/build_table/{cohort}.tsv"
    threads: 1
    conda:
        "../envs/tables.yaml"
    script:
        "../workflow/scripts/build_table.py"
