# rules for the synthesize stage (see workflow/synthesize.py, docs/interfaces.md section 1):
# a synthetic stand-in for every cohort whose config says source: synthetic.
SYNTHETIC = config["synthetic"]
SYNTHETIC_COHORTS = [name for name, cohort in config["cohorts"].items() if cohort["source"] in ("synthetic", "synthetic_raw")]
SYNTHETIC_RAW_COHORTS = [name for name, cohort in config["cohorts"].items() if cohort["source"] == "synthetic_raw"]


rule synthesize_cohort:
    """Generate one synthetic cohort in its native format: clinical tables, T1w heads, ground truth."""
    output:
        root=directory(paths.SYNTHETIC_ROOT),
    params:
        code=code_fingerprint("workflow/scripts/synthesize_cohort.py"),
        settings=synthetic_cohort_params,
    wildcard_constraints:
        # (?!) matches nothing: with no synthetic cohort the rule never applies.
        cohort="|".join(SYNTHETIC_COHORTS) or "(?!)",
    log:
        "results/logs/synthesize_cohort/{cohort}.log",
    benchmark:
        "results/benchmarks/synthesize_cohort/{cohort}.tsv"
    threads: SYNTHETIC["threads"]
    resources:
        mem_mb=SYNTHETIC["mem_mb"] * SYNTHETIC["threads"] + 500,
    conda:
        "../envs/synthesize.yaml"
    script:
        "../workflow/scripts/synthesize_cohort.py"


rule synthesize_raw_download:
    """Write a synthetic cohort as the data centre ships it (LONI DICOM folders or NACC zips + CSVs)."""
    input:
        natives=paths.SYNTHETIC_ROOT,
    output:
        root=directory(paths.SYNTHETIC_RAW_ROOT),
    params:
        code=code_fingerprint("workflow/scripts/synthesize_raw_download.py"),
        fmt=COHORT_FORMAT,
    wildcard_constraints:
        cohort="|".join(SYNTHETIC_RAW_COHORTS) or "(?!)",
    log:
        "results/logs/synthesize_raw_download/{cohort}.log",
    benchmark:
        "results/benchmarks/synthesize_raw_download/{cohort}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
    conda:
        "../envs/synthesize.yaml"
    script:
        "../workflow/scripts/synthesize_raw_download.py"
