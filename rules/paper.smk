# The `paper` target (see workflow/paper.py): Table 2 (ablations and alternatives), Table 3 (number
# of P-MoLin experts), the header similarity of each encoder, and Figures 3-5, each next to the
# paper's own numbers where the paper gives them. Table 1 is the default target (rules/report.smk).
from workflow import paper as paper_stage
from workflow.report import Uncertainty

REPORT = config["report"]
FIGURES = REPORT["figures"]
# Every cell's interval kind and the paired tests' settings, as the rules' params.
UNCERTAINTY = vars(Uncertainty.from_config(REPORT))
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
        table_name="Table 2",
        caption="Ablations and alternative modules on the test sets.",
        latex_label="tab:table2",
        variants=REPORT["table2"]["variants"],
        reference=REPORT["table2"]["reference"],
        unavailable=paper_stage.unavailable_rows(config, REPORT["table2"]["variants"]),
        average_column=False,
        cohorts=COHORTS,
        method_names=REPORT["method_names"],
        decimals=REPORT["decimals"],
        uncertainty=UNCERTAINTY,
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
        table_name="Table 3",
        caption="Number E of P-MoLin experts per tabular layer (E = 5 is CITab), per cohort and on average.",
        latex_label="tab:table3",
        variants=REPORT["table3"]["variants"],
        reference=REPORT["table3"]["reference"],
        unavailable=paper_stage.unavailable_rows(config, REPORT["table3"]["variants"]),
        average_column=True,
        cohorts=COHORTS,
        method_names={**REPORT["method_names"], **REPORT["table3"]["method_names"]},
        decimals=REPORT["decimals"],
        uncertainty=UNCERTAINTY,
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
        encoders=paper_stage.table_encoders(config),
        similarity_files=paper_stage.similarity_files(config),
        unavailable=paper_stage.unavailable_encoders(config),
        decimals=REPORT["decimals"],
    log:
        "results/logs/header_similarity_table/table.log",
    benchmark:
        "results/benchmarks/header_similarity_table/table.tsv"
    conda:
        "../envs/report.yaml"
    script:
        "../workflow/scripts/header_similarity_table.py"


FIGURE_WEIGHTS = paper_stage.figure_weights(config, FIGURES["variant"])
NO_HEADER_WEIGHTS = paper_stage.figure_weights(config, FIGURES["no_header_variant"])
FEATURE_COHORT = paper_stage.figure_cohort(config, "feature_cohort")
# What every figure reads of the cohorts: cohort -> (table.tsv, columns.yaml).
COHORT_TABLES = {cohort: (paths.TABLE.format(cohort=cohort), paths.TABLE_COLUMNS.format(cohort=cohort)) for cohort in COHORTS}


rule figure3:
    """Figure 3: expert activation per feature (one cohort) and of one shared feature across cohorts."""
    input:
        weights=FIGURE_WEIGHTS.path,
        header_bank=train_stage.header_bank_path(config, FIGURES["variant"]),
        tables=[table for table, _ in COHORT_TABLES.values()],
        columns=[columns for _, columns in COHORT_TABLES.values()],
    output:
        png=report(paths.FIGURE.format(number=3, ext="png"), caption="../workflow/report/figure3.rst",
                   category="Figures"),
        pdf=report(paths.FIGURE.format(number=3, ext="pdf"), caption="../workflow/report/figure3.rst",
                   category="Figures"),
        data=paths.FIGURE_DATA.format(number=3),
    params:
        code=code_fingerprint("workflow/scripts/figure3.py"),
        weights=vars(FIGURE_WEIGHTS),
        encoder=paper_stage.figure_encoder(config),
        settings=train_stage.evaluate_settings(config, FIGURES["variant"]).as_params(),
        cohort_tables=COHORT_TABLES,
        feature_cohort=FEATURE_COHORT,
        shared_feature=FIGURES["shared_feature"],
        layer=paper_stage.figure_layer(config),
        split=FIGURES["split"],
        max_rows=FIGURES["max_rows"],
        seed=FIGURES["seed"],
        dpi=FIGURES["dpi"],
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
        weights=FIGURE_WEIGHTS.path,
        header_bank=train_stage.header_bank_path(config, FIGURES["variant"]),
        table=COHORT_TABLES[FEATURE_COHORT][0],
        columns=COHORT_TABLES[FEATURE_COHORT][1],
    output:
        png=report(paths.FIGURE.format(number=4, ext="png"), caption="../workflow/report/figure4.rst",
                   category="Figures"),
        pdf=report(paths.FIGURE.format(number=4, ext="pdf"), caption="../workflow/report/figure4.rst",
                   category="Figures"),
        data=paths.FIGURE_DATA.format(number=4),
    params:
        code=code_fingerprint("workflow/scripts/figure4.py"),
        weights=vars(FIGURE_WEIGHTS),
        encoder=paper_stage.figure_encoder(config),
        settings=train_stage.evaluate_settings(config, FIGURES["variant"]).as_params(),
        cohort=FEATURE_COHORT,
        layer=paper_stage.figure_layer(config),
        split=FIGURES["split"],
        max_rows=FIGURES["max_rows"],
        perplexity=FIGURES["perplexity"],
        seed=FIGURES["seed"],
        dpi=FIGURES["dpi"],
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
        weights=[FIGURE_WEIGHTS.path, NO_HEADER_WEIGHTS.path],
        header_banks=[train_stage.header_bank_path(config, FIGURES["variant"]),
                      train_stage.header_bank_path(config, FIGURES["no_header_variant"])],
        tables=[table for table, _ in COHORT_TABLES.values()],
        # (the model-ready volumes the tables name come before the tables in the DAG)
        columns=[columns for _, columns in COHORT_TABLES.values()],
    output:
        png=report(paths.FIGURE.format(number=5, ext="png"), caption="../workflow/report/figure5.rst",
                   category="Figures"),
        pdf=report(paths.FIGURE.format(number=5, ext="pdf"), caption="../workflow/report/figure5.rst",
                   category="Figures"),
        data=paths.FIGURE_DATA.format(number=5),
    params:
        code=code_fingerprint("workflow/scripts/figure5.py"),
        # panel title -> (weights, header bank, evaluate settings) of its fine-tuned run
        panels={
            REPORT["method_names"].get(run.variant, run.variant): {
                "weights": vars(run),
                "header_bank": train_stage.header_bank_path(config, run.variant),
                "settings": train_stage.evaluate_settings(config, run.variant).as_params(),
            }
            for run in (FIGURE_WEIGHTS, NO_HEADER_WEIGHTS)
        },
        encoder=paper_stage.figure_encoder(config),
        cohort_tables=COHORT_TABLES,
        class_names=config["finetune"]["class_names"],
        split=FIGURES["split"],
        max_rows=FIGURES["max_rows"],
        perplexity=FIGURES["perplexity"],
        seed=FIGURES["seed"],
        dpi=FIGURES["dpi"],
    log:
        "results/logs/figure/figure5.log",
    benchmark:
        "results/benchmarks/figure/figure5.tsv"
    threads: 1
    conda:
        "../envs/figures.yaml"
    script:
        "../workflow/scripts/figure5.py"
