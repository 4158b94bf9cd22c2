# rules for the preprocess stage (see workflow/preprocess.py, docs/interfaces.md section 3):
# input check (in batches of images) -> per batch of images: N4 -> affine to MNI + crop -> skull
# strip -> model-ready volume and QC (workflow/preprocess_batch.py); only images that pass the
# input check (checkpoint preprocess_accepted) go past it.
from workflow import preprocess as preprocess_stage

PREPROCESS = config["preprocess"]
preprocess_stage.check_user_files(PREPROCESS)
VOXEL_SIZE_MM = PREPROCESS["voxel_size_mm"]
IMAGES_PER_JOB = PREPROCESS["images_per_job"]
PREPROCESS_BATCH = {step: paths.PREPROCESS_BATCH.replace("{step}", step) for step in settings_stage.PER_IMAGE_STEPS}
PREPROCESS_TEMPLATE = preprocess_stage.template_files(PREPROCESS["voxel_size_mm"])
CHECK_IMAGES_PER_JOB = PREPROCESS["check"]["images_per_job"]

# On a cluster these run where Snakemake runs: they read small per-image files and write one table,
# less work than a submission (profiles/slurm).
localrules:
    preprocess_accepted,
    preprocess_cohort_qc,
    preprocess_step_settings,



rule preprocess_all:
    """Preprocessing target: every cohort's QC table (and so every image's model-ready volume)."""
    input:
        expand(paths.PREPROCESS_QC, cohort=COHORTS),


# The per-image steps run a command (workflow/preprocess_job.py), not a script: Snakemake reads a
# script rule's source once per job while planning, a sixth of the plan at the paper's size. Each
# reads its step's settings from a file this local rule writes from the config, so a changed
# setting rewrites that one file and reruns exactly that step's jobs and what follows them.
rule preprocess_step_settings:
    """One per-image step's settings file (n4, registration, skullstrip, model_ready)."""
    output:
        settings=paths.PREPROCESS_STEP_SETTINGS,
    params:
        settings=preprocess_step_params,
    wildcard_constraints:
        step="|".join(settings_stage.PER_IMAGE_STEPS),
    log:
        "results/logs/preprocess_step_settings/{step}.log",
    benchmark:
        "results/benchmarks/preprocess_step_settings/{step}.tsv"
    run:
        settings_stage.write_settings(
            getattr(PREPROCESS_SETTINGS, wildcards.step).kind, params.settings, output.settings, log[0]
        )


rule preprocess_template:
    """The registration target at the working voxel size, its Clinica crop and brain mask."""
    input:
        template=PREPROCESS["template"] or [],
    output:
        head=PREPROCESS_TEMPLATE["head"],
        crop=PREPROCESS_TEMPLATE["crop"],
        brainmask=PREPROCESS_TEMPLATE["brainmask"],
    params:
        code=code_fingerprint("workflow/scripts/preprocess_template.py"),
        settings=PREPROCESS_SETTINGS.template.as_params(),
    log:
        "results/logs/preprocess_template/template.log",
    benchmark:
        "results/benchmarks/preprocess_template/template.tsv"
    threads: 1
    resources:
        mem_mb=PREPROCESS["mem_mb"]["light"],
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow/scripts/preprocess_template.py"


# Batches, not one job per image: a check takes a fraction of a second, and one job each would be a
# fifth of the DAG's jobs at the paper's size (and as many process starts).
rule preprocess_check:
    """Read a batch of native T1s and write whether each can be preprocessed (and why not)."""
    input:
        t1=preprocess_stage.check_batch_input(checkpoints, CHECK_IMAGES_PER_JOB),
    output:
        verdicts=preprocess_stage.CHECK_BATCH,
    params:
        code=code_fingerprint("workflow/scripts/preprocess_check.py"),
        settings=PREPROCESS_SETTINGS.check.as_params(),
        images=preprocess_stage.check_batch_images(checkpoints, CHECK_IMAGES_PER_JOB),
    log:
        "results/logs/preprocess_check/{cohort}/batch-{batch}.log",
    benchmark:
        "results/benchmarks/preprocess_check/{cohort}/batch-{batch}.tsv"
    threads: 1
    resources:
        mem_mb=PREPROCESS["mem_mb"]["light"],
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow/scripts/preprocess_check.py"


