# Training stage (see workflow/train.py and model/training.py): cross-tabular pretraining of each
# CITab variant, per-cohort pretraining of the self-supervised Table 1 baselines (MMCL, TIP, ViTa),
# fine-tuning per (variant, cohort, seed) and test-set evaluation. GPU jobs run through
# workflow.gpu_slots, which gives each job its own devices locally and does nothing under SLURM.
# Resume points live in <run>/checkpoints/ (not an output: a killed job's rerun resumes from there).
# Each job reads a settings file (workflow.settings) that a local rule writes from its params, so a
# changed setting rewrites that file and reruns exactly the jobs that read it.
from workflow import train as train_stage


wildcard_constraints:
    variant="[A-Za-z0-9_]+",


localrules:
    pretrain_settings,
    pretrain_cohort_settings,
    finetune_settings,
    evaluate_settings,


rule pretrain_settings:
    output:
        paths.PRETRAIN_SETTINGS,
    params:
        settings=pretrain_settings_params,
    log:
        "results/logs/pretrain_settings/{variant}.log",
    benchmark:
        "results/benchmarks/pretrain_settings/{variant}.tsv"
    run:
        settings_stage.write_settings("pretrain", params.settings, output[0], log[0])


rule pretrain_cohort_settings:
    output:
        paths.COHORT_PRETRAIN_SETTINGS,
    params:
        settings=cohort_pretrain_settings_params,
    log:
        "results/logs/pretrain_settings/{variant}/{cohort}.log",
    benchmark:
        "results/benchmarks/pretrain_settings/{variant}/{cohort}.tsv"
    run:
        settings_stage.write_settings("pretrain", params.settings, output[0], log[0])


rule finetune_settings:
    output:
        paths.FINETUNE_SETTINGS,
    params:
        settings=finetune_settings_params,
    log:
        "results/logs/finetune_settings/{variant}/{cohort}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/finetune_settings/{variant}/{cohort}/seed-{seed}.tsv"
    run:
        settings_stage.write_settings("finetune", params.settings, output[0], log[0])


rule evaluate_settings:
    output:
        paths.EVAL_SETTINGS,
    params:
        settings=evaluate_settings_params,
    log:
        "results/logs/evaluate_settings/{variant}/{cohort}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/evaluate_settings/{variant}/{cohort}/seed-{seed}.tsv"
    run:
        settings_stage.write_settings("evaluate", params.settings, output[0], log[0])



rule pretrain:
    input:
        tables=expand(paths.TABLE, cohort=COHORTS),
        columns=expand(paths.TABLE_COLUMNS, cohort=COHORTS),
        header_bank=variant_header_bank,
        settings=paths.PRETRAIN_SETTINGS,
    output:
        weights=paths.PRETRAINED_WEIGHTS,
        metrics=train_stage.PRETRAIN_METRICS,
        provenance=paths.PRETRAIN_PROVENANCE,
    params:
        code=code_fingerprint("workflow.train", "workflow.gpu_slots"),
        cohorts=COHORTS,
        encoder=variant_encoder,
        model_variant=variant_model,
        nproc=torchrun_processes,
    log:
        "results/logs/pretrain/{variant}.log",
    benchmark:
        "results/benchmarks/pretrain/{variant}.tsv"
    # Every fine-tuning of the variant waits for it: start it before jobs that nothing waits for.
    priority: 1
    threads: config["pretrain"]["threads"]
    resources:
        gpu=config["pretrain"]["gpus"],
        mem_mb=config["pretrain"]["mem_mb"],
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow.gpu_slots {resources.gpu} -- "
        "torchrun --standalone --nnodes=1 --nproc_per_node={params.nproc} -m workflow.train pretrain "
        "--variant {params.model_variant} --cohorts {params.cohorts} --tables {input.tables} "
        "--columns {input.columns} --header-bank {input.header_bank} --encoder {params.encoder:q} "
        "--settings {input.settings} --weights {output.weights} --metrics {output.metrics} "
        "--provenance {output.provenance} --code-fingerprint {params.code:q} "
        "--gpus {resources.gpu} --threads {threads} > {log} 2>&1"


