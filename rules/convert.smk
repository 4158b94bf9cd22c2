# rules for the convert stage (see workflow/convert.py): a raw download, as the data centre ships
# it, -> the BIDS tree (Clinica) or NIfTI folder (dcm2niix) that intake reads. Only cohorts with
# source: raw have these jobs.
from workflow.convert import raw_cohort_pattern, raw_folders, raw_inputs

CONVERT = config["convert"]


rule convert_clinica:
    """Clinica's adni-to-bids / aibl-to-bids (T1) on a cohort's LONI image download and clinical CSVs."""
    input:
        # The download's folders are ancient(): their `data` fingerprint below decides whether they changed.
        unpack(lambda wildcards: with_user_folders_ancient(
            raw_inputs(config, wildcards.cohort), config, wildcards.cohort
        )),
    output:
        bids=directory(paths.CONVERTED_BIDS),
        exclusions=paths.CONVERT_EXCLUSIONS,
    params:
        code=code_fingerprint("workflow/scripts/convert_clinica.py"),
        folders=lambda wildcards: raw_folders(config, wildcards.cohort),
        # Every file below the download's folders (workflow/fingerprints.py): edits in them rerun it.
        data=lambda wildcards: data_fingerprints(config, wildcards.cohort, "convert"),
        fmt=lambda wildcards: config["cohorts"][wildcards.cohort]["format"],
        clinica=CONVERT["clinica"],
        t1_series=CONVERT["t1_series"],
    wildcard_constraints:
        cohort=raw_cohort_pattern(config, "adni", "aibl"),
    log:
        "results/logs/convert_clinica/{cohort}.log",
    benchmark:
        "results/benchmarks/convert_clinica/{cohort}.tsv"
    threads: CONVERT["threads"]
    resources:
        mem_mb=CONVERT["mem_mb"],
    conda:
        "../envs/convert.yaml"
    script:
        "../workflow/scripts/convert_clinica.py"


rule convert_nacc:
    """dcm2niix on each NACC MRI session zip: the session's T1 series -> one NIfTI per zip."""
    input:
        # The download's folders are ancient(): their `data` fingerprint below decides whether they changed.
        unpack(lambda wildcards: with_user_folders_ancient(
            raw_inputs(config, wildcards.cohort), config, wildcards.cohort
        )),
    output:
        images=directory(paths.CONVERTED_NIFTI),
        exclusions=paths.CONVERT_EXCLUSIONS,
    params:
        code=code_fingerprint("workflow/scripts/convert_nacc.py"),
        folders=lambda wildcards: raw_folders(config, wildcards.cohort),
        # Every file below the download's folders (workflow/fingerprints.py): edits in them rerun it.
        data=lambda wildcards: data_fingerprints(config, wildcards.cohort, "convert"),
        dcm2niix=CONVERT["dcm2niix"],
        t1_series=CONVERT["t1_series"],
    wildcard_constraints:
        cohort=raw_cohort_pattern(config, "nacc"),
    log:
        "results/logs/convert_nacc/{cohort}.log",
    benchmark:
        "results/benchmarks/convert_nacc/{cohort}.tsv"
    threads: CONVERT["threads"]
    resources:
        mem_mb=CONVERT["mem_mb"],
    conda:
        "../envs/convert.yaml"
    script:
        "../workflow/scripts/convert_nacc.py"