checkpoint preprocess_accepted:
    """The images of a cohort that passed the input check (the rest reach qc.tsv as excluded)."""
    input:
        images=intake_images_table,
        verdicts=preprocess_stage.every_check_batch_input(checkpoints, CHECK_IMAGES_PER_JOB),
    output:
        accepted=preprocess_stage.ACCEPTED,
    params:
        code=code_fingerprint("workflow/scripts/preprocess_accepted.py"),
    log:
        "results/logs/preprocess_accepted/{cohort}.log",
    benchmark:
        "results/benchmarks/preprocess_accepted/{cohort}.tsv"
    threads: 1
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow/scripts/preprocess_accepted.py"


rule preprocess_n4:
    """N4 bias field correction (Clinica's settings), native space, for a batch of images."""
    input:
        settings=paths.PREPROCESS_STEP_SETTINGS.format(step="n4"),
        t1=preprocess_stage.batch_t1_input(checkpoints, IMAGES_PER_JOB),
    output:
        batch=preprocess_intermediate(directory(PREPROCESS_BATCH["n4"])),
    params:
        code=code_fingerprint("workflow.preprocess_job"),
        voxel_size=VOXEL_SIZE_MM,
        images=preprocess_stage.batch_image_arguments(checkpoints, IMAGES_PER_JOB),
    log:
        "results/logs/preprocess_n4/{cohort}/batch-{batch}.log",
    benchmark:
        "results/benchmarks/preprocess_n4/{cohort}/batch-{batch}.tsv"
    threads: PREPROCESS["threads"]
    resources:
        mem_mb=PREPROCESS["mem_mb"]["n4"],
    conda:
        "../envs/preprocess.yaml"
    shell:
        "python -m workflow.preprocess_job n4 --settings {input.settings} --voxel-size {params.voxel_size} "
        "--out {output.batch} --threads {threads} {params.images} > {log} 2>&1"


rule preprocess_register:
    """Affine registration to MNI (antsRegistrationSyNQuick[a]) and Clinica's crop, for a batch."""
    input:
        settings=paths.PREPROCESS_STEP_SETTINGS.format(step="registration"),
        n4=PREPROCESS_BATCH["n4"],
        template=PREPROCESS_TEMPLATE["head"],
        template_brainmask=PREPROCESS_TEMPLATE["brainmask"],
    output:
        batch=directory(PREPROCESS_BATCH["registration"]),
    params:
        code=code_fingerprint("workflow.preprocess_job"),
        voxel_size=VOXEL_SIZE_MM,
    log:
        "results/logs/preprocess_register/{cohort}/batch-{batch}.log",
    benchmark:
        "results/benchmarks/preprocess_register/{cohort}/batch-{batch}.tsv"
    threads: PREPROCESS["threads"]
    resources:
        mem_mb=PREPROCESS["mem_mb"]["registration"],
    conda:
        "../envs/preprocess.yaml"
    shell:
        "python -m workflow.preprocess_job register --settings {input.settings} --voxel-size {params.voxel_size} "
        "--n4 {input.n4} --template {input.template} --template-brainmask {input.template_brainmask} "
        "--out {output.batch} --threads {threads} > {log} 2>&1"


