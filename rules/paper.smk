# The `paper` target (see workflow/paper.py): Table 2 (ablations and alternatives), Table 3 (number
# of P-MoLin experts), the header similarity of each encoder, and Figures 3-5, each next to the
# paper's own numbers where the paper gives them. Table 1 is the default target (rules/report.smk).
from workflow import paper as paper_stage

TABLE_EXTS = ["csv", "md", "tex"]
FIGURE_NUMBERS = (3, 4, 5)  # rules figure3, figure4, figure5

# On a cluster the tables are written where Snakemake runs (they read metrics files only); the
# figures, which load checkpoints and run t-SNE, are submitted like any other job.
localrules:
    table2,
    table3,
    header_similarity_table,


rule paper:
    """Tables 2 and 3, the header similarities and Figures 3-5 under results/report/."""
    input:
        expand(paths.TABLE2, ext=TABLE_EXTS),
        expand(paths.TABLE3, ext=TABLE_EXTS),
        expand(paths.HEADER_SIMILARITY_TABLE, ext=["csv", "md"]),
        [paths.FIGURE.format(number=n, ext=ext) for n in FIGURE_NUMBERS for ext in ("png", "pdf")],


rule table2:
    """Table 2: the ablations and alternative modules, with paired tests against CITab."""
    input:
        **paper_stage.table_evaluations(config, "table2", COHORTS),
        paper_table=str(REPO_ROOT / paths.PAPER_TABLE2),
    output:
        csv=report(paths.TABLE2.format(ext="csv"), caption="../workflow/report/table2.rst", category="Results"),
        markdown=paths.TABLE2.format(ext="md"),
        latex=paths.TABLE2.format(ext="tex"),
        paper_csv=paths.TABLE2_VS_PAPER.format(ext="csv"),
        paper_markdown=report(paths.TABLE2_VS_PAPER.format(ext="md"), caption="../workflow/report/table2.rst",
                              category="Results"),
        tests_csv=paths.TABLE2_TESTS.format(ext="csv"),
        tests_markdown=report(paths.TABLE2_TESTS.format(ext="md"), caption="../workflow/report/table2.rst",
                              category="Results"),
    params:
        code=code_fingerprint("workflow/scripts/paper_table.py"),
        settings=paper_stage.result_table_settings(config, "table2").as_params(),
    log:
        "results/logs/paper_table/table2.log",
    benchmark:
        "results/benchmarks/paper_table/table2.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/paper_table.py"


rule table3:
    """Table 3: E = 3, 4, 5, 6 P-MoLin experts, per cohort and averaged over the cohorts."""
    input:
        **paper_stage.table_evaluations(config, "table3", COHORTS),
        paper_table=str(REPO_ROOT / paths.PAPER_TABLE3),
    output:
        csv=report(paths.TABLE3.format(ext="csv"), caption="../workflow/report/table3.rst", category="Results"),
        markdown=paths.TABLE3.format(ext="md"),
        latex=paths.TABLE3.format(ext="tex"),
        paper_csv=paths.TABLE3_VS_PAPER.format(ext="csv"),
        paper_markdown=report(paths.TABLE3_VS_PAPER.format(ext="md"), caption="../workflow/report/table3.rst",
                              category="Results"),
        tests_csv=paths.TABLE3_TESTS.format(ext="csv"),
        tests_markdown=paths.TABLE3_TESTS.format(ext="md"),
    params:
        code=code_fingerprint("workflow/scripts/paper_table.py"),
        settings=paper_stage.result_table_settings(config, "table3").as_params(),
    log:
        "results/logs/paper_table/table3.log",
    benchmark:
        "results/benchmarks/paper_table/table3.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/paper_table.py"