# One job per (self-supervised baseline, cohort): the same loop, DDP launch, resume points and
# checkpoint format as rule pretrain, on that cohort's training rows only.
rule pretrain_cohort:
    input:
        table=paths.TABLE,
        columns=paths.TABLE_COLUMNS,
        header_bank=train_stage.header_bank_path(config),
        settings=paths.COHORT_PRETRAIN_SETTINGS,
    output:
        weights=paths.COHORT_PRETRAINED_WEIGHTS,
        metrics=train_stage.COHORT_PRETRAIN_METRICS,
        provenance=paths.COHORT_PRETRAIN_PROVENANCE,
    params:
        code=code_fingerprint("workflow.train", "workflow.gpu_slots"),
        encoder=train_stage.configured_encoder(config),
        nproc=torchrun_processes,
    log:
        "results/logs/pretrain/{variant}/{cohort}.log",
    benchmark:
        "results/benchmarks/pretrain/{variant}/{cohort}.tsv"
    priority: 1
    threads: config["pretrain"]["threads"]
    resources:
        gpu=config["pretrain"]["gpus"],
        mem_mb=config["pretrain"]["mem_mb"],
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow.gpu_slots {resources.gpu} -- "
        "torchrun --standalone --nnodes=1 --nproc_per_node={params.nproc} -m workflow.train pretrain "
        "--variant {wildcards.variant} --cohorts {wildcards.cohort} --tables {input.table} "
        "--columns {input.columns} --header-bank {input.header_bank} --encoder {params.encoder:q} "
        "--settings {input.settings} --weights {output.weights} --metrics {output.metrics} "
        "--provenance {output.provenance} --code-fingerprint {params.code:q} "
        "--gpus {resources.gpu} --threads {threads} > {log} 2>&1"


rule finetune:
    input:
        table=paths.TABLE,
        split=paths.TABLE_SPLIT,
        columns=paths.TABLE_COLUMNS,
        header_bank=variant_header_bank,
        pretrained=pretrained_weights,
        settings=paths.FINETUNE_SETTINGS,
    output:
        best=paths.FINETUNED_WEIGHTS,
        metrics=train_stage.FINETUNE_METRICS,
        provenance=paths.FINETUNE_PROVENANCE,
    params:
        code=code_fingerprint("workflow.train", "workflow.gpu_slots"),
        encoder=variant_encoder,
        pretrained=pretrained_argument,
    log:
        "results/logs/finetune/{variant}/{cohort}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/finetune/{variant}/{cohort}/seed-{seed}.tsv"
    threads: config["finetune"]["threads"]
    resources:
        gpu=config["finetune"]["gpus"],
        mem_mb=config["finetune"]["mem_mb"],
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow.gpu_slots {resources.gpu} -- "
        "python -m workflow.train finetune --variant {wildcards.variant} --cohort {wildcards.cohort} "
        "--seed {wildcards.seed} --table {input.table} --columns {input.columns} "
        "--header-bank {input.header_bank} --encoder {params.encoder:q} {params.pretrained} "
        "--settings {input.settings} --best {output.best} --metrics {output.metrics} --split {input.split} "
        "--provenance {output.provenance} --code-fingerprint {params.code:q} "
        "--gpus {resources.gpu} --threads {threads} > {log} 2>&1"


rule evaluate:
    input:
        table=paths.TABLE,
        columns=paths.TABLE_COLUMNS,
        header_bank=variant_header_bank,
        weights=paths.FINETUNED_WEIGHTS,
        settings=paths.EVAL_SETTINGS,
    output:
        metrics=paths.EVAL_METRICS,
        predictions=paths.EVAL_PREDICTIONS,
        provenance=paths.EVAL_PROVENANCE,
    params:
        code=code_fingerprint("workflow.train", "workflow.gpu_slots"),
        encoder=variant_encoder,
    log:
        "results/logs/evaluate/{variant}/{cohort}/seed-{seed}.log",
    benchmark:
        "results/benchmarks/evaluate/{variant}/{cohort}/seed-{seed}.tsv"
    threads: config["evaluate"]["threads"]
    resources:
        gpu=config["evaluate"]["gpus"],
        mem_mb=config["evaluate"]["mem_mb"],
    conda:
        "../envs/train.yaml"
    shell:
        "python -m workflow.gpu_slots {resources.gpu} -- "
        "python -m workflow.train evaluate --variant {wildcards.variant} --cohort {wildcards.cohort} "
        "--seed {wildcards.seed} --table {input.table} --columns {input.columns} "
        "--header-bank {input.header_bank} --encoder {params.encoder:q} --weights {input.weights} "
        "--settings {input.settings} --metrics-json {output.metrics} --predictions {output.predictions} "
        "--provenance {output.provenance} --code-fingerprint {params.code:q} "
        "--gpus {resources.gpu} --threads {threads} > {log} 2>&1"
