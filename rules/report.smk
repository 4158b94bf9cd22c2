# Report stage (see workflow/report.py): Table 1 from every evaluation of the configured variants,
# and Table 1 next to the paper's own numbers. Tables 2 and 3 and the figures: rules/paper.smk.
from workflow.paper import result_table_settings
from workflow.smk import REPO_ROOT

# On a cluster Table 1 is written where Snakemake runs: it reads metrics and predictions files only.
localrules:
    results_table,


rule results_table:
    input:
        metrics=expand(
            paths.EVAL_METRICS,
            variant=config["report"]["variants"],
            cohort=COHORTS,
            seed=config["finetune"]["seeds"],
        ),
        # per-subject test predictions: the bootstrap intervals of report.interval: bootstrap95
        predictions=expand(
            paths.EVAL_PREDICTIONS,
            variant=config["report"]["variants"],
            cohort=COHORTS,
            seed=config["finetune"]["seeds"],
        ),
        paper_table=str(REPO_ROOT / paths.PAPER_TABLE1),
    output:
        csv=report(paths.TABLE1.format(ext="csv"), caption="../workflow/report/results.rst", category="Results"),
        markdown=paths.TABLE1.format(ext="md"),
        latex=paths.TABLE1.format(ext="tex"),
        paper_csv=paths.TABLE1_VS_PAPER.format(ext="csv"),
        paper_markdown=report(paths.TABLE1_VS_PAPER.format(ext="md"), caption="../workflow/report/results.rst",
                              category="Results"),
    params:
        code=code_fingerprint("workflow/scripts/results_table.py"),
        settings=result_table_settings(config, "table1").as_params(),
    log:
        "results/logs/results_table/table1.log",
    benchmark:
        "results/benchmarks/results_table/table1.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/results_table.py"
