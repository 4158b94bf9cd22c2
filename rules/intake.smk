# rules for the intake stage (see workflow/intake.py)
from workflow.columns import resolve_columns_path
from workflow.convert import intake_folders, intake_inputs


checkpoint intake_cohort:
    """Read a cohort's native files into one images table and one visits table."""
    input:
        unpack(lambda wildcards: intake_inputs(config, wildcards.cohort)),
        columns=str(resolve_columns_path(config["tables"]["columns"])),
        code=code_files("workflow.intake", "workflow.columns"),
    output:
        images=paths.INTAKE_IMAGES,
        visits=paths.INTAKE_VISITS,
        exclusions=paths.INTAKE_EXCLUSIONS,
        cell_qc=paths.INTAKE_CELL_QC,
    params:
        folders=lambda wildcards: intake_folders(config, wildcards.cohort),
        fmt=lambda wildcards: config["cohorts"][wildcards.cohort]["format"],
        files=lambda wildcards: config["cohorts"][wildcards.cohort]["files"],
    log:
        "results/logs/intake_cohort/{cohort}.log",
    benchmark:
        "results/benchmarks/intake_cohort/{cohort}.tsv"
    threads: 1
    conda:
        "../envs/tables.yaml"
    script:
        "../workflow/scripts/intake_cohort.py"
