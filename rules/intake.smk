# rules for the intake stage (see workflow/intake.py)
from workflow.columns import resolve_columns_path
from workflow.convert import intake_folders, intake_inputs


checkpoint intake_cohort:
    """Read a cohort's native files into one images table and one visits table."""
    input:
        # The user's folders are ancient(): their `data` fingerprint below decides whether they changed.
        unpack(lambda wildcards: with_user_folders_ancient(
            intake_inputs(config, wildcards.cohort), config, wildcards.cohort
        )),
        columns=str(resolve_columns_path(config["tables"]["columns"])),
    output:
        images=paths.INTAKE_IMAGES,
        visits=paths.INTAKE_VISITS,
        exclusions=paths.INTAKE_EXCLUSIONS,
        cell_qc=paths.INTAKE_CELL_QC,
    params:
        folders=lambda wildcards: intake_folders(config, wildcards.cohort),
        fmt=lambda wildcards: config["cohorts"][wildcards.cohort]["format"],
        files=lambda wildcards: config["cohorts"][wildcards.cohort]["files"],
        # None when unset: intake takes the format's default (workflow.intake.DEFAULT_SUBJECT_PREFIX).
        subject_prefix=lambda wildcards: config["cohorts"][wildcards.cohort].get("subject_prefix"),
        # Every file below the user's folders (workflow/fingerprints.py): edits inside them rerun intake.
        data=lambda wildcards: data_fingerprints(config, wildcards.cohort, "intake"),
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
