# Using a trained model (see workflow/bundle.py and workflow/predict.py): a self-contained bundle per
# fine-tuned (variant, cohort, seed), and prediction for new subjects (T1 NIfTI + a clinical CSV)
# through the training's own preprocessing chain, table encoding and evaluation code.
from workflow import bundle as bundle_stage
from workflow import train as train_stage
from workflow.columns import resolve_columns_path

# Every bundle the default target builds: one per evaluation of Table 1.
BUNDLES = expand(
    bundle_stage.bundle_outputs()["manifest"],
    variant=config["report"]["variants"],
    cohort=COHORTS,
    seed=config["finetune"]["seeds"],
)


rule export_bundle:
    """Weights, header vectors, column definitions, encoding statistics, preprocessing settings and
    the registration target, metrics and settings hash of one fine-tuned model, in one folder."""
    input:
        weights=paths.FINETUNED_WEIGHTS,
        finetune_metrics=train_stage.FINETUNE_METRICS,
        eval_metrics=paths.EVAL_METRICS,
        column_definitions=str(resolve_columns_path(config["tables"]["columns"])),
        table_columns=paths.TABLE_COLUMNS,
        stats=paths.TABLE_STATS,
        header_bank=train_stage.header_bank_path(config),
        template_head=PREPROCESS_TEMPLATE["head"],
        template_crop=PREPROCESS_TEMPLATE["crop"],
        template_brainmask=PREPROCESS_TEMPLATE["brainmask"],
    output:
        **bundle_stage.bundle_outputs(),
    params:
        code=code_fingerprint("workflow/scripts/export_bundle.py"),
        encoder=train_stage.configured_encoder(config),
        model=evaluate_settings_params,
        finetune=finetune_settings_params,
        preprocess=PREPROCESS_SETTINGS.as_params(),
        tables=TABLES_SETTINGS.as_params(),
    log:
        "results/logs/export_bundle/{variant}/{cohort}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/export_bundle/{variant}/{cohort}/seed-{seed}.tsv"
    threads: 1
    conda:
        "../envs/train.yaml"
    script:
        "../workflow/scripts/export_bundle.py"


rule test_subject_inputs:
    """A finished run's test subjects as new-subject inputs of predict: their native T1s and their
    clinical rows in the harmonised columns (the demo's predict example; tests)."""
    input:
        table=paths.TABLE,
        stats=paths.TABLE_STATS,
        images=paths.INTAKE_IMAGES,
    output:
        images=paths.TEST_SUBJECT_IMAGES,
        table=paths.TEST_SUBJECT_TABLE,
    params:
        code=code_fingerprint("workflow/scripts/test_subject_inputs.py"),
    log:
        "results/logs/test_subject_inputs/{cohort}.log",
    benchmark:
        "results/benchmarks/test_subject_inputs/{cohort}.tsv"
    threads: 1
    conda:
        "../envs/predict.yaml"
    script:
        "../workflow/scripts/test_subject_inputs.py"


# `snakemake predict` with a `predict:` config section (workflow/schemas/predict.schema.yaml): new
# subjects through one bundle. A bundle under results/bundles/ is built first when missing.
if "predict" in config:
    PREDICT = config["predict"]

    rule predict:
        """Class probabilities, predicted class and QC of every new subject (or why it was left out)."""
        input:
            bundle=f"{PREDICT['bundle']}/{bundle_stage.BUNDLE_FILES['manifest']}",
            images=PREDICT["images"],
            table=PREDICT["table"],
        output:
            predictions=paths.PREDICTIONS.format(output=PREDICT["output"]),
            qc=paths.PREDICT_QC.format(output=PREDICT["output"]),
        params:
            code=code_fingerprint("workflow.predict", "workflow.gpu_slots"),
            bundle=PREDICT["bundle"],
            output=PREDICT["output"],
            encoder=train_stage.configured_encoder(config),
        log:
            "results/logs/predict/predict.log",
        benchmark:
            "results/benchmarks/predict/predict.tsv"
        threads: PREDICT["threads"]
        resources:
            gpu=PREDICT["gpus"],
            mem_mb=PREDICT["mem_mb"],
        conda:
            "../envs/predict.yaml"
        shell:
            "python -m workflow.gpu_slots {resources.gpu} -- "
            "python -m workflow.predict --bundle {params.bundle:q} --images {input.images:q} "
            "--table {input.table:q} --out {params.output:q} --encoder {params.encoder:q} "
            "--gpus {resources.gpu} --threads {threads} > {log} 2>&1"