rule header_similarity_table:
    """Mean pairwise similarity of each encoder's header vectors next to the paper's."""
    input:
        similarity=list(paper_stage.similarity_files(config).values()),
        paper_table=str(REPO_ROOT / paths.PAPER_TABLE2),
    output:
        csv=paths.HEADER_SIMILARITY_TABLE.format(ext="csv"),
        markdown=report(paths.HEADER_SIMILARITY_TABLE.format(ext="md"), caption="../workflow/report/header_similarity.rst",
                        category="Results"),
    params:
        code=code_fingerprint("workflow/scripts/header_similarity_table.py"),
        settings=paper_stage.header_similarity_table_settings(config).as_params(),
    log:
        "results/logs/header_similarity_table/table.log",
    benchmark:
        "results/benchmarks/header_similarity_table/table.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/header_similarity_table.py"


FIGURE3 = paper_stage.figure3_settings(config)
FIGURE4 = paper_stage.figure4_settings(config)
FIGURE5 = paper_stage.figure5_settings(config)


rule figure3:
    """Figure 3: expert activation per feature (one cohort) and of one shared feature across cohorts."""
    input:
        weights=FIGURE3.run.weights,
        header_bank=FIGURE3.run.header_bank,
        tables=[table for table, _ in FIGURE3.cohort_tables.values()],
        columns=[columns for _, columns in FIGURE3.cohort_tables.values()],
    output:
        png=report(paths.FIGURE.format(number=3, ext="png"), caption="../workflow/report/figure3.rst",
                   category="Figures"),
        pdf=report(paths.FIGURE.format(number=3, ext="pdf"), caption="../workflow/report/figure3.rst",
                   category="Figures"),
        data=paths.FIGURE_DATA.format(number=3),
    params:
        code=code_fingerprint("workflow/scripts/figure3.py"),
        settings=FIGURE3.as_params(),
    log:
        "results/logs/figure/figure3.log",
    benchmark:
        "results/benchmarks/figure/figure3.tsv"
    threads: 1
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/figure3.py"


rule figure4:
    """Figure 4: t-SNE of one cohort's feature tokens with the prototypes of a P-MoLin layer."""
    input:
        weights=FIGURE4.run.weights,
        header_bank=FIGURE4.run.header_bank,
        table=paths.TABLE.format(cohort=FIGURE4.cohort),
        columns=paths.TABLE_COLUMNS.format(cohort=FIGURE4.cohort),
    output:
        png=report(paths.FIGURE.format(number=4, ext="png"), caption="../workflow/report/figure4.rst",
                   category="Figures"),
        pdf=report(paths.FIGURE.format(number=4, ext="pdf"), caption="../workflow/report/figure4.rst",
                   category="Figures"),
        data=paths.FIGURE_DATA.format(number=4),
    params:
        code=code_fingerprint("workflow/scripts/figure4.py"),
        settings=FIGURE4.as_params(),
    log:
        "results/logs/figure/figure4.log",
    benchmark:
        "results/benchmarks/figure/figure4.tsv"
    threads: 1
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/figure4.py"


rule figure5:
    """Figure 5: t-SNE of the fused CLS of every cohort, CITab next to w/o header embedding."""
    input:
        weights=[run.weights for run in FIGURE5.panels.values()],
        header_banks=[run.header_bank for run in FIGURE5.panels.values()],
        tables=[table for table, _ in FIGURE5.cohort_tables.values()],
        # (the model-ready volumes the tables name come before the tables in the DAG)
        columns=[columns for _, columns in FIGURE5.cohort_tables.values()],
    output:
        png=report(paths.FIGURE.format(number=5, ext="png"), caption="../workflow/report/figure5.rst",
                   category="Figures"),
        pdf=report(paths.FIGURE.format(number=5, ext="pdf"), caption="../workflow/report/figure5.rst",
                   category="Figures"),
        data=paths.FIGURE_DATA.format(number=5),
    params:
        code=code_fingerprint("workflow/scripts/figure5.py"),
        settings=FIGURE5.as_params(),
    log:
        "results/logs/figure/figure5.log",
    benchmark:
        "results/benchmarks/figure/figure5.tsv"
    threads: 1
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/figure5.py"
