# rules for the convert stage (see workflow/convert.py): a raw download, as the data centre ships
# it, -> the BIDS tree (Clinica) or NIfTI folder (dcm2niix) that intake reads. Only cohorts with
# source: raw have these jobs.
from workflow.convert import raw_cohort_pattern

CONVERT = config["convert"]


rule convert_clinica:
    """Clinica's adni-to-bids / aibl-to-bids (T1) on a cohort's LONI image download and clinical CSVs."""
    input:
        unpack(download_inputs),
    output:
        bids=directory(paths.CONVERTED_BIDS),
        exclusions=paths.CONVERT_EXCLUSIONS,
    params:
        code=code_fingerprint("workflow/scripts/convert_clinica.py"),
        folders=download_folders,
        data=convert_data_fingerprints,
        fmt=COHORT_FORMAT,
        settings=settings_stage.convert_settings(config, "clinica").as_params(),
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
        unpack(download_inputs),
    output:
        images=directory(paths.CONVERTED_NIFTI),
        exclusions=paths.CONVERT_EXCLUSIONS,
    params:
        code=code_fingerprint("workflow/scripts/convert_nacc.py"),
        folders=download_folders,
        data=convert_data_fingerprints,
        settings=settings_stage.convert_settings(config, "dcm2niix").as_params(),
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
