# rules for the convert stage (see workflow/convert.py): a raw download, as the data centre ships
# it, -> the BIDS tree (Clinica) or NIfTI folder (dcm2niix) that intake reads. Only cohorts with
# source: raw have these jobs.
from workflow.convert import raw_cohort_pattern, raw_folders, raw_inputs

CONVERT = config["convert"]


rule convert_clinica:
    """Clinica's adni-to-bids / aibl-to-bids (T1) on a cohort's LONI image download and clinical CSVs."""
    input:
        unpack(lambda wildcards: raw_inputs(config, wildcards.cohort)),
        code=code_files("workflow.convert", "workflow.clinica"),
    output:
        bids=directory(paths.CONVERTED_BIDS),
        exclusions=paths.CONVERT_EXCLUSIONS,
    params:
        folders=lambda wildcards: raw_folders(config, wildcards.cohort),
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
        unpack(lambda wildcards: raw_inputs(config, wildcards.cohort)),
        code=code_files("workflow.convert", "workflow.nacc_zips"),
    output:
        images=directory(paths.CONVERTED_NIFTI),
        exclusions=paths.CONVERT_EXCLUSIONS,
    params:
        folders=lambda wildcards: raw_folders(config, wildcards.cohort),
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