rule preprocess_skullstrip:
    """Brain mask and skull-stripped T1 of each registered crop of a batch (deepbet or SynthStrip)."""
    input:
        settings=paths.PREPROCESS_STEP_SETTINGS.format(step="skullstrip"),
        registration=PREPROCESS_BATCH["registration"],
        synthstrip_model=(
            PREPROCESS["skullstrip"]["synthstrip_model"] or []
            if PREPROCESS["skullstrip"]["method"] == "synthstrip"
            else []
        ),
    output:
        batch=directory(PREPROCESS_BATCH["skullstrip"]),
    params:
        code=code_fingerprint("workflow.preprocess_job"),
        voxel_size=VOXEL_SIZE_MM,
    log:
        "results/logs/preprocess_skullstrip/{cohort}/batch-{batch}.log",
    benchmark:
        "results/benchmarks/preprocess_skullstrip/{cohort}/batch-{batch}.tsv"
    threads: PREPROCESS["threads"]
    resources:
        mem_mb=PREPROCESS["mem_mb"]["skullstrip"],
    conda:
        "../envs/preprocess.yaml"
    shell:
        "python -m workflow.preprocess_job skullstrip --settings {input.settings} --voxel-size {params.voxel_size} "
        "--registration {input.registration} --out {output.batch} --threads {threads} > {log} 2>&1"


# One job for the model-ready volumes and the images' QC: QC reads the volume, so it reran whenever
# the volume did anyway; together they save a process start per batch and a sixth of the DAG's jobs.
rule preprocess_model_ready:
    """The stripped crops of a batch resampled to the model input shape (.npy + scaling sidecar),
    then each image's QC: registration / brain-volume metrics (and errors against ground truth on
    synthetic data), mosaic."""
    input:
        settings=paths.PREPROCESS_STEP_SETTINGS.format(step="model_ready"),
        registration=PREPROCESS_BATCH["registration"],
        skullstrip=PREPROCESS_BATCH["skullstrip"],
        template_crop=PREPROCESS_TEMPLATE["crop"],
        template_brainmask=PREPROCESS_TEMPLATE["brainmask"],
    output:
        batch=report(
            directory(PREPROCESS_BATCH["model_ready"]), patterns=["{image}_mosaic.png"],
            caption="../workflow/report/mosaic.rst", category="Preprocessing QC", subcategory="{cohort}",
            labels={"cohort": "{cohort}", "image": "{image}"},
        ),
    params:
        code=code_fingerprint("workflow.preprocess_job"),
        voxel_size=VOXEL_SIZE_MM,
        truth=preprocess_stage.truth_arguments(config),
    log:
        "results/logs/preprocess_model_ready/{cohort}/batch-{batch}.log",
    benchmark:
        "results/benchmarks/preprocess_model_ready/{cohort}/batch-{batch}.tsv"
    threads: 1
    resources:
        mem_mb=PREPROCESS["mem_mb"]["light"],
    conda:
        "../envs/preprocess.yaml"
    shell:
        "python -m workflow.preprocess_job model-ready --settings {input.settings} --voxel-size {params.voxel_size} "
        "--registration {input.registration} --skullstrip {input.skullstrip} "
        "--template-crop {input.template_crop} --template-brainmask {input.template_brainmask} "
        "--cohort {wildcards.cohort} {params.truth} --out {output.batch} > {log} 2>&1"


rule preprocess_cohort_qc:
    """The cohort's qc.tsv (one row per image, passed or why not) and exclusions.tsv."""
    input:
        images=intake_images_table,
        verdicts=preprocess_stage.every_check_batch_input(checkpoints, CHECK_IMAGES_PER_JOB),
        model_ready=preprocess_stage.every_batch_input(checkpoints, IMAGES_PER_JOB, "model_ready"),
    output:
        qc=report(paths.PREPROCESS_QC, caption="../workflow/report/qc.rst", category="Preprocessing QC", subcategory="{cohort}"),
        exclusions=paths.PREPROCESS_EXCLUSIONS,
    params:
        code=code_fingerprint("workflow/scripts/preprocess_cohort_qc.py"),
        settings=PREPROCESS_SETTINGS.qc.as_params(),
    log:
        "results/logs/preprocess_cohort_qc/{cohort}.log",
    benchmark:
        "results/benchmarks/preprocess_cohort_qc/{cohort}.tsv"
    threads: 1
    conda:
        "../envs/preprocess.yaml"
    script:
        "../workflow/scripts/preprocess_cohort_qc.py"
