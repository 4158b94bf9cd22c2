# rules for the intake stage (see workflow/intake.py)
from workflow.columns import resolve_columns_path


checkpoint intake_cohort:
    """Read a cohort's native files into one images table and one visits table."""
    input:
        unpack(intake_user_inputs),
        columns=str(resolve_columns_path(config["tables"]["columns"])),
    output:
        images=paths.INTAKE_IMAGES,
        visits=paths.INTAKE_VISITS,
        exclusions=paths.INTAKE_EXCLUSIONS,
        cell_qc=paths.INTAKE_CELL_QC,
    params:
        folders=intake_user_folders,
        settings=intake_params,
        data=intake_data_fingerprints,
        code=code_fingerprint("workflow/scripts/intake_cohort.py"),
    log:
        "results/logs/intake_cohort/{cohort}.log",
    benchmark:
        "results/benchmarks/intake_cohort/{cohort}.tsv"
    threads: 1
    conda:
        "../envs/tables.yaml"
    script:
        "../workflow/scripts/intake_cohort.py"
